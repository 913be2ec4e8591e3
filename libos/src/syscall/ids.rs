//! Who the program is. A unikernel has one process; it is not root, because
//! PostgreSQL refuses to run as root.

pub const PID: u64 = 1;
pub const UID: u64 = 1000;
pub const GID: u64 = 1000;
