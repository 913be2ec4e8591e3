/work/main/libos/target/release/deps/pgkraft_abi-4ba90ac8a6ca59a9.d: /work/main/abi/src/lib.rs

/work/main/libos/target/release/deps/libpgkraft_abi-4ba90ac8a6ca59a9.rmeta: /work/main/abi/src/lib.rs

/work/main/abi/src/lib.rs:
