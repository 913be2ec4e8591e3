//! The boot structures defined in boot.s and by the linker script, and the
//! data the host (runner or PVH loader) leaves in guest memory for us.

use crate::time::PvClock;
use core::ptr::{addr_of, addr_of_mut, read_volatile};
use pgkraft_abi::{BootInfo, Hypercall};

unsafe extern "C" {
    static mut idt: [u64; 512];
    static exception_stubs: [u64; 32];
    fn irq_ignore();
    static pvclock_page: [u8; 4096];
    static __image_end: u8;
    /// The program, a static-PIE ELF file (build::link, link.ld).
    static __pgkraft_program_start: u8;
    static __pgkraft_program_end: u8;
    /// pgkraft_abi::SYSCALL_ENTRY_TABLE, as link.ld placed it.
    static pgkraft_entry_table: u8;
    /// NUL-separated strings ending with an empty one (build::link writes them).
    static __pgkraft_argv_blob: u8;
    static __pgkraft_envp_blob: u8;
    /// The rootfs tar archive (link.ld; an empty range without one).
    static __pgkraft_rootfs_start: u8;
    static __pgkraft_rootfs_end: u8;
    /// Its index (build::rootfs_index; an empty range without one).
    static __pgkraft_rootfs_index_start: u8;
    static __pgkraft_rootfs_index_end: u8;
}

/// Fill the IDT: exceptions go to the CPL0 stubs in boot.s, everything else to
/// an `iretq`. Done at CPL3 (the IDT page is writable there) so that neither
/// boot path spends emulated CPL0 instructions on it.
pub fn fill_idt() {
    let gate = |target: u64| -> (u64, u64) {
        let lo = (target & 0xffff)
            | ((pgkraft_abi::sel::KERNEL_CS as u64) << 16)
            | (0x8e << 40)
            | (((target >> 16) & 0xffff) << 48);
        (lo, target >> 32)
    };
    // SAFETY: `idt` is the 4 KiB table reserved in boot.s; nothing else
    // writes it, and the CPU only reads it when delivering an exception.
    let table = unsafe { &mut *addr_of_mut!(idt) };
    for vec in 0..256 {
        let target = if vec < 32 {
            // SAFETY: a read-only table of 32 addresses from boot.s.
            unsafe { (*addr_of!(exception_stubs))[vec] }
        } else {
            irq_ignore as *const () as u64
        };
        let (lo, hi) = gate(target);
        table[vec * 2] = lo;
        table[vec * 2 + 1] = hi;
    }
}

pub fn image_end() -> u64 {
    addr_of!(__image_end) as u64
}

/// The program's ELF file as the image holds it.
pub fn program_file() -> &'static [u8] {
    let (start, end) = (
        addr_of!(__pgkraft_program_start),
        addr_of!(__pgkraft_program_end),
    );
    // SAFETY: link.ld brackets the loaded, read-only section with these two
    // symbols; nothing writes it.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// Whether the entry table sits where the program's stubs jump through it.
pub fn entry_table_in_place() -> bool {
    addr_of!(pgkraft_entry_table) as u64 == pgkraft_abi::SYSCALL_ENTRY_TABLE
}

/// The strings baked into the image by build::link.
pub fn baked_argv() -> StringBlob {
    StringBlob {
        at: addr_of!(__pgkraft_argv_blob) as u64,
    }
}
pub fn baked_envp() -> StringBlob {
    StringBlob {
        at: addr_of!(__pgkraft_envp_blob) as u64,
    }
}

/// The bytes of a linker-script section bracketed by two symbols.
///
/// # Safety
/// `start` and `end` must be the addresses of symbols the linker script
/// puts around a loaded, never-written section (or both at one address
/// when the section is empty).
unsafe fn section(start: *const u8, end: *const u8) -> &'static [u8] {
    let (start, end) = (start as usize, end as usize);
    if end <= start {
        return &[];
    }
    // SAFETY: per the contract, the range is mapped, immutable and lives as
    // long as the image.
    unsafe { core::slice::from_raw_parts(start as *const u8, end - start) }
}

/// The rootfs archive build::link placed in the image's read-only data.
/// File data is borrowed from it for as long as the file is not written, so
/// instances booted from one image share those pages.
pub fn rootfs() -> &'static [u8] {
    // SAFETY: link.ld brackets `.pgkraft.rootfs` with these two symbols.
    unsafe {
        section(
            addr_of!(__pgkraft_rootfs_start),
            addr_of!(__pgkraft_rootfs_end),
        )
    }
}

/// The rootfs index build::link placed next to the archive (empty if none).
pub fn rootfs_index() -> &'static [u8] {
    // SAFETY: link.ld brackets `.pgkraft.rootfs_index` with these symbols.
    unsafe {
        section(
            addr_of!(__pgkraft_rootfs_index_start),
            addr_of!(__pgkraft_rootfs_index_end),
        )
    }
}

/// Iterates a blob of NUL-terminated strings ended by an empty string.
#[derive(Clone, Copy)]
pub struct StringBlob {
    at: u64,
}

impl Iterator for StringBlob {
    type Item = &'static [u8];
    fn next(&mut self) -> Option<&'static [u8]> {
        // SAFETY: the blob lives in the image's read-only data and is
        // terminated as described (build::link guarantees it).
        let s = unsafe { core::ffi::CStr::from_ptr(self.at as *const core::ffi::c_char) };
        let bytes = s.to_bytes();
        if bytes.is_empty() {
            return None;
        }
        self.at += bytes.len() as u64 + 1;
        Some(bytes)
    }
}

pub fn read_pvclock() -> PvClock {
    let base = addr_of!(pvclock_page) as *const u8;
    loop {
        // SAFETY: the page is ours (boot.s); the host writes it with the
        // version protocol (odd = update in progress), hence volatile reads.
        let c = unsafe {
            let v = read_volatile(base as *const u32);
            PvClock {
                version: v,
                tsc_timestamp: read_volatile(base.add(8) as *const u64),
                system_time: read_volatile(base.add(16) as *const u64),
                mul: read_volatile(base.add(24) as *const u32),
                shift: read_volatile(base.add(28) as *const i8),
            }
        };
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        // SAFETY: as above.
        let again = unsafe { read_volatile(base as *const u32) };
        if c.version & 1 == 0 && c.version == again {
            return c;
        }
    }
}

/// `struct pvclock_wall_clock` at offset 64: (seconds, nanoseconds) of the
/// wall clock when the pvclock's system_time was zero.
pub fn read_wall_clock() -> (u32, u32) {
    let base = addr_of!(pvclock_page) as *const u8;
    loop {
        // SAFETY: as read_pvclock.
        let (v, sec, nsec, again) = unsafe {
            let w = base.add(64);
            let v = read_volatile(w as *const u32);
            let sec = read_volatile(w.add(4) as *const u32);
            let nsec = read_volatile(w.add(8) as *const u32);
            core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
            (v, sec, nsec, read_volatile(w as *const u32))
        };
        if v & 1 == 0 && v == again {
            return (sec, nsec);
        }
    }
}

/// The BootInfo our runner wrote, if the magic says it is one.
pub fn boot_info(gpa: u64) -> Option<BootInfo> {
    if gpa == 0 || !gpa.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the runner put a BootInfo at this address (the note's
    // boot_info page); the magic check rejects anything else.
    let bi = unsafe { read_volatile(gpa as *const BootInfo) };
    (bi.magic == pgkraft_abi::BOOT_INFO_MAGIC).then_some(bi)
}

/// What the PVH start info (hvm_start_info) tells us: RAM size and command line.
pub struct PvhInfo {
    pub mem_bytes: u64,
    pub cmdline_gpa: u64,
}

pub fn pvh_info(gpa: u64) -> Option<PvhInfo> {
    // SAFETY: the PVH loader passes hvm_start_info (magic 0x336ec578) in
    // %ebx; boot.s saved it. Layout: magic u32 @0, cmdline_paddr u64 @24,
    // memmap_paddr u64 @40, memmap_entries u32 @48 (version >= 1); each
    // memmap entry is {addr u64, size u64, type u32, reserved u32}.
    unsafe {
        if gpa == 0 || read_volatile(gpa as *const u32) != 0x336e_c578 {
            return None;
        }
        let version = read_volatile((gpa + 4) as *const u32);
        let cmdline_gpa = read_volatile((gpa + 24) as *const u64);
        let mut mem_bytes = 0;
        if version >= 1 {
            let map = read_volatile((gpa + 40) as *const u64);
            let n = read_volatile((gpa + 48) as *const u32) as u64;
            for i in 0..n {
                let e = map + i * 24;
                let (addr, size, kind) = (
                    read_volatile(e as *const u64),
                    read_volatile((e + 8) as *const u64),
                    read_volatile((e + 16) as *const u32),
                );
                if kind == 1 && addr <= image_end() {
                    mem_bytes = mem_bytes.max(addr + size);
                }
            }
        }
        Some(PvhInfo {
            mem_bytes,
            cmdline_gpa,
        })
    }
}

/// A NUL-terminated string in guest memory (the PVH command line).
pub fn c_string(gpa: u64) -> &'static [u8] {
    if gpa == 0 {
        return &[];
    }
    // SAFETY: the loader wrote a NUL-terminated command line there.
    unsafe { core::ffi::CStr::from_ptr(gpa as *const core::ffi::c_char).to_bytes() }
}

/// Ask the runner to perform a hypercall. The block must stay put while the
/// runner reads and writes it, and must live below 4 GiB (32-bit port write).
pub fn hypercall(block: &mut Hypercall) -> i64 {
    let gpa = block as *mut Hypercall as u64;
    debug_assert!(gpa < (1 << 32));
    super::cpu::outl(pgkraft_abi::PORT_HYPERCALL, gpa as u32);
    // SAFETY: the runner filled `ret` during the exit; read it fresh.
    unsafe { read_volatile(addr_of!(block.ret)) }
}

/// The block's `args` after a [`hypercall`], as the runner left them.
pub fn hypercall_args(block: &Hypercall) -> [u64; 4] {
    // SAFETY: the runner may have written them during the exit; read fresh.
    unsafe { read_volatile(addr_of!(block.args)) }
}
