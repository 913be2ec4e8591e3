#!/usr/bin/env bash
# Snapshot/resume benchmark, all in one run: cold boot to first answer vs
# resume to first answer (medians, ratio) with QEMU microvm resuming the
# same image from its own migration file as the anchor, then density (N
# resumed instances idle at once, memory per instance). For the counter
# program, and for PostgreSQL single-user when its image builds.
# Usage: ci/bench-snapshot.sh [RUNS] [INSTANCES]   (PGKRAFT_BENCH_JSON=1 for JSON)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-15}
instances=${2:-50}
bash ci/bootstrap.sh
bash ci/fetch-sources.sh musl postgresql-17 >/dev/null
cargo build --release --locked -q
pg=./target/release/pgkraft
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
json=()
[ "${PGKRAFT_BENCH_JSON:-}" = 1 ] && json=(--json)
# Quiet when it works; on failure, its output once (not a second build).
build() {
  if ! "$pg" build "$1" --out "$out" >"$out/build.log" 2>&1; then
    cat "$out/build.log" >&2
    return 1
  fi
}

build recipes/counter.yaml
echo "== counter, light query (add 1)"
"$pg" bench resume "$out/counter.img" --vm test-vms/counter-bench.yaml --runs "$runs" "${json[@]}"
echo "== counter, query reading its 1 MiB table (get)"
"$pg" bench resume "$out/counter.img" --vm test-vms/counter.yaml --runs "$runs" "${json[@]}"
"$pg" snapshot "$out/counter.img" --vm test-vms/counter.yaml --out "$out/counter.snap"
for how in learned read; do
  echo "== density, counter, --prefault $how"
  "$pg" bench density "$out/counter.snap" --instances "$instances" --prefault "$how" "${json[@]}"
done

if PGKRAFT_PASSWORD=bench build recipes/postgres-17.yaml; then
  echo "== PostgreSQL 17 single-user, snapshot at its first prompt, first check (SELECT 1 + 1)"
  "$pg" bench resume "$out/postgres-17.img" --vm test-vms/single-user.yaml --runs "$runs" "${json[@]}"
  echo "== PostgreSQL 17 single-user, snapshot after a warm-up query, first check (a catalog lookup)"
  "$pg" bench resume "$out/postgres-17.img" --vm test-vms/single-user-warm.yaml --runs "$runs" "${json[@]}"
  "$pg" snapshot "$out/postgres-17.img" --vm test-vms/single-user.yaml --out "$out/postgres-17.snap"
  for how in learned read copy; do
    echo "== density, PostgreSQL 17 single-user, --prefault $how"
    "$pg" bench density "$out/postgres-17.snap" --instances "$instances" --prefault "$how" \
      --query $'SELECT 1;\n' "${json[@]}"
  done
else
  echo "(PostgreSQL 17 image did not build: its figures are skipped)"
fi
