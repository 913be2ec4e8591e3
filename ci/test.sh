#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what is missing,
# then format check, lints, and the whole test suite on real KVM and QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/bootstrap.sh
bash ci/fetch-sources.sh musl postgresql-15 postgresql-17 postgresql-18

if [ ! -w /dev/kvm ] && [ "${PGKRAFT_ALLOW_NO_KVM:-}" != 1 ]; then
  echo "ci/test.sh: /dev/kvm is missing or not writable: the tests boot real VMs." >&2
  echo "            Run on a KVM host, or set PGKRAFT_ALLOW_NO_KVM=1 to skip the VM tests." >&2
  exit 1
fi

cargo fmt --all --check
(cd libos && cargo fmt --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd libos && cargo clippy --release --locked -- -D warnings)
log=$(mktemp)
# Tests that cannot run here (no /dev/kvm with PGKRAFT_ALLOW_NO_KVM=1)
# return early, which libtest counts as passed; each first appends a line
# `SKIPPED: <binary>::<test>: <reason>` to this file (tests/common:
# skipped()), and the summary counts those as skipped, not passed.
skipped=$(mktemp)
trap 'rm -f "$log" "$skipped"' EXIT
export PGKRAFT_SKIPPED_FILE="$skipped"
status=0
cargo test --workspace --locked --tests -- --test-threads=2 2>&1 | tee "$log" || status=$?
# The libOS's host unit tests (its own crate, outside the workspace).
(cd libos && cargo test --locked 2>&1) | tee -a "$log" || status=$?
sort -u "$skipped" >"$skipped.u" && mv "$skipped.u" "$skipped"
cat "$skipped"
# One closing line for the whole suite, summed over every test binary.
awk -v s="$(wc -l <"$skipped")" '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, i + s }' "$log"
exit "$status"
