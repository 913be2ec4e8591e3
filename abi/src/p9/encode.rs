//! Messages to bytes, into a caller's buffer; never past its end.

use super::*;

/// Encodes `m` with `tag` at the start of `buf`; returns its length.
pub fn encode(tag: u16, m: &Msg<'_>, buf: &mut [u8]) -> Result<usize, Error> {
    let mut w = Writer { buf, pos: 0 };
    w.u32(0)?;
    w.u8(m.kind())?;
    w.u16(tag)?;
    encode_body(m, &mut w)?;
    let len = w.pos;
    let size = u32::try_from(len).map_err(|_| Error::NoSpace)?;
    buf[..4].copy_from_slice(&size.to_le_bytes());
    Ok(len)
}

fn encode_body(m: &Msg<'_>, w: &mut Writer<'_>) -> Result<(), Error> {
    match *m {
        Msg::Tversion { msize, version } | Msg::Rversion { msize, version } => {
            w.u32(msize)?;
            w.string(version)
        }
        Msg::Tattach {
            fid,
            afid,
            uname,
            aname,
            n_uname,
        } => {
            w.u32(fid)?;
            w.u32(afid)?;
            w.string(uname)?;
            w.string(aname)?;
            w.u32(n_uname)
        }
        Msg::Rattach { qid }
        | Msg::Rsymlink { qid }
        | Msg::Rmknod { qid }
        | Msg::Rmkdir { qid } => w.qid(&qid),
        Msg::Rlerror { ecode } => w.u32(ecode),
        Msg::Tflush { oldtag } => w.u16(oldtag),
        Msg::Rflush
        | Msg::Rsetattr
        | Msg::Rclunk
        | Msg::Rremove
        | Msg::Runlinkat
        | Msg::Rrenameat
        | Msg::Rfsync
        | Msg::Rlink => Ok(()),
        Msg::Twalk { fid, newfid, names } => {
            // Counted, not taken from `len()`: a hand-made `Names::Wire`
            // may hold fewer names than it says.
            let count = names.iter().count();
            if count > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            w.u32(fid)?;
            w.u32(newfid)?;
            w.u16(count as u16)?;
            for n in names.iter() {
                w.string(n)?;
            }
            Ok(())
        }
        Msg::Rwalk { qids } => {
            let count = qids.iter().count();
            if count > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            w.u16(count as u16)?;
            for q in qids.iter() {
                w.qid(&q)?;
            }
            Ok(())
        }
        Msg::Tgetattr { fid, request_mask } => {
            w.u32(fid)?;
            w.u64(request_mask)
        }
        Msg::Rgetattr { attr: a } => {
            w.u64(a.valid)?;
            w.qid(&a.qid)?;
            w.u32(a.mode)?;
            w.u32(a.uid)?;
            w.u32(a.gid)?;
            for v in [
                a.nlink,
                a.rdev,
                a.size,
                a.blksize,
                a.blocks,
                a.atime_sec,
                a.atime_nsec,
                a.mtime_sec,
                a.mtime_nsec,
                a.ctime_sec,
                a.ctime_nsec,
                a.btime_sec,
                a.btime_nsec,
                a.gen_,
                a.data_version,
            ] {
                w.u64(v)?;
            }
            Ok(())
        }
        Msg::Tsetattr { fid, attr: a } => {
            for v in [fid, a.valid, a.mode, a.uid, a.gid] {
                w.u32(v)?;
            }
            for v in [a.size, a.atime_sec, a.atime_nsec, a.mtime_sec, a.mtime_nsec] {
                w.u64(v)?;
            }
            Ok(())
        }
        Msg::Tlopen { fid, flags } => {
            w.u32(fid)?;
            w.u32(flags)
        }
        Msg::Rlopen { qid, iounit } | Msg::Rlcreate { qid, iounit } => {
            w.qid(&qid)?;
            w.u32(iounit)
        }
        Msg::Tlcreate {
            fid,
            name,
            flags,
            mode,
            gid,
        } => {
            w.u32(fid)?;
            w.string(name)?;
            w.u32(flags)?;
            w.u32(mode)?;
            w.u32(gid)
        }
        Msg::Tsymlink {
            fid,
            name,
            target,
            gid,
        } => {
            w.u32(fid)?;
            w.string(name)?;
            w.string(target)?;
            w.u32(gid)
        }
        Msg::Tmknod {
            dfid,
            name,
            mode,
            major,
            minor,
            gid,
        } => {
            w.u32(dfid)?;
            w.string(name)?;
            w.u32(mode)?;
            w.u32(major)?;
            w.u32(minor)?;
            w.u32(gid)
        }
        Msg::Treadlink { fid }
        | Msg::Tclunk { fid }
        | Msg::Tremove { fid }
        | Msg::Tstatfs { fid } => w.u32(fid),
        Msg::Rreadlink { target } => w.string(target),
        Msg::Tread { fid, offset, count } | Msg::Treaddir { fid, offset, count } => {
            w.u32(fid)?;
            w.u64(offset)?;
            w.u32(count)
        }
        Msg::Rread { data } | Msg::Rreaddir { data } => {
            w.u32(u32::try_from(data.len()).map_err(|_| Error::NoSpace)?)?;
            w.bytes(data)
        }
        Msg::Twrite { fid, offset, data } => {
            w.u32(fid)?;
            w.u64(offset)?;
            w.u32(u32::try_from(data.len()).map_err(|_| Error::NoSpace)?)?;
            w.bytes(data)
        }
        Msg::Rwrite { count } => w.u32(count),
        Msg::Tunlinkat { dfid, name, flags } => {
            w.u32(dfid)?;
            w.string(name)?;
            w.u32(flags)
        }
        Msg::Trenameat {
            olddfid,
            oldname,
            newdfid,
            newname,
        } => {
            w.u32(olddfid)?;
            w.string(oldname)?;
            w.u32(newdfid)?;
            w.string(newname)
        }
        Msg::Tmkdir {
            dfid,
            name,
            mode,
            gid,
        } => {
            w.u32(dfid)?;
            w.string(name)?;
            w.u32(mode)?;
            w.u32(gid)
        }
        Msg::Tfsync { fid, datasync } => {
            w.u32(fid)?;
            w.u32(datasync)
        }
        Msg::Rstatfs { statfs: s } => {
            w.u32(s.kind)?;
            w.u32(s.bsize)?;
            for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.fsid] {
                w.u64(v)?;
            }
            w.u32(s.namelen)
        }
        Msg::Tlink { dfid, fid, name } => {
            w.u32(dfid)?;
            w.u32(fid)?;
            w.string(name)
        }
    }
}

/// Completes an Rread or Rreaddir whose `count` bytes of data the caller
/// already put at `buf[DATA_REPLY_OFFSET..]` (read straight from a file,
/// or by a [`DirentWriter`]): writes the header and count; returns the
/// message's length.
pub fn finish_data_reply(buf: &mut [u8], kind: u8, tag: u16, count: u32) -> Result<usize, Error> {
    let len = DATA_REPLY_OFFSET + count as usize;
    if len > buf.len() {
        return Err(Error::NoSpace);
    }
    let mut w = Writer { buf, pos: 0 };
    w.u32(len as u32)?;
    w.u8(kind)?;
    w.u16(tag)?;
    w.u32(count)?;
    Ok(len)
}
