//! Who the program is: not root, because PostgreSQL refuses to run as
//! root. (Process ids are proc's.)

pub const UID: u64 = pgkraft_abi::identity::UID as u64;
pub const GID: u64 = pgkraft_abi::identity::GID as u64;

use super::{Errno, Result};

/// getgroups(2): the one group the user belongs to.
pub fn getgroups(size: u64, list: u64) -> Result {
    if size == 0 {
        return Ok(1);
    }
    if size > i32::MAX as u64 {
        return Err(Errno::EINVAL);
    }
    crate::arch::uaccess::write(list, &(GID as u32))?;
    Ok(1)
}
