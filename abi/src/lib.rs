//! The contract between the pgkraft runner (host) and the library OS (guest).
//!
//! Both sides compile this crate, so a port number or a struct layout can
//! only change in one place. Everything here is `#[repr(C)]` plain data.
//!
//! Boot paths (see docs/ARCHITECTURE.md §2):
//! - **PVH** (QEMU, Firecracker, Cloud Hypervisor): 32-bit entry at CPL0 with
//!   paging off, `%ebx` = `hvm_start_info`. The image's CPL0 stub enables long
//!   mode with the image's static page tables, turns on kvmclock with `wrmsr`
//!   and drops to CPL3.
//! - **pgkraft direct entry** (our runner): the runner reads [`BootNote`] from
//!   the image, sets the vCPU up exactly as the PVH stub would leave it (long
//!   mode, CPL3, the image's own GDT/IDT/TSS/page tables), writes kvmclock MSRs
//!   from the host and enters `entry64` with `%rdi` = guest physical address of
//!   a [`BootInfo`]. Not one guest instruction runs at CPL0 on this path,
//!   which matters on PVM where CPL0 is emulated (~1 µs per instruction).
#![forbid(unsafe_code)]
#![no_std]

// The rootfs index decoder hands out whole paths (both sides have a heap).
extern crate alloc;

pub mod p9;
pub mod rootfs_index;

/// QEMU `isa-debug-exit` compatible: the guest writes its exit status (one
/// byte) here. QEMU exits with `(status << 1) | 1`; our runner with `status`.
pub const PORT_EXIT: u16 = 0xf4;
/// The guest writes one byte, a [`Phase`], as it passes each boot phase. The
/// runner timestamps it on the host clock. QEMU ignores the write.
pub const PORT_PHASE: u16 = 0xf5;
/// Hypercall port, only when [`BootInfo::flags`] has [`BOOT_FLAG_HYPERCALL`]:
/// the guest writes (32-bit `out`) the guest physical address of a
/// [`Hypercall`] block; the runner performs it and fills `ret` before the
/// guest continues. One VM exit per request instead of one per byte.
pub const PORT_HYPERCALL: u16 = 0xf6;
/// 16550 UART used on the PVH path (and emulated by our runner too).
pub const PORT_COM1: u16 = 0x3f8;

/// Boot phases the guest reports on [`PORT_PHASE`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first instruction of the 64-bit CPL3 entry.
    FirstInstruction = 1,
    /// The library OS has initialised memory, clock, console, IDT.
    LibosReady = 2,
    /// About to jump to the program's `_start` (main comes right after).
    MainEntered = 3,
    /// The guest says it is ready to be snapshotted (used by `pgkraft snapshot`).
    Ready = 4,
    /// The guest runs again after a resume: the libOS saw its pending console
    /// read answered with [`hc::CONSOLE_READ_RESUMED`] (its first sign of life).
    Resumed = 5,
}

impl Phase {
    pub fn from_u8(v: u8) -> Option<Phase> {
        Some(match v {
            1 => Phase::FirstInstruction,
            2 => Phase::LibosReady,
            3 => Phase::MainEntered,
            4 => Phase::Ready,
            5 => Phase::Resumed,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Phase::FirstInstruction => "first_guest_instruction",
            Phase::LibosReady => "libos_ready",
            Phase::MainEntered => "main_entered",
            Phase::Ready => "ready",
            Phase::Resumed => "resumed",
        }
    }
}

/// Hypercall operations (see [`Hypercall`]).
pub mod hc {
    /// args[0] = gpa of bytes, args[1] = length. ret = bytes written.
    pub const CONSOLE_WRITE: u32 = 1;
    /// args[0] = gpa of buffer, args[1] = capacity. Blocks until at least one
    /// byte or end of input. ret = bytes read, 0 at end of input. The guest
    /// passes args[3] = 0; the runner sets it to [`CONSOLE_READ_RESUMED`]
    /// when it answers a read that a snapshot was taken in.
    pub const CONSOLE_READ: u32 = 2;
    /// See [`CONSOLE_READ`].
    pub const CONSOLE_READ_RESUMED: u64 = 1;
    /// args[0] = nanoseconds to sleep. ret = 0.
    pub const SLEEP_NS: u32 = 3;
    /// args[0] = gpa of bytes, args[1] = length: a libOS diagnostic (an
    /// unimplemented system call, a fault report). The runner prints it on
    /// its own stderr, never mixed into the guest's console. ret = length.
    pub const LOG: u32 = 4;
    /// args[0] = nanoseconds to wait at most (`u64::MAX`: no limit). The
    /// guest has nothing to run and waits for its devices: the runner
    /// returns as soon as a device may have work for it (a frame arrived,
    /// a host connection came) or the time passed. One exit for an idle
    /// guest instead of a busy loop. ret = 1 if a device may have work, 0
    /// if the time passed; plus, from bit [`WAIT_SIGNALS_SHIFT`] up, the
    /// signals the host sends the guest's first process (bit n = signal
    /// n, 1..=31; `pgkraft serve` asks PostgreSQL to shut down this way).
    /// args[1], when its bit [`WAIT_SESSIONS`] is set, holds in its low 32
    /// bits the client sessions that are busy: processes serving a TCP
    /// connection that do not wait for its input (a query runs, sleeps,
    /// waits on a lock or writes). The runner's idle timer hibernates a VM
    /// with connected clients only when none is (`--idle-policy idle`).
    pub const WAIT: u32 = 5;
    pub const WAIT_SIGNALS_SHIFT: u32 = 32;
    /// See [`WAIT`]: the guest reports its busy sessions (an older guest
    /// passes 0: unknown).
    pub const WAIT_SESSIONS: u64 = 1 << 63;
    /// args[0] = gpa, args[1] = length (both page multiples): guest RAM the
    /// guest no longer uses. The runner gives the host pages back
    /// (MADV_DONTNEED), after which the range reads as zeroes. ret = 0, or
    /// -EOPNOTSUPP where the range would not read as zeroes afterwards (a
    /// resumed VM's memory is its snapshot's); the guest then stops asking.
    pub const DISCARD: u32 = 6;
}

/// Where the libOS image keeps the addresses of its two system-call entry
/// points, `__pgkraft_syscall` then `__pgkraft_syscall_asm` (8 bytes each;
/// libos/link.ld places the table, boot.s fills it). The program is a
/// static PIE the libOS loads once per process at a base of its own, so it
/// cannot call into the libOS directly: build::link gives it two stubs that
/// jump through this fixed address.
pub const SYSCALL_ENTRY_TABLE: u64 = 0x10_0400;

/// virtio-mmio devices sit in slots of [`VIRTIO_MMIO_SLOT_SIZE`] bytes from
/// [`VIRTIO_MMIO_BASE`], as QEMU's `microvm` machine places its transports,
/// so one guest probe finds them under both VMMs: a slot whose MagicValue
/// reads "virt" and whose DeviceID is not 0 holds a device. Under our
/// runner an empty slot reads as zeros. No interrupts: the guest polls.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x200;
pub const VIRTIO_MMIO_SLOTS: u64 = 24;
/// Our runner puts the data volume's virtio-9p device (device ID 9,
/// 9P2000.L, see [`p9`]) in this virtio-mmio slot; virtio-net, when there
/// is one, is in slot 0. Under another VMM, probe the slots for it.
pub const VOLUME_MMIO_SLOT: u64 = 1;
/// The data volume's mount tag (virtio-9p configuration space), also what
/// QEMU is given: `-device virtio-9p-device,fsdev=..,mount_tag=pgkraft-data`.
pub const VOLUME_TAG: &str = "pgkraft-data";

/// The guest's side of the user-mode network link (`--publish`): the guest
/// is [`NET_GUEST_IP`]/24, the runner's end of the link [`NET_HOST_IP`].
/// Addresses on the virtual link only, never on a real network.
pub const NET_GUEST_IP: [u8; 4] = [10, 0, 2, 15];
pub const NET_HOST_IP: [u8; 4] = [10, 0, 2, 2];
pub const NET_PREFIX_LEN: u8 = 24;

/// A hypercall request block in guest memory. Its address must be below 4 GiB
/// (it travels in a 32-bit port write) and 8-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Hypercall {
    pub op: u32,
    pub _pad: u32,
    pub args: [u64; 4],
    /// Filled by the runner: >= 0 result, < 0 a negated Linux errno.
    pub ret: i64,
}

pub const BOOT_INFO_MAGIC: u64 = 0x6f66_6e69_746f_6f62; // "bootinfo"
pub const BOOT_INFO_VERSION: u32 = 1;
/// The runner implements [`PORT_HYPERCALL`].
pub const BOOT_FLAG_HYPERCALL: u32 = 1 << 0;
/// The console is a terminal on the host side: the guest's fds 0-2 answer
/// terminal ioctls (isatty() is true), as they would natively.
pub const BOOT_FLAG_CONSOLE_TTY: u32 = 1 << 1;

/// Written by our runner into guest memory; `%rdi` at `entry64` holds its
/// guest physical (= virtual) address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    pub flags: u32,
    /// Guest RAM is `[0, mem_bytes)`, identity mapped.
    pub mem_bytes: u64,
    /// Guest physical address and length of the command line: the program's
    /// arguments, shell-quoted (see `libos::cmdline`). Length 0 = use the
    /// arguments baked into the image.
    pub cmdline_gpa: u64,
    pub cmdline_len: u64,
}

/// A zstd rootfs holds each file's data in frames of this many bytes (the
/// last one shorter); the libOS inflates one chunk into these many bytes of
/// pages, so both sides must agree.
pub const ROOTFS_ZSTD_CHUNK: usize = 64 * 1024;

/// ELF note that marks a pgkraft image: name [`NOTE_NAME`], type [`NOTE_TYPE`].
pub const NOTE_NAME: &[u8] = b"pgkraft";
pub const NOTE_TYPE: u32 = 0x5047_4b01;
pub const BOOT_NOTE_VERSION: u32 = 1;

/// The descriptor of the pgkraft ELF note: where the runner finds what it
/// needs to enter the image directly at CPL3. All addresses are guest
/// physical = virtual (the image is identity mapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BootNote {
    pub version: u32,
    pub _pad: u32,
    /// 64-bit CPL3 entry; `%rdi` = BootInfo gpa, `%rsp` = `stack_top`.
    pub entry64: u64,
    pub stack_top: u64,
    /// PML4 of the static identity map (2 MiB pages, U/S=1, 0..4 GiB).
    pub pml4: u64,
    /// GDT with the selectors below, `gdt_limit` = size - 1.
    pub gdt: u64,
    pub gdt_limit: u64,
    /// IDT (256 gates; the libOS fills it at CPL3 during init).
    pub idt: u64,
    /// 64-bit TSS; rsp0 already points at the CPL0 stack.
    pub tss: u64,
    /// Where the runner writes the [`BootInfo`] (one page reserved).
    pub boot_info: u64,
    /// `struct pvclock_vcpu_time_info` (32 bytes): MSR_KVM_SYSTEM_TIME_NEW target.
    pub pvclock: u64,
    /// `struct pvclock_wall_clock` (12 bytes): MSR_KVM_WALL_CLOCK_NEW target.
    pub wall_clock: u64,
    /// First byte after the image (page aligned): free RAM starts here.
    pub image_end: u64,
    /// TR's limit for `tss`. It covers the I/O permission bitmap that
    /// follows the 104-byte TSS: PVM ignores RFLAGS.IOPL, so that bitmap is
    /// what lets the CPL3 libOS use its ports at all.
    pub tss_limit: u64,
}

/// GDT selectors (same on both boot paths).
pub mod sel {
    pub const KERNEL_CS: u16 = 0x08;
    pub const KERNEL_DS: u16 = 0x10;
    pub const USER_DS: u16 = 0x18 | 3;
    pub const USER_CS: u16 = 0x20 | 3;
    pub const TSS: u16 = 0x28;
}

/// RFLAGS at CPL3: IOPL=3 so the libOS can use ports, reserved bit 1; IF=0.
pub const USER_RFLAGS: u64 = 0x3002;
/// kvmclock MSRs (KVM paravirt, "new" numbering).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// Who the program is inside the image: one user, not root (PostgreSQL
/// refuses to run as root). The rootfs's /etc/passwd names this uid.
pub mod identity {
    pub const UID: u32 = 1000;
    pub const GID: u32 = 1000;
}

/// Where images are linked: physical = virtual, like a classic kernel.
pub const IMAGE_BASE: u64 = 0x10_0000;

/// Control registers both boot paths leave the vCPU with.
pub mod cr {
    /// PE | MP | ET | NE | WP | PG
    pub const CR0: u64 = 0x8001_0033;
    /// PAE | OSFXSR | OSXMMEXCPT | FSGSBASE (TLS base writes at CPL3 with
    /// `wrfsbase`, no trap to CPL0) | OSXSAVE (AVX state, because PostgreSQL
    /// picks code paths from CPUID).
    pub const CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10) | (1 << 16) | (1 << 18);
    /// LME | LMA
    pub const EFER: u64 = (1 << 8) | (1 << 10);
}
