use super::*;

const Q: Qid = Qid {
    kind: qid_type::DIR,
    version: 7,
    path: 0x0102_0304_0506_0708,
};

fn samples() -> [Msg<'static>; 45] {
    static NAMES: [&[u8]; 3] = [b"base", b"1", b"16384"];
    static QIDS: [Qid; 2] = [
        Q,
        Qid {
            kind: qid_type::FILE,
            version: 0,
            path: 9,
        },
    ];
    let attr = Attr {
        valid: getattr::BASIC,
        qid: Q,
        mode: 0o40755,
        uid: 70,
        gid: 71,
        nlink: 2,
        rdev: 3,
        size: 4096,
        blksize: 4096,
        blocks: 8,
        atime_sec: 10,
        atime_nsec: 11,
        mtime_sec: 12,
        mtime_nsec: 13,
        ctime_sec: 14,
        ctime_nsec: 15,
        btime_sec: 16,
        btime_nsec: 17,
        gen_: 18,
        data_version: 19,
    };
    let set = SetAttr {
        valid: setattr::SIZE | setattr::MTIME | setattr::MTIME_SET,
        mode: 0o600,
        uid: 1,
        gid: 2,
        size: 8192,
        atime_sec: 3,
        atime_nsec: 4,
        mtime_sec: 5,
        mtime_nsec: 6,
    };
    let statfs = StatFs {
        kind: 0xef53,
        bsize: 4096,
        blocks: 1 << 30,
        bfree: 1 << 29,
        bavail: 1 << 28,
        files: 1000,
        ffree: 900,
        fsid: 0xabcd,
        namelen: 255,
    };
    [
        Msg::Tversion {
            msize: 8192,
            version: VERSION_9P2000_L,
        },
        Msg::Rversion {
            msize: 4096,
            version: VERSION_9P2000_L,
        },
        Msg::Tattach {
            fid: 0,
            afid: NOFID,
            uname: b"postgres",
            aname: b"",
            n_uname: 70,
        },
        Msg::Rattach { qid: Q },
        Msg::Rlerror { ecode: 2 },
        Msg::Tflush { oldtag: 5 },
        Msg::Rflush,
        Msg::Twalk {
            fid: 0,
            newfid: 1,
            names: Names::List(&NAMES),
        },
        Msg::Rwalk {
            qids: Qids::List(&QIDS),
        },
        Msg::Tgetattr {
            fid: 1,
            request_mask: getattr::ALL,
        },
        Msg::Rgetattr { attr },
        Msg::Tsetattr { fid: 1, attr: set },
        Msg::Rsetattr,
        Msg::Tlopen {
            fid: 1,
            flags: open::RDWR | open::DSYNC,
        },
        Msg::Rlopen { qid: Q, iounit: 0 },
        Msg::Tlcreate {
            fid: 1,
            name: b"f",
            flags: open::RDWR | open::EXCL,
            mode: 0o600,
            gid: 0,
        },
        Msg::Rlcreate {
            qid: Q,
            iounit: 4096,
        },
        Msg::Tsymlink {
            fid: 1,
            name: b"l",
            target: b"../x",
            gid: 0,
        },
        Msg::Rsymlink { qid: Q },
        Msg::Tmknod {
            dfid: 1,
            name: b"p",
            mode: 0o10600,
            major: 0,
            minor: 0,
            gid: 0,
        },
        Msg::Rmknod { qid: Q },
        Msg::Treadlink { fid: 2 },
        Msg::Rreadlink { target: b"/abs" },
        Msg::Tread {
            fid: 2,
            offset: 1 << 40,
            count: 8192,
        },
        Msg::Rread { data: b"page" },
        Msg::Twrite {
            fid: 2,
            offset: 8192,
            data: &[0xaa; 100],
        },
        Msg::Rwrite { count: 100 },
        Msg::Tclunk { fid: 2 },
        Msg::Rclunk,
        Msg::Tremove { fid: 2 },
        Msg::Rremove,
        Msg::Tunlinkat {
            dfid: 1,
            name: b"d",
            flags: AT_REMOVEDIR,
        },
        Msg::Runlinkat,
        Msg::Trenameat {
            olddfid: 1,
            oldname: b"a.tmp",
            newdfid: 3,
            newname: b"a",
        },
        Msg::Rrenameat,
        Msg::Tmkdir {
            dfid: 1,
            name: b"pg_wal",
            mode: 0o700,
            gid: 0,
        },
        Msg::Rmkdir { qid: Q },
        Msg::Treaddir {
            fid: 1,
            offset: 0,
            count: 4096,
        },
        Msg::Rreaddir { data: &[] },
        Msg::Tfsync {
            fid: 1,
            datasync: 1,
        },
        Msg::Rfsync,
        Msg::Tstatfs { fid: 0 },
        Msg::Rstatfs { statfs },
        Msg::Tlink {
            dfid: 1,
            fid: 2,
            name: b"hard",
        },
        Msg::Rlink,
    ]
}

#[test]
fn every_message_round_trips() {
    let mut buf = [0u8; 512];
    for (i, m) in samples().iter().enumerate() {
        let tag = i as u16;
        let n = encode(tag, m, &mut buf).unwrap();
        let h = decode_header(&buf[..n]).unwrap();
        assert_eq!((h.size as usize, h.kind, h.tag), (n, m.kind(), tag));
        let (t, back) = decode(&buf[..n]).unwrap();
        assert_eq!(t, tag);
        assert_eq!(&back, m, "message {i}");
        // Re-encoding the decoded (wire-borrowing) form gives the same bytes.
        let mut again = [0u8; 512];
        assert_eq!(encode(tag, &back, &mut again), Ok(n));
        assert_eq!(buf[..n], again[..n]);
    }
}

#[test]
fn known_bytes() {
    let mut buf = [0u8; 64];
    let n = encode(
        NOTAG,
        &Msg::Tversion {
            msize: 8192,
            version: VERSION_9P2000_L,
        },
        &mut buf,
    );
    assert_eq!(
        &buf[..n.unwrap()],
        b"\x15\x00\x00\x00\x64\xff\xff\x00\x20\x00\x00\x08\x009P2000.L"
    );
    let names: [&[u8]; 1] = [b"a"];
    let m = Msg::Twalk {
        fid: 1,
        newfid: 2,
        names: Names::List(&names),
    };
    let n = encode(1, &m, &mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"\x14\x00\x00\x00\x6e\x01\x00\x01\x00\x00\x00\x02\x00\x00\x00\x01\x00\x01\x00a"
    );
    let n = encode(3, &Msg::Rlerror { ecode: 2 }, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x0b\x00\x00\x00\x07\x03\x00\x02\x00\x00\x00");
    // Rgetattr is 7 + 8 + 13 + 3*4 + 15*8 = 160 bytes, as Linux expects.
    let attr = Attr::default();
    assert_eq!(
        encode(0, &Msg::Rgetattr { attr }, &mut buf[..0]),
        Err(Error::NoSpace)
    );
    let mut big = [0u8; 256];
    assert_eq!(encode(0, &Msg::Rgetattr { attr }, &mut big), Ok(160));
}

#[test]
fn truncated_and_short_buffers_are_refused() {
    let mut buf = [0u8; 512];
    for m in samples().iter() {
        let n = encode(9, m, &mut buf).unwrap();
        for cut in 0..n {
            assert!(decode(&buf[..cut]).is_err(), "{m:?} cut at {cut}");
            assert_eq!(encode(9, m, &mut [0u8; 512][..cut]), Err(Error::NoSpace));
        }
    }
    // A size field that lies (shorter than the body) is refused too.
    let n = encode(1, &Msg::Tclunk { fid: 1 }, &mut buf).unwrap();
    buf[0] = (n - 1) as u8;
    assert!(decode(&buf[..n]).is_err());
    buf[0] = (n + 1) as u8;
    assert_eq!(decode(&buf[..n]), Err(Error::BadSize));
    buf[0] = n as u8;
    buf[4] = 0xc8;
    assert_eq!(decode(&buf[..n]), Err(Error::UnknownType(0xc8)));
    assert_eq!(decode_header(&buf[..n]).unwrap().tag, 1);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic fuzz: xorshift bytes with a plausible header.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = [0u8; 96];
    for round in 0..20_000u32 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let len = (x as usize >> 8) % buf.len();
        buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        buf[4] = (round % 128) as u8;
        if let Ok((_, m)) = decode(&buf[..len]) {
            if let Msg::Rreaddir { data } = m {
                for _ in Dirents::new(data) {}
            }
            if let Msg::Twalk { names, .. } = m {
                assert_eq!(names.iter().count(), names.len());
            }
            let mut out = [0u8; 128];
            assert_eq!(encode(0, &m, &mut out).map(|_| ()), Ok(()));
        }
    }
}

#[test]
fn walk_limits() {
    let names: [&[u8]; 17] = [b"x"; 17];
    let mut buf = [0u8; 256];
    let m = Msg::Twalk {
        fid: 0,
        newfid: 1,
        names: Names::List(&names),
    };
    assert_eq!(encode(0, &m, &mut buf), Err(Error::TooManyElements));
    let m = Msg::Twalk {
        fid: 0,
        newfid: 1,
        names: Names::List(&names[..16]),
    };
    let n = encode(0, &m, &mut buf).unwrap();
    buf[15] = 17;
    assert_eq!(decode(&buf[..n]), Err(Error::TooManyElements));
}

#[test]
fn dirents_in_place() {
    let mut buf = [0u8; 128];
    let ents = [
        Dirent {
            qid: Q,
            offset: 1,
            kind: 4,
            name: b".",
        },
        Dirent {
            qid: Q,
            offset: 2,
            kind: 4,
            name: b"..",
        },
        Dirent {
            qid: Q,
            offset: 3,
            kind: 8,
            name: b"PG_VERSION",
        },
        Dirent {
            qid: Q,
            offset: 4,
            kind: 8,
            name: b"postgresql.auto.conf",
        },
    ];
    let count = {
        let mut w = DirentWriter::new(&mut buf[DATA_REPLY_OFFSET..100]);
        let pushed = ents.iter().take_while(|d| w.push(d)).count();
        assert_eq!(pushed, 3, "the fourth does not fit");
        w.len()
    };
    let n = finish_data_reply(&mut buf, msg::RREADDIR, 4, count as u32).unwrap();
    let (tag, m) = decode(&buf[..n]).unwrap();
    assert_eq!(tag, 4);
    let Msg::Rreaddir { data } = m else {
        panic!("{m:?}")
    };
    let back: [Dirent<'_>; 3] = {
        let mut it = Dirents::new(data).map(Result::unwrap);
        [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
    };
    assert_eq!(back, ents[..3]);
    assert!(
        Dirents::new(&data[..data.len() - 1])
            .last()
            .unwrap()
            .is_err()
    );
}
