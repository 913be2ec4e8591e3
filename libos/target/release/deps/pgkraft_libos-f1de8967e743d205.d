/work/main/libos/target/release/deps/pgkraft_libos-f1de8967e743d205.d: src/lib.rs src/arch/mod.rs src/arch/cpu.rs src/arch/heap.rs src/arch/image.rs src/arch/uaccess.rs src/cmdline.rs src/fault.rs src/log.rs src/mem.rs src/platform.rs src/start.rs src/syscall/mod.rs src/syscall/clock.rs src/syscall/console.rs src/syscall/ids.rs src/syscall/misc.rs src/syscall/mm.rs src/syscall/names.rs src/syscall/signal.rs src/time.rs src/arch/boot.s /work/main/libos/target/release/build/pgkraft-libos-18b00c8f335f6ea6/out/config.rs Cargo.toml

/work/main/libos/target/release/deps/libpgkraft_libos-f1de8967e743d205.rmeta: src/lib.rs src/arch/mod.rs src/arch/cpu.rs src/arch/heap.rs src/arch/image.rs src/arch/uaccess.rs src/cmdline.rs src/fault.rs src/log.rs src/mem.rs src/platform.rs src/start.rs src/syscall/mod.rs src/syscall/clock.rs src/syscall/console.rs src/syscall/ids.rs src/syscall/misc.rs src/syscall/mm.rs src/syscall/names.rs src/syscall/signal.rs src/time.rs src/arch/boot.s /work/main/libos/target/release/build/pgkraft-libos-18b00c8f335f6ea6/out/config.rs Cargo.toml

src/lib.rs:
src/arch/mod.rs:
src/arch/cpu.rs:
src/arch/heap.rs:
src/arch/image.rs:
src/arch/uaccess.rs:
src/cmdline.rs:
src/fault.rs:
src/log.rs:
src/mem.rs:
src/platform.rs:
src/start.rs:
src/syscall/mod.rs:
src/syscall/clock.rs:
src/syscall/console.rs:
src/syscall/ids.rs:
src/syscall/misc.rs:
src/syscall/mm.rs:
src/syscall/names.rs:
src/syscall/signal.rs:
src/time.rs:
src/arch/boot.s:
/work/main/libos/target/release/build/pgkraft-libos-18b00c8f335f6ea6/out/config.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
# env-dep:OUT_DIR=/work/main/libos/target/release/build/pgkraft-libos-18b00c8f335f6ea6/out
