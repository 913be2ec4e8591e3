#!/usr/bin/env python3
"""Network benchmark, one run, side by side: the line server
(test-vms/apps/lineserver.c) in the image behind `pgkraft run --publish`
against the same program built natively, listening on loopback.

Prints, alternating between the two for every round:
  - request/response ping-pong latency over one connection (median, p99),
  - bulk throughput (lines streamed and echoed back),
and then 1,000 idle connections held open through --publish, with the
runner's memory (RSS) before and after.

Usage: python3 ci/bench-net.py [ROUNDS] [PINGS_PER_ROUND]
Traffic goes to 127.0.0.1 only; every loop is bounded.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
PINGS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
BULK_LINES = 20000
LINE = b"x" * 1000 + b"\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if b"listening on port" in line:
            return
    proc.kill()
    sys.exit(f"bench-net: {what} never said it listens")


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ping_pong(port, n):
    s = connect(port)
    f = s.makefile("rb")
    times = []
    for i in range(n):
        t = time.perf_counter_ns()
        s.sendall(b"ping %d\n" % i)
        f.readline()
        times.append((time.perf_counter_ns() - t) / 1000)
    s.close()
    return times


def bulk(port):
    s = connect(port)
    f = s.makefile("rb")
    t = time.perf_counter()
    sent = 0
    got = 0
    batch = LINE * 100
    while sent < BULK_LINES:
        s.sendall(batch)
        sent += 100
        for _ in range(100):
            got += len(f.readline())
    dt = time.perf_counter() - t
    s.close()
    return 2 * got / dt / 1e6  # MB/s, both directions


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    out = tempfile.mkdtemp(prefix="bench-net-")
    pg = os.path.join(ROOT, "target/release/pgkraft")
    build = subprocess.run(
        [pg, "build", os.path.join(ROOT, "recipes/lineserver.yaml"), "--out", out, "--json"],
        capture_output=True,
    )
    if build.returncode != 0:
        sys.exit(build.stderr.decode())
    image = json.loads(build.stdout)["image"]
    native_bin = os.path.join(out, "lineserver-native")
    subprocess.run(
        ["cc", "-O2", "-o", native_bin, os.path.join(ROOT, "test-vms/apps/lineserver.c")],
        check=True,
    )
    guest_port, native_port = free_port(), free_port()
    guest = subprocess.Popen(
        [pg, "run", image, "--mem", "512", "--publish", f"127.0.0.1:{guest_port}:7000"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    native = subprocess.Popen(
        [native_bin, str(native_port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        wait_listening(guest, "the image")
        wait_listening(native, "the native server")
        lat = {"guest": [], "native": []}
        thr = {"guest": [], "native": []}
        ports = {"guest": guest_port, "native": native_port}
        for r in range(ROUNDS):
            order = ["guest", "native"] if r % 2 == 0 else ["native", "guest"]
            for who in order:
                lat[who] += ping_pong(ports[who], PINGS)
                thr[who].append(bulk(ports[who]))
        print(f"ping-pong over one connection, {ROUNDS} x {PINGS} round trips each, alternating:")
        for who in ("guest", "native"):
            v = sorted(lat[who])
            print(
                f"  {who:6}  median {statistics.median(v):8.1f} us   p99 {v[int(len(v) * 0.99)]:8.1f} us"
            )
        ratio = statistics.median(lat["guest"]) / statistics.median(lat["native"])
        print(f"  latency ratio image/native (median): {ratio:.2f}x")
        print(f"bulk echo of {BULK_LINES} x 1001-byte lines, {ROUNDS} runs each (MB/s, both directions):")
        for who in ("guest", "native"):
            print(f"  {who:6}  median {statistics.median(thr[who]):8.1f} MB/s")
        tr = statistics.median(thr["guest"]) / statistics.median(thr["native"])
        print(f"  throughput ratio image/native: {tr:.2f}x")

        before = rss_kib(guest.pid)
        held = []
        failed = ""
        t = time.time()
        for _ in range(1000):
            try:
                held.append(connect(guest_port))
            except OSError as e:
                failed = f" (connection {len(held) + 1} failed: {e})"
                break
        # The runner accepts at once; the guest takes them as it can. Ask
        # it (over one more connection) until it holds them all, 60 s at most.
        count = "no answer"
        while time.time() - t < 60:
            try:
                s = connect(guest_port)
                s.sendall(b"clients\n")
                count = s.makefile("rb").readline().decode().strip()
                s.close()
            except OSError as e:
                count = f"no answer ({e})"
            n = count.removeprefix("clients: ")
            if n.isdigit() and int(n) >= len(held) + 1:
                break
            time.sleep(0.2)
        took = time.time() - t
        after = rss_kib(guest.pid)
        print(
            f"{len(held)} idle connections through --publish{failed}: the guest says {count!r} "
            f"(the asking one included) {took:.1f} s after the first connect; runner RSS "
            f"{before} -> {after} KiB ({(after - before) / max(len(held), 1):.1f} KiB per "
            f"connection, guest memory included)"
        )
        for h in held:
            h.close()
    finally:
        guest.kill()
        native.kill()
        guest.wait()
        native.wait()


if __name__ == "__main__":
    main()
