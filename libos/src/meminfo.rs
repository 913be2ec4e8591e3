//! What `/proc/meminfo` says: guest RAM as the libOS's page allocator
//! (`mem`) sees it at the moment of the read, and who holds what is used.
//!
//! What "used" means here. RAM is identity mapped with large pages and
//! the libOS takes no page faults, so it cannot know which pages a
//! program touched: a range `mem` handed out is used, touched or not,
//! until it is given back. That is the truthful figure for the guest: a
//! range handed out is not available to anyone else, whatever the host
//! has behind it (the host's RSS counts touched pages only; the runner
//! reports that). So:
//!
//! - `MemTotal`: the RAM `mem` manages, from the page after the image
//!   (libOS, program, rootfs archive, boot page tables: Linux's kernel
//!   image and reserved memory) to the end of guest RAM.
//! - `MemFree`: what `mem` has not handed out.
//! - `MemAvailable`: that and the volume's page cache (`fs::p9::cache`,
//!   counted in `LibosHeap`), which a program's allocation empties when
//!   RAM is short. Nothing else can be reclaimed on demand (no swap; kept
//!   slots are not given back).
//!
//! Then the used part by holder (each holder counts its own, at read
//! time; the names are ours, except `PageTables`, which means what
//! Linux's does):
//!
//! - `ProcStacks`: main stacks of live processes, reserved whole
//!   (`CONFIG_MAIN_STACK_KIB`, 8 MiB by default) because identity-mapped
//!   RAM has no pages on demand. Measured: 8,192 of the 10,480 KiB an
//!   idle PostgreSQL connection takes (docs/ARCHITECTURE.md §3, the
//!   server), where natively its stack has 24 KiB resident.
//! - `ProcMapped`: processes' mappings (anonymous, files, POSIX shared
//!   memory) and the program break.
//! - `SlotsInUse`: the writable pages (.data, .got, .bss) of program
//!   slots that run a process.
//! - `SlotsKept`: the same for slots whose process ended: kept for the
//!   next process with their mappings in place (a first touch through a
//!   new mapping costs ~25-36 µs a page on PVM), never given back.
//! - `PageTables`: the page tables of all slots.
//! - `SysVShm`: System V shared memory segments (PostgreSQL's main one).
//! - `LibosHeap`: the libOS's own heap: files' data, sockets' buffers,
//!   its tables. Its small-block chunks are never given back.
//!
//! Each page is counted by one holder (musl's malloc maps a guard page
//! over the program break's first page: it is counted once, in
//! `ProcMapped`), so the holders' sum is at most `MemTotal - MemFree`;
//! the rest is memory of exited processes not reaped yet (freed at the
//! next system call, so none by the time a read runs) and a long command
//! line's pages.

use alloc::string::String;
use core::fmt::Write;

/// Guest memory at one moment, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub free: u64,
    pub proc_stacks: u64,
    pub proc_mapped: u64,
    pub slots_in_use: u64,
    pub slots_kept: u64,
    pub page_tables: u64,
    pub sysv_shm: u64,
    pub libos_heap: u64,
    /// The volume's page cache (part of `libos_heap`): reclaimable.
    pub cached: u64,
}

impl Usage {
    /// The file's lines: name and bytes, in order.
    fn lines(&self) -> [(&'static str, u64); 10] {
        [
            ("MemTotal", self.total),
            ("MemFree", self.free),
            ("MemAvailable", self.free + self.cached),
            ("ProcStacks", self.proc_stacks),
            ("ProcMapped", self.proc_mapped),
            ("SlotsInUse", self.slots_in_use),
            ("SlotsKept", self.slots_kept),
            ("PageTables", self.page_tables),
            ("SysVShm", self.sysv_shm),
            ("LibosHeap", self.libos_heap),
        ]
    }

    /// The text of /proc/meminfo, in Linux's layout (fs/proc/meminfo.c:
    /// the name and colon padded to 16 columns, the value in kB right
    /// aligned in 8, then " kB"), so parsers of Linux's file read it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, bytes) in self.lines() {
            let pad = 15usize.saturating_sub(name.len());
            // Writing to a String cannot fail. (No `format!`: the prebuilt
            // alloc's needs the unwinder, which the image does not link.)
            let _ = writeln!(out, "{name}:{:pad$}{:>8} kB", "", bytes / 1024);
        }
        out
    }
}

/// The guest's memory now.
#[cfg(not(test))]
pub fn now() -> Usage {
    let slots = crate::proc::slot::usage();
    let procs = crate::proc::memory(crate::mem::brk_range());
    Usage {
        total: crate::mem::total_bytes(),
        free: crate::mem::free_bytes(),
        proc_stacks: procs.stacks,
        proc_mapped: procs.mapped,
        slots_in_use: slots.in_use,
        slots_kept: slots.kept,
        page_tables: slots.page_tables,
        sysv_shm: crate::syscall::shm::segment_bytes(),
        libos_heap: crate::arch::heap::held_bytes(),
        cached: crate::fs::p9::cached_bytes() as u64,
    }
}

/// Host unit tests have no processes, slots or guest heap: what `mem`
/// says (its RAM is not set up there, so zeros).
#[cfg(test)]
pub fn now() -> Usage {
    Usage {
        total: crate::mem::total_bytes(),
        free: crate::mem::free_bytes(),
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Usage {
        Usage {
            total: 242 << 20,
            free: 100 << 20,
            proc_stacks: 8 << 20,
            proc_mapped: 3 * 4096,
            slots_in_use: 1 << 20,
            slots_kept: 0,
            page_tables: 5 * 4096,
            sysv_shm: 20 << 20,
            libos_heap: 1023,
            cached: 0,
        }
    }

    #[test]
    fn lines_are_laid_out_as_linux_lays_them_out() {
        let text = sample().render();
        let first: Vec<&str> = text.lines().take(3).collect();
        // Byte for byte as Linux prints these lines (name and colon in 16
        // columns, value in 8).
        assert_eq!(
            first,
            [
                "MemTotal:         247808 kB",
                "MemFree:          102400 kB",
                "MemAvailable:     102400 kB",
            ]
        );
        assert!(text.ends_with(" kB\n"));
    }

    /// Parsed the way procps and psutil parse Linux's file: split at the
    /// colon, a decimal number, the unit kB.
    #[test]
    fn every_line_parses_as_name_value_kb() {
        let u = sample();
        let text = u.render();
        let mut seen = Vec::new();
        for line in text.lines() {
            let (name, rest) = line.split_once(':').expect("a colon");
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()));
            let mut words = rest.split_whitespace();
            let kb: u64 = words.next().expect("a value").parse().expect("decimal");
            assert_eq!(words.next(), Some("kB"));
            assert_eq!(words.next(), None);
            seen.push((name.to_owned(), kb));
        }
        let (names, values): (Vec<_>, Vec<_>) = u.lines().into_iter().unzip();
        assert_eq!(seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), names);
        // Bytes round down to whole kB, as Linux's pages-to-kB shift does
        // for whole pages.
        let kbs: Vec<u64> = values.iter().map(|b| b / 1024).collect();
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), kbs);
        assert_eq!(seen.last().unwrap().1, 0, "1023 bytes are 0 kB");
    }

    #[test]
    fn a_value_wider_than_its_column_still_has_a_space_after_the_colon() {
        // 64 GiB guests reach 8 digits; 10 TiB would be 11.
        let u = Usage {
            total: 10 << 40,
            ..Usage::default()
        };
        let text = u.render();
        assert!(text.starts_with("MemTotal:       10737418240 kB\n"));
    }
}
