//! Waiting for descriptors: epoll, poll/ppoll, select/pselect6, and the two
//! descriptor kinds PostgreSQL's latches wait on: signalfd and eventfd.
//!
//! One process and nothing preemptive means readiness can only change while
//! we sleep through a timeout (a timer signal) or never. So a wait checks
//! every descriptor, and if none is ready sleeps until its timeout or the
//! interval timer, whichever is first, via the runner (no busy loop).

use super::clock::{Timespec, Timeval};
use super::{Errno, Result, signal};
use crate::arch::uaccess;
use crate::fd::{
    self, FileKind, O_CLOEXEC, O_NONBLOCK, O_RDWR, OpenFile, POLLERR, POLLHUP, POLLNVAL,
    POLLRDNORM, POLLWRNORM,
};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const EPOLL_CTL_ADD: u64 = 1;
const EPOLL_CTL_DEL: u64 = 2;
const EPOLL_CTL_MOD: u64 = 3;
const EPOLLEXCLUSIVE: u32 = 1 << 28;
const EPOLLONESHOT: u32 = 1 << 30;
/// The event bits an interest may ask for (the rest are flags).
const EPOLL_EVENTS: u32 = 0x0000_ffff;
const EFD_SEMAPHORE: u64 = 1;

struct Entry {
    fd: u64,
    file: Weak<OpenFile>,
    events: u32,
    data: u64,
    /// EPOLLONESHOT fired: disabled until EPOLL_CTL_MOD.
    disabled: bool,
}

/// An epoll instance's interest list. Entries hold their files weakly: a
/// closed description leaves the set, as on Linux.
#[derive(Default)]
pub struct Interest {
    entries: Mutex<Vec<Entry>>,
}

impl Interest {
    pub fn any_ready(&self) -> bool {
        self.entries.lock().iter().any(|e| {
            !e.disabled
                && e.file
                    .upgrade()
                    .is_some_and(|f| f.poll_events() & (e.events | POLLERR | POLLHUP) != 0)
        })
    }

    /// What waiting on this set means for a client session: whether it
    /// holds a TCP connection, and whether it waits for that connection's
    /// input (`proc::client_wait`).
    fn session(&self) -> (bool, bool) {
        let mut has = false;
        let mut reads = false;
        for e in self.entries.lock().iter().filter(|e| !e.disabled) {
            if e.file.upgrade().is_some_and(|f| f.is_tcp_connection()) {
                has = true;
                reads |= e.events & fd::POLLIN != 0;
            }
        }
        (has, reads)
    }

    /// Up to `max` (events, data) pairs that are ready now.
    fn ready(&self, max: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut entries = self.entries.lock();
        entries.retain(|e| e.file.strong_count() > 0);
        for e in entries.iter_mut() {
            if out.len() == max || e.disabled {
                continue;
            }
            let Some(f) = e.file.upgrade() else { continue };
            let ev = f.poll_events() & (e.events | POLLERR | POLLHUP);
            if ev != 0 {
                out.push((ev, e.data));
                if e.events & EPOLLONESHOT != 0 {
                    e.disabled = true;
                }
            }
        }
        out
    }
}

fn cloexec(flags: u64) -> bool {
    flags & O_CLOEXEC as u64 != 0
}

fn new_fd(kind: FileKind, flags: u64) -> Result {
    let status = O_RDWR | (flags as u32 & O_NONBLOCK);
    Ok(fd::install(OpenFile::new(kind, status), cloexec(flags))? as i64)
}

pub fn epoll_create1(flags: u64) -> Result {
    if flags & !(O_CLOEXEC as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    new_fd(FileKind::Epoll(Interest::default()), flags)
}

pub fn epoll_create(size: u64) -> Result {
    if size as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    epoll_create1(0)
}

/// The kernel's `struct epoll_event`: packed on x86-64.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C, packed)]
struct EpollEvent {
    events: u32,
    data: u64,
}

fn epoll_of(f: &Arc<OpenFile>) -> core::result::Result<&Interest, Errno> {
    match &f.kind {
        FileKind::Epoll(i) => Ok(i),
        _ => Err(Errno::EINVAL),
    }
}

pub fn epoll_ctl(epfd: u64, op: u64, fd: u64, event: u64) -> Result {
    let ep = fd::get(epfd)?;
    let target = fd::get(fd)?;
    let set = epoll_of(&ep)?;
    if Arc::ptr_eq(&ep, &target) {
        return Err(Errno::EINVAL);
    }
    if matches!(target.kind, FileKind::Generated(_))
        || matches!(target.kind, FileKind::Node(ref i) if matches!(i.kind, crate::fs::inode::Kind::File | crate::fs::inode::Kind::Dir))
    {
        // Linux refuses regular files and directories: they are always ready.
        return Err(Errno::EPERM);
    }
    let ev = if op == EPOLL_CTL_DEL {
        EpollEvent::default()
    } else {
        uaccess::read::<EpollEvent>(event)?
    };
    let mut entries = set.entries.lock();
    let at = entries
        .iter()
        .position(|e| e.fd == fd as u32 as u64 && e.file.as_ptr() == Arc::as_ptr(&target));
    match (op, at) {
        (EPOLL_CTL_ADD, Some(_)) => Err(Errno::EEXIST),
        (EPOLL_CTL_ADD, None) => {
            entries.push(Entry {
                fd: fd as u32 as u64,
                file: Arc::downgrade(&target),
                events: ev.events & (EPOLL_EVENTS | EPOLLONESHOT),
                data: ev.data,
                disabled: false,
            });
            Ok(0)
        }
        (EPOLL_CTL_MOD, Some(i)) => {
            if ev.events & EPOLLEXCLUSIVE != 0 {
                return Err(Errno::EINVAL);
            }
            entries[i].events = ev.events & (EPOLL_EVENTS | EPOLLONESHOT);
            entries[i].data = ev.data;
            entries[i].disabled = false;
            Ok(0)
        }
        (EPOLL_CTL_DEL, Some(i)) => {
            entries.remove(i);
            Ok(0)
        }
        (EPOLL_CTL_MOD | EPOLL_CTL_DEL, None) => Err(Errno::ENOENT),
        _ => Err(Errno::EINVAL),
    }
}

/// Wait until `check` finds something (its count), the timeout passes (0),
/// or a signal arrives (EINTR). `timeout_ns` None waits for ever.
pub fn wait_for(timeout_ns: Option<u64>, mut check: impl FnMut() -> Result) -> Result {
    let deadline = timeout_ns.map(|t| crate::time::monotonic_ns().saturating_add(t));
    loop {
        crate::net::stack::poll();
        let n = check()?;
        if n > 0 {
            return Ok(n);
        }
        if signal::interrupt_pending() {
            return Err(Errno::EINTR);
        }
        let now = crate::time::monotonic_ns();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(0);
        }
        // Nothing can become ready before the deadline or the next timer
        // signal; with neither, this process waits for ever, as Linux would.
        let until = match (deadline, signal::next_alarm()) {
            (Some(d), Some(a)) => d.min(a),
            (Some(d), None) => d,
            (None, Some(a)) => a,
            (None, None) => now + 1_000_000_000,
        };
        crate::proc::idle(until.max(now + 1000));
    }
}

/// rt_sigsuspend(2): wait under `set` until a signal is handled; always
/// EINTR.
pub fn rt_sigsuspend(set: u64, size: u64) -> Result {
    if set == 0 {
        return Err(Errno::EFAULT);
    }
    with_mask(set, size, || wait_for(None, || Ok(0)))?;
    Err(Errno::EINTR)
}

fn ms_timeout(ms: i64) -> Option<u64> {
    (ms >= 0).then(|| ms as u64 * 1_000_000)
}

/// Run `f` with the signal mask `sigmask` (a user pointer, 0 = unchanged).
fn with_mask(sigmask: u64, size: u64, f: impl FnOnce() -> Result) -> Result {
    if sigmask == 0 {
        return f();
    }
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let mask: u64 = uaccess::read(sigmask)?;
    let old = signal::swap_mask(mask);
    let r = f();
    // Signals the temporary mask let through are handled under it.
    signal::deliver_pending();
    signal::swap_mask(old);
    r
}

pub fn epoll_pwait(
    epfd: u64,
    events: u64,
    max: u64,
    timeout: u64,
    sigmask: u64,
    size: u64,
) -> Result {
    let ep = fd::get(epfd)?;
    let set = epoll_of(&ep)?;
    let max = max as i32;
    if max <= 0 || max as u64 > (i32::MAX as u64) / 12 {
        return Err(Errno::EINVAL);
    }
    // The array is checked before waiting, as Linux does, but only lent
    // while events are written: signal handlers run inside with_mask, and
    // their system calls may touch it.
    drop(uaccess::slice_mut(events, max as u64 * 12)?);
    let (client, reads) = set.session();
    let _session = crate::proc::client_wait(client, reads);
    with_mask(sigmask, size, || {
        wait_for(ms_timeout(timeout as i32 as i64), || {
            let ready = set.ready(max as usize);
            let mut out = uaccess::slice_mut(events, ready.len() as u64 * 12)?;
            for (i, (ev, data)) in ready.iter().enumerate() {
                let e = EpollEvent {
                    events: *ev,
                    data: *data,
                };
                out[i * 12..i * 12 + 12].copy_from_slice(&e.to_bytes());
            }
            Ok(ready.len() as i64)
        })
    })
}

impl EpollEvent {
    /// The packed layout, built field by field (no references into a
    /// packed struct).
    fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&{ self.events }.to_ne_bytes());
        b[4..].copy_from_slice(&{ self.data }.to_ne_bytes());
        b
    }
}

pub fn epoll_wait(epfd: u64, events: u64, max: u64, timeout: u64) -> Result {
    epoll_pwait(epfd, events, max, timeout, 0, 8)
}

/// The kernel's `struct pollfd`.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn poll_common(fds: u64, n: u64, timeout: Option<u64>) -> Result {
    if n > crate::config::MAX_FDS {
        return Err(Errno::EINVAL);
    }
    let mut list: Vec<PollFd> = (0..n)
        .map(|i| uaccess::read::<PollFd>(fds + i * 8))
        .collect::<core::result::Result<_, _>>()?;
    let (mut client, mut reads) = (false, false);
    for p in list.iter().filter(|p| p.fd >= 0) {
        if fd::get(p.fd as u64).is_ok_and(|f| f.is_tcp_connection()) {
            client = true;
            reads |= p.events as u16 as u32 & fd::POLLIN != 0;
        }
    }
    let _session = crate::proc::client_wait(client, reads);
    let r = wait_for(timeout, || {
        let mut count = 0;
        for p in list.iter_mut() {
            p.revents = 0;
            if p.fd < 0 {
                continue;
            }
            let asked = p.events as u16 as u32;
            let mut ev = match fd::get(p.fd as u64) {
                Ok(f) => f.poll_events(),
                Err(_) => POLLNVAL,
            };
            // POLLRDNORM/POLLWRNORM mirror POLLIN/POLLOUT.
            if ev & fd::POLLIN != 0 {
                ev |= POLLRDNORM;
            }
            if ev & fd::POLLOUT != 0 {
                ev |= POLLWRNORM;
            }
            let ev = ev & (asked | POLLERR | POLLHUP | POLLNVAL);
            p.revents = ev as i16;
            count += i64::from(ev != 0);
        }
        Ok(count)
    });
    for (i, p) in list.iter().enumerate() {
        uaccess::write(fds + i as u64 * 8, p)?;
    }
    r
}

pub fn poll(fds: u64, n: u64, timeout: u64) -> Result {
    poll_common(fds, n, ms_timeout(timeout as i32 as i64))
}

fn timespec_timeout(ts: u64) -> core::result::Result<Option<u64>, Errno> {
    if ts == 0 {
        return Ok(None);
    }
    Ok(Some(uaccess::read::<Timespec>(ts)?.to_ns()?))
}

pub fn ppoll(fds: u64, n: u64, ts: u64, sigmask: u64, size: u64) -> Result {
    let timeout = timespec_timeout(ts)?;
    with_mask(sigmask, size, || poll_common(fds, n, timeout))
}

/// select's three fd_sets; `nfds` bits each, in 64-bit words.
fn select_common(nfds: u64, sets: [u64; 3], timeout: Option<u64>) -> Result {
    if nfds > crate::config::MAX_FDS {
        return Err(Errno::EINVAL);
    }
    let words = nfds.div_ceil(64);
    // Bits at or past nfds in the last word are not part of the set.
    let last_mask = match nfds % 64 {
        0 => u64::MAX,
        r => (1 << r) - 1,
    };
    let read_set = |addr: u64| -> core::result::Result<Vec<u64>, Errno> {
        if addr == 0 {
            return Ok(Vec::new());
        }
        (0..words)
            .map(|w| {
                let bits = uaccess::read::<u64>(addr + w * 8)?;
                Ok(if w + 1 == words {
                    bits & last_mask
                } else {
                    bits
                })
            })
            .collect()
    };
    let want = [read_set(sets[0])?, read_set(sets[1])?, read_set(sets[2])?];
    for fd in 0..nfds {
        let asked = want.iter().any(|s| {
            s.get((fd / 64) as usize)
                .is_some_and(|w| w & (1 << (fd % 64)) != 0)
        });
        if asked && fd::get(fd).is_err() {
            return Err(Errno::EBADF);
        }
    }
    // No descriptor here has exceptional conditions (out-of-band data), so
    // exceptfds is never scanned and comes back empty.
    let mut got = want.each_ref().map(|s| alloc::vec![0u64; s.len()]);
    let wanted = [fd::POLLIN | POLLHUP | POLLERR, fd::POLLOUT | POLLERR];
    let r = wait_for(timeout, || {
        let mut count = 0;
        for ((set, out), wanted) in want.iter().zip(got.iter_mut()).zip(wanted) {
            out.fill(0);
            for (w, bits) in set.iter().enumerate() {
                for b in 0..64 {
                    if bits & (1 << b) == 0 {
                        continue;
                    }
                    let ev = fd::get(w as u64 * 64 + b)
                        .map(|f| f.poll_events())
                        .unwrap_or(0);
                    if ev & wanted != 0 {
                        out[w] |= 1 << b;
                        count += 1;
                    }
                }
            }
        }
        Ok(count)
    });
    if r.is_ok() {
        for (k, addr) in sets.iter().enumerate() {
            for (w, bits) in got[k].iter().enumerate() {
                uaccess::write(addr + w as u64 * 8, bits)?;
            }
        }
    }
    r
}

pub fn select(nfds: u64, r: u64, w: u64, e: u64, tv: u64) -> Result {
    if tv == 0 {
        return select_common(nfds, [r, w, e], None);
    }
    let timeout = uaccess::read::<Timeval>(tv)?.to_ns()?;
    let deadline = crate::time::monotonic_ns().saturating_add(timeout);
    let res = select_common(nfds, [r, w, e], Some(timeout));
    // Linux writes back the time left; callers that loop rely on it.
    let left = deadline.saturating_sub(crate::time::monotonic_ns());
    uaccess::write(tv, &Timeval::from_ns(left))?;
    res
}

pub fn pselect6(nfds: u64, r: u64, w: u64, e: u64, ts: u64, sig: u64) -> Result {
    let timeout = timespec_timeout(ts)?;
    // The sixth argument points at { const sigset_t *ss; size_t ss_len; }.
    let (mask, size) = if sig == 0 {
        (0, 8)
    } else {
        let v: [u64; 2] = uaccess::read(sig)?;
        (v[0], v[1])
    };
    with_mask(mask, size, || select_common(nfds, [r, w, e], timeout))
}

pub fn signalfd4(fd: u64, mask: u64, size: u64, flags: u64) -> Result {
    if size != 8 || flags & !((O_CLOEXEC | O_NONBLOCK) as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    let m: u64 = uaccess::read(mask)?;
    let m = m & !signal::UNBLOCKABLE;
    if fd as i32 != -1 {
        let f = fd::get(fd)?;
        return match &f.kind {
            FileKind::SignalFd(cur) => {
                cur.store(m, Ordering::Relaxed);
                Ok(fd as i64)
            }
            _ => Err(Errno::EINVAL),
        };
    }
    new_fd(FileKind::SignalFd(AtomicU64::new(m)), flags)
}

/// The kernel's `struct signalfd_siginfo` is 128 bytes.
const SIGINFO_SIZE: usize = 128;

pub fn read_signalfd(mask: u64, buf: &mut [u8]) -> core::result::Result<usize, Errno> {
    if buf.len() < SIGINFO_SIZE {
        return Err(Errno::EINVAL);
    }
    let mut done = 0;
    while done + SIGINFO_SIZE <= buf.len() {
        let Some(sig) = signal::signalfd_take(mask) else {
            break;
        };
        let rec = &mut buf[done..done + SIGINFO_SIZE];
        rec.fill(0);
        rec[0..4].copy_from_slice(&(sig as u32).to_ne_bytes());
        rec[8..12].copy_from_slice(&(-6i32).to_ne_bytes()); // SI_TKILL
        rec[12..16].copy_from_slice(&(crate::proc::pid()).to_ne_bytes());
        rec[16..20].copy_from_slice(&(super::ids::UID as u32).to_ne_bytes());
        done += SIGINFO_SIZE;
    }
    // Nothing pending: blocking would never end in one process.
    if done == 0 {
        Err(Errno::EAGAIN)
    } else {
        Ok(done)
    }
}

pub fn eventfd2(initval: u64, flags: u64) -> Result {
    if flags & !((O_CLOEXEC | O_NONBLOCK) as u64 | EFD_SEMAPHORE) != 0 {
        return Err(Errno::EINVAL);
    }
    new_fd(
        FileKind::EventFd {
            count: AtomicU64::new(initval as u32 as u64),
            semaphore: flags & EFD_SEMAPHORE != 0,
        },
        flags,
    )
}

pub fn read_eventfd(
    count: &AtomicU64,
    semaphore: bool,
    buf: &mut [u8],
) -> core::result::Result<usize, Errno> {
    if buf.len() < 8 {
        return Err(Errno::EINVAL);
    }
    let c = count.load(Ordering::Relaxed);
    if c == 0 {
        return Err(Errno::EAGAIN);
    }
    let v = if semaphore { 1 } else { c };
    count.store(c - v, Ordering::Relaxed);
    buf[..8].copy_from_slice(&v.to_ne_bytes());
    Ok(8)
}

pub fn write_eventfd(count: &AtomicU64, buf: &[u8]) -> core::result::Result<usize, Errno> {
    let v = u64::from_ne_bytes(
        buf.get(..8)
            .ok_or(Errno::EINVAL)?
            .try_into()
            .map_err(|_| Errno::EINVAL)?,
    );
    if v == u64::MAX {
        return Err(Errno::EINVAL);
    }
    let c = count.load(Ordering::Relaxed);
    if c.checked_add(v).is_none_or(|s| s > u64::MAX - 1) {
        return Err(Errno::EAGAIN);
    }
    count.store(c + v, Ordering::Relaxed);
    Ok(8)
}
