#!/usr/bin/env bash
# Boot benchmark: the hello image under our runner and under QEMU microvm,
# alternating, in one run; prints both medians and their ratio.
# Usage: ci/bench.sh [RUNS]   (PGKRAFT_BENCH_JSON=1 for JSON)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
bash ci/bootstrap.sh
bash ci/fetch-sources.sh musl >/dev/null
cargo build --release --locked -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./target/release/pgkraft build recipes/hello.yaml --out "$out" >/dev/null 2>&1 || ./target/release/pgkraft build recipes/hello.yaml --out "$out"
json=()
[ "${PGKRAFT_BENCH_JSON:-}" = 1 ] && json=(--json)
./target/release/pgkraft bench boot "$out/hello.img" --runs "$runs" "${json[@]}"
