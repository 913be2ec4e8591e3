#!/usr/bin/env python3
"""Memory per idle connection of a served PostgreSQL (ci/bench-pgbench.sh).

Opens N idle connections (psql sessions waiting on their input), measures,
closes them, measures again:

  image   the guest's own view: MemFree of /proc/meminfo read through SQL
          (pg_read_file), with its holders (ProcStacks, SlotsInUse, ...),
          and the runner's host RSS (VmRSS of `pgkraft serve`);
  native  the host-linked server's processes: the sum of their PSS and
          private memory (/proc/PID/smaps_rollup), the postmaster's tree.

Every figure is read from the system as it is; nothing is asserted.

  python3 ci/idle-memory.py --side image --port 15532 --serve-pid PID [--conns 16]

PGPASSWORD must be the image's superuser password.
"""

import argparse
import os
import subprocess
import sys
import time


def psql_args(port):
    return ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-d", "postgres", "-X", "-q", "-A", "-t"]


def query(port, sql):
    out = subprocess.run(psql_args(port) + ["-c", sql], check=True,
                         capture_output=True, text=True, timeout=60)
    return out.stdout


def meminfo(port):
    """The guest's /proc/meminfo, parsed as Linux's: {name: kB}."""
    fields = {}
    for line in query(port, "SELECT pg_read_file('/proc/meminfo')").splitlines():
        if not line:  # psql's own newline after the text's
            continue
        name, _, rest = line.partition(":")
        value, unit = rest.split()
        assert unit == "kB", line
        fields[name] = int(value)
    return fields


def client_backends(port):
    sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    return int(query(port, sql).strip())


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def children(pid):
    """Every descendant of pid (from /proc/*/stat's ppid)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # The name may hold spaces; fields resume after its ')'.
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def tree_memory(pid):
    """Sum of PSS and of private memory (kB) of the server's processes."""
    pss = private = count = 0
    for p in children(pid):
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            with open(f"/proc/{p}/smaps_rollup") as f:
                rollup = dict((l.split(":")[0], int(l.split()[1]))
                              for l in f if l.split()[-1] == "kB")
        except OSError:
            continue
        pss += rollup["Pss"]
        private += rollup["Private_Clean"] + rollup["Private_Dirty"]
        count += 1
    return {"Pss": pss, "Private": private, "processes": count}


def measure(side, port, serve_pid):
    if side == "image":
        m = meminfo(port)
        m["RunnerRSS"] = status_kb(serve_pid, "VmRSS")
        return m
    return tree_memory(serve_pid)


def wait_for_backends(port, want, limit=30.0):
    """Until the server counts `want` client backends (the asking one
    included), at most `limit` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if client_backends(port) == want:
            return True
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=["image", "native"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--serve-pid", type=int, required=True)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between the last connect and a measurement")
    a = ap.parse_args()

    wait_for_backends(a.port, 1)
    time.sleep(a.settle)
    before = measure(a.side, a.port, a.serve_pid)
    sessions = []
    try:
        for _ in range(a.conns):
            s = subprocess.Popen(psql_args(a.port), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            s.stdin.write("SELECT 1;\n")
            s.stdin.flush()
            sessions.append(s)
        # Each answers once connected; then it idles, waiting on its input.
        for s in sessions:
            if s.stdout.readline().strip() != "1":
                sys.exit(f"idle-memory: a session did not answer (exit {s.wait()})")
        time.sleep(a.settle)
        during = measure(a.side, a.port, a.serve_pid)
    finally:
        for s in sessions:
            s.stdin.close()
        for s in sessions:
            s.wait(timeout=60)
    closed = wait_for_backends(a.port, 1)
    time.sleep(a.settle)
    after = measure(a.side, a.port, a.serve_pid)

    n = a.conns
    print(f"{a.side}: {n} idle connections (psql sessions), measured {a.settle:g} s "
          f"after the last connect and after they closed"
          + ("" if closed else " (their backends had not all exited after 30 s)"))
    if a.side == "image":
        per = (before["MemFree"] - during["MemFree"]) / n
        print(f"  guest MemFree: {before['MemFree']} kB before, {during['MemFree']} kB with "
              f"{n}, {after['MemFree']} kB after: {per:.0f} KiB per connection "
              f"({before['MemTotal']} kB MemTotal)")
        holders = [k for k in before if k not in
                   ("MemTotal", "MemFree", "MemAvailable", "RunnerRSS")]
        print("  of which per connection: " + ", ".join(
            f"{k} {(during[k] - before[k]) / n:.0f}" for k in holders) + " KiB")
        print("  not back after they closed: " + ", ".join(
            f"{k} {after[k] - before[k]}" for k in holders) + " kB")
        per_rss = (during["RunnerRSS"] - before["RunnerRSS"]) / n
        print(f"  runner host RSS: {before['RunnerRSS']} KiB before, {during['RunnerRSS']} KiB "
              f"with {n}, {after['RunnerRSS']} KiB after: {per_rss:.0f} KiB per connection")
    else:
        per_pss = (during["Pss"] - before["Pss"]) / n
        per_priv = (during["Private"] - before["Private"]) / n
        print(f"  native server processes: {before['processes']} -> {during['processes']} "
              f"-> {after['processes']}")
        print(f"  PSS sum: {before['Pss']} kB before, {during['Pss']} kB with {n}, "
              f"{after['Pss']} kB after: {per_pss:.0f} KiB per backend")
        print(f"  private sum: {before['Private']} kB before, {during['Private']} kB "
              f"with {n}: {per_priv:.0f} KiB per backend")


if __name__ == "__main__":
    main()
