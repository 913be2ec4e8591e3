#!/usr/bin/env bash
# pgbench against a PostgreSQL image served by `pgkraft serve` and against
# the host-linked server of the same build natively on a copy of the
# image's files (`pgkraft serve --native`), alternating the two in each
# round: pgbench -i -s SCALE, then select-only (-S), TPC-B-like and
# connect-per-transaction (-S -C) runs at 1, 4 and 16 clients. Prints
# every run, then the medians and the image/native ratio per run kind; then
# the memory per idle connection (ci/idle-memory.py, IDLE connections):
# the guest's own (MemFree of its /proc/meminfo, and who holds it), the
# runner's host RSS, and natively the server processes' PSS. Benchmarks,
# not tests: nothing here asserts a figure. ROUNDS=0 measures the memory
# alone, IDLE=0 skips it. KINDS picks the run kinds. VOLUME=fresh serves
# the image's data directory from a new volume each round (`serve
# --volume`, which initializes it from the image's cluster); VOLUME=DIR
# (a directory holding the image's cluster) from a fresh copy of DIR.
# Either lies under mktemp -d's directory, on the file system of the
# native side's copy when TMPDIR is the same for both.
# PIN=1 runs each server on CPU 0 alone (the runner with its threads, or
# the native postgres processes) and pgbench on CPU 1: one core each side,
# where otherwise the native server's backends use both and the guest has
# one vCPU.
# VCPU_CPU=N serves the image with its vCPU alone on host CPU N (`serve
# --vcpu-cpu N`: the runner's other threads keep off it) and runs pgbench
# against it on the other CPUs, as a host that dedicates the CPU would;
# the native side stays as without it (its processes and pgbench run
# anywhere: the option places the guest, not the reference).
# Each run also prints the cores the server side kept busy (the host's
# busy CPU time less pgbench's own, over the run: the runner with its
# threads, or the native server's processes), and the medians table has
# them per side.
#
#   bash ci/bench-pgbench.sh IMAGE            (PGPASSWORD: the image's password)
#   ROUNDS=3 SECS=10 SCALE=10 MEM=1024 IDLE=16 bash ci/bench-pgbench.sh out/postgres-17.img
#   VOLUME=fresh KINDS=tpcb CLIENTS="1 4" IDLE=0 bash ci/bench-pgbench.sh out/postgres-17.img
set -euo pipefail

IMAGE=${1:?usage: bench-pgbench.sh IMAGE, with PGPASSWORD set to the superuser password of the image}
: "${PGPASSWORD:?set PGPASSWORD to the superuser password of the image}"
export PGPASSWORD
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
SCALE=${SCALE:-10}
MEM=${MEM:-1024}
CLIENTS=${CLIENTS:-"1 4 16"}
PGKRAFT=${PGKRAFT:-target/release/pgkraft}
PORT=${PORT:-15532}
IDLE=${IDLE:-16}
KINDS=${KINDS:-"select tpcb connect"}
VOLUME=${VOLUME:-}
PIN=${PIN:-}
VCPU_CPU=${VCPU_CPU:-}
server_cpu=() client_cpu=()
if [ -n "$PIN" ] && [ -n "$VCPU_CPU" ]; then
  echo "bench-pgbench: PIN and VCPU_CPU place the server differently; set one" >&2
  exit 2
fi
if [ -n "$PIN" ]; then
  server_cpu=(taskset -c 0)
  client_cpu=(taskset -c 1)
fi
native_client_cpu=("${client_cpu[@]}") image_client_cpu=("${client_cpu[@]}")
if [ -n "$VCPU_CPU" ]; then
  others=$(python3 -c 'import os, sys
print(",".join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != int(sys.argv[1])))' "$VCPU_CPU")
  image_client_cpu=(taskset -c "$others")
fi
here=$(dirname "$0")
work=$(mktemp -d)
# Servers still running at exit (an error, ^C) are stopped by their pids.
trap 'for p in $(cat "$work/pids" 2>/dev/null); do kill -INT "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# Start one server (image or native); print its pid once it answers.
start() {
  local side=$1 extra=()
  [ "$side" = native ] && extra=(--native)
  if [ "$side" = image ] && [ -n "$VOLUME" ]; then
    rm -rf "$work/volume"
    if [ "$VOLUME" != fresh ]; then
      cp -a "$VOLUME" "$work/volume"
      chmod 700 "$work/volume"
    fi
    extra=(--volume "$work/volume")
  fi
  if [ "$side" = image ] && [ -n "$VCPU_CPU" ]; then
    extra+=(--vcpu-cpu "$VCPU_CPU")
  fi
  "${server_cpu[@]}" "$PGKRAFT" serve "$IMAGE" --publish "127.0.0.1:$PORT:5432" --mem "$MEM" --json \
    --log "$work/$side.log" "${extra[@]}" >"$work/serve.out" &
  local pid=$!
  echo "$pid" >>"$work/pids"
  for _ in $(seq 1 600); do
    grep -q '"ready"' "$work/serve.out" 2>/dev/null && { echo "$pid"; return; }
    kill -0 "$pid" 2>/dev/null || { cat "$work/$side.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench-pgbench: $side server not ready after 60 s" >&2
  exit 1
}

# The server started inside $(start ...) is not this shell's child: wait
# for it by polling.
stop() {
  kill -INT "$1"
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

pgb() {
  "${client_cpu[@]}" pgbench -h 127.0.0.1 -p "$PORT" -U postgres "$@" postgres 2>&1
}

# Busy CPU time of the whole host so far, in clock ticks (/proc/stat).
host_busy() {
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# A run's tps, or "failed" (its output goes to the log); one failed run
# (say, too many clients while closed backends are still exiting) does not
# end the benchmark. Also writes to $work/cores the cores the server side
# kept busy over the run: the host's busy time less pgbench's own (its
# rusage), over the wall time (the host runs nothing else meanwhile).
tps() {
  local out b0 b1 t0 t1
  b0=$(host_busy)
  t0=$(date +%s.%N)
  out=$(python3 -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(r.stdout)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime + u.ru_stime}\n")
sys.exit(r.returncode)' "$work/pgbench-cpu" "${client_cpu[@]}" pgbench -h 127.0.0.1 -p "$PORT" -U postgres "$@" postgres) || true
  b1=$(host_busy)
  t1=$(date +%s.%N)
  python3 -c 'import sys; b0, b1, t0, t1, pg = map(float, sys.argv[1:6]); hz = float(sys.argv[6])
print(f"{max(0.0, (b1 - b0) / hz - pg) / (t1 - t0):.2f}")' \
    "$b0" "$b1" "$t0" "$t1" "$(cat "$work/pgbench-cpu")" "$(getconf CLK_TCK)" >"$work/cores"
  local t
  t=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  if [ -z "$t" ]; then
    printf '%s\n' "$out" >>"$work/failed.log"
    echo failed
  else
    echo "$t"
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  for side in image native; do
    if [ "$side" = image ]; then
      client_cpu=("${image_client_cpu[@]}")
    else
      client_cpu=("${native_client_cpu[@]}")
    fi
    pid=$(start "$side")
    pgb -i -q -s "$SCALE" >/dev/null
    for kind in $KINDS; do
      case $kind in
        "select") args=(-S) ;;
        "tpcb") args=() ;;
        "connect") args=(-S -C) ;;
      esac
      for c in $CLIENTS; do
        j=$((c < 2 ? c : 2))
        t=$(tps "${args[@]}" -c "$c" -j "$j" -T "$SECS")
        echo "round $round $side $kind c=$c tps=$t cores=$(cat "$work/cores")" | tee -a "$work/results"
      done
    done
    stop "$pid"
  done
done

if [ "$ROUNDS" -gt 0 ]; then
echo
echo "medians over $ROUNDS rounds (pgbench -s $SCALE, $SECS s per run, guest $MEM MiB):"
python3 - "$work/results" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
cores = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    side, kind, c, tps = f[2], f[3], f[4], f[5].split("=")[1]
    if tps != "failed":
        runs[(kind, c, side)].append(float(tps))
        cores[(kind, c, side)].append(float(f[6].split("=")[1]))
print(f"{'run':<16}{'image tps':>12}{'native tps':>12}{'ratio':>8}{'image cores':>13}{'native cores':>14}")
for kind in ("select", "tpcb", "connect"):
    for c in sorted({k[1] for k in runs if k[0] == kind}, key=lambda s: int(s[2:])):
        i = statistics.median(runs[(kind, c, "image")] or [0])
        n = statistics.median(runs[(kind, c, "native")] or [0])
        ic = statistics.median(cores[(kind, c, "image")] or [0])
        nc = statistics.median(cores[(kind, c, "native")] or [0])
        print(f"{kind + ' ' + c:<16}{i:>12.0f}{n:>12.0f}{i / n if n else 0:>8.2f}{ic:>13.2f}{nc:>14.2f}")
EOF
fi
[ -s "$work/failed.log" ] && { echo "failed runs said:"; sort -u "$work/failed.log" | grep -i error | head -5; }

# Memory per idle connection: IDLE psql sessions open and idle, against
# none, on each side (the guest's MemFree and the runner's RSS; natively
# the server processes' PSS).
[ "$IDLE" -gt 0 ] || exit 0
echo
echo "memory per idle connection (guest $MEM MiB):"
for side in image native; do
  pid=$(start "$side")
  python3 "$here/idle-memory.py" --side "$side" --port "$PORT" --serve-pid "$pid" --conns "$IDLE"
  stop "$pid"
done
