//! Turns the kernel-config constants (passed by `pgkraft build` as
//! PGKRAFT_CONFIG_* environment variables) into Rust constants.
use std::{env, fs, path::PathBuf};

/// (name, default): must match the host's kernel-config key table.
const CONSTS: &[(&str, u64)] = &[("MAIN_STACK_KIB", 8192), ("MAX_FDS", 1024)];

fn main() {
    let mut out = String::new();
    for (name, default) in CONSTS {
        let var = format!("PGKRAFT_CONFIG_{name}");
        println!("cargo:rerun-if-env-changed={var}");
        let value = match env::var(&var) {
            Ok(v) => v
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{var}={v} is not a number")),
            Err(_) => *default,
        };
        out.push_str(&format!("pub const {name}: u64 = {value};\n"));
    }
    let path = PathBuf::from(env::var("OUT_DIR").unwrap()).join("config.rs");
    fs::write(path, out).unwrap();
}
