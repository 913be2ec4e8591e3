//! `pgkraft run --tap`: the line server (test-vms/apps/lineserver.c) on a
//! tap device, reached by a client over the kernel's own TCP/IP. All of it
//! runs in a network namespace the test creates (`unshare -n`), so the
//! tap, its address and every packet stay there and go with it. Bounded:
//! the whole namespace is under `timeout`, the client's waits have
//! deadlines, the guest has --timeout.

mod common;
use common::*;

use std::process::{Command, Stdio};

/// Run by `sh` in the new namespace: the tap with the host's end of the
/// link, the runner on it in the background, the client, then the
/// runner's exit status.
const NAMESPACE: &str = r#"
set -e
ip link set lo up
ip tuntap add dev pgk0 mode tap
ip addr add 10.0.2.2/24 dev pgk0
ip link set pgk0 up
"$PGKRAFT" run "$IMG" --tap pgk0 --timeout 120 </dev/null >"$LOG" 2>&1 &
runner=$!
python3 -c "$CLIENT" || { kill "$runner"; wait "$runner"; exit 1; }
set +e
wait "$runner"
echo "runner exit $?"
"#;

/// Waits (60 s at most) for the guest to accept on 10.0.2.15:7000, asks
/// `hello`, then `exit 0`, printing each answer line.
const CLIENT: &str = r#"
import socket, sys, time
deadline = time.time() + 60
def ask(line):
    while True:
        try:
            s = socket.create_connection(("10.0.2.15", 7000), timeout=2)
            break
        except OSError as e:
            if time.time() > deadline:
                sys.exit("the guest never answered on 10.0.2.15:7000: %s" % e)
            time.sleep(0.2)
    s.settimeout(20)
    s.sendall((line + "\n").encode())
    f = s.makefile()
    print(f.readline().rstrip("\n"), flush=True)
    s.close()
ask("hello")
ask("exit 0")
"#;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_guest_on_a_tap_device_answers_a_client_in_its_network_namespace() {
    if !kvm_available() {
        return;
    }
    for tool in ["unshare", "ip", "python3", "timeout"] {
        if !have(tool) {
            skipped(&format!("{tool} is not installed"));
            return;
        }
    }
    let can_unshare = Command::new("unshare")
        .args(["-n", "ip", "tuntap", "add", "dev", "probe0", "mode", "tap"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_unshare {
        skipped(
            "cannot create a network namespace with a tap device (needs root or CAP_NET_ADMIN)",
        );
        return;
    }
    let img = image("lineserver");
    let log = out_dir().join("net_tap-runner.log");
    let out = run(Command::new("timeout")
        .args(["-k", "5", "180", "unshare", "-n", "sh", "-c", NAMESPACE])
        .env("PGKRAFT", env!("CARGO_BIN_EXE_pgkraft"))
        .env("IMG", &img)
        .env("LOG", &log)
        .env("CLIENT", CLIENT)
        .stdin(Stdio::null()));
    let runner = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("--- runner ---\n{runner}");
    assert_eq!(
        stdout(&out),
        "echo: hello\nbye\nrunner exit 0\n",
        "stderr: {}",
        stderr(&out)
    );
    assert!(out.status.success());
    assert!(runner.contains("listening on port 7000"), "{runner}");
}

#[test]
fn tap_with_publish_or_a_bad_name_is_refused_with_status_2() {
    let o = run(pgkraft().args(["run", "x.img", "--tap", "pgk0", "--publish", "8080:80"]));
    assert_eq!(o.status.code(), Some(2));
    has(&stderr(&o), &["--tap", "cannot be used with", "--publish"]);
    let o = run(pgkraft().args(["run", "x.img", "--tap", "a-name-too-long-for-linux"]));
    assert_eq!(o.status.code(), Some(2));
    has(&stderr(&o), &["15 bytes", "pgk0"]);
}
