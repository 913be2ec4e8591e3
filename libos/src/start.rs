//! Start the program as Linux would after execve: a stack holding argc,
//! argv, envp and the auxiliary vector, then a jump to `_start`.

use crate::arch::{cpu, image, uaccess};
use crate::syscall::Errno;
use crate::{cmdline, config, mem};
use alloc::vec::Vec;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;

/// The program's argv: argv[0] and the baked-in arguments from the image,
/// unless the boot command line gives arguments, which then replace them.
pub fn argv(cmdline: &[u8]) -> Vec<Vec<u8>> {
    let mut baked = image::baked_argv();
    let mut argv: Vec<Vec<u8>> = Vec::new();
    argv.push(baked.next().unwrap_or(b"program").to_vec());
    let given = cmdline::split(cmdline);
    if given.is_empty() {
        argv.extend(baked.map(|a| a.to_vec()));
    } else {
        argv.extend(given);
    }
    argv
}

/// The image's own executable: argv[0] as baked in (execve of this path
/// starts another copy of the program).
pub fn executable() -> &'static [u8] {
    image::baked_argv().next().unwrap_or(b"program")
}

/// A main stack: the memory [base, base+len) and the initial stack pointer.
pub struct Stack {
    pub base: u64,
    pub len: u64,
    pub sp: u64,
}

/// Allocate a main stack for a copy of the program at `base` and lay out
/// argc, argv, envp and the auxiliary vector on it.
pub fn new_stack(argv: &[Vec<u8>], envp: &[Vec<u8>], base: u64) -> Result<Stack, Errno> {
    let size = config::MAIN_STACK_KIB * 1024;
    let strings: u64 = argv.iter().chain(envp).map(|s| s.len() as u64 + 1).sum();
    let vectors = (argv.len() + envp.len() + 3 + 14 * 2) as u64 * 8;
    if strings + vectors + 4096 > size / 4 {
        return Err(Errno::E2BIG);
    }
    let stack_base = mem::alloc_top(size)?;
    let top = stack_base + size;

    // Strings and the random bytes go at the very top, the vectors below.
    let mut sp = top;
    let mut place = |bytes: &[u8]| -> u64 {
        sp -= bytes.len() as u64 + 1;
        let mut dst = uaccess::slice_mut(sp, bytes.len() as u64 + 1).expect("main stack in RAM");
        dst[..bytes.len()].copy_from_slice(bytes);
        dst[bytes.len()] = 0;
        sp
    };
    let argv_ptrs: Vec<u64> = argv.iter().map(|a| place(a)).collect();
    let envp_ptrs: Vec<u64> = envp.iter().map(|e| place(e)).collect();
    let mut random = [0u8; 16];
    crate::syscall::misc::fill_random(&mut random);
    let random_at = place(&random[..15]) & !0xf;
    uaccess::slice_mut(random_at, 16)
        .expect("main stack in RAM")
        .copy_from_slice(&random);

    let program = crate::proc::slot::program();
    let hwcap = cpu::cpuid(1, 0).edx as u64;
    let auxv: [(u64, u64); 14] = [
        (AT_PHDR, base + program.phdr),
        (AT_PHENT, program.phent),
        (AT_PHNUM, program.phnum),
        (AT_PAGESZ, mem::PAGE),
        (AT_ENTRY, base + program.entry),
        (AT_UID, crate::syscall::ids::UID),
        (AT_EUID, crate::syscall::ids::UID),
        (AT_GID, crate::syscall::ids::GID),
        (AT_EGID, crate::syscall::ids::GID),
        (AT_HWCAP, hwcap),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_at),
        (AT_NULL, 0),
    ];

    let words = 1 + argv_ptrs.len() + 1 + envp_ptrs.len() + 1 + auxv.len() * 2;
    let mut at = (random_at - 16 - words as u64 * 8) & !0xf;
    let start_sp = at;
    let mut push = |v: u64| {
        uaccess::write(at, &v).expect("main stack in RAM");
        at += 8;
    };
    push(argv_ptrs.len() as u64);
    argv_ptrs.iter().for_each(|&p| push(p));
    push(0);
    envp_ptrs.iter().for_each(|&p| push(p));
    push(0);
    for (k, v) in auxv {
        push(k);
        push(v);
    }
    Ok(Stack {
        base: stack_base,
        len: size,
        sp: start_sp,
    })
}

/// The first process: the image's program with `argv` and the baked-in
/// environment.
pub fn run_program(argv: &[Vec<u8>]) -> ! {
    let envp: Vec<Vec<u8>> = image::baked_envp().map(|e| e.to_vec()).collect();
    let fail = |what: &str, e: Errno| -> ! {
        crate::log!("libos: {what}: {e:?}");
        crate::platform::exit(1)
    };
    let (slot, base) =
        crate::proc::slot::take().unwrap_or_else(|e| fail("cannot map the program", e));
    let stack =
        new_stack(argv, &envp, base).unwrap_or_else(|e| fail("no room for the main stack", e));
    crate::proc::init_first(slot, (stack.base, stack.len));
    crate::platform::phase(pgkraft_abi::Phase::MainEntered);
    cpu::enter_program(base + crate::proc::slot::program().entry, stack.sp)
}
