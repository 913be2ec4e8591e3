//! open(2) flags to Tlopen flags. 9P2000.L's `P9_DOTL_*` values are Linux
//! x86-64's own numbers, so the mapping is a choice of bits, not a
//! translation: what the host's open must see passes, what our side
//! already did or what would break the host's file is left out.

use pgkraft_abi::p9::open;

/// Passed to the host: the access mode, O_APPEND (the host appends),
/// O_SYNC and O_DSYNC (each write reaches the host's disk before Rwrite,
/// which is what they promise), O_DIRECTORY and O_LARGEFILE.
///
/// Left out: O_CREAT, O_EXCL and O_TRUNC (namei made, checked or
/// truncated the file already: Tlcreate, a walk, Tsetattr), O_NOFOLLOW
/// (the fid names the resolved file), O_DIRECT (the host's alignment rules
/// would refuse the guest's unaligned buffers), O_NONBLOCK, O_NOATIME
/// (EPERM on the host for a file it does not own), O_CLOEXEC, O_NOCTTY,
/// O_PATH (an O_PATH open is never sent).
const PASSED: u32 =
    open::ACCMODE | open::APPEND | open::DSYNC | open::SYNC | open::DIRECTORY | open::LARGEFILE;

pub fn lopen_flags(flags: u32) -> u32 {
    flags & PASSED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::*;

    #[test]
    fn access_mode_sync_and_append_pass_creation_flags_do_not() {
        assert_eq!(lopen_flags(O_RDONLY), open::RDONLY);
        assert_eq!(lopen_flags(O_RDWR | O_CREAT | O_EXCL | O_TRUNC), open::RDWR);
        assert_eq!(
            lopen_flags(O_WRONLY | O_APPEND),
            open::WRONLY | open::APPEND
        );
        // Linux's O_SYNC is __O_SYNC | O_DSYNC: both bits reach the host.
        const O_DSYNC: u32 = 0o10000;
        const O_SYNC: u32 = 0o4010000;
        assert_eq!(lopen_flags(O_RDWR | O_DSYNC), open::RDWR | open::DSYNC);
        assert_eq!(
            lopen_flags(O_RDWR | O_SYNC),
            open::RDWR | open::DSYNC | open::SYNC
        );
        assert_eq!(
            lopen_flags(O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW),
            open::DIRECTORY
        );
        assert_eq!(
            lopen_flags(O_RDWR | O_DIRECT | O_NONBLOCK | O_NOATIME),
            open::RDWR
        );
        assert_eq!(lopen_flags(O_RDONLY | O_LARGEFILE), open::LARGEFILE);
    }
}
