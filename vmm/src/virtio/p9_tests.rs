//! virtio-9p behind its virtio-mmio transport, driven as a guest driver
//! would: registers, one request ring, messages in guest RAM.

use crate::placement::Placement;
use std::time::{Duration, Instant};

use pgkraft_abi::p9::{NOFID, Names, VERSION_9P2000_L, open};
use virtio_bindings::virtio_mmio as reg;

use super::*;
use crate::bus::Poll;
use crate::virtio::mmio::{CONFIG, MmioTransport};
use crate::virtio::test_guest::{F_NEXT, F_WRITE, Guest, Ring};
use crate::virtio::{F_VERSION_1, STATUS_DRIVER_OK};

const RINGS: &[Ring] = &[Ring {
    desc: 0x1000,
    avail: 0x2000,
    used: 0x3000,
}];
/// Where requests and answers go in guest RAM.
const REQ: u64 = 0x10000;
const RESP: u64 = 0x100000;
const MEM: usize = 0x200000;

type Driver = Guest<VirtioP9>;

thread_local! {
    /// How long the last request took in the device: the notify's handling,
    /// without this test driver's own encoding and copying.
    static SERVED_IN: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
}

fn driver(dir: &Path) -> Driver {
    driver_of(VirtioP9::new(dir, "pgkraft-data", &Placement::default()).unwrap())
}

fn driver_of(dev: VirtioP9) -> Driver {
    let t = MmioTransport::new(dev).unwrap();
    let mut d = Guest::attach(t, MEM, RINGS);
    assert_eq!(d.read(reg::VIRTIO_MMIO_DEVICE_ID), 9);
    assert_eq!(d.device_features(), F_MOUNT_TAG | F_VERSION_1);
    assert!(d.negotiate(F_MOUNT_TAG | F_VERSION_1));
    d.setup_queue(0);
    d.add_status(STATUS_DRIVER_OK);
    assert!(d.t.active());
    d
}

impl Driver {
    /// Sends `m` as one readable descriptor (or two, split at `split`)
    /// with `room` bytes for the answer in two writable ones; the answer.
    fn rpc_split(&mut self, tag: u16, m: &Msg<'_>, split: Option<usize>, room: u32) -> Vec<u8> {
        let n = ENCODE_BUF.with_borrow_mut(|buf| {
            let n = wire::encode(tag, m, buf).unwrap();
            self.put(REQ, &buf[..n]);
            n
        });
        let first = room / 2;
        if let Some(s) = split {
            self.desc(0, 0, REQ, s as u32, F_NEXT, 1);
            self.desc(0, 1, REQ + s as u64, (n - s) as u32, F_NEXT, 2);
        } else {
            self.desc(0, 0, REQ, n as u32, F_NEXT, 2);
        }
        self.desc(0, 2, RESP, first, F_WRITE | F_NEXT, 3);
        self.desc(0, 3, RESP + 0x40000, room - first, F_WRITE, 0);
        let before = self.used_idx(0);
        self.make_available(0, 0);
        let t0 = Instant::now();
        self.notify(0);
        // A Tfsync is answered when its sync thread is done: its event
        // says so, and a poll (as hc::WAIT's) puts the answer in the ring.
        while self.used_idx(0) == before {
            self.answer_after_event();
        }
        SERVED_IN.set(t0.elapsed());
        assert_eq!(self.used_idx(0), before.wrapping_add(1), "one answer");
        let (head, len) = self.used(0, before);
        assert_eq!(head, 0);
        let len = len as usize;
        let a = len.min(first as usize);
        let mut out = self.bytes(RESP, a);
        out.extend(self.bytes(RESP + 0x40000, len - a));
        out
    }

    /// Blocks until the device's wait fd (its finished syncs) is
    /// readable, then polls as `hc::WAIT` does; the poll must deliver.
    fn answer_after_event(&mut self) {
        use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
        let fd = Poll::wait_fd(&self.t).expect("the device's wait fd");
        let epoll = Epoll::new().unwrap();
        epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
            .unwrap();
        let mut events = [EpollEvent::default(); 1];
        assert_eq!(epoll.wait(-1, &mut events).unwrap(), 1);
        let mem = self.mem.clone();
        assert!(Poll::poll(&mut self.t, &mem), "a finished sync is answered");
    }

    fn rpc(&mut self, m: &Msg<'_>) -> Vec<u8> {
        self.rpc_split(1, m, None, 0x20000)
    }
}

fn ok(answer: &[u8]) -> Msg<'_> {
    let (_, m) = wire::decode(answer).unwrap();
    assert!(!matches!(m, Msg::Rlerror { .. }), "{m:?}");
    m
}

/// Fid 1: a new file `name` in the root, open for reading and writing.
fn create(d: &mut Driver, name: &[u8]) {
    ok(&d.rpc(&Msg::Twalk {
        fid: 0,
        newfid: 1,
        names: Names::List(&[]),
    }));
    ok(&d.rpc(&Msg::Tlcreate {
        fid: 1,
        name,
        flags: open::RDWR,
        mode: 0o600,
        gid: 0,
    }));
}

fn session(d: &mut Driver) {
    let r = d.rpc(&Msg::Tversion {
        msize: 64 << 10,
        version: VERSION_9P2000_L,
    });
    assert_eq!(
        ok(&r),
        Msg::Rversion {
            msize: 64 << 10,
            version: VERSION_9P2000_L
        }
    );
    ok(&d.rpc(&Msg::Tattach {
        fid: 0,
        afid: NOFID,
        uname: b"",
        aname: b"",
        n_uname: 0,
    }));
}

#[test]
fn config_space_holds_the_tag() {
    let t = tempfile::tempdir().unwrap();
    let mut d = driver(t.path());
    let w = d.read(CONFIG as u32).to_le_bytes();
    assert_eq!(u16::from_le_bytes([w[0], w[1]]), 12);
    let mut tag = w[2..].to_vec();
    for off in (4..16).step_by(4) {
        tag.extend(d.read(CONFIG as u32 + off).to_le_bytes());
    }
    assert_eq!(&tag[..12], b"pgkraft-data");
    assert_eq!(&tag[12..], [0, 0]);
    assert!(VirtioP9::new(t.path(), "", &Placement::default()).is_err());
    assert!(VirtioP9::new(t.path(), &"x".repeat(256), &Placement::default()).is_err());
    assert!(VirtioP9::new(&t.path().join("missing"), "v", &Placement::default()).is_err());
}

#[test]
fn write_fsync_read_through_the_ring() {
    let t = tempfile::tempdir().unwrap();
    let mut d = driver(t.path());
    session(&mut d);
    create(&mut d, b"f");
    let page: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    // Header and data in separate descriptors, as Linux's zero-copy sends it.
    let r = d.rpc_split(
        7,
        &Msg::Twrite {
            fid: 1,
            offset: 0,
            data: &page,
        },
        Some(wire::HEADER_LEN + 16),
        64,
    );
    assert_eq!(wire::decode(&r).unwrap(), (7, Msg::Rwrite { count: 8192 }));
    ok(&d.rpc(&Msg::Tfsync {
        fid: 1,
        datasync: 1,
    }));
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), page);
    // The answer spans both writable descriptors.
    let r = d.rpc(&Msg::Tread {
        fid: 1,
        offset: 0,
        count: 8192,
    });
    assert_eq!(ok(&r), Msg::Rread { data: &page });
    // A reply buffer smaller than the count asked: the read is cut to fit.
    let r = d.rpc_split(
        2,
        &Msg::Tread {
            fid: 1,
            offset: 0,
            count: 8192,
        },
        None,
        1000,
    );
    assert_eq!(ok(&r), Msg::Rread { data: &page[..989] });
    // A request over the message size is refused, not served.
    let big = vec![0u8; 70 << 10];
    let r = d.rpc_split(
        3,
        &Msg::Twrite {
            fid: 1,
            offset: 0,
            data: &big,
        },
        None,
        64,
    );
    assert_eq!(
        wire::decode(&r).unwrap(),
        (
            3,
            Msg::Rlerror {
                ecode: rustix::io::Errno::MSGSIZE.raw_os_error() as u32
            }
        )
    );
    assert_eq!(d.t.device().stats.oversized, 1);
    assert_eq!(d.read(reg::VIRTIO_MMIO_INTERRUPT_STATUS) & 1, 1);
    // A reset ends the session: the fids are gone.
    d.write(reg::VIRTIO_MMIO_STATUS, 0);
    // A driver starts its rings afresh.
    d.put(RINGS[0].avail, &[0; 4]);
    d.put(RINGS[0].used, &[0; 4]);
    assert!(d.negotiate(F_MOUNT_TAG | F_VERSION_1));
    d.setup_queue(0);
    d.add_status(STATUS_DRIVER_OK);
    let r = d.rpc(&Msg::Tclunk { fid: 1 });
    assert!(matches!(wire::decode(&r).unwrap().1, Msg::Rlerror { .. }));
}

#[test]
fn a_worked_device_suppresses_notifies_while_it_looks() {
    let t = tempfile::tempdir().unwrap();
    let mut d = driver_of(
        VirtioP9::new(t.path(), "v", &Placement::default())
            .unwrap()
            .worked(),
    );
    assert_eq!(d.used_flags(0) & 1, 0, "idle: notify me");
    session(&mut d);
    assert_eq!(d.used_flags(0) & 1, 1, "after a request the worker looks");
    let mem = d.mem.clone();
    assert!(!d.t.settle(&mem), "nothing came in between");
    assert_eq!(d.used_flags(0) & 1, 0);
    // A request published while the flag said "looking", not notified:
    // settling finds it, and the worker's next look serves it.
    ok(&d.rpc(&Msg::Tstatfs { fid: 0 }));
    assert_eq!(d.used_flags(0) & 1, 1);
    let mut req = [0u8; 64];
    let getattr = Msg::Tgetattr {
        fid: 0,
        request_mask: 0,
    };
    let n = wire::encode(5, &getattr, &mut req).unwrap();
    d.put(REQ, &req[..n]);
    d.desc(0, 0, REQ, n as u32, F_NEXT, 2);
    d.desc(0, 2, RESP, 4096, F_WRITE, 0);
    let before = d.used_idx(0);
    d.make_available(0, 0);
    assert!(d.t.settle(&mem), "pending");
    assert!(Poll::poll(&mut d.t, &mem));
    assert_eq!(d.used_idx(0), before.wrapping_add(1));
    assert!(d.t.take_moved());
}

/// The host-side cost of one 8 KiB Twrite and one Tfsync (fdatasync)
/// through the device: ring, copies, codec, server and the host's file
/// system, no VM. On the file system of `PGKRAFT_P9_BENCH_DIR` (default:
/// the build's target directory, not a tmpfs). `ci/bench-p9.sh` runs it.
#[test]
#[ignore = "a measurement: ci/bench-p9.sh"]
fn bench_8k_write_fsync() {
    let base = std::env::var_os("PGKRAFT_P9_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let t = tempfile::tempdir_in(&base).unwrap();
    let mut d = driver(t.path());
    session(&mut d);
    create(&mut d, b"wal");
    let page = [0xa5u8; 8192];
    let rounds = 400u64;
    // The same on the host directly, alternating with the device's, so
    // that both see the same moments of the disk.
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(t.path().join("native"))
        .unwrap();
    let (mut write, mut sync, mut both, mut native) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        ok(&d.rpc(&Msg::Twrite {
            fid: 1,
            offset: (i % 64) * 8192,
            data: &page,
        }));
        let w = SERVED_IN.get();
        ok(&d.rpc(&Msg::Tfsync {
            fid: 1,
            datasync: 1,
        }));
        let s = SERVED_IN.get();
        write.push(w);
        sync.push(s);
        both.push(w + s);
        let t0 = Instant::now();
        rustix::io::pwrite(&f, &page, (i % 64) * 8192).unwrap();
        rustix::fs::fdatasync(&f).unwrap();
        native.push(t0.elapsed());
    }
    // Without fsync: the device's own share, against the bare syscall.
    let (mut write_only, mut native_write, mut getattr) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds * 5 {
        ok(&d.rpc(&Msg::Twrite {
            fid: 1,
            offset: (64 + i % 64) * 8192,
            data: &page,
        }));
        write_only.push(SERVED_IN.get());
        let t0 = Instant::now();
        rustix::io::pwrite(&f, &page, (64 + i % 64) * 8192).unwrap();
        native_write.push(t0.elapsed());
        ok(&d.rpc(&Msg::Tgetattr {
            fid: 1,
            request_mask: wire::getattr::BASIC,
        }));
        getattr.push(SERVED_IN.get());
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let fs = std::fs::canonicalize(&base).unwrap();
    println!(
        "p9 device (time inside the notify: ring, copies, codec, server, host I/O), \
         {rounds} rounds on {}:",
        fs.display()
    );
    for (what, v) in [
        ("Twrite 8 KiB", &mut write),
        ("Tfsync (datasync)", &mut sync),
        ("Twrite+Tfsync", &mut both),
        ("native pwrite+fdatasync", &mut native),
        ("Twrite 8 KiB, no fsync", &mut write_only),
        ("native pwrite 8 KiB", &mut native_write),
        ("Tgetattr", &mut getattr),
    ] {
        let (m, p99) = med(v);
        println!(
            "  {what:<24} median {:>8.1} µs  p99 {:>8.1} µs",
            us(m),
            us(p99)
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A Tfsync is answered when its sync is done, after requests made later:
/// the device goes on meanwhile, and the answers name their chains.
#[test]
fn an_fsync_is_answered_after_a_later_request() {
    let t = tempfile::tempdir().unwrap();
    let mut d = driver(t.path());
    session(&mut d);
    create(&mut d, b"f");
    let put = |d: &mut Driver, tag: u16, m: &Msg<'_>, at: u64| {
        let mut buf = vec![0u8; 256];
        let n = wire::encode(tag, m, &mut buf).unwrap();
        d.put(at, &buf[..n]);
        n as u32
    };
    let n = put(
        &mut d,
        5,
        &Msg::Tfsync {
            fid: 1,
            datasync: 0,
        },
        REQ,
    );
    d.desc(0, 0, REQ, n, F_NEXT, 1);
    d.desc(0, 1, RESP, 256, F_WRITE, 0);
    let getattr = Msg::Tgetattr {
        fid: 1,
        request_mask: pgkraft_abi::p9::getattr::BASIC,
    };
    let n = put(&mut d, 6, &getattr, REQ + 0x1000);
    d.desc(0, 2, REQ + 0x1000, n, F_NEXT, 3);
    d.desc(0, 3, RESP + 0x1000, 512, F_WRITE, 0);
    let before = d.used_idx(0);
    d.make_available(0, 0);
    d.make_available(0, 2);
    d.notify(0);
    // Finished syncs are answered at the start of a pass, before this
    // pass hands its Tfsync to a thread: only the getattr is answered.
    assert_eq!(d.used_idx(0), before.wrapping_add(1));
    let (head, len) = d.used(0, before);
    assert_eq!(head, 2, "the later request first");
    let a = d.bytes(RESP + 0x1000, len as usize);
    assert!(matches!(
        wire::decode(&a).unwrap(),
        (6, Msg::Rgetattr { .. })
    ));
    d.answer_after_event();
    assert_eq!(d.used_idx(0), before.wrapping_add(2), "the fsync's answer");
    let (head, len) = d.used(0, before.wrapping_add(1));
    assert_eq!(head, 0);
    let a = d.bytes(RESP, len as usize);
    assert_eq!(wire::decode(&a).unwrap(), (5, Msg::Rfsync));
}
