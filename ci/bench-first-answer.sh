#!/usr/bin/env bash
# Single-user PostgreSQL, first answer: the recipe's image booted in our
# runner (runner start -> first SQL answer on the console) against the
# host-linked postgres of the same build started natively on a copy of the
# same files (spawn -> first answer), alternating in one run. Prints both
# medians and their ratio, then one guest run of test-vms/single-user.yaml
# with its phases and the guest memory figures.
# Usage: ci/bench-first-answer.sh [RECIPE] [RUNS]   (PGKRAFT_BENCH_JSON=1 for JSON)
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-recipes/postgres-17.yaml}
runs=${2:-15}
bash ci/bootstrap.sh
bash ci/fetch-sources.sh musl postgresql-15 postgresql-17 postgresql-18 >/dev/null
cargo build --release --locked -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export PGKRAFT_PASSWORD=${PGKRAFT_PASSWORD:-bench}
./target/release/pgkraft build "$recipe" --out "$out" --json > "$out/build.json"
image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$out/build.json")
json=()
[ "${PGKRAFT_BENCH_JSON:-}" = 1 ] && json=(--json)
./target/release/pgkraft bench first-answer "$image" --runs "$runs" "${json[@]}"
./target/release/pgkraft smoke "$image" --vm test-vms/single-user.yaml "${json[@]}"
