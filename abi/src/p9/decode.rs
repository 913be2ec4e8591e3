//! Bytes to messages: every field's length checked, names and data borrowed.

use super::*;

/// A message's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The whole message's length, header included.
    pub size: u32,
    pub kind: u8,
    pub tag: u16,
}

/// Reads the header and checks the size against the input, without
/// decoding the body: a server answers an unknown type with the tag.
pub fn decode_header(buf: &[u8]) -> Result<Header, Error> {
    let mut r = Reader::new(buf);
    let size = r.u32()?;
    let kind = r.u8()?;
    let tag = r.u16()?;
    if (size as usize) < HEADER_LEN || size as usize > buf.len() {
        return Err(Error::BadSize);
    }
    Ok(Header { size, kind, tag })
}

/// Decodes one message from the start of `buf` (bytes after its size are
/// ignored). Returns its tag and body.
pub fn decode(buf: &[u8]) -> Result<(u16, Msg<'_>), Error> {
    let h = decode_header(buf)?;
    let mut r = Reader::new(&buf[HEADER_LEN..h.size as usize]);
    let m = decode_body(h.kind, &mut r)?;
    if !r.is_empty() {
        return Err(Error::Trailing);
    }
    Ok((h.tag, m))
}

fn decode_body<'a>(kind: u8, r: &mut Reader<'a>) -> Result<Msg<'a>, Error> {
    use msg::*;
    Ok(match kind {
        TVERSION => Msg::Tversion {
            msize: r.u32()?,
            version: r.string()?,
        },
        RVERSION => Msg::Rversion {
            msize: r.u32()?,
            version: r.string()?,
        },
        TATTACH => Msg::Tattach {
            fid: r.u32()?,
            afid: r.u32()?,
            uname: r.string()?,
            aname: r.string()?,
            n_uname: r.u32()?,
        },
        RATTACH => Msg::Rattach { qid: r.qid()? },
        RLERROR => Msg::Rlerror { ecode: r.u32()? },
        TFLUSH => Msg::Tflush { oldtag: r.u16()? },
        RFLUSH => Msg::Rflush,
        TWALK => {
            let fid = r.u32()?;
            let newfid = r.u32()?;
            let count = r.u16()?;
            if count as usize > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            let start = r.rest();
            for _ in 0..count {
                r.string()?;
            }
            let bytes = &start[..start.len() - r.rest().len()];
            Msg::Twalk {
                fid,
                newfid,
                names: Names::Wire { count, bytes },
            }
        }
        RWALK => {
            let count = r.u16()?;
            if count as usize > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            let bytes = r.take(count as usize * 13)?;
            Msg::Rwalk {
                qids: Qids::Wire { count, bytes },
            }
        }
        TGETATTR => Msg::Tgetattr {
            fid: r.u32()?,
            request_mask: r.u64()?,
        },
        RGETATTR => Msg::Rgetattr {
            attr: Attr {
                valid: r.u64()?,
                qid: r.qid()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                nlink: r.u64()?,
                rdev: r.u64()?,
                size: r.u64()?,
                blksize: r.u64()?,
                blocks: r.u64()?,
                atime_sec: r.u64()?,
                atime_nsec: r.u64()?,
                mtime_sec: r.u64()?,
                mtime_nsec: r.u64()?,
                ctime_sec: r.u64()?,
                ctime_nsec: r.u64()?,
                btime_sec: r.u64()?,
                btime_nsec: r.u64()?,
                gen_: r.u64()?,
                data_version: r.u64()?,
            },
        },
        TSETATTR => Msg::Tsetattr {
            fid: r.u32()?,
            attr: SetAttr {
                valid: r.u32()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                size: r.u64()?,
                atime_sec: r.u64()?,
                atime_nsec: r.u64()?,
                mtime_sec: r.u64()?,
                mtime_nsec: r.u64()?,
            },
        },
        RSETATTR => Msg::Rsetattr,
        TLOPEN => Msg::Tlopen {
            fid: r.u32()?,
            flags: r.u32()?,
        },
        RLOPEN => Msg::Rlopen {
            qid: r.qid()?,
            iounit: r.u32()?,
        },
        TLCREATE => Msg::Tlcreate {
            fid: r.u32()?,
            name: r.string()?,
            flags: r.u32()?,
            mode: r.u32()?,
            gid: r.u32()?,
        },
        RLCREATE => Msg::Rlcreate {
            qid: r.qid()?,
            iounit: r.u32()?,
        },
        TSYMLINK => Msg::Tsymlink {
            fid: r.u32()?,
            name: r.string()?,
            target: r.string()?,
            gid: r.u32()?,
        },
        RSYMLINK => Msg::Rsymlink { qid: r.qid()? },
        TMKNOD => Msg::Tmknod {
            dfid: r.u32()?,
            name: r.string()?,
            mode: r.u32()?,
            major: r.u32()?,
            minor: r.u32()?,
            gid: r.u32()?,
        },
        RMKNOD => Msg::Rmknod { qid: r.qid()? },
        TREADLINK => Msg::Treadlink { fid: r.u32()? },
        RREADLINK => Msg::Rreadlink {
            target: r.string()?,
        },
        TREAD => Msg::Tread {
            fid: r.u32()?,
            offset: r.u64()?,
            count: r.u32()?,
        },
        RREAD => {
            let n = r.u32()?;
            Msg::Rread {
                data: r.take(n as usize)?,
            }
        }
        TWRITE => {
            let fid = r.u32()?;
            let offset = r.u64()?;
            let n = r.u32()?;
            Msg::Twrite {
                fid,
                offset,
                data: r.take(n as usize)?,
            }
        }
        RWRITE => Msg::Rwrite { count: r.u32()? },
        TCLUNK => Msg::Tclunk { fid: r.u32()? },
        RCLUNK => Msg::Rclunk,
        TREMOVE => Msg::Tremove { fid: r.u32()? },
        RREMOVE => Msg::Rremove,
        TUNLINKAT => Msg::Tunlinkat {
            dfid: r.u32()?,
            name: r.string()?,
            flags: r.u32()?,
        },
        RUNLINKAT => Msg::Runlinkat,
        TRENAMEAT => Msg::Trenameat {
            olddfid: r.u32()?,
            oldname: r.string()?,
            newdfid: r.u32()?,
            newname: r.string()?,
        },
        RRENAMEAT => Msg::Rrenameat,
        TMKDIR => Msg::Tmkdir {
            dfid: r.u32()?,
            name: r.string()?,
            mode: r.u32()?,
            gid: r.u32()?,
        },
        RMKDIR => Msg::Rmkdir { qid: r.qid()? },
        TREADDIR => Msg::Treaddir {
            fid: r.u32()?,
            offset: r.u64()?,
            count: r.u32()?,
        },
        RREADDIR => {
            let n = r.u32()?;
            Msg::Rreaddir {
                data: r.take(n as usize)?,
            }
        }
        TFSYNC => Msg::Tfsync {
            fid: r.u32()?,
            datasync: r.u32()?,
        },
        RFSYNC => Msg::Rfsync,
        TSTATFS => Msg::Tstatfs { fid: r.u32()? },
        RSTATFS => Msg::Rstatfs {
            statfs: StatFs {
                kind: r.u32()?,
                bsize: r.u32()?,
                blocks: r.u64()?,
                bfree: r.u64()?,
                bavail: r.u64()?,
                files: r.u64()?,
                ffree: r.u64()?,
                fsid: r.u64()?,
                namelen: r.u32()?,
            },
        },
        TLINK => Msg::Tlink {
            dfid: r.u32()?,
            fid: r.u32()?,
            name: r.string()?,
        },
        RLINK => Msg::Rlink,
        other => return Err(Error::UnknownType(other)),
    })
}
