//! `struct iovec` arrays as readv/writev/sendmsg/recvmsg take them, read
//! and checked once for every caller (fs.rs, net.rs).

use super::Errno;
use crate::arch::uaccess;
use alloc::vec::Vec;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Linux's limit on an iovec array's length.
pub const UIO_MAXIOV: u64 = 1024;

#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Iovec {
    pub base: u64,
    pub len: u64,
}

/// The `count` entries at `iov`: EINVAL for more than [`UIO_MAXIOV`] or
/// lengths whose sum passes `ssize_t`, EFAULT for an array out of reach,
/// as Linux checks before moving a byte.
pub fn read(iov: u64, count: u64) -> Result<Vec<Iovec>, Errno> {
    if count > UIO_MAXIOV {
        return Err(Errno::EINVAL);
    }
    let v: Vec<Iovec> = (0..count)
        .map(|i| uaccess::read::<Iovec>(iov + i * 16))
        .collect::<Result<_, _>>()?;
    let mut sum: u64 = 0;
    for e in &v {
        sum = sum.checked_add(e.len).ok_or(Errno::EINVAL)?;
        if sum > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
    }
    Ok(v)
}
