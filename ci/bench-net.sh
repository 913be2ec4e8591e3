#!/usr/bin/env bash
# Network benchmark (ci/bench-net.py): ping-pong latency and bulk throughput
# of the line server in the image through `pgkraft run --publish` against the
# same program natively on loopback, alternating, then 1,000 idle
# connections held with the runner's memory.
# Usage: ci/bench-net.sh [ROUNDS] [PINGS_PER_ROUND]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/bootstrap.sh
bash ci/fetch-sources.sh musl >/dev/null
cargo build --release --locked -q
exec python3 ci/bench-net.py "$@"
