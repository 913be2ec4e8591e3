#!/usr/bin/env bash
# The data volume from inside a VM: 8 KiB pwrite+fdatasync and pread
# (test-vms/apps/volume-bench.c) in the image on `pgkraft run --volume DIR`
# against the same program natively on the same DIR, alternating.
# Needs the libOS's 9p client (it mounts the volume at /data).
# Usage: ci/bench-volume.sh [ROUNDS] [DIR]   (DIR default: under target/, not a tmpfs)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
dir=${2:-target/volume-bench}
bash ci/bootstrap.sh
bash ci/fetch-sources.sh musl >/dev/null
cargo build --release --locked -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./target/release/pgkraft build recipes/volume-bench.yaml --out "$out" >/dev/null
cc -O2 -o "$out/native" test-vms/apps/volume-bench.c
mkdir -p "$dir"
for i in $(seq "$rounds"); do
    echo "== image on the volume ($i)"
    ./target/release/pgkraft run "$out/volume-bench.img" --volume "$dir"
    echo "== native ($i)"
    "$out/native" "$dir"
done
