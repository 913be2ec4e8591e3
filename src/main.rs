fn main() {
    println!("pgkraft: being built");
}
