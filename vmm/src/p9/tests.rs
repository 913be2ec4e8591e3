//! The server on a temporary directory, spoken to through the codec as the
//! guest's client would.

use std::collections::BTreeSet;
use std::path::Path;

use pgkraft_abi::p9::{Dirents, NOFID, open, qid_type, setattr};

use super::*;

/// The server and a reply buffer; every call gets a fresh tag.
pub(crate) struct Client {
    pub server: Server,
    out: Vec<u8>,
    req: Vec<u8>,
    tag: u16,
}

impl Client {
    pub(crate) fn new(dir: &Path) -> Client {
        let mut c = Client {
            server: Server::new(dir).unwrap(),
            out: vec![0; MAX_MSIZE as usize],
            req: vec![0; MAX_MSIZE as usize],
            tag: 0,
        };
        let r = c.call(&Msg::Tversion {
            msize: 64 << 10,
            version: VERSION_9P2000_L,
        });
        assert_eq!(
            r,
            Msg::Rversion {
                msize: 64 << 10,
                version: VERSION_9P2000_L
            }
        );
        let r = c.call(&Msg::Tattach {
            fid: 0,
            afid: NOFID,
            uname: b"postgres",
            aname: b"",
            n_uname: 70,
        });
        assert!(matches!(r, Msg::Rattach { .. }), "{r:?}");
        c
    }

    pub(crate) fn call(&mut self, m: &Msg<'_>) -> Msg<'_> {
        self.tag = self.tag.wrapping_add(1) % NOTAG;
        let n = p9::encode(self.tag, m, &mut self.req).unwrap();
        let len = self.server.handle(&self.req[..n], &mut self.out);
        let (tag, r) = p9::decode(&self.out[..len]).unwrap();
        assert_eq!(tag, self.tag);
        r
    }

    /// The errno of an Rlerror answer (panics on success).
    fn err(&mut self, m: &Msg<'_>) -> Errno {
        match self.call(m) {
            Msg::Rlerror { ecode } => Errno::from_raw_os_error(ecode as i32),
            r => panic!("{m:?} answered {r:?}"),
        }
    }

    fn walk(&mut self, fid: u32, newfid: u32, names: &[&[u8]]) -> Msg<'_> {
        self.call(&Msg::Twalk {
            fid,
            newfid,
            names: Names::List(names),
        })
    }

    fn ok(&mut self, m: &Msg<'_>) {
        let r = self.call(m);
        assert!(!matches!(r, Msg::Rlerror { .. }), "{m:?} answered {r:?}");
    }

    /// Every name in the open directory `fid`, read `count` bytes at a time.
    fn list(&mut self, fid: u32, count: u32) -> Vec<Vec<u8>> {
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let Msg::Rreaddir { data } = self.call(&Msg::Treaddir { fid, offset, count }) else {
                panic!("readdir failed");
            };
            if data.is_empty() {
                return names;
            }
            for d in Dirents::new(data) {
                let d = d.unwrap();
                names.push(d.name.to_vec());
                offset = d.offset;
            }
        }
    }
}

fn volume() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("vol");
    std::fs::create_dir(&root).unwrap();
    (t, root)
}

#[test]
fn create_write_fsync_read_back() {
    let (_t, root) = volume();
    let mut c = Client::new(&root);
    c.ok(&Msg::Twalk {
        fid: 0,
        newfid: 1,
        names: Names::List(&[]),
    });
    let r = c.call(&Msg::Tlcreate {
        fid: 1,
        name: b"16384",
        flags: open::RDWR | open::EXCL,
        mode: 0o600,
        gid: 0,
    });
    assert!(
        matches!(r, Msg::Rlcreate { qid, .. } if qid.kind == qid_type::FILE),
        "{r:?}"
    );
    let page = [0x5au8; 8192];
    let r = c.call(&Msg::Twrite {
        fid: 1,
        offset: 8192,
        data: &page,
    });
    assert_eq!(r, Msg::Rwrite { count: 8192 });
    c.ok(&Msg::Tfsync {
        fid: 1,
        datasync: 1,
    });
    c.ok(&Msg::Tfsync {
        fid: 1,
        datasync: 0,
    });
    c.ok(&Msg::Tclunk { fid: 1 });
    assert_eq!(c.err(&Msg::Tclunk { fid: 1 }), Errno::BADF);
    // Again by name, read only: the hole reads as zeros, then the page.
    assert!(matches!(c.walk(0, 2, &[b"16384"]), Msg::Rwalk { qids } if qids.len() == 1));
    c.ok(&Msg::Tlopen {
        fid: 2,
        flags: open::RDONLY,
    });
    let Msg::Rread { data } = c.call(&Msg::Tread {
        fid: 2,
        offset: 8000,
        count: 1000,
    }) else {
        panic!()
    };
    assert_eq!(data[..192], [0; 192]);
    assert_eq!(data[192..], [0x5a; 808]);
    // Reads past the end are empty; writes to a read-only open fail.
    assert_eq!(
        c.call(&Msg::Tread {
            fid: 2,
            offset: 1 << 20,
            count: 10
        }),
        Msg::Rread { data: &[] }
    );
    assert_eq!(
        c.err(&Msg::Twrite {
            fid: 2,
            offset: 0,
            data: b"x"
        }),
        Errno::BADF
    );
    assert_eq!(std::fs::read(root.join("16384")).unwrap().len(), 16384);
    // O_EXCL on an existing name, O_TRUNC on open.
    c.ok(&Msg::Twalk {
        fid: 0,
        newfid: 3,
        names: Names::List(&[]),
    });
    let r = c.err(&Msg::Tlcreate {
        fid: 3,
        name: b"16384",
        flags: open::RDWR | open::EXCL,
        mode: 0o600,
        gid: 0,
    });
    assert_eq!(r, Errno::EXIST);
    c.walk(0, 4, &[b"16384"]);
    c.ok(&Msg::Tlopen {
        fid: 4,
        flags: open::WRONLY | open::TRUNC | open::APPEND | open::DSYNC,
    });
    c.ok(&Msg::Twrite {
        fid: 4,
        offset: 0,
        data: b"ab",
    });
    // O_APPEND: where the guest says does not matter.
    c.ok(&Msg::Twrite {
        fid: 4,
        offset: 0,
        data: b"cd",
    });
    assert_eq!(std::fs::read(root.join("16384")).unwrap(), b"abcd");
}

#[test]
fn mkdir_rename_unlink_readdir() {
    let (_t, root) = volume();
    let mut c = Client::new(&root);
    let r = c.call(&Msg::Tmkdir {
        dfid: 0,
        name: b"pg_wal",
        mode: 0o700,
        gid: 0,
    });
    assert!(
        matches!(r, Msg::Rmkdir { qid } if qid.kind == qid_type::DIR),
        "{r:?}"
    );
    c.walk(0, 1, &[b"pg_wal"]);
    let mut want = BTreeSet::from([b".".to_vec(), b"..".to_vec()]);
    for i in 0..40 {
        let name = format!("{i:024X}");
        c.walk(1, 2, &[]);
        c.ok(&Msg::Tlcreate {
            fid: 2,
            name: name.as_bytes(),
            flags: open::WRONLY,
            mode: 0o600,
            gid: 0,
        });
        c.ok(&Msg::Tclunk { fid: 2 });
        want.insert(name.into_bytes());
    }
    c.ok(&Msg::Trenameat {
        olddfid: 1,
        oldname: &format!("{:024X}", 7).into_bytes(),
        newdfid: 0,
        newname: b"moved",
    });
    want.remove(format!("{:024X}", 7).as_bytes());
    c.ok(&Msg::Tunlinkat {
        dfid: 1,
        name: &format!("{:024X}", 8).into_bytes(),
        flags: 0,
    });
    want.remove(format!("{:024X}", 8).as_bytes());
    assert!(root.join("moved").is_file());
    // Read in small pieces, so that the offsets carry the listing on.
    c.walk(1, 3, &[]);
    c.ok(&Msg::Tlopen {
        fid: 3,
        flags: open::RDONLY | open::DIRECTORY,
    });
    for count in [48, 100, 4096] {
        let names = c.list(3, count);
        assert_eq!(names.len(), want.len(), "no entry twice (count {count})");
        assert_eq!(names.into_iter().collect::<BTreeSet<_>>(), want);
    }
    assert_eq!(
        c.err(&Msg::Treaddir {
            fid: 3,
            offset: 0,
            count: 10
        }),
        Errno::INVAL
    );
    // Directories fsync too (a rename's durability).
    c.ok(&Msg::Tfsync {
        fid: 3,
        datasync: 0,
    });
    c.ok(&Msg::Tfsync {
        fid: 0,
        datasync: 0,
    });
    assert_eq!(
        c.err(&Msg::Tunlinkat {
            dfid: 0,
            name: b"pg_wal",
            flags: AT_REMOVEDIR
        }),
        Errno::NOTEMPTY
    );
    std::fs::remove_dir_all(root.join("pg_wal")).unwrap();
    std::fs::create_dir(root.join("pg_wal")).unwrap();
    c.ok(&Msg::Tunlinkat {
        dfid: 0,
        name: b"pg_wal",
        flags: AT_REMOVEDIR,
    });
    assert!(!root.join("pg_wal").exists());
}

#[test]
fn getattr_setattr_statfs() {
    let (_t, root) = volume();
    std::fs::write(root.join("f"), b"0123456789").unwrap();
    let mut c = Client::new(&root);
    c.walk(0, 1, &[b"f"]);
    let Msg::Rgetattr { attr } = c.call(&Msg::Tgetattr {
        fid: 1,
        request_mask: p9::getattr::ALL,
    }) else {
        panic!()
    };
    assert_eq!(attr.size, 10);
    assert_eq!(attr.mode & 0o170000, 0o100000);
    assert_eq!(attr.valid, p9::getattr::BASIC);
    let set = p9::SetAttr {
        valid: setattr::SIZE | setattr::MODE | setattr::MTIME | setattr::MTIME_SET | setattr::UID,
        mode: 0o640,
        uid: 12345,
        size: 3,
        mtime_sec: 1_000_000_000,
        mtime_nsec: 5,
        ..Default::default()
    };
    c.ok(&Msg::Tsetattr { fid: 1, attr: set });
    let Msg::Rgetattr { attr } = c.call(&Msg::Tgetattr {
        fid: 1,
        request_mask: p9::getattr::BASIC,
    }) else {
        panic!()
    };
    assert_eq!((attr.size, attr.mode & 0o7777), (3, 0o640));
    assert_eq!((attr.mtime_sec, attr.mtime_nsec), (1_000_000_000, 5));
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"012");
    let r = c.call(&Msg::Tstatfs { fid: 0 });
    assert!(
        matches!(r, Msg::Rstatfs { statfs } if statfs.bsize > 0 && statfs.namelen >= 255),
        "{r:?}"
    );
    // Hard and symbolic links.
    c.ok(&Msg::Tlink {
        dfid: 0,
        fid: 1,
        name: b"g",
    });
    assert_eq!(std::fs::read(root.join("g")).unwrap(), b"012");
    let r = c.call(&Msg::Tsymlink {
        fid: 0,
        name: b"l",
        target: b"g",
        gid: 0,
    });
    assert!(
        matches!(r, Msg::Rsymlink { qid } if qid.kind == qid_type::SYMLINK),
        "{r:?}"
    );
    c.walk(0, 2, &[b"l"]);
    assert_eq!(
        c.call(&Msg::Treadlink { fid: 2 }),
        Msg::Rreadlink { target: b"g" }
    );
}

#[test]
fn nothing_leaves_the_root() {
    let (t, root) = volume();
    std::fs::write(t.path().join("secret"), b"host").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("rel")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    let mut c = Client::new(&root);
    let root_qid = match c.walk(0, 1, &[]) {
        Msg::Rwalk { qids } => qids.get(0),
        r => panic!("{r:?}"),
    };
    assert_eq!(root_qid, None);
    let Msg::Rgetattr { attr } = c.call(&Msg::Tgetattr {
        fid: 0,
        request_mask: 0,
    }) else {
        panic!()
    };
    // `..` at the root is the root.
    match c.walk(0, 2, &[b"..", b"..", b".."]) {
        Msg::Rwalk { qids } => assert_eq!(qids.get(2), Some(attr.qid)),
        r => panic!("{r:?}"),
    }
    assert!(
        matches!(c.walk(0, 3, &[b"..", b"secret"]), Msg::Rwalk { qids } if qids.len() == 1),
        "short: `secret` is not in the root"
    );
    // A symlink is walked to, never through: the guest reads it itself.
    match c.walk(0, 4, &[b"abs"]) {
        Msg::Rwalk { qids } => assert_eq!(qids.get(0).unwrap().kind, qid_type::SYMLINK),
        r => panic!("{r:?}"),
    }
    match c.walk(0, 5, &[b"abs", b"passwd"]) {
        Msg::Rwalk { qids } => assert_eq!(qids.len(), 1, "a short walk"),
        r => panic!("{r:?}"),
    }
    assert_eq!(c.err(&Msg::Tclunk { fid: 5 }), Errno::BADF, "no newfid");
    assert!(matches!(c.walk(0, 6, &[b"up", b"secret"]), Msg::Rwalk { qids } if qids.len() == 1));
    // Opening a symlink's fid does not follow it.
    c.walk(0, 7, &[b"rel"]);
    assert_eq!(
        c.err(&Msg::Tlopen {
            fid: 7,
            flags: open::RDWR
        }),
        Errno::LOOP
    );
    c.walk(0, 8, &[]);
    for name in [&b"rel"[..], b"abs"] {
        let e = c.err(&Msg::Tlcreate {
            fid: 8,
            name,
            flags: open::RDWR | open::TRUNC,
            mode: 0o600,
            gid: 0,
        });
        assert!(
            matches!(e, Errno::LOOP | Errno::EXIST | Errno::XDEV),
            "{e:?}"
        );
    }
    // Names are one component.
    for name in [&b"../x"[..], b"a/b", b"..", b".", b"", b"x\0y"] {
        let e = c.err(&Msg::Tmkdir {
            dfid: 0,
            name,
            mode: 0o700,
            gid: 0,
        });
        assert_eq!(e, Errno::INVAL, "{name:?}");
        let e = c.err(&Msg::Trenameat {
            olddfid: 0,
            oldname: b"rel",
            newdfid: 0,
            newname: name,
        });
        assert_eq!(e, Errno::INVAL, "{name:?}");
    }
    assert_eq!(c.err(&walk_msg(0, 9, &[b"a/../../secret"])), Errno::INVAL);
    // Truncating or chmod through a symlink's fid does not reach its target.
    c.walk(0, 10, &[b"rel"]);
    let set = p9::SetAttr {
        valid: setattr::SIZE,
        ..Default::default()
    };
    assert!(matches!(
        c.call(&Msg::Tsetattr { fid: 10, attr: set }),
        Msg::Rlerror { .. }
    ));
    let before = std::fs::metadata(t.path().join("secret")).unwrap();
    let set = p9::SetAttr {
        valid: setattr::MODE | setattr::MTIME | setattr::MTIME_SET,
        mode: 0o777,
        mtime_sec: 1,
        ..Default::default()
    };
    let _ = c.call(&Msg::Tsetattr { fid: 10, attr: set });
    let after = std::fs::metadata(t.path().join("secret")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.mode(), before.mtime()),
        (after.mode(), after.mtime()),
        "chmod and utimes stop at the symlink"
    );
    assert_eq!(std::fs::read(t.path().join("secret")).unwrap(), b"host");
    assert!(!t.path().join("x").exists());
}

fn walk_msg<'a>(fid: u32, newfid: u32, names: &'a [&'a [u8]]) -> Msg<'a> {
    Msg::Twalk {
        fid,
        newfid,
        names: Names::List(names),
    }
}

#[test]
fn bad_and_unknown_messages_are_errors() {
    let (_t, root) = volume();
    let mut c = Client::new(&root);
    let mut out = vec![0u8; 4096];
    // Tauth (102): not served.
    let mut req = [0u8; 64];
    let n = p9::encode(
        9,
        &Msg::Tattach {
            fid: 1,
            afid: 2,
            uname: b"",
            aname: b"",
            n_uname: 0,
        },
        &mut req,
    )
    .unwrap();
    req[4] = 102;
    let len = c.server.handle(&req[..n], &mut out);
    assert_eq!(
        p9::decode(&out[..len]).unwrap(),
        (
            9,
            Msg::Rlerror {
                ecode: Errno::OPNOTSUPP.raw_os_error() as u32
            }
        )
    );
    assert_eq!(c.err(&Msg::Rflush), Errno::OPNOTSUPP);
    assert_eq!(
        c.err(&Msg::Tmknod {
            dfid: 0,
            name: b"sda",
            mode: 0o60600,
            major: 8,
            minor: 0,
            gid: 0
        }),
        Errno::PERM,
        "no device nodes"
    );
    // A FIFO can be made but not opened through the server (it would
    // block the vCPU thread, and 9P clients open FIFOs locally).
    let r = c.call(&Msg::Tmknod {
        dfid: 0,
        name: b"p",
        mode: 0o10600,
        major: 0,
        minor: 0,
        gid: 0,
    });
    assert!(matches!(r, Msg::Rmknod { .. }), "{r:?}");
    c.walk(0, 1, &[b"p"]);
    assert_eq!(
        c.err(&Msg::Tlopen {
            fid: 1,
            flags: open::RDONLY
        }),
        Errno::OPNOTSUPP
    );
    c.walk(0, 2, &[]);
    assert_eq!(
        c.err(&Msg::Tlcreate {
            fid: 2,
            name: b"p",
            flags: open::WRONLY,
            mode: 0o600,
            gid: 0
        }),
        Errno::NXIO,
        "O_NONBLOCK: a FIFO without a reader does not block"
    );
    assert_eq!(
        c.err(&Msg::Tgetattr {
            fid: 77,
            request_mask: 0
        }),
        Errno::BADF
    );
    // Garbage of every length: an answer, never a panic.
    let mut x: u32 = 12345;
    for len in 0..400 {
        let mut junk = vec![0u8; len];
        for b in junk.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        if len >= 4 {
            junk[..4].copy_from_slice(&(len as u32).to_le_bytes());
        }
        let n = c.server.handle(&junk, &mut out);
        assert!(n >= 7);
        assert!(c.server.handle(&junk, &mut out[..3]) == 0);
    }
    // The session still works.
    c.ok(&Msg::Tgetattr {
        fid: 0,
        request_mask: 0,
    });
}
