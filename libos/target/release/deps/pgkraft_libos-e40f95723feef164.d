/work/main/libos/target/release/deps/pgkraft_libos-e40f95723feef164.d: src/lib.rs src/arch/mod.rs src/arch/cpu.rs src/arch/heap.rs src/arch/image.rs src/arch/uaccess.rs src/cmdline.rs src/fault.rs src/log.rs src/mem.rs src/platform.rs src/start.rs src/syscall/mod.rs src/syscall/clock.rs src/syscall/console.rs src/syscall/ids.rs src/syscall/misc.rs src/syscall/mm.rs src/syscall/names.rs src/syscall/signal.rs src/time.rs src/arch/boot.s /work/main/libos/target/release/build/pgkraft-libos-7a421dc8beb35b83/out/config.rs

/work/main/libos/target/release/deps/libpgkraft_libos-e40f95723feef164.a: src/lib.rs src/arch/mod.rs src/arch/cpu.rs src/arch/heap.rs src/arch/image.rs src/arch/uaccess.rs src/cmdline.rs src/fault.rs src/log.rs src/mem.rs src/platform.rs src/start.rs src/syscall/mod.rs src/syscall/clock.rs src/syscall/console.rs src/syscall/ids.rs src/syscall/misc.rs src/syscall/mm.rs src/syscall/names.rs src/syscall/signal.rs src/time.rs src/arch/boot.s /work/main/libos/target/release/build/pgkraft-libos-7a421dc8beb35b83/out/config.rs

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
/work/main/libos/target/release/build/pgkraft-libos-7a421dc8beb35b83/out/config.rs:

# env-dep:OUT_DIR=/work/main/libos/target/release/build/pgkraft-libos-7a421dc8beb35b83/out
