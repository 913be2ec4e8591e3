//! A 9P2000.L session over the device: version and attach, fids, and one
//! method per message the volume uses, each a round trip (encode into a
//! slot of the device, send, decode the answer) with the shared codec
//! `pgkraft_abi::p9`. The methods are made with the volume's lock held
//! and keep the CPU until their answer; [`fsync`] is the one that lets
//! other processes run while it waits, and so takes no `Client`.

use super::device::{self, DeviceError, Wait};
use alloc::vec::Vec;
use pgkraft_abi::p9::{self, Dirents, Msg, Names, Qid};

/// What a request can end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P9Error {
    /// The server's Rlerror: a Linux errno.
    Remote(u32),
    Device(DeviceError),
    /// Our message did not encode, or the answer did not decode.
    Codec(p9::Error),
    /// An answer of another type (or tag) than the request's.
    Unexpected(u8),
}

impl P9Error {
    /// The errno a system call reports: the server's own, else EIO.
    pub fn errno(self) -> crate::syscall::Errno {
        match self {
            P9Error::Remote(e) if e != 0 => crate::syscall::Errno(e as i64),
            other => {
                crate::log!("libos: 9p: {other:?}");
                crate::syscall::Errno::EIO
            }
        }
    }
}

impl From<DeviceError> for P9Error {
    fn from(e: DeviceError) -> Self {
        P9Error::Device(e)
    }
}

impl From<p9::Error> for P9Error {
    fn from(e: p9::Error) -> Self {
        P9Error::Codec(e)
    }
}

type R<T> = Result<T, P9Error>;

pub struct Client {
    msize: u32,
    next_fid: u32,
    free_fids: Vec<u32>,
}

impl Client {
    /// Tversion: msize is the smaller of the device's buffer and the
    /// server's answer.
    pub fn new() -> R<Client> {
        let mut c = Client {
            msize: device::buf_bytes() as u32,
            next_fid: 0,
            free_fids: Vec::new(),
        };
        let ask = c.msize;
        let msize = exchange(
            Some(p9::NOTAG),
            c.msize as usize,
            Wait::Poll,
            &Msg::Tversion {
                msize: ask,
                version: p9::VERSION_9P2000_L,
            },
            |m| match m {
                Msg::Rversion { msize, version } if version == p9::VERSION_9P2000_L => Some(msize),
                _ => None,
            },
        )?;
        c.msize = msize.min(ask);
        Ok(c)
    }

    /// The most data one Tread or Twrite moves.
    pub fn io_max(&self) -> usize {
        (self.msize - p9::IOHDRSZ) as usize
    }

    pub fn alloc_fid(&mut self) -> u32 {
        self.free_fids.pop().unwrap_or_else(|| {
            self.next_fid += 1;
            self.next_fid
        })
    }

    fn call<T>(&mut self, t: &Msg, take: impl FnOnce(Msg) -> Option<T>) -> R<T> {
        exchange(None, self.msize as usize, Wait::Poll, t, take)
    }

    /// Tattach as `uname`/`n_uname` to the export `aname`; `fid` becomes
    /// the root.
    pub fn attach(&mut self, fid: u32, n_uname: u32) -> R<Qid> {
        self.call(
            &Msg::Tattach {
                fid,
                afid: p9::NOFID,
                uname: b"",
                aname: b"",
                n_uname,
            },
            |m| match m {
                Msg::Rattach { qid } => Some(qid),
                _ => None,
            },
        )
    }

    /// Twalk of one name (or none: a clone of `fid`) to `newfid`.
    pub fn walk(&mut self, fid: u32, newfid: u32, name: Option<&[u8]>) -> R<Option<Qid>> {
        let one = name.map(|n| [n]);
        let names: &[&[u8]] = match &one {
            Some(a) => a,
            None => &[],
        };
        let qid = self.call(
            &Msg::Twalk {
                fid,
                newfid,
                names: Names::List(names),
            },
            |m| match m {
                Msg::Rwalk { qids } => Some(qids.get(0)),
                _ => None,
            },
        )?;
        // A walk of one name that answers no qid did not reach it (and
        // made no newfid).
        if name.is_some() && qid.is_none() {
            return Err(P9Error::Remote(2));
        }
        Ok(qid)
    }

    pub fn getattr(&mut self, fid: u32) -> R<p9::Attr> {
        self.call(
            &Msg::Tgetattr {
                fid,
                request_mask: p9::getattr::BASIC,
            },
            |m| match m {
                Msg::Rgetattr { attr } => Some(attr),
                _ => None,
            },
        )
    }

    pub fn setattr(&mut self, fid: u32, attr: p9::SetAttr) -> R<()> {
        self.call(&Msg::Tsetattr { fid, attr }, |m| {
            matches!(m, Msg::Rsetattr).then_some(())
        })
    }

    /// Tlopen: `fid` becomes an open file; returns the iounit.
    pub fn lopen(&mut self, fid: u32, flags: u32) -> R<u32> {
        self.call(&Msg::Tlopen { fid, flags }, |m| match m {
            Msg::Rlopen { iounit, .. } => Some(iounit),
            _ => None,
        })
    }

    /// Tlcreate: `fid` (a directory) becomes the new file, open.
    pub fn lcreate(&mut self, fid: u32, name: &[u8], flags: u32, mode: u32, gid: u32) -> R<Qid> {
        self.call(
            &Msg::Tlcreate {
                fid,
                name,
                flags,
                mode,
                gid,
            },
            |m| match m {
                Msg::Rlcreate { qid, .. } => Some(qid),
                _ => None,
            },
        )
    }

    /// Tread into `buf` (at most [`Self::io_max`] bytes of it).
    pub fn read(&mut self, fid: u32, offset: u64, buf: &mut [u8]) -> R<usize> {
        let count = buf.len().min(self.io_max()) as u32;
        self.call(&Msg::Tread { fid, offset, count }, |m| match m {
            Msg::Rread { data } if data.len() <= buf.len() => {
                buf[..data.len()].copy_from_slice(data);
                Some(data.len())
            }
            _ => None,
        })
    }

    /// Twrite of `data` (at most [`Self::io_max`] bytes of it).
    pub fn write(&mut self, fid: u32, offset: u64, data: &[u8]) -> R<usize> {
        let data = &data[..data.len().min(self.io_max())];
        self.call(&Msg::Twrite { fid, offset, data }, |m| match m {
            Msg::Rwrite { count } => Some(count as usize),
            _ => None,
        })
    }

    pub fn mkdir(&mut self, dfid: u32, name: &[u8], mode: u32, gid: u32) -> R<Qid> {
        self.call(
            &Msg::Tmkdir {
                dfid,
                name,
                mode,
                gid,
            },
            |m| match m {
                Msg::Rmkdir { qid } => Some(qid),
                _ => None,
            },
        )
    }

    pub fn symlink(&mut self, fid: u32, name: &[u8], target: &[u8], gid: u32) -> R<Qid> {
        self.call(
            &Msg::Tsymlink {
                fid,
                name,
                target,
                gid,
            },
            |m| match m {
                Msg::Rsymlink { qid } => Some(qid),
                _ => None,
            },
        )
    }

    pub fn link(&mut self, dfid: u32, fid: u32, name: &[u8]) -> R<()> {
        self.call(&Msg::Tlink { dfid, fid, name }, |m| {
            matches!(m, Msg::Rlink).then_some(())
        })
    }

    pub fn readlink(&mut self, fid: u32) -> R<Vec<u8>> {
        self.call(&Msg::Treadlink { fid }, |m| match m {
            Msg::Rreadlink { target } => Some(target.to_vec()),
            _ => None,
        })
    }

    pub fn unlinkat(&mut self, dfid: u32, name: &[u8], flags: u32) -> R<()> {
        self.call(&Msg::Tunlinkat { dfid, name, flags }, |m| {
            matches!(m, Msg::Runlinkat).then_some(())
        })
    }

    pub fn renameat(
        &mut self,
        olddfid: u32,
        oldname: &[u8],
        newdfid: u32,
        newname: &[u8],
    ) -> R<()> {
        self.call(
            &Msg::Trenameat {
                olddfid,
                oldname,
                newdfid,
                newname,
            },
            |m| matches!(m, Msg::Rrenameat).then_some(()),
        )
    }

    /// Treaddir from `offset`, at most `count` bytes of entries: `each`
    /// sees them in order and says whether it took each one; it stops at
    /// the first it did not take.
    pub fn readdir(
        &mut self,
        fid: u32,
        offset: u64,
        count: u32,
        each: &mut dyn FnMut(&p9::Dirent) -> bool,
    ) -> R<()> {
        let count = count.min(self.io_max() as u32);
        self.call(&Msg::Treaddir { fid, offset, count }, |m| {
            let Msg::Rreaddir { data } = m else {
                return None;
            };
            for d in Dirents::new(data) {
                let Ok(d) = d else { break };
                if !each(&d) {
                    break;
                }
            }
            Some(())
        })
    }

    pub fn statfs(&mut self, fid: u32) -> R<p9::StatFs> {
        self.call(&Msg::Tstatfs { fid }, |m| match m {
            Msg::Rstatfs { statfs } => Some(statfs),
            _ => None,
        })
    }

    /// Tclunk: the fid is free again whatever the server says (9P: a
    /// clunk always releases the fid).
    pub fn clunk(&mut self, fid: u32) {
        let r = self.call(&Msg::Tclunk { fid }, |m| {
            matches!(m, Msg::Rclunk).then_some(())
        });
        if let Err(e) = r {
            crate::log!("libos: 9p: clunk of fid {fid}: {e:?}");
        }
        self.free_fids.push(fid);
    }

    /// A fid handed out but never made (its walk or open failed).
    pub fn forget_fid(&mut self, fid: u32) {
        self.free_fids.push(fid);
    }
}

/// One round trip of `t` (under the slot's own tag unless `tag` says
/// another) in a slot of at least `bytes`; `take` picks the answer.
fn exchange<T>(
    tag: Option<u16>,
    bytes: usize,
    wait: Wait,
    t: &Msg,
    take: impl FnOnce(Msg) -> Option<T>,
) -> R<T> {
    exchange_after(tag, bytes, wait, || Ok(()), t, take)
}

/// [`exchange`] with `before` run right before `t` is written into its
/// slot ([`device::call`]).
fn exchange_after<T>(
    tag: Option<u16>,
    bytes: usize,
    wait: Wait,
    before: impl FnOnce() -> R<()>,
    t: &Msg,
    take: impl FnOnce(Msg) -> Option<T>,
) -> R<T> {
    let want = t.kind() + 1;
    let sent = core::cell::Cell::new(p9::NOTAG);
    device::call(
        bytes,
        wait,
        before,
        |slot_tag, buf| {
            let tag = tag.unwrap_or(slot_tag);
            sent.set(tag);
            Ok(p9::encode(tag, t, buf)?)
        },
        |reply| {
            let (rtag, m) = p9::decode(reply)?;
            if let Msg::Rlerror { ecode } = m {
                return Err(P9Error::Remote(ecode));
            }
            let kind = m.kind();
            if rtag != sent.get() || kind != want {
                return Err(P9Error::Unexpected(kind));
            }
            take(m).ok_or(P9Error::Unexpected(kind))
        },
    )
}

/// Twrite of `data` (at most `io_max` bytes of it) to `fid` at `offset`
/// while the other processes run, `before` run right before the bytes
/// are copied into the request. Only where the device answers a queue's
/// requests in the order they were made (our runner): a request made
/// meanwhile (a read of the same bytes) must not overtake it. The fid
/// must stay open until this returns (the caller holds its file).
pub fn write_letting_others_run(
    fid: u32,
    offset: u64,
    data: &[u8],
    io_max: usize,
    before: impl FnOnce(&[u8]) -> R<()>,
) -> R<usize> {
    let data = &data[..data.len().min(io_max)];
    let t = Msg::Twrite { fid, offset, data };
    exchange_after(
        None,
        data.len() + p9::IOHDRSZ as usize,
        Wait::LetOthersRun,
        || before(data),
        &t,
        |m| match m {
            Msg::Rwrite { count } => Some(count as usize),
            _ => None,
        },
    )
}

/// Tfsync of `fid` (an open file of the volume): the host's fsync or
/// fdatasync before the answer, while the other processes run. The fid
/// must stay open until this returns (the caller holds its file).
pub fn fsync(fid: u32, datasync: bool) -> R<()> {
    let t = Msg::Tfsync {
        fid,
        datasync: datasync as u32,
    };
    exchange(None, 64, Wait::LetOthersRun, &t, |m| {
        matches!(m, Msg::Rfsync).then_some(())
    })
}
