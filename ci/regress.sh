#!/usr/bin/env bash
# PostgreSQL's regression schedule against a served image and against the
# host-linked server of the same build natively on a copy of the image's
# files (`pgkraft serve --native`), with pg_regress and psql built from the
# pinned source; then the pass counts of each and the tests whose result
# differs, with the first lines of their diffs (ci/regress-compare.py).
#
#   bash ci/regress.sh MAJOR                  MAJOR: 15, 17 or 18
#   SCHEDULE=serial TIMEOUT=3600 MEM=2048 bash ci/regress.sh 17
#
# The test image (recipe generated into the work directory) links the
# regression's C functions (postgres.test_modules: regress, autoinc,
# refint) and carries src/test/regress/data at the absolute path pg_regress
# passes the server as abs_srcdir, plus an empty results/ directory at
# abs_builddir: the server COPYs from and to those paths on its own file
# system. The native server reads the same paths on the host. Both
# servers are started fresh, listen on 127.0.0.1 only, and get the
# `regression` database as pg_regress would make it (pg_regress runs with
# --use-existing, so it neither creates nor drops databases or roles).
#
# Environment: SCHEDULE (parallel|serial, default parallel), TIMEOUT
# (seconds per pg_regress run, default 2400), MEM (guest MiB, default
# 2048), PORT (default 15632; the native run uses PORT+1), WORK (default
# /tmp/pgkraft-regress-MAJOR: readable by the native server's user, which
# is `nobody` under root), PGKRAFT_CACHE (default ~/.cache/pgkraft, where
# the host's pg_regress and psql are kept per source hash).
# Exit status: 0 when both runs completed (whatever their failures), 1 when
# a run could not be made, 2 for bad usage.
set -euo pipefail

MAJOR=${1:-}
case "$MAJOR" in
15 | 17 | 18) ;;
*)
  echo "usage: ci/regress.sh 15|17|18" >&2
  exit 2
  ;;
esac
SCHEDULE=${SCHEDULE:-parallel}
case "$SCHEDULE" in
parallel | serial) ;;
*)
  echo "regress: SCHEDULE must be parallel or serial, not '$SCHEDULE'" >&2
  exit 2
  ;;
esac
TIMEOUT=${TIMEOUT:-2400}
MEM=${MEM:-2048}
PORT=${PORT:-15632}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/pgkraft-regress-$MAJOR}
CACHE=${PGKRAFT_CACHE:-$HOME/.cache/pgkraft}
PGKRAFT=${PGKRAFT:-$repo/target/release/pgkraft}
export LC_ALL=C

die() {
  echo "regress: $*" >&2
  exit 1
}
note() { echo "regress: $*" >&2; }

# The pinned tarball of MAJOR, from the catalogue pgkraft builds from.
read -r tarball_name sha < <(python3 - "$repo/src/catalog/mod.rs" "$MAJOR" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
for block in re.findall(r"PgPin \{(.*?)\}", text, re.S):
    if re.search(r"major:\s*%s," % sys.argv[2], block):
        print(re.search(r'file_name:\s*"([^"]+)"', block).group(1),
              re.search(r'sha256:\s*"([0-9a-f]+)"', block).group(1))
EOF
)
[ -n "${sha:-}" ] || die "no pin for PostgreSQL $MAJOR in src/catalog/mod.rs"
# Where `pgkraft build` looks (build::fetch): $PGKRAFT_SOURCES, sources/,
# and the cache's store of fetched sources.
tarball=""
IFS=: read -r -a stores <<<"${PGKRAFT_SOURCES:-}"
for d in "${stores[@]}" "$repo/sources" "$CACHE/sources/$sha"; do
  [ -n "$d" ] && [ -f "$d/$tarball_name" ] && {
    tarball=$d/$tarball_name
    break
  }
done
[ -n "$tarball" ] || die "$tarball_name is not in \$PGKRAFT_SOURCES, sources/ or the cache; fix: bash ci/fetch-sources.sh postgresql-$MAJOR"
echo "$sha  $tarball" | sha256sum -c --quiet - || die "$tarball does not have the pinned sha256 $sha"

# --- pg_regress and psql for this host, from the pinned source ------------
# A plain host build (gcc, glibc): only the clients, so nothing of it
# meets the server. Kept under the cache by the tarball's hash.
tools=$CACHE/regress-tools/$sha
if [ ! -x "$tools/bin/pg_regress" ] || [ ! -x "$tools/bin/psql" ] || [ ! -d "$tools/regress" ]; then
  note "building pg_regress and psql from $tarball_name (once per source)"
  scratch=$(mktemp -d)
  mkdir -p "$CACHE/regress-tools"
  partial=$(mktemp -d "$CACHE/regress-tools/.partial-XXXXXX")
  tar -xjf "$tarball" -C "$scratch"
  src=$(echo "$scratch"/postgresql-*)
  jobs=$(nproc)
  {
    (cd "$src" && ./configure --prefix="$partial" --without-readline --without-icu \
      --without-zlib --without-openssl --without-zstd --without-lz4 --disable-nls \
      --without-llvm)
    make -C "$src/src/interfaces/libpq" -j"$jobs" install
    make -C "$src/src/bin/psql" -j"$jobs" install
    make -C "$src/src/test/regress" -j"$jobs" pg_regress
  } >"$scratch/build.log" 2>&1 || {
    tail -30 "$scratch/build.log" >&2
    die "the client build failed (log above; full log $scratch/build.log)"
  }
  cp "$src/src/test/regress/pg_regress" "$partial/bin/"
  # The schedule, SQL, expected output and data files of the same source.
  mkdir -p "$partial/regress"
  (cd "$src/src/test/regress" && cp -r sql expected data parallel_schedule resultmap "$partial/regress/")
  [ -f "$src/src/test/regress/serial_schedule" ] && cp "$src/src/test/regress/serial_schedule" "$partial/regress/"
  # The prefix is compiled into psql and libpq's rpath, so the tree stays
  # where it was built; the hash's name is a link to it, made last, so an
  # interrupted build is never taken for a finished one.
  rm -rf "$tools"
  ln -s "$(basename "$partial")" "$tools"
  rm -rf "$scratch"
fi
tools=$(readlink -f "$tools")

# --- the work directory and the test image ---------------------------------
[ -x "$PGKRAFT" ] || die "$PGKRAFT is missing; fix: cargo build --release"
rm -rf "$WORK"
mkdir -p "$WORK/in" "$WORK/empty" "$WORK/out-image/results" "$WORK/out-native/results"
cp -r "$tools/regress/." "$WORK/in/"
# The clients, where the user they run as can reach them (the cache may be
# under a private home); libpq beside them.
mkdir -p "$WORK/clients"
cp -r "$tools/bin" "$tools/lib" "$WORK/clients/"
export LD_LIBRARY_PATH=$WORK/clients/lib
clients=$WORK/clients/bin
chmod -R a+rX "$WORK"
# Under root the native server runs as nobody (smoke::native), and
# pg_regress does too: the schedule expects client and server to be one
# user (psql writes a file with \g that the server then COPYs FROM).
as_client=()
if [ "$(id -u)" = 0 ]; then
  as_client=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  chown -R nobody:nogroup "$WORK/out-image" "$WORK/out-native"
fi
if [ "$SCHEDULE" = serial ]; then
  if [ -f "$WORK/in/serial_schedule" ]; then
    schedule=$WORK/in/serial_schedule
  else
    # PostgreSQL 16 dropped serial_schedule: the parallel one with one
    # connection at a time (upstream's installcheck) replaced it.
    schedule=$WORK/in/parallel_schedule
    serial_opt=(--max-connections=1)
  fi
else
  schedule=$WORK/in/parallel_schedule
fi

recipe=$WORK/regress-$MAJOR.yaml
cat >"$recipe" <<EOF
# Generated by ci/regress.sh: PostgreSQL $MAJOR for its regression schedule.
name: regress-$MAJOR
kind: postgres
postgres:
  version: "$MAJOR"
  extensions: [plpgsql]
  test_modules: [regress, autoinc, refint]
  settings:
    listen_addresses: "*"
    # A parallel group runs up to 20 sessions; some tests open more.
    max_connections: 40
    shared_buffers: 32MB
cluster:
  auth: trust
  # The schedule's text search tests use the english configuration.
  text_search: true
rootfs:
  zstd_level: 3
  files:
    - from: $WORK/in/data
      to: $WORK/in/data
    - from: $WORK/empty
      to: $WORK/out-image/results
vm:
  memory_mib: $MEM
EOF
note "building the test image"
"$PGKRAFT" build "$recipe" --out "$WORK/image" >"$WORK/build.log" 2>&1 ||
  {
    tail -20 "$WORK/build.log" >&2
    die "the test image did not build"
  }
image=$WORK/image/regress-$MAJOR.img

# --- one run ---------------------------------------------------------------
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    for _ in $(seq 1 300); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid"
  fi
  server_pid=""
}
trap stop_server EXIT

run() {
  local side=$1 port=$2 extra=()
  [ "$side" = native ] && extra=(--native)
  local out=$WORK/out-$side
  "$PGKRAFT" serve "$image" --publish "127.0.0.1:$port:5432" --mem "$MEM" --json \
    --log "$WORK/$side-server.log" "${extra[@]}" >"$WORK/$side-serve.json" &
  server_pid=$!
  for _ in $(seq 1 1200); do
    grep -q '"ready"' "$WORK/$side-serve.json" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || {
      tail -20 "$WORK/$side-server.log" >&2
      die "the $side server ended before it was ready"
    }
    sleep 0.1
  done
  grep -q '"ready"' "$WORK/$side-serve.json" || die "the $side server was not ready after 120 s"
  # What pg_regress does for a database of its own (create_database() in
  # pg_regress.c), since --use-existing leaves it to us.
  "$clients/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres <<'SQL' >"$WORK/$side-createdb.log" 2>&1 ||
CREATE DATABASE "regression" TEMPLATE=template0;
ALTER DATABASE "regression" SET lc_messages TO 'C';
ALTER DATABASE "regression" SET lc_monetary TO 'C';
ALTER DATABASE "regression" SET lc_numeric TO 'C';
ALTER DATABASE "regression" SET lc_time TO 'C';
ALTER DATABASE "regression" SET bytea_output TO 'hex';
ALTER DATABASE "regression" SET timezone_abbreviations TO 'Default';
SQL
    {
      cat "$WORK/$side-createdb.log" >&2
      die "could not create the regression database on the $side server"
    }
  note "$side: pg_regress ($SCHEDULE schedule, at most ${TIMEOUT} s)"
  local started=$SECONDS status=0
  (cd "$out" && timeout --signal=TERM --kill-after=30 "$TIMEOUT" \
    ${as_client[@]+"${as_client[@]}"} "$clients/pg_regress" --use-existing --host 127.0.0.1 --port "$port" --user postgres \
    --bindir "$clients" --inputdir "$WORK/in" --outputdir "$out" \
    --dlpath /usr/local/pgsql/lib --schedule "$schedule" ${serial_opt[@]+"${serial_opt[@]}"} \
    >"$WORK/$side-regress.log" 2>&1) || status=$?
  echo "$status $((SECONDS - started))" >"$WORK/$side-status"
  note "$side: pg_regress exit $status after $((SECONDS - started)) s"
  stop_server
}

run image "$PORT"
run native "$((PORT + 1))"

python3 "$repo/ci/regress-compare.py" --major "$MAJOR" --work "$WORK"
