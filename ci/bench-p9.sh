#!/usr/bin/env bash
# The volume device's host-side cost (no VM): an 8 KiB Twrite and a Tfsync
# (fdatasync) through virtio-9p's ring, copies, codec and server, against
# pwrite+fdatasync on the same host file system. Prints medians and p99.
# Usage: ci/bench-p9.sh [DIR]   (a directory on the file system to measure;
# default: target/, not a tmpfs)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then export PGKRAFT_P9_BENCH_DIR="$1"; fi
exec cargo test --release --locked -q -p pgkraft-vmm --lib \
    virtio::p9::tests::bench_8k_write_fsync -- --ignored --nocapture
