//! Userfaultfd over guest RAM: the runner itself fills each page the first
//! time anything touches it (the guest, KVM on its behalf, or the runner),
//! and so learns exactly which pages a resume touches ([`super::workingset`]).
//!
//! The kernel's UAPI (`linux/userfaultfd.h`: its structs, constants and
//! ioctl numbers) comes from `linux-raw-sys`, whose bindings are generated
//! ahead of time, rather than from the `userfaultfd` crate, which runs
//! bindgen at build time and so needs libclang on every machine that builds
//! pgkraft.
//!
//! Why each block is sound is written next to it; the fd is the only
//! resource, and every ioctl is checked by the kernel against the range
//! registered on it.
//!
//! docs/ARCHITECTURE.md §4.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use linux_raw_sys::general::{
    UFFD_API, UFFD_EVENT_PAGEFAULT, UFFDIO_REGISTER_MODE_MISSING, USERFAULTFD_IOC, uffd_msg,
    uffdio_api as UffdioApi, uffdio_copy as UffdioCopy, uffdio_range as UffdioRange,
    uffdio_register as UffdioRegister, uffdio_zeropage as UffdioZeropage,
};
use linux_raw_sys::ioctl::{
    UFFDIO_API, UFFDIO_COPY, UFFDIO_REGISTER, UFFDIO_WAKE, UFFDIO_ZEROPAGE,
};

const PAGE: u64 = 4096;
/// `_IO(USERFAULTFD_IOC, 0x00)` on /dev/userfaultfd (linux-raw-sys has the
/// type byte but not this request).
const USERFAULTFD_IOC_NEW: libc::c_ulong =
    vmm_sys_util::ioctl::ioctl_expr(vmm_sys_util::ioctl::_IOC_NONE, USERFAULTFD_IOC, 0x00, 0);

/// Guest RAM (one region) registered for missing-page faults.
pub(crate) struct Uffd {
    fd: OwnedFd,
    host: u64,
    len: u64,
}

fn ioctl<T>(fd: &OwnedFd, req: u32, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request used here takes a pointer to the `#[repr(C)]`
    // UAPI struct it is paired with (linux-raw-sys's, generated from the
    // kernel's header; the request number encodes its size), which lives
    // for the call; the kernel reads and writes only that struct.
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
            api: UFFD_API.into(),
            features: 0,
            ioctls: 0,
        };
        ioctl(&fd, UFFDIO_API, &mut api)?;
        let mut reg = UffdioRegister {
            range: UffdioRange { start: host, len },
            mode: UFFDIO_REGISTER_MODE_MISSING.into(),
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
        // SAFETY: `uffd_msg` is integers and a union of integers: all zeros
        // is a valid value.
        let mut msgs: [uffd_msg; 16] = unsafe { std::mem::zeroed() };
        // SAFETY: reads at most the size of `msgs` into it; any bit pattern
        // is a valid `uffd_msg`.
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
        let n = n as usize / std::mem::size_of::<uffd_msg>();
        for m in &msgs[..n] {
            if u32::from(m.event) != UFFD_EVENT_PAGEFAULT {
                continue;
            }
            // SAFETY: a UFFD_EVENT_PAGEFAULT message carries the `pagefault`
            // member of the union (a copy is read: the struct is packed).
            let address = unsafe { m.arg.pagefault.address };
            if address >= self.host {
                let gpa = (address - self.host) & !(PAGE - 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers and sizes `linux/userfaultfd.h` gives on x86-64.
    #[test]
    fn uapi_matches_the_kernel_header() {
        assert_eq!(USERFAULTFD_IOC_NEW, 0xAA00);
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xC020_AA04);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(std::mem::size_of::<uffd_msg>(), 32);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
    }
}
