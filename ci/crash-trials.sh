#!/usr/bin/env bash
# Crash consistency of a PostgreSQL image on a volume (issue 13): N trials
# of `pgkraft serve IMAGE --volume DIR`, with CLIENTS psql sessions each
# inserting unique ids one autocommit transaction at a time
# (synchronous_commit on, the default) and writing out an id only once
# its INSERT returned; at a random moment the serve process (runner and
# guest) is killed with SIGKILL, serve is started again on the same volume,
# its log must show PostgreSQL's crash recovery, and every acknowledged id
# must be in the table. Prints one line per trial, then
#   trials: N, acknowledged commits: X, lost: L, recoveries: R
# and exits 1 if any acknowledged commit was lost or a restart did not
# recover. Without IMAGE, builds recipes/postgres-17.yaml first (after the
# README's set-up: ci/bootstrap.sh, ci/fetch-sources.sh, cargo build).
#
#   bash ci/crash-trials.sh [N=100] [IMAGE]
#   CLIENTS=4 KILL_MS=1500 bash ci/crash-trials.sh 100 out/postgres-17.img
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100}
IMAGE=${2:-}
CLIENTS=${CLIENTS:-4}
KILL_MS=${KILL_MS:-1500}   # the kill comes 0..KILL_MS ms after the clients' first commits
PGKRAFT=${PGKRAFT:-target/release/pgkraft}
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$PGKRAFT" ] || cargo build --release
if [ -z "$IMAGE" ]; then
  export PGKRAFT_PASSWORD=${PGKRAFT_PASSWORD:-crash-trials}
  "$PGKRAFT" build recipes/postgres-17.yaml --out "$work/out" >&2
  IMAGE=$work/out/postgres-17.img
fi
if [ -z "${PGPASSWORD:-}" ]; then
  if [ -n "${PGKRAFT_PASSWORD:-}" ]; then
    PGPASSWORD=$PGKRAFT_PASSWORD
  elif [ -f "${IMAGE%.img}.password" ]; then
    PGPASSWORD=$(cat "${IMAGE%.img}.password")
  else
    echo "crash-trials: set PGPASSWORD to the image's superuser password" >&2
    exit 2
  fi
fi
export PGPASSWORD PGCONNECT_TIMEOUT=20

volume=$work/volume
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# serve on the volume, its log in $1; sets $pid once it accepts connections.
start() {
  "$PGKRAFT" serve "$IMAGE" --publish "127.0.0.1:$port:5432" --volume "$volume" \
    --json --log "$1" >"$work/serve.out" 2>>"$work/serve.err" &
  pid=$!
  for _ in $(seq 1 1200); do
    grep -q '"ready"' "$work/serve.out" 2>/dev/null && return
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.err" "$1" >&2; exit 1; }
    sleep 0.05
  done
  echo "crash-trials: serve not ready after 60 s" >&2
  cat "$1" >&2
  exit 1
}

sql() {
  psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@"
}

acked_total=0
lost_total=0
recovered=0
for trial in $(seq 1 "$N"); do
  start "$work/before.log"
  sql -c "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS acks (id bigint PRIMARY KEY)"
  # Each client's ids: trial * 10^12 + client * 10^9 + i. psql prints an
  # id (INSERT ... RETURNING) after the server acknowledged its commit.
  for c in $(seq 1 "$CLIENTS"); do
    first=$((trial * 1000000000000 + c * 1000000000))
    seq "$first" $((first + 999999999)) |
      sed 's/.*/INSERT INTO acks (id) VALUES (&) RETURNING id;/' |
      sql >"$work/acked.$c" 2>/dev/null &
  done
  # psql's output to a file is buffered until it exits: the server counts.
  for _ in $(seq 1 600); do
    [ "$(sql -c "SELECT count(*) FROM acks WHERE id >= $((trial * 1000000000000))")" -ge 40 ] && break
    sleep 0.1
  done
  sleep "$(awk -v r="$RANDOM" -v m="$KILL_MS" 'BEGIN { printf "%.3f", (r % (m + 1)) / 1000 }')"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  wait || true   # the clients end when their connection does
  sort -u "$work"/acked.* >"$work/acked"
  rm -f "$work"/acked.*

  start "$work/after.log"
  if grep -q "automatic recovery in progress" "$work/after.log" &&
     grep -qE "redo starts at|redo is not required" "$work/after.log"; then
    recovered=$((recovered + 1))
  else
    echo "trial $trial: no crash recovery in the restarted server's log:" >&2
    cat "$work/after.log" >&2
  fi
  sql -c "SELECT id FROM acks WHERE id >= $((trial * 1000000000000)) AND id < $(((trial + 1) * 1000000000000))" |
    sort -u >"$work/present"
  acked=$(wc -l <"$work/acked")
  lost=$(comm -23 "$work/acked" "$work/present" | wc -l)
  kill -INT "$pid"
  wait "$pid" || { echo "crash-trials: serve did not stop cleanly" >&2; exit 1; }
  pid=
  echo "trial $trial: acknowledged $acked, lost $lost"
  [ "$lost" -eq 0 ] || comm -23 "$work/acked" "$work/present" | head -5 | sed 's/^/  lost id /'
  acked_total=$((acked_total + acked))
  lost_total=$((lost_total + lost))
  rm -f "$work/before.log" "$work/after.log"
done
echo "trials: $N, acknowledged commits: $acked_total, lost: $lost_total, recoveries: $recovered"
[ "$lost_total" -eq 0 ] && [ "$recovered" -eq "$N" ]
