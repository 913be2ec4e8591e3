/work/main/libos/target/release/deps/pgkraft_abi-045569575228709d.d: /work/main/abi/src/lib.rs

/work/main/libos/target/release/deps/libpgkraft_abi-045569575228709d.rlib: /work/main/abi/src/lib.rs

/work/main/libos/target/release/deps/libpgkraft_abi-045569575228709d.rmeta: /work/main/abi/src/lib.rs

/work/main/abi/src/lib.rs:
