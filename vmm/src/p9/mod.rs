//! The volume's 9P2000.L server: a host directory served at file level to
//! the guest (docs/ARCHITECTURE.md §4, "Volume"). [`Server::handle`] takes
//! one T-message and writes its R-message; the virtio-9p device
//! (`virtio/p9.rs`) carries them. Wire format: `pgkraft_abi::p9`.
//!
//! One session: Tversion negotiates the message size and forgets every
//! fid; Tattach binds a fid to the root. Each fid is one host fd: `O_PATH`
//! once walked, the open file after Tlopen/Tlcreate (`host.rs` says how
//! nothing leaves the root). Requests are answered one at a time, in
//! order, so Tflush has nothing to cancel. Failures are Rlerror with the
//! host's errno; a message the server does not serve (Tauth, Tmknod, the
//! xattr and lock messages, legacy 9P2000 ones) is Rlerror(EOPNOTSUPP);
//! only regular files and directories are ever opened on the host.
//! Nothing the guest sends can make it panic.

mod host;
pub(crate) mod syncer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use pgkraft_abi::p9::{
    self, AT_REMOVEDIR, DATA_REPLY_OFFSET, IOHDRSZ, Msg, NOTAG, Names, Qids, VERSION_9P2000_L, msg,
};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// The largest message offered: a 512 KiB read or write and its header.
/// The guest's Tversion (its buffers) decides below that.
pub(crate) const MAX_MSIZE: u32 = (512 << 10) + IOHDRSZ;

/// Why a volume cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("volume tag {tag:?}: must be 1 to 255 bytes without NUL")]
    Tag { tag: String },
    #[error("volume device: {0}")]
    Device(String),
}

/// What a fid's fd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    /// Walked, not opened: an `O_PATH` fd.
    Path,
    /// Opened for I/O (Tlopen/Tlcreate).
    File,
    /// An opened directory (Treaddir).
    Dir,
}

struct Fid {
    fd: OwnedFd,
    open: Open,
}

pub(crate) struct Server {
    root: OwnedFd,
    root_stat: host::Stat,
    msize: u32,
    fids: HashMap<u32, Fid>,
}

type R<T> = Result<T, Errno>;

impl Server {
    /// Serves `dir`, which must be a directory the runner can open.
    pub(crate) fn new(dir: &Path) -> Result<Server, VolumeError> {
        let err = |e: Errno| VolumeError::Open {
            path: dir.to_path_buf(),
            source: e.into(),
        };
        let root = host::open_root(dir).map_err(err)?;
        let root_stat = rfs::fstat(&root).map_err(err)?;
        Ok(Server {
            root,
            root_stat,
            msize: MAX_MSIZE,
            fids: HashMap::new(),
        })
    }

    /// The message size in force (the largest until Tversion).
    pub(crate) fn msize(&self) -> u32 {
        self.msize
    }

    /// Forgets the session (a device reset): every fid is closed.
    pub(crate) fn reset(&mut self) {
        self.fids.clear();
        self.msize = MAX_MSIZE;
    }

    /// Answers the T-message in `req` into `out`; returns the answer's
    /// length (0 only if `out` cannot hold even an Rlerror).
    pub(crate) fn handle(&mut self, req: &[u8], out: &mut [u8]) -> usize {
        let (tag, result) = match p9::decode(req) {
            Ok((tag, m)) => (tag, self.dispatch(tag, m, out)),
            Err(p9::Error::UnknownType(_)) => (tag_of(req), Err(Errno::OPNOTSUPP)),
            Err(_) => (tag_of(req), Err(Errno::INVAL)),
        };
        match result {
            Ok(n) => n,
            Err(e) => p9::encode(
                tag,
                &Msg::Rlerror {
                    ecode: host::errno(e),
                },
                out,
            )
            .unwrap_or(0),
        }
    }

    /// An fd of `fid`'s file for Tfsync, of its own: a sync may run on
    /// another thread (`syncer`) while the fid is clunked. A walked fid
    /// has no open file to sync: one is opened (an fsync reaches the
    /// inode's data whichever description asks).
    pub(crate) fn sync_target(&self, fid: u32) -> R<OwnedFd> {
        let f = self.fid(fid)?;
        if f.open == Open::Path {
            host::reopen(f.fd.as_fd(), OFlags::RDONLY)
        } else {
            rustix::io::fcntl_dupfd_cloexec(&f.fd, 0)
        }
    }

    fn fid(&self, fid: u32) -> R<&Fid> {
        self.fids.get(&fid).ok_or(Errno::BADF)
    }

    /// A fid's fd, if the fid is a directory's (walked or open).
    fn dir(&self, fid: u32) -> R<&OwnedFd> {
        let f = self.fid(fid)?;
        match f.open {
            Open::File => Err(Errno::NOTDIR),
            _ => Ok(&f.fd),
        }
    }

    /// The most a Tread/Treaddir may move now: the negotiated size and
    /// the reply buffer the guest gave.
    fn data_room(&self, count: u32, out: &[u8]) -> usize {
        let msize_room = self.msize.saturating_sub(IOHDRSZ) as usize;
        (count as usize)
            .min(msize_room)
            .min(out.len().saturating_sub(DATA_REPLY_OFFSET))
    }

    fn dispatch(&mut self, tag: u16, m: Msg<'_>, out: &mut [u8]) -> R<usize> {
        let reply =
            |m: Msg<'_>, out: &mut [u8]| p9::encode(tag, &m, out).map_err(|_| Errno::MSGSIZE);
        match m {
            Msg::Tversion { msize, version } => {
                // A new session: every fid of the old one is gone.
                self.fids.clear();
                self.msize = msize.min(MAX_MSIZE);
                let version = if version == VERSION_9P2000_L {
                    VERSION_9P2000_L
                } else {
                    b"unknown"
                };
                reply(
                    Msg::Rversion {
                        msize: self.msize,
                        version,
                    },
                    out,
                )
            }
            Msg::Tattach { fid, .. } => {
                if self.fids.contains_key(&fid) {
                    return Err(Errno::BADF);
                }
                let fd = host::walk_one(&self.root_stat, self.root.as_fd(), b".")?;
                let qid = host::qid(fd.as_fd())?;
                self.fids.insert(
                    fid,
                    Fid {
                        fd,
                        open: Open::Path,
                    },
                );
                reply(Msg::Rattach { qid }, out)
            }
            Msg::Tflush { .. } => reply(Msg::Rflush, out),
            Msg::Twalk { fid, newfid, names } => self.walk(fid, newfid, names, out, tag),
            Msg::Tgetattr { fid, .. } => {
                let attr = host::attr(self.fid(fid)?.fd.as_fd())?;
                reply(Msg::Rgetattr { attr }, out)
            }
            Msg::Tsetattr { fid, attr } => {
                host::set_attr(self.fid(fid)?.fd.as_fd(), &attr)?;
                reply(Msg::Rsetattr, out)
            }
            Msg::Tlopen { fid, flags } => {
                let f = self.fid(fid)?;
                if f.open != Open::Path {
                    return Err(Errno::BADF);
                }
                let fd = host::reopen(f.fd.as_fd(), host::host_open_flags(flags))?;
                let st = rfs::fstat(&fd)?;
                let open = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    Open::Dir
                } else {
                    Open::File
                };
                self.fids.insert(fid, Fid { fd, open });
                reply(
                    Msg::Rlopen {
                        qid: host::qid_of(&st),
                        iounit: 0,
                    },
                    out,
                )
            }
            Msg::Tlcreate {
                fid,
                name,
                flags,
                mode,
                ..
            } => {
                let fd = host::create(self.dir(fid)?.as_fd(), name, flags, mode)?;
                let qid = host::qid(fd.as_fd())?;
                // The fid now stands for the new, open file.
                self.fids.insert(
                    fid,
                    Fid {
                        fd,
                        open: Open::File,
                    },
                );
                reply(Msg::Rlcreate { qid, iounit: 0 }, out)
            }
            Msg::Tsymlink {
                fid, name, target, ..
            } => {
                let dir = self.dir(fid)?;
                let name = host::check_name(name)?;
                let target = std::ffi::CString::new(target).map_err(|_| Errno::INVAL)?;
                rfs::symlinkat(target.as_c_str(), dir, name.as_c_str())?;
                let st = rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                reply(
                    Msg::Rsymlink {
                        qid: host::qid_of(&st),
                    },
                    out,
                )
            }
            Msg::Treadlink { fid } => {
                let target = host::readlink(self.fid(fid)?.fd.as_fd())?;
                reply(Msg::Rreadlink { target: &target }, out)
            }
            Msg::Tread { fid, offset, count } => {
                let f = self.fid(fid)?;
                if f.open == Open::Path {
                    return Err(Errno::BADF);
                }
                let n = self.data_room(count, out);
                let buf = &mut out[DATA_REPLY_OFFSET..DATA_REPLY_OFFSET + n];
                let got = rustix::io::pread(&f.fd, buf, offset)?;
                p9::finish_data_reply(out, msg::RREAD, tag, got as u32).map_err(|_| Errno::MSGSIZE)
            }
            Msg::Twrite { fid, offset, data } => {
                let f = self.fid(fid)?;
                if f.open != Open::File {
                    return Err(Errno::BADF);
                }
                let n = rustix::io::pwrite(&f.fd, data, offset)?;
                reply(Msg::Rwrite { count: n as u32 }, out)
            }
            Msg::Tclunk { fid } => {
                self.fids.remove(&fid).ok_or(Errno::BADF)?;
                reply(Msg::Rclunk, out)
            }
            Msg::Tremove { fid } => {
                // The fid goes even though the remove fails (9P's rule);
                // a file has no name to remove it by here: clients use
                // Tunlinkat, and fall back to Tremove only without it.
                self.fids.remove(&fid).ok_or(Errno::BADF)?;
                Err(Errno::OPNOTSUPP)
            }
            Msg::Tunlinkat { dfid, name, flags } => {
                let name = host::check_name(name)?;
                let at = if flags & AT_REMOVEDIR != 0 {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rfs::unlinkat(self.dir(dfid)?, name.as_c_str(), at)?;
                reply(Msg::Runlinkat, out)
            }
            Msg::Trenameat {
                olddfid,
                oldname,
                newdfid,
                newname,
            } => {
                let oldname = host::check_name(oldname)?;
                let newname = host::check_name(newname)?;
                rfs::renameat(
                    self.dir(olddfid)?,
                    oldname.as_c_str(),
                    self.dir(newdfid)?,
                    newname.as_c_str(),
                )?;
                reply(Msg::Rrenameat, out)
            }
            Msg::Tmkdir {
                dfid, name, mode, ..
            } => {
                let dir = self.dir(dfid)?;
                let name = host::check_name(name)?;
                rfs::mkdirat(dir, name.as_c_str(), Mode::from_raw_mode(mode & 0o7777))?;
                let st = rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                reply(
                    Msg::Rmkdir {
                        qid: host::qid_of(&st),
                    },
                    out,
                )
            }
            Msg::Treaddir { fid, offset, count } => {
                let f = self.fid(fid)?;
                if f.open != Open::Dir {
                    return Err(Errno::BADF);
                }
                let n = self.data_room(count, out);
                let got = host::read_dir(
                    &f.fd,
                    offset,
                    &mut out[DATA_REPLY_OFFSET..DATA_REPLY_OFFSET + n],
                )?;
                p9::finish_data_reply(out, msg::RREADDIR, tag, got as u32)
                    .map_err(|_| Errno::MSGSIZE)
            }
            Msg::Tfsync { fid, datasync } => {
                sync(&self.sync_target(fid)?, datasync != 0)?;
                reply(Msg::Rfsync, out)
            }
            Msg::Tstatfs { fid } => {
                let statfs = host::statfs(self.fid(fid)?.fd.as_fd())?;
                reply(Msg::Rstatfs { statfs }, out)
            }
            Msg::Tlink { dfid, fid, name } => {
                host::link(self.fid(fid)?.fd.as_fd(), self.dir(dfid)?.as_fd(), name)?;
                reply(Msg::Rlink, out)
            }
            Msg::Tmknod {
                dfid, name, mode, ..
            } => {
                let st = host::mknod(self.dir(dfid)?.as_fd(), name, mode)?;
                reply(
                    Msg::Rmknod {
                        qid: host::qid_of(&st),
                    },
                    out,
                )
            }
            // R-messages sent the wrong way.
            _ => Err(Errno::OPNOTSUPP),
        }
    }

    fn walk(
        &mut self,
        fid: u32,
        newfid: u32,
        names: Names<'_>,
        out: &mut [u8],
        tag: u16,
    ) -> R<usize> {
        if newfid != fid && self.fids.contains_key(&newfid) {
            return Err(Errno::BADF);
        }
        let start = self.fid(fid)?;
        let mut cur = match start.open {
            Open::Path => start.fd.try_clone().map_err(|_| Errno::MFILE)?,
            // An open fid's clone is a walked one again.
            _ => host::reopen(start.fd.as_fd(), OFlags::PATH)?,
        };
        let mut qids = [p9::Qid::default(); p9::MAXWELEM];
        let mut walked = 0;
        for name in names.iter() {
            match host::walk_one(&self.root_stat, cur.as_fd(), name)
                .and_then(|fd| Ok((host::qid(fd.as_fd())?, fd)))
            {
                Ok((qid, fd)) => {
                    qids[walked] = qid;
                    walked += 1;
                    cur = fd;
                }
                // The first name failing is the walk's error; a later
                // one ends it short, and newfid is not made.
                Err(e) if walked == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if walked == names.len() {
            self.fids.insert(
                newfid,
                Fid {
                    fd: cur,
                    open: Open::Path,
                },
            );
        }
        p9::encode(
            tag,
            &Msg::Rwalk {
                qids: Qids::List(&qids[..walked]),
            },
            out,
        )
        .map_err(|_| Errno::MSGSIZE)
    }
}

/// The tag of a message that did not decode, if its header is there.
fn tag_of(req: &[u8]) -> u16 {
    match req.get(5..7) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => NOTAG,
    }
}

/// Tfsync's work: the host's fdatasync or fsync of `fd`.
pub(crate) fn sync(fd: &OwnedFd, datasync: bool) -> R<()> {
    if datasync {
        rfs::fdatasync(fd)
    } else {
        rfs::fsync(fd)
    }
}
