//! Userfaultfd over guest RAM: the runner itself fills each page the first
//! time anything touches it (the guest, KVM on its behalf, or the runner),
//! and so learns exactly which pages a resume touches ([`super::workingset`]).
//!
//! Hand-written against the kernel's UAPI (`linux/userfaultfd.h`) rather
//! than with the `userfaultfd` crate: that crate generates its bindings with
//! bindgen at build time, which needs libclang on every machine that builds
//! pgkraft; the four ioctls used here are a few constants and plain structs.
//!
//! Why each block is sound is written next to it; the fd is the only
//! resource, and every ioctl is checked by the kernel against the range
//! registered on it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const PAGE: u64 = 4096;
const UFFD_API: u64 = 0xAA;
// _IOWR(0xAA, nr, struct): the sizes are those of the structs below.
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
const UFFDIO_WAKE: libc::c_ulong = 0x8010_AA02;
// _IO(0xAA, 0x00) on /dev/userfaultfd.
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xAA00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// `struct uffd_msg` with the page-fault member of its union.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UffdMsg {
    event: u8,
    _reserved1: u8,
    _reserved2: u16,
    _reserved3: u32,
    _flags: u64,
    address: u64,
    _feat: u64,
}

/// Guest RAM (one region) registered for missing-page faults.
pub(crate) struct Uffd {
    fd: OwnedFd,
    host: u64,
    len: u64,
}

fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request used here takes a pointer to the `#[repr(C)]`
    // struct it is paired with (same size as the kernel's), which lives for
    // the call; the kernel reads and writes only that struct.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open() -> io::Result<OwnedFd> {
    // Faults raised inside the kernel (KVM faulting guest pages in) need a
    // userfaultfd without UFFD_USER_MODE_ONLY: root, or /dev/userfaultfd.
    // SAFETY: a plain syscall with integer flags; a non-negative result is
    // a new fd this process owns.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    let fd = if fd >= 0 {
        fd as i32
    } else {
        let dev = std::fs::File::open("/dev/userfaultfd")?;
        // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns
        // a new fd.
        let fd = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                USERFAULTFD_IOC_NEW as _,
                libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        fd
    };
    // SAFETY: `fd` was just returned to us by the kernel and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Uffd {
    /// Registers all of `mem` (one RAM region, not yet populated) so that
    /// each first touch of a page waits for [`Uffd::fill`].
    pub(crate) fn register(mem: &GuestMemoryMmap) -> io::Result<Uffd> {
        let mut regions = mem.iter();
        let (Some(region), None) = (regions.next(), regions.next()) else {
            return Err(io::Error::other("guest RAM is not one region"));
        };
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| io::Error::other(e.to_string()))? as u64;
        let len = region.len();
        let fd = open()?;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: 0,
            ioctls: 0,
        };
        ioctl(&fd, UFFDIO_API, &mut api)?;
        let mut reg = UffdioRegister {
            range: UffdioRange { start: host, len },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        ioctl(&fd, UFFDIO_REGISTER, &mut reg)?;
        Ok(Uffd { fd, host, len })
    }

    /// Waits until a fault arrives or `stop` becomes readable; appends the
    /// guest addresses of the pages first touched to `out`. Returns false
    /// once `stop` fired.
    pub(crate) fn wait(&self, stop: &impl AsRawFd, out: &mut Vec<u64>) -> io::Result<bool> {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(true)
            } else {
                Err(e)
            };
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
        let mut msgs = [UffdMsg::default(); 16];
        // SAFETY: reads at most the size of `msgs` into it; any bit pattern
        // is a valid `UffdMsg`.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                std::mem::size_of_val(&msgs),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(true),
                _ => Err(e),
            };
        }
        let n = n as usize / std::mem::size_of::<UffdMsg>();
        for m in &msgs[..n] {
            if m.event == UFFD_EVENT_PAGEFAULT && m.address >= self.host {
                let gpa = (m.address - self.host) & !(PAGE - 1);
                if gpa < self.len {
                    out.push(gpa);
                }
            }
        }
        Ok(true)
    }

    /// Installs `bytes` as guest page `gpa` and wakes whoever waits on it.
    /// A page that is already there (two faults on one page) is left as is.
    pub(crate) fn fill(&self, gpa: u64, bytes: &[u8; PAGE as usize]) -> io::Result<()> {
        let mut copy = UffdioCopy {
            dst: self.host + gpa,
            src: bytes.as_ptr() as u64,
            len: PAGE,
            mode: 0,
            copy: 0,
        };
        // The kernel refuses a destination outside the registered range,
        // so a stale `gpa` cannot write anywhere else.
        self.retry(gpa, || ioctl(&self.fd, UFFDIO_COPY, &mut copy))
    }

    /// Installs a zero page at `gpa`.
    pub(crate) fn zero(&self, gpa: u64) -> io::Result<()> {
        let mut z = UffdioZeropage {
            range: UffdioRange {
                start: self.host + gpa,
                len: PAGE,
            },
            mode: 0,
            zeropage: 0,
        };
        self.retry(gpa, || ioctl(&self.fd, UFFDIO_ZEROPAGE, &mut z))
    }

    /// EAGAIN: the mapping changed under the ioctl, try again. EEXIST: the
    /// page is there already (a second fault on it), so only wake waiters.
    fn retry(&self, gpa: u64, mut f: impl FnMut() -> io::Result<()>) -> io::Result<()> {
        loop {
            match f() {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    let mut range = UffdioRange {
                        start: self.host + gpa,
                        len: PAGE,
                    };
                    return ioctl(&self.fd, UFFDIO_WAKE, &mut range);
                }
                r => return r,
            }
        }
    }
}
