#!/usr/bin/env bash
# A fleet of N databases in one supervisor (`pgkraft fleet`), each woken
# once by a client in random order. Builds a fleet file for N databases of
# IMAGE on 127.0.0.1 ports BASE..BASE+N-1, starts the supervisor, waits
# until every database has hibernated, wakes each with psql (`select 1`)
# and prints: databases, answered, failures; the supervisor's RSS/PSS
# (/proc/PID/smaps_rollup) with all booted and idle, with all hibernated
# and with all woken and idle again, per database; the hibernation files
# on disk; wake-to-first-answer median and p90 from `fleet status`.
#
# Usage: ci/fleet.sh [N] [IMAGE]        (N default 200; IMAGE default: a
#        build of recipes/postgres-17.yaml with PGKRAFT_PASSWORD=test-password)
# Environment: FLEET_STORAGE=memory|volume (default memory: each volume is
#   ~23 MB more on disk), FLEET_IDLE (idle timeout, default 30s + N/5 s: it
#   must outlast waking them all, so that all run at once afterwards),
#   FLEET_MEM (MiB per guest, default 128), FLEET_BASE_PORT (default 21000),
#   FLEET_DIR (work directory, default a temporary one, removed at the end),
#   PGPASSWORD (default test-password).
# Every wait is bounded; the supervisor is killed (by its pid) if it
# outlives the script.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
image=${2:-}
storage=${FLEET_STORAGE:-memory}
idle=${FLEET_IDLE:-$((30 + n / 5))s}
mem=${FLEET_MEM:-128}
base=${FLEET_BASE_PORT:-21000}
export PGPASSWORD=${PGPASSWORD:-test-password}
case $storage in memory | volume) ;; *)
    echo "FLEET_STORAGE is memory or volume, not $storage" >&2
    exit 2
    ;;
esac
command -v psql >/dev/null || {
    echo "psql is missing (apt-get install postgresql-client-15)" >&2
    exit 2
}

cargo build --release --locked -q
pgkraft=$PWD/target/release/pgkraft
work=${FLEET_DIR:-$(mktemp -d /tmp/pgkraft-fleet.XXXXXX)}
mkdir -p "$work"
sup=
cleanup() {
    if [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null; then
        kill -KILL "$sup" 2>/dev/null || true
    fi
    [ -n "${FLEET_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$image" ]; then
    PGKRAFT_PASSWORD=$PGPASSWORD "$pgkraft" build recipes/postgres-17.yaml \
        --out "$work/image" --json >"$work/build.json"
    image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$work/build.json")
fi
image=$(realpath "$image")

# Free disk for the hibernation files (and volumes), with room to spare.
per_mb=40
[ "$storage" = volume ] && per_mb=80
need_mb=$((n * per_mb))
free_mb=$(df -Pm "$work" | awk 'NR == 2 { print $4 }')
if [ "$free_mb" -lt "$need_mb" ]; then
    echo "fleet: $n databases ($storage) need ~$need_mb MB in $work, $free_mb MB free" >&2
    exit 2
fi

file=$work/fleet.yaml
{
    echo "defaults: { image: $image, memory_mib: $mem, idle_timeout: $idle }"
    echo "databases:"
    for i in $(seq 0 $((n - 1))); do
        echo "  - name: db$i"
        echo "    port: $((base + i))"
        if [ "$storage" = volume ]; then
            echo "    volume: vols/db$i"
        else
            echo "    hibernate_dir: hib/db$i"
        fi
    done
} >"$file"

echo "fleet: $n databases ($storage), $mem MiB each, idle timeout $idle, image $image"
echo "fleet: work directory $work (ulimit -n $(ulimit -n), vm.max_map_count $(cat /proc/sys/vm/max_map_count))"
t0=$(date +%s.%N)
"$pgkraft" fleet run "$file" --json >"$work/events.jsonl" 2>"$work/supervisor.log" &
sup=$!

status() {
    timeout 30 "$pgkraft" fleet status "$file" --json >"$work/status.json" 2>/dev/null
}
# count STATE: how many databases are in STATE now.
count() {
    python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(sum(1 for d in s["databases"] if d["state"] == sys.argv[2]))' "$work/status.json" "$1"
}
# smaps KEY: the supervisor's KEY (Rss, Pss) in kB.
smaps() {
    awk -v k="$1:" '$1 == k { print $2 }' "/proc/$sup/smaps_rollup"
}
elapsed() {
    python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$t0"
}
# wait_for WHAT LIMIT_S COND: polls `fleet status` until COND (a shell
# test on the status) holds; fails after LIMIT_S seconds.
wait_for() {
    local what=$1 limit=$2 cond=$3 start
    start=$(date +%s)
    while :; do
        if ! kill -0 "$sup" 2>/dev/null; then
            echo "fleet: the supervisor ended while waiting for $what" >&2
            tail -20 "$work/supervisor.log" >&2
            exit 1
        fi
        if status && eval "$cond"; then
            return 0
        fi
        if [ $(($(date +%s) - start)) -ge "$limit" ]; then
            echo "fleet: not $what within ${limit}s" >&2
            timeout 30 "$pgkraft" fleet status "$file" | tail -5 >&2 || true
            return 1
        fi
        sleep 1
    done
}
declare -A rss pss
measure() {
    rss[$1]=$(smaps Rss)
    pss[$1]=$(smaps Pss)
}

# 1. Booting: all ready before the first hibernates, if the idle timeout
# outlasts the boots (it is said either way).
booted=no
if wait_for "all booted" $((120 + n * 3)) \
    '[ "$(count running)" -eq "$n" ] || [ "$(count booting)" -eq 0 ]'; then
    if [ "$(count running)" -eq "$n" ]; then
        booted=yes
        measure booted
    fi
fi
boot_s=$(elapsed)
failed_boot=$(count failed)

# 2. All hibernated.
wait_for "all hibernated" $((180 + n * 3)) \
    '[ "$(($(count hibernated) + $(count failed)))" -eq "$n" ]'
sleep 1
measure hibernated
hib_s=$(elapsed)
if [ "$storage" = volume ]; then hibdirs=("$work"/vols/*.hibernate); else hibdirs=("$work"/hib/*); fi
hib_disk=$(du -scB1 "${hibdirs[@]}" | awk 'END { print $1 }')

# 3. Each woken once, in random order.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
answered=0
failures=0
wake_start=$(date +%s.%N)
for i in $(seq 0 $((n - 1)) | shuf); do
    if out=$(timeout 60 psql -h 127.0.0.1 -p $((base + i)) -U postgres -d postgres \
        -Atc 'select 1' 2>&1) && [ "$out" = 1 ]; then
        answered=$((answered + 1))
    else
        failures=$((failures + 1))
        echo "fleet: db$i: $out" >&2
    fi
done
wake_s=$(python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$wake_start")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2
status
running_after=$(count running)
measure woken
cp "$work/status.json" "$work/status-woken.json"

# 4. Stop: SIGINT, every database shuts down (the hibernated wake for it).
stop_start=$(date +%s)
kill -INT "$sup"
code=
for _ in $(seq 1 $((120 + n))); do
    if ! kill -0 "$sup" 2>/dev/null; then
        wait "$sup" && code=0 || code=$?
        break
    fi
    sleep 1
done
if [ -z "$code" ]; then
    echo "fleet: the supervisor did not stop within $((120 + n))s; killed" >&2
    kill -KILL "$sup" || true
    code=killed
fi
stop_s=$(($(date +%s) - stop_start))
sup=

python3 - "$work/status-woken.json" "$n" "$answered" "$failures" "$failed_boot" \
    "$booted" "${rss[booted]:-0}" "${pss[booted]:-0}" "${rss[hibernated]}" "${pss[hibernated]}" \
    "${rss[woken]}" "${pss[woken]}" "$running_after" "$hib_disk" "$boot_s" "$hib_s" \
    "$wake_s" "$stop_s" "$code" "$load_before" "$load_after" <<'EOF'
import json, statistics, sys
(path, n, answered, failures, failed_boot, booted, rss_b, pss_b, rss_h, pss_h, rss_w, pss_w,
 running_after, hib_disk, boot_s, hib_s, wake_s, stop_s, code, load_before,
 load_after) = sys.argv[1:]
n = int(n)
s = json.load(open(path))
dbs = s["databases"]
first = sorted(d["last_wake"]["first_answer_ms"] for d in dbs
               if d["last_wake"] and d["last_wake"]["cause"] == "connection"
               and d["last_wake"]["first_answer_ms"] is not None)
files = sum(d["memory"]["memory_file_bytes"] or 0 for d in dbs)
guest = [d["memory"]["guest_resident_bytes"] for d in dbs if d["state"] == "running"]
mb = lambda kb: int(kb) / 1024
def line(what, rss, pss, k):
    print(f"supervisor, {what}: RSS {mb(rss):.0f} MB, PSS {mb(pss):.0f} MB; "
          f"per database RSS {mb(rss) / k:.2f} MB, PSS {mb(pss) / k:.2f} MB")
print(f"databases: {n}")
print(f"answered: {answered}")
print(f"failures: {failures}" + (f" (and {failed_boot} failed to boot)" if int(failed_boot) else ""))
print(f"times: all booted {boot_s} s, all hibernated {hib_s} s after the start; "
      f"{n} wakes one after another in {wake_s} s; stop {stop_s} s (exit {code})")
if booted == "yes":
    line(f"all {n} booted and idle", rss_b, pss_b, n)
else:
    print("supervisor, all booted and idle: not seen (the first hibernated before the last "
          "was up: raise FLEET_IDLE)")
line(f"all {n} hibernated", rss_h, pss_h, n)
line(f"after the wakes, {running_after} of {n} running idle", rss_w, pss_w, n)
if guest:
    print(f"guest RAM resident per running database (fleet status): "
          f"mean {statistics.mean(guest) / 1e6:.1f} MB, max {max(guest) / 1e6:.1f} MB")
print(f"hibernation files: {int(hib_disk) / 1e6:.0f} MB on disk "
      f"({files / 1e6:.0f} MB of data, {files / 1e6 / n:.1f} MB per database)")
if first:
    p90 = first[min(len(first) - 1, int(round(0.9 * (len(first) - 1))))]
    print(f"wake -> first answer (fleet status, n={len(first)}): "
          f"median {statistics.median(first):.1f} ms, p90 {p90:.1f} ms, max {first[-1]:.1f} ms "
          f"(host load average {load_before} before the wakes, {load_after} after)")
else:
    print("wake -> first answer: none measured")
EOF
[ "$failures" -eq 0 ] && [ "$answered" -eq "$n" ] && [ "$code" = 0 ]
