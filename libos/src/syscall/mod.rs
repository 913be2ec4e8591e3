//! The Linux x86-64 system-call ABI, reached by a function call from musl.
//!
//! Each handler takes the raw argument registers and returns
//! `Result<i64, Errno>`; the entry point turns errors into `-errno` as the
//! kernel does. An unimplemented call answers ENOSYS and is reported once.

pub mod clock;
pub mod console;
pub mod fs;
pub mod futex;
pub mod ids;
mod iovec;
pub mod misc;
pub mod mm;
mod names;
pub mod net;
pub mod poll;
#[cfg(not(test))]
pub(crate) mod process;
pub mod shm;
pub mod signal;

use core::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const EINTR: Errno = Errno(4);
    pub const EIO: Errno = Errno(5);
    pub const ENOENT: Errno = Errno(2);
    pub const ESRCH: Errno = Errno(3);
    pub const ENXIO: Errno = Errno(6);
    pub const E2BIG: Errno = Errno(7);
    pub const ENOEXEC: Errno = Errno(8);
    pub const EBADF: Errno = Errno(9);
    pub const ECHILD: Errno = Errno(10);
    pub const EAGAIN: Errno = Errno(11);
    pub const ENOMEM: Errno = Errno(12);
    pub const EACCES: Errno = Errno(13);
    pub const EFAULT: Errno = Errno(14);
    pub const EBUSY: Errno = Errno(16);
    pub const EEXIST: Errno = Errno(17);
    pub const ENODEV: Errno = Errno(19);
    pub const ENOTDIR: Errno = Errno(20);
    pub const EISDIR: Errno = Errno(21);
    pub const EINVAL: Errno = Errno(22);
    pub const EMFILE: Errno = Errno(24);
    pub const ENOTTY: Errno = Errno(25);
    pub const EFBIG: Errno = Errno(27);
    pub const ENOSPC: Errno = Errno(28);
    pub const ESPIPE: Errno = Errno(29);
    pub const EPIPE: Errno = Errno(32);
    pub const ERANGE: Errno = Errno(34);
    pub const ENAMETOOLONG: Errno = Errno(36);
    pub const ENOSYS: Errno = Errno(38);
    pub const ENOTEMPTY: Errno = Errno(39);
    pub const ELOOP: Errno = Errno(40);
    pub const EOVERFLOW: Errno = Errno(75);
    pub const EOPNOTSUPP: Errno = Errno(95);
    pub const EXDEV: Errno = Errno(18);
    pub const ETIMEDOUT: Errno = Errno(110);
    pub const EDOM: Errno = Errno(33);
    pub const ENOTSOCK: Errno = Errno(88);
    pub const ENOPROTOOPT: Errno = Errno(92);
    pub const EPROTONOSUPPORT: Errno = Errno(93);
    pub const ESOCKTNOSUPPORT: Errno = Errno(94);
    pub const EAFNOSUPPORT: Errno = Errno(97);
    pub const EADDRINUSE: Errno = Errno(98);
    pub const EADDRNOTAVAIL: Errno = Errno(99);
    pub const ENETUNREACH: Errno = Errno(101);
    pub const ECONNRESET: Errno = Errno(104);
    pub const EISCONN: Errno = Errno(106);
    pub const ENOTCONN: Errno = Errno(107);
    pub const ECONNREFUSED: Errno = Errno(111);
    pub const EALREADY: Errno = Errno(114);
    pub const EINPROGRESS: Errno = Errno(115);
}

pub type Result = core::result::Result<i64, Errno>;

/// Linux system-call numbers we implement (x86-64).
mod nr {
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const OPEN: i64 = 2;
    pub const CLOSE: i64 = 3;
    pub const STAT: i64 = 4;
    pub const FSTAT: i64 = 5;
    pub const LSTAT: i64 = 6;
    pub const LSEEK: i64 = 8;
    pub const PREAD64: i64 = 17;
    pub const PWRITE64: i64 = 18;
    pub const ACCESS: i64 = 21;
    pub const PIPE: i64 = 22;
    pub const DUP: i64 = 32;
    pub const DUP2: i64 = 33;
    pub const FLOCK: i64 = 73;
    pub const FSYNC: i64 = 74;
    pub const FDATASYNC: i64 = 75;
    pub const TRUNCATE: i64 = 76;
    pub const FTRUNCATE: i64 = 77;
    pub const GETDENTS: i64 = 78;
    pub const GETCWD: i64 = 79;
    pub const CHDIR: i64 = 80;
    pub const FCHDIR: i64 = 81;
    pub const RENAME: i64 = 82;
    pub const MKDIR: i64 = 83;
    pub const RMDIR: i64 = 84;
    pub const CREAT: i64 = 85;
    pub const LINK: i64 = 86;
    pub const UNLINK: i64 = 87;
    pub const SYMLINK: i64 = 88;
    pub const READLINK: i64 = 89;
    pub const CHMOD: i64 = 90;
    pub const FCHMOD: i64 = 91;
    pub const CHOWN: i64 = 92;
    pub const FCHOWN: i64 = 93;
    pub const LCHOWN: i64 = 94;
    pub const UMASK: i64 = 95;
    pub const UTIME: i64 = 132;
    pub const MKNOD: i64 = 133;
    pub const STATFS: i64 = 137;
    pub const FSTATFS: i64 = 138;
    pub const SYNC: i64 = 162;
    pub const GETDENTS64: i64 = 217;
    pub const FADVISE64: i64 = 221;
    pub const UTIMES: i64 = 235;
    pub const OPENAT: i64 = 257;
    pub const MKDIRAT: i64 = 258;
    pub const MKNODAT: i64 = 259;
    pub const FCHOWNAT: i64 = 260;
    pub const FUTIMESAT: i64 = 261;
    pub const NEWFSTATAT: i64 = 262;
    pub const UNLINKAT: i64 = 263;
    pub const RENAMEAT: i64 = 264;
    pub const LINKAT: i64 = 265;
    pub const SYMLINKAT: i64 = 266;
    pub const READLINKAT: i64 = 267;
    pub const FCHMODAT: i64 = 268;
    pub const FACCESSAT: i64 = 269;
    pub const SYNC_FILE_RANGE: i64 = 277;
    pub const UTIMENSAT: i64 = 280;
    pub const FALLOCATE: i64 = 285;
    pub const DUP3: i64 = 292;
    pub const PIPE2: i64 = 293;
    pub const PREADV: i64 = 295;
    pub const PWRITEV: i64 = 296;
    pub const SYNCFS: i64 = 306;
    pub const RENAMEAT2: i64 = 316;
    pub const PREADV2: i64 = 327;
    pub const PWRITEV2: i64 = 328;
    pub const STATX: i64 = 332;
    pub const CLOSE_RANGE: i64 = 436;
    pub const FACCESSAT2: i64 = 439;
    pub const MMAP: i64 = 9;
    pub const MPROTECT: i64 = 10;
    pub const MUNMAP: i64 = 11;
    pub const BRK: i64 = 12;
    pub const RT_SIGACTION: i64 = 13;
    pub const RT_SIGPROCMASK: i64 = 14;
    pub const IOCTL: i64 = 16;
    pub const READV: i64 = 19;
    pub const WRITEV: i64 = 20;
    pub const SCHED_YIELD: i64 = 24;
    pub const MREMAP: i64 = 25;
    pub const MADVISE: i64 = 28;
    pub const NANOSLEEP: i64 = 35;
    pub const GETPID: i64 = 39;
    pub const EXIT: i64 = 60;
    pub const FORK: i64 = 57;
    pub const VFORK: i64 = 58;
    pub const EXECVE: i64 = 59;
    pub const WAIT4: i64 = 61;
    pub const RT_SIGSUSPEND: i64 = 130;
    pub const KILL: i64 = 62;
    pub const UNAME: i64 = 63;
    pub const FCNTL: i64 = 72;
    pub const GETTIMEOFDAY: i64 = 96;
    pub const GETRLIMIT: i64 = 97;
    pub const GETRUSAGE: i64 = 98;
    pub const SYSINFO: i64 = 99;
    pub const GETUID: i64 = 102;
    pub const GETGID: i64 = 104;
    pub const GETEUID: i64 = 107;
    pub const GETEGID: i64 = 108;
    pub const GETPPID: i64 = 110;
    pub const SIGALTSTACK: i64 = 131;
    pub const ARCH_PRCTL: i64 = 158;
    pub const GETTID: i64 = 186;
    pub const TIME: i64 = 201;
    pub const SET_TID_ADDRESS: i64 = 218;
    pub const CLOCK_GETTIME: i64 = 228;
    pub const CLOCK_GETRES: i64 = 229;
    pub const CLOCK_NANOSLEEP: i64 = 230;
    pub const EXIT_GROUP: i64 = 231;
    pub const TGKILL: i64 = 234;
    pub const TKILL: i64 = 200;
    pub const SET_ROBUST_LIST: i64 = 273;
    pub const PRLIMIT64: i64 = 302;
    pub const GETRANDOM: i64 = 318;
    pub const POLL: i64 = 7;
    pub const SELECT: i64 = 23;
    pub const SHMGET: i64 = 29;
    pub const SHMAT: i64 = 30;
    pub const SHMCTL: i64 = 31;
    pub const GETITIMER: i64 = 36;
    pub const ALARM: i64 = 37;
    pub const SETITIMER: i64 = 38;
    pub const SHMDT: i64 = 67;
    pub const SETRLIMIT: i64 = 160;
    pub const RT_SIGPENDING: i64 = 127;
    pub const FUTEX: i64 = 202;
    pub const EPOLL_CREATE: i64 = 213;
    pub const EPOLL_WAIT: i64 = 232;
    pub const EPOLL_CTL: i64 = 233;
    pub const PSELECT6: i64 = 270;
    pub const PPOLL: i64 = 271;
    pub const EPOLL_PWAIT: i64 = 281;
    pub const SIGNALFD: i64 = 282;
    pub const EVENTFD: i64 = 284;
    pub const SIGNALFD4: i64 = 289;
    pub const EVENTFD2: i64 = 290;
    pub const EPOLL_CREATE1: i64 = 291;
    pub const GETGROUPS: i64 = 115;
    pub const SETSID: i64 = 112;
    pub const GETPGRP: i64 = 111;
    pub const GETPGID: i64 = 121;
    pub const GETSID: i64 = 124;
    pub const PRCTL: i64 = 157;
    pub const SETPGID: i64 = 109;
    pub const SOCKET: i64 = 41;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const RECVFROM: i64 = 45;
    pub const SENDMSG: i64 = 46;
    pub const RECVMSG: i64 = 47;
    pub const SHUTDOWN: i64 = 48;
    pub const BIND: i64 = 49;
    pub const LISTEN: i64 = 50;
    pub const GETSOCKNAME: i64 = 51;
    pub const GETPEERNAME: i64 = 52;
    pub const SOCKETPAIR: i64 = 53;
    pub const SETSOCKOPT: i64 = 54;
    pub const GETSOCKOPT: i64 = 55;
    pub const ACCEPT4: i64 = 288;
}

fn dispatch(n: i64, a: [u64; 6]) -> Result {
    match n {
        nr::READ => fs::read(a[0], a[1], a[2]),
        nr::WRITE => fs::write(a[0], a[1], a[2]),
        nr::READV => fs::readv(a[0], a[1], a[2]),
        nr::WRITEV => fs::writev(a[0], a[1], a[2]),
        nr::PREAD64 => fs::pread64(a[0], a[1], a[2], a[3]),
        nr::PWRITE64 => fs::pwrite64(a[0], a[1], a[2], a[3]),
        nr::PREADV => fs::preadv(a[0], a[1], a[2], a[3]),
        nr::PWRITEV => fs::pwritev(a[0], a[1], a[2], a[3]),
        nr::PREADV2 => fs::preadv2(a[0], a[1], a[2], a[3], a[5]),
        nr::PWRITEV2 => fs::pwritev2(a[0], a[1], a[2], a[3], a[5]),
        nr::OPEN => fs::open(a[0], a[1], a[2]),
        nr::OPENAT => fs::openat(a[0], a[1], a[2], a[3]),
        nr::CREAT => fs::creat(a[0], a[1]),
        nr::CLOSE => fs::close(a[0]),
        nr::CLOSE_RANGE => fs::close_range(a[0], a[1], a[2]),
        nr::DUP => fs::dup(a[0]),
        nr::DUP2 => fs::dup2(a[0], a[1]),
        nr::DUP3 => fs::dup3(a[0], a[1], a[2]),
        nr::PIPE => fs::pipe(a[0]),
        nr::PIPE2 => fs::pipe2(a[0], a[1]),
        nr::LSEEK => fs::lseek(a[0], a[1], a[2]),
        nr::IOCTL => fs::ioctl(a[0], a[1], a[2]),
        nr::FCNTL => fs::fcntl(a[0], a[1], a[2]),
        nr::FLOCK => fs::flock(a[0], a[1]),
        nr::STAT => fs::stat(a[0], a[1]),
        nr::LSTAT => fs::lstat(a[0], a[1]),
        nr::FSTAT => fs::fstat(a[0], a[1]),
        nr::NEWFSTATAT => fs::newfstatat(a[0], a[1], a[2], a[3]),
        nr::STATX => fs::statx(a[0], a[1], a[2], a[3], a[4]),
        nr::STATFS => fs::statfs(a[0], a[1]),
        nr::FSTATFS => fs::fstatfs(a[0], a[1]),
        nr::ACCESS => fs::access(a[0], a[1]),
        nr::FACCESSAT => fs::faccessat(a[0], a[1], a[2]),
        nr::FACCESSAT2 => fs::faccessat2(a[0], a[1], a[2], a[3]),
        nr::FSYNC => fs::fsync(a[0], false),
        nr::FDATASYNC => fs::fsync(a[0], true),
        nr::SYNCFS => fs::syncfs(a[0]),
        nr::SYNC => Ok(0),
        nr::SYNC_FILE_RANGE => fs::sync_file_range(a[0], a[1], a[2], a[3]),
        nr::FADVISE64 => fs::fadvise64(a[0], a[1], a[2], a[3]),
        nr::FALLOCATE => fs::fallocate(a[0], a[1], a[2], a[3]),
        nr::TRUNCATE => fs::truncate(a[0], a[1]),
        nr::FTRUNCATE => fs::ftruncate(a[0], a[1]),
        nr::GETDENTS => fs::getdents(a[0], a[1], a[2], false),
        nr::GETDENTS64 => fs::getdents(a[0], a[1], a[2], true),
        nr::GETCWD => fs::getcwd(a[0], a[1]),
        nr::CHDIR => fs::chdir(a[0]),
        nr::FCHDIR => fs::fchdir(a[0]),
        nr::MKDIR => fs::mkdir(a[0], a[1]),
        nr::MKDIRAT => fs::mkdirat(a[0], a[1], a[2]),
        nr::MKNOD => fs::mknodat(-100i64 as u64, a[0], a[1]),
        nr::MKNODAT => fs::mknodat(a[0], a[1], a[2]),
        nr::RMDIR => fs::rmdir(a[0]),
        nr::UNLINK => fs::unlink(a[0]),
        nr::UNLINKAT => fs::unlinkat(a[0], a[1], a[2]),
        nr::RENAME => fs::rename(a[0], a[1]),
        nr::RENAMEAT => fs::renameat2(a[0], a[1], a[2], a[3], 0),
        nr::RENAMEAT2 => fs::renameat2(a[0], a[1], a[2], a[3], a[4]),
        nr::LINK => fs::link(a[0], a[1]),
        nr::LINKAT => fs::linkat(a[0], a[1], a[2], a[3], a[4]),
        nr::SYMLINK => fs::symlink(a[0], a[1]),
        nr::SYMLINKAT => fs::symlinkat(a[0], a[1], a[2]),
        nr::READLINK => fs::readlink(a[0], a[1], a[2]),
        nr::READLINKAT => fs::readlinkat(a[0], a[1], a[2], a[3]),
        nr::CHMOD => fs::chmod(a[0], a[1]),
        nr::FCHMOD => fs::fchmod(a[0], a[1]),
        nr::FCHMODAT => fs::fchmodat(a[0], a[1], a[2]),
        nr::CHOWN => fs::chown(a[0], true),
        nr::LCHOWN => fs::chown(a[0], false),
        nr::FCHOWN => fs::fchown(a[0]),
        nr::FCHOWNAT => fs::fchownat(a[0], a[1], a[4]),
        nr::UMASK => fs::umask(a[0]),
        nr::UTIME => fs::utime(a[0], a[1]),
        nr::UTIMES => fs::futimesat(-100i64 as u64, a[0], a[1]),
        nr::FUTIMESAT => fs::futimesat(a[0], a[1], a[2]),
        nr::UTIMENSAT => fs::utimensat(a[0], a[1], a[2], a[3]),
        nr::MMAP => mm::mmap(a[0], a[1], a[2], a[3], a[4] as i64, a[5]),
        nr::MUNMAP => mm::munmap(a[0], a[1]),
        nr::MREMAP => mm::mremap(a[0], a[1], a[2], a[3], a[4]),
        nr::MPROTECT => mm::mprotect(a[0]),
        nr::MADVISE => mm::madvise(a[0], a[1], a[2]),
        #[cfg(not(test))]
        nr::BRK => process::brk(a[0]),
        nr::RT_SIGACTION => signal::rt_sigaction(a[0], a[1], a[2], a[3]),
        nr::RT_SIGPROCMASK => signal::rt_sigprocmask(a[0], a[1], a[2], a[3]),
        nr::SIGALTSTACK => Ok(0),
        nr::KILL => signal::kill(a[0] as i64, a[1]),
        nr::TKILL => signal::kill(crate::proc::pid() as i64, a[1]),
        nr::TGKILL => signal::kill(a[0] as i64, a[2]),
        nr::SCHED_YIELD => Ok(0),
        nr::NANOSLEEP => clock::nanosleep(a[0], a[1]),
        nr::CLOCK_NANOSLEEP => clock::clock_nanosleep(a[0], a[1], a[2], a[3]),
        nr::CLOCK_GETTIME => clock::clock_gettime(a[0], a[1]),
        nr::CLOCK_GETRES => clock::clock_getres(a[0], a[1]),
        nr::GETTIMEOFDAY => clock::gettimeofday(a[0]),
        nr::TIME => clock::time(a[0]),
        nr::GETPID | nr::GETTID => Ok(crate::proc::pid() as i64),
        #[cfg(not(test))]
        nr::GETPPID => Ok(crate::proc::ppid() as i64),
        nr::GETUID | nr::GETEUID => Ok(ids::UID as i64),
        nr::GETGID | nr::GETEGID => Ok(ids::GID as i64),
        nr::SET_TID_ADDRESS => Ok(crate::proc::pid() as i64),
        nr::SET_ROBUST_LIST => Ok(0),
        nr::ARCH_PRCTL => misc::arch_prctl(a[0], a[1]),
        nr::UNAME => misc::uname(a[0]),
        nr::GETRANDOM => misc::getrandom(a[0], a[1], a[2]),
        nr::GETRLIMIT => misc::prlimit(0, a[0], 0, a[1]),
        nr::PRLIMIT64 => misc::prlimit(a[0], a[1], a[2], a[3]),
        nr::SYSINFO => misc::sysinfo(a[0]),
        #[cfg(not(test))]
        nr::EXIT | nr::EXIT_GROUP => crate::proc::exit(a[0]),
        #[cfg(not(test))]
        nr::EXECVE => process::execve(a[0], a[1], a[2]),
        #[cfg(not(test))]
        nr::WAIT4 => process::wait4(a[0], a[1], a[2], a[3]),
        #[cfg(not(test))]
        nr::GETRUSAGE => process::getrusage(a[0], a[1]),
        nr::FORK | nr::VFORK => {
            // One address space: a copy of the caller cannot live at the
            // caller's addresses. posix_spawn (clone as vfork) works.
            report_unimplemented(n);
            Err(Errno::ENOSYS)
        }
        nr::SHMGET => shm::shmget(a[0], a[1], a[2]),
        nr::SHMAT => shm::shmat(a[0], a[1], a[2]),
        nr::SHMDT => shm::shmdt(a[0]),
        nr::SHMCTL => shm::shmctl(a[0], a[1], a[2]),
        nr::FUTEX => futex::futex(a[0], a[1], a[2], a[3]),
        nr::GETITIMER => signal::getitimer(a[0], a[1]),
        nr::SETITIMER => signal::setitimer(a[0], a[1], a[2]),
        nr::ALARM => signal::alarm(a[0]),
        nr::RT_SIGPENDING => signal::rt_sigpending(a[0], a[1]),
        nr::RT_SIGSUSPEND => poll::rt_sigsuspend(a[0], a[1]),
        nr::EPOLL_CREATE => poll::epoll_create(a[0]),
        nr::EPOLL_CREATE1 => poll::epoll_create1(a[0]),
        nr::EPOLL_CTL => poll::epoll_ctl(a[0], a[1], a[2], a[3]),
        nr::EPOLL_WAIT => poll::epoll_wait(a[0], a[1], a[2], a[3]),
        nr::EPOLL_PWAIT => poll::epoll_pwait(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::POLL => poll::poll(a[0], a[1], a[2]),
        nr::PPOLL => poll::ppoll(a[0], a[1], a[2], a[3], a[4]),
        nr::SELECT => poll::select(a[0], a[1], a[2], a[3], a[4]),
        nr::PSELECT6 => poll::pselect6(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::SIGNALFD => poll::signalfd4(a[0], a[1], a[2], 0),
        nr::SIGNALFD4 => poll::signalfd4(a[0], a[1], a[2], a[3]),
        nr::EVENTFD => poll::eventfd2(a[0], 0),
        nr::EVENTFD2 => poll::eventfd2(a[0], a[1]),
        nr::SETRLIMIT => misc::prlimit(0, a[0], a[1], 0),
        nr::GETGROUPS => ids::getgroups(a[0], a[1]),
        #[cfg(not(test))]
        nr::GETPGRP => crate::proc::getpgid(0),
        #[cfg(not(test))]
        nr::GETPGID => crate::proc::getpgid(a[0]),
        #[cfg(not(test))]
        nr::GETSID => crate::proc::getsid(a[0]),
        #[cfg(not(test))]
        nr::SETSID => crate::proc::setsid(),
        #[cfg(not(test))]
        nr::SETPGID => crate::proc::setpgid(a[0], a[1]),
        nr::PRCTL => misc::prctl(a[0], a[1]),
        nr::SOCKET => net::socket(a[0], a[1], a[2]),
        nr::SOCKETPAIR => net::socketpair(a[0], a[1], a[2], a[3]),
        nr::BIND => net::bind(a[0], a[1], a[2]),
        nr::LISTEN => net::listen(a[0], a[1]),
        nr::ACCEPT => net::accept4(a[0], a[1], a[2], 0),
        nr::ACCEPT4 => net::accept4(a[0], a[1], a[2], a[3]),
        nr::CONNECT => net::connect(a[0], a[1], a[2]),
        nr::SHUTDOWN => net::shutdown(a[0], a[1]),
        nr::GETSOCKNAME => net::getsockname(a[0], a[1], a[2]),
        nr::GETPEERNAME => net::getpeername(a[0], a[1], a[2]),
        nr::SENDTO => net::sendto(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::RECVFROM => net::recvfrom(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::SENDMSG => net::sendmsg(a[0], a[1], a[2]),
        nr::RECVMSG => net::recvmsg(a[0], a[1], a[2]),
        nr::SETSOCKOPT => net::setsockopt(a[0], a[1], a[2], a[3], a[4]),
        nr::GETSOCKOPT => net::getsockopt(a[0], a[1], a[2], a[3], a[4]),
        _ => {
            report_unimplemented(n);
            Err(Errno::ENOSYS)
        }
    }
}

/// One bit per system-call number already reported.
static REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn report_unimplemented(n: i64) {
    let Ok(idx) = usize::try_from(n) else {
        crate::log!("libos: unimplemented system call {n} (ENOSYS)");
        return;
    };
    let (word, bit) = (idx / 64, 1u64 << (idx % 64));
    if word < REPORTED.len() && REPORTED[word].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    match names::NAMES.get(idx).filter(|s| !s.is_empty()) {
        Some(name) => {
            crate::log!("libos: unimplemented system call {name} ({n}): returning ENOSYS")
        }
        None => crate::log!("libos: unknown system call number {n}: returning ENOSYS"),
    }
}

/// musl's system-call layer calls this (see libos/musl/patches).
#[cfg(not(test))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn __pgkraft_syscall(
    n: i64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    a6: u64,
) -> i64 {
    crate::net::tx_deadline();
    crate::proc::on_syscall();
    let r = dispatch(n, [a1, a2, a3, a4, a5, a6]);
    // The kernel delivers signals on its way back to user space.
    signal::deliver_pending();
    #[cfg(feature = "trace-syscalls")]
    {
        let name = usize::try_from(n)
            .ok()
            .and_then(|i| names::NAMES.get(i))
            .copied()
            .unwrap_or("?");
        // Microseconds since boot first: gaps between calls show where the
        // program computes (or faults pages in).
        let us = crate::time::monotonic_ns() / 1000;
        crate::log!("libos: {us} {name}({a1:#x}, {a2:#x}, {a3:#x}, {a4:#x}) = {r:?}");
    }
    match r {
        Ok(v) => v,
        Err(e) => -e.0,
    }
}
