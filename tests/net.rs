//! TCP into the image over virtio-net: the line server (test-vms/apps/
//! lineserver.c) in the image, host clients through `pgkraft run
//! --publish` and through QEMU's user networking, real sockets on
//! 127.0.0.1 only. Loops are bounded in count and time.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `pgkraft run` (or QEMU) with the line server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `cmd` and waits (bounded) for the guest to say it listens.
    fn start(mut cmd: Command, port: u16) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Owned before anything can panic, so a failure still kills it.
        let server = Server { child, port };
        // Under QEMU the libOS's own log lines share the console.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the line server never said it listens");
            if line.contains("listening on port 7000") {
                return server;
            }
        }
    }

    fn publish(image: &std::path::Path, rule: &str, port: u16) -> Server {
        let mut cmd = pgkraft();
        cmd.arg("run").arg(image).arg("--publish").arg(rule);
        Server::start(cmd, port)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Asks the guest on a fresh connection; one answer line.
    fn ask(&self, line: &str) -> String {
        let mut s = self.connect();
        writeln!(s, "{line}").unwrap();
        let mut r = BufReader::new(s);
        let mut answer = String::new();
        r.read_line(&mut answer).unwrap();
        answer
    }

    /// Ends the guest with `status`; returns the runner's exit code.
    fn exit(mut self, status: u8) -> Option<i32> {
        assert_eq!(self.ask(&format!("exit {status}")), "bye\n");
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the runner did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn lines_for(client: usize) -> Vec<String> {
    (0..20)
        .map(|i| {
            format!(
                "client {client} line {i} {}",
                "x".repeat((client * 7 + i * 13) % 300)
            )
        })
        .collect()
}

/// Sends `lines` and checks every answer byte for byte.
fn converse(s: TcpStream, lines: &[String]) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for l in lines {
        writeln!(w, "{l}").unwrap();
        let mut got = String::new();
        r.read_line(&mut got).unwrap();
        assert_eq!(got, format!("echo: {l}\n"));
    }
}

#[test]
fn fifty_host_clients_through_publish_get_byte_exact_answers() {
    if !kvm_available() {
        return;
    }
    let img = image("lineserver");
    let port = free_port();
    let server = Server::publish(&img, &format!("127.0.0.1:{port}:7000"), port);
    std::thread::scope(|s| {
        for c in 0..50 {
            let conn = server.connect();
            s.spawn(move || converse(conn, &lines_for(c)));
        }
    });
    assert_eq!(
        server.ask("clients"),
        "clients: 1\n",
        "every client's socket closed"
    );
    // The runner exits with the guest program's status.
    assert_eq!(server.exit(3), Some(3));
}

/// More connections at once than the guest's backlog (64) and its armed
/// sockets: every one is relayed, held by the guest and answered. (Before
/// the runner paced its handshakes, dropped SYNs made a burst like this
/// wait on resend back-off, and the runner closed some after 3 s.)
#[test]
fn a_burst_of_connections_past_the_backlog_is_held_and_served() {
    if !kvm_available() {
        return;
    }
    const N: usize = 300;
    let img = image("lineserver");
    let port = free_port();
    let server = Server::publish(&img, &format!("127.0.0.1:{port}:7000"), port);
    let conns: Vec<TcpStream> = (0..N).map(|_| server.connect()).collect();
    // The runner accepts at once; the guest takes them as it can (bounded).
    let t = Instant::now();
    loop {
        let n: usize = server
            .ask("clients")
            .trim()
            .strip_prefix("clients: ")
            .and_then(|n| n.parse().ok())
            .expect("a count");
        // The asking connection counts too.
        if n > N {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest holds {n} of {N} connections after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (c, conn) in conns.into_iter().enumerate() {
        converse(conn, &lines_for(c)[..2]);
    }
    assert_eq!(server.exit(0), Some(0));
}

#[test]
fn a_port_the_guest_never_listens_on_is_closed_and_the_runner_lives_on() {
    if !kvm_available() {
        return;
    }
    let img = image("lineserver");
    let (port, dead) = (free_port(), free_port());
    let mut cmd = pgkraft();
    cmd.arg("run")
        .arg(&img)
        .args(["--publish", &format!("127.0.0.1:{port}:7000")])
        .args(["--publish", &format!("127.0.0.1:{dead}:7001")]);
    let server = Server::start(cmd, port);
    // The host accepts, the guest refuses: the client sees the connection
    // end (EOF or reset), not a hang.
    let mut s = TcpStream::connect(("127.0.0.1", dead)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(b"anyone?\n");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
    assert_eq!(server.ask("hello"), "echo: hello\n");
    assert_eq!(server.exit(0), Some(0));
}

#[test]
fn clients_that_vanish_mid_stream_leave_no_guest_sockets() {
    if !kvm_available() {
        return;
    }
    let img = image("lineserver");
    let port = free_port();
    let server = Server::publish(&img, &format!("127.0.0.1:{port}:7000"), port);
    for i in 0..20 {
        let mut s = server.connect();
        // Half a line, then gone: half of them reset (linger 0), half
        // closed mid-line.
        s.write_all(b"half a li").unwrap();
        if i % 2 == 0 {
            socket2_linger_zero(&s);
        } else {
            s.shutdown(Shutdown::Both).unwrap();
        }
        drop(s);
    }
    // The guest notices each one; bounded wait for it to get there.
    let t = Instant::now();
    loop {
        let n = server.ask("clients");
        if n == "clients: 1\n" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "guest still holds {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.exit(0), Some(0));
}

/// SO_LINGER 0: close() then sends a reset, as a crashed client's kernel would.
fn socket2_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn a_client_flooding_a_guest_that_does_not_read_is_held_back() {
    if !kvm_available() {
        return;
    }
    let img = image("lineserver");
    let port = free_port();
    let server = Server::publish(&img, &format!("127.0.0.1:{port}:7000"), port);
    // The guest stops reading this connection ("hold"), then the client
    // pushes 64 MiB at it. The runner must not buffer it all: it stops
    // reading the host socket while the guest's window is full, so the
    // host socket fills and the client's write times out.
    let mut s = server.connect();
    writeln!(s, "hold").unwrap();
    let mut answer = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    assert_eq!(answer, "holding\n");
    let before = rss_kib(server.child.id());
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = vec![b'y'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match s.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    let rss = rss_kib(server.child.id());
    eprintln!("flood: {sent} bytes accepted by the host socket; runner RSS {before} -> {rss} KiB");
    assert!(sent < 64 << 20, "the whole flood was taken in");
    // What the runner holds of it: its relay ring and the guest's socket
    // buffer, tens of KiB, far below what the client pushed.
    assert!(
        rss.saturating_sub(before) < 16 << 10,
        "the runner grew by {} KiB while {sent} bytes were pushed",
        rss.saturating_sub(before)
    );
    // Still serving others.
    assert_eq!(server.ask("hi"), "echo: hi\n");
    assert_eq!(server.exit(0), Some(0));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The same image under QEMU microvm, its virtio-net device on virtio-mmio
/// and QEMU's user networking forwarding a host port: the same answers.
#[test]
fn qemu_user_networking_reaches_the_same_server() {
    if !kvm_available() {
        return;
    }
    let img = image("lineserver");
    let port = free_port();
    let mut cmd = pgkraft::bench::qemu_command(&img, 256);
    cmd.args(["-global", "virtio-mmio.force-legacy=false"])
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7000"),
        ])
        .args(["-device", "virtio-net-device,netdev=n0"])
        .args(["-append", "7000"]);
    let server = Server::start(cmd, port);
    std::thread::scope(|s| {
        for c in 0..10 {
            let conn = server.connect();
            s.spawn(move || converse(conn, &lines_for(c)));
        }
    });
    // isa-debug-exit: QEMU's status is (status << 1) | 1.
    assert_eq!(server.exit(3), Some(7));
}
