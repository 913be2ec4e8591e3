//! Who the program is. A unikernel has one process; it is not root, because
//! PostgreSQL refuses to run as root.

pub const PID: u64 = 1;
pub const UID: u64 = pgkraft_abi::identity::UID as u64;
pub const GID: u64 = pgkraft_abi::identity::GID as u64;
