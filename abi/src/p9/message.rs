//! Every message, as one enum of both directions.

use super::*;

/// Every message this codec knows, T and R. Names and data borrow from the
/// decoded buffer (or, to encode, from the caller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Msg<'a> {
    Tversion {
        msize: u32,
        version: &'a [u8],
    },
    Rversion {
        msize: u32,
        version: &'a [u8],
    },
    Tattach {
        fid: u32,
        afid: u32,
        uname: &'a [u8],
        aname: &'a [u8],
        n_uname: u32,
    },
    Rattach {
        qid: Qid,
    },
    Rlerror {
        ecode: u32,
    },
    Tflush {
        oldtag: u16,
    },
    Rflush,
    Twalk {
        fid: u32,
        newfid: u32,
        names: Names<'a>,
    },
    Rwalk {
        qids: Qids<'a>,
    },
    Tgetattr {
        fid: u32,
        request_mask: u64,
    },
    Rgetattr {
        attr: Attr,
    },
    Tsetattr {
        fid: u32,
        attr: SetAttr,
    },
    Rsetattr,
    Tlopen {
        fid: u32,
        flags: u32,
    },
    Rlopen {
        qid: Qid,
        iounit: u32,
    },
    Tlcreate {
        fid: u32,
        name: &'a [u8],
        flags: u32,
        mode: u32,
        gid: u32,
    },
    Rlcreate {
        qid: Qid,
        iounit: u32,
    },
    Tsymlink {
        fid: u32,
        name: &'a [u8],
        target: &'a [u8],
        gid: u32,
    },
    Rsymlink {
        qid: Qid,
    },
    Tmknod {
        dfid: u32,
        name: &'a [u8],
        mode: u32,
        major: u32,
        minor: u32,
        gid: u32,
    },
    Rmknod {
        qid: Qid,
    },
    Treadlink {
        fid: u32,
    },
    Rreadlink {
        target: &'a [u8],
    },
    Tread {
        fid: u32,
        offset: u64,
        count: u32,
    },
    Rread {
        data: &'a [u8],
    },
    Twrite {
        fid: u32,
        offset: u64,
        data: &'a [u8],
    },
    Rwrite {
        count: u32,
    },
    Tclunk {
        fid: u32,
    },
    Rclunk,
    Tremove {
        fid: u32,
    },
    Rremove,
    Tunlinkat {
        dfid: u32,
        name: &'a [u8],
        flags: u32,
    },
    Runlinkat,
    Trenameat {
        olddfid: u32,
        oldname: &'a [u8],
        newdfid: u32,
        newname: &'a [u8],
    },
    Rrenameat,
    Tmkdir {
        dfid: u32,
        name: &'a [u8],
        mode: u32,
        gid: u32,
    },
    Rmkdir {
        qid: Qid,
    },
    /// `count`: at most this many bytes of dirents.
    Treaddir {
        fid: u32,
        offset: u64,
        count: u32,
    },
    /// The dirents; iterate with [`Dirents`].
    Rreaddir {
        data: &'a [u8],
    },
    /// `datasync` nonzero: `fdatasync`, else `fsync`.
    Tfsync {
        fid: u32,
        datasync: u32,
    },
    Rfsync,
    Tstatfs {
        fid: u32,
    },
    Rstatfs {
        statfs: StatFs,
    },
    Tlink {
        dfid: u32,
        fid: u32,
        name: &'a [u8],
    },
    Rlink,
}

impl Msg<'_> {
    /// The type number on the wire.
    pub fn kind(&self) -> u8 {
        use msg::*;
        match self {
            Msg::Tversion { .. } => TVERSION,
            Msg::Rversion { .. } => RVERSION,
            Msg::Tattach { .. } => TATTACH,
            Msg::Rattach { .. } => RATTACH,
            Msg::Rlerror { .. } => RLERROR,
            Msg::Tflush { .. } => TFLUSH,
            Msg::Rflush => RFLUSH,
            Msg::Twalk { .. } => TWALK,
            Msg::Rwalk { .. } => RWALK,
            Msg::Tgetattr { .. } => TGETATTR,
            Msg::Rgetattr { .. } => RGETATTR,
            Msg::Tsetattr { .. } => TSETATTR,
            Msg::Rsetattr => RSETATTR,
            Msg::Tlopen { .. } => TLOPEN,
            Msg::Rlopen { .. } => RLOPEN,
            Msg::Tlcreate { .. } => TLCREATE,
            Msg::Rlcreate { .. } => RLCREATE,
            Msg::Tsymlink { .. } => TSYMLINK,
            Msg::Rsymlink { .. } => RSYMLINK,
            Msg::Tmknod { .. } => TMKNOD,
            Msg::Rmknod { .. } => RMKNOD,
            Msg::Treadlink { .. } => TREADLINK,
            Msg::Rreadlink { .. } => RREADLINK,
            Msg::Tread { .. } => TREAD,
            Msg::Rread { .. } => RREAD,
            Msg::Twrite { .. } => TWRITE,
            Msg::Rwrite { .. } => RWRITE,
            Msg::Tclunk { .. } => TCLUNK,
            Msg::Rclunk => RCLUNK,
            Msg::Tremove { .. } => TREMOVE,
            Msg::Rremove => RREMOVE,
            Msg::Tunlinkat { .. } => TUNLINKAT,
            Msg::Runlinkat => RUNLINKAT,
            Msg::Trenameat { .. } => TRENAMEAT,
            Msg::Rrenameat => RRENAMEAT,
            Msg::Tmkdir { .. } => TMKDIR,
            Msg::Rmkdir { .. } => RMKDIR,
            Msg::Treaddir { .. } => TREADDIR,
            Msg::Rreaddir { .. } => RREADDIR,
            Msg::Tfsync { .. } => TFSYNC,
            Msg::Rfsync => RFSYNC,
            Msg::Tstatfs { .. } => TSTATFS,
            Msg::Rstatfs { .. } => RSTATFS,
            Msg::Tlink { .. } => TLINK,
            Msg::Rlink => RLINK,
        }
    }
}
