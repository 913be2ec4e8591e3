//! The tap backend (`--tap NAME`): the guest's link is a Linux tap device,
//! existing or created on open. Frames pass through unchanged both ways;
//! whatever is on the host's side of the tap (an address, a bridge,
//! routing) is the user's to set up.
//!
//! Bounded like the user backend: at most [`super::link::QUEUE_FRAMES`] frames wait
//! for the guest and as many for the tap. While the guest's queue is full
//! the tap is not read (the kernel's own queue holds or drops what comes),
//! and the tap fd leaves the epoll set behind [`NetBackend::wait_fd`], so
//! a guest that posts no buffers does not make the VM's wait spin.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::link::Link;
use super::{NetBackend, NetError};

/// The clone device every tap is opened through.
pub(crate) const TUN_PATH: &str = "/dev/net/tun";
/// Longest interface name Linux takes (IFNAMSIZ less the NUL).
pub const MAX_NAME: usize = 15;
/// Largest frame read from the tap (a tap hands over whole frames; one
/// longer than the MTU is cut to this and the guest drops it).
const READ_BUF: usize = 64 << 10;
const TAP_TOKEN: u64 = 0;

/// Whether `name` can name a tap device: 1 to [`MAX_NAME`] bytes, none of
/// them `/`, whitespace or control characters, and not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(NetError::TapName {
            name: name.to_string(),
        })
    }
}

pub(crate) struct TapNet {
    tap: File,
    name: String,
    epoll: Epoll,
    /// The events the tap is registered for in `epoll` now.
    interest: EventSet,
    /// The bounded frame queues both ways; its `dropped` counts frames
    /// the tap refused (an error other than "try again") or too long.
    link: Link,
    buf: Vec<u8>,
}

impl TapNet {
    /// Attaches to tap `name` (created if missing, which needs
    /// CAP_NET_ADMIN).
    pub(crate) fn open(name: &str) -> Result<TapNet, NetError> {
        TapNet::open_at(Path::new(TUN_PATH), name)
    }

    /// [`Self::open`] through the clone device at `tun` (tests).
    pub(crate) fn open_at(tun: &Path, name: &str) -> Result<TapNet, NetError> {
        check_name(name)?;
        let tap = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(tun)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => NetError::TapNoDevice {
                    path: tun.display().to_string(),
                },
                io::ErrorKind::PermissionDenied => NetError::TapPermission {
                    name: name.to_string(),
                    source,
                },
                _ => NetError::Tap {
                    name: name.to_string(),
                    source,
                },
            })?;
        sys::set_tap(&tap, name).map_err(|source| match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NetError::TapPermission {
                name: name.to_string(),
                source,
            },
            Some(libc::EBUSY) => NetError::TapBusy {
                name: name.to_string(),
            },
            Some(libc::EINVAL) => NetError::TapNotTap {
                name: name.to_string(),
            },
            _ => NetError::Tap {
                name: name.to_string(),
                source,
            },
        })?;
        let epoll = Epoll::new().map_err(NetError::Setup)?;
        epoll
            .ctl(
                ControlOperation::Add,
                tap.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TAP_TOKEN),
            )
            .map_err(NetError::Setup)?;
        log::info!("vmm: net: guest link on tap device {name}");
        Ok(TapNet {
            tap,
            name: name.to_string(),
            epoll,
            interest: EventSet::IN,
            link: Link::default(),
            buf: vec![0; READ_BUF],
        })
    }

    /// Writes queued guest frames while the tap takes them.
    fn flush(&mut self) -> bool {
        let mut progress = false;
        while let Some(frame) = self.link.from_guest.front() {
            match self.tap.write(frame) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.link.dropped += 1;
                    log::debug!("vmm: net: tap {}: frame not sent: {e}", self.name);
                }
            }
            self.link.from_guest.pop_front();
            progress = true;
        }
        progress
    }

    /// Reads frames from the tap while the guest's queue has room.
    fn fill(&mut self) -> bool {
        let mut progress = false;
        while self.link.can_fill() {
            match self.tap.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.link.to_guest.push_back(self.buf[..n].to_vec());
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("vmm: net: tap {}: read: {e}", self.name);
                    }
                    break;
                }
            }
        }
        progress
    }

    /// Registers the tap for what it is waited on for now: input while
    /// the guest's queue has room, output while guest frames wait.
    fn update_interest(&mut self) {
        let mut want = EventSet::empty();
        if self.link.can_fill() {
            want |= EventSet::IN;
        }
        if !self.link.from_guest.is_empty() {
            want |= EventSet::OUT;
        }
        if want != self.interest {
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                self.tap.as_raw_fd(),
                EpollEvent::new(want, TAP_TOKEN),
            );
            self.interest = want;
        }
    }
}

impl NetBackend for TapNet {
    fn can_send(&self) -> bool {
        self.link.can_send()
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        self.link.push_from_guest(frame)
    }

    fn can_recv(&self) -> bool {
        !self.link.to_guest.is_empty()
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.link.recv()
    }

    fn poll(&mut self) -> bool {
        let mut progress = self.flush();
        progress |= self.fill();
        self.update_interest();
        progress
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn poll_delay(&mut self) -> Option<Duration> {
        None
    }
}

/// The one ioctl: TUNSETIFF binds an open /dev/net/tun to a tap device.
#[allow(unsafe_code)]
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in
    /// the union that makes the struct 40 bytes on 64-bit Linux.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }

    /// Makes `tun` (an open /dev/net/tun) the tap device `name`, without
    /// the packet-information header. `name` is at most 15 bytes (checked
    /// by the caller; checked again here).
    pub(super) fn set_tap(tun: &File, name: &str) -> io::Result<()> {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        let bytes = name.as_bytes();
        if bytes.len() >= libc::IFNAMSIZ {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        req.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `tun` is an open fd for the call's duration; TUNSETIFF
        // reads and writes one `struct ifreq`, which `req` is laid out as
        // (NUL-terminated name, flags, padding to its full 40 bytes) and
        // which lives, exclusively borrowed, across the call.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    const _: () = assert!(std::mem::size_of::<IfReq>() == 40);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_linux_takes_and_those_it_does_not() {
        for good in ["pgk0", "tap0", "a", "a-b_c.d", "fifteen-bytes-x"] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "sixteen-bytes-xy",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "tab\t",
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(matches!(e, NetError::TapName { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("15"), "{e}");
        }
    }

    #[test]
    fn a_missing_clone_device_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = TapNet::open_at(&dir.path().join("tun"), "pgk0")
            .err()
            .expect("no clone device");
        assert!(matches!(e, NetError::TapNoDevice { .. }), "{e}");
        assert!(e.to_string().contains("modprobe tun"), "{e}");
    }

    #[test]
    fn a_long_name_is_refused_before_anything_is_opened() {
        let e = TapNet::open_at(Path::new("/nonexistent"), "a-name-too-long-for-linux")
            .err()
            .expect("refused");
        assert!(matches!(e, NetError::TapName { .. }), "{e}");
    }
}
