//! Start the program as Linux would after execve: a stack holding argc,
//! argv, envp and the auxiliary vector, then a jump to `_start`.

use crate::arch::{cpu, image, uaccess};
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

pub fn run_program(argv: &[Vec<u8>]) -> ! {
    let envp: Vec<&[u8]> = image::baked_envp().collect();
    let size = config::MAIN_STACK_KIB * 1024;
    let stack_base = mem::alloc_top(size).unwrap_or_else(|_| {
        crate::log!(
            "libos: no memory for a {} KiB main stack",
            config::MAIN_STACK_KIB
        );
        crate::platform::exit(1)
    });
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

    let (_, base) = crate::proc::slot::take().unwrap_or_else(|e| {
        crate::log!("libos: cannot map the program: {e:?}");
        crate::platform::exit(1)
    });
    let program = crate::proc::slot::program();
    let (phdr, phent, phnum) = (base + program.phdr, program.phent, program.phnum);
    let entry = base + program.entry;
    let hwcap = cpu::cpuid(1, 0).edx as u64;
    let auxv: [(u64, u64); 14] = [
        (AT_PHDR, phdr),
        (AT_PHENT, phent),
        (AT_PHNUM, phnum),
        (AT_PAGESZ, mem::PAGE),
        (AT_ENTRY, entry),
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
    crate::platform::phase(pgkraft_abi::Phase::MainEntered);
    cpu::enter_program(entry, start_sp)
}
