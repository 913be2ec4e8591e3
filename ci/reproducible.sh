#!/usr/bin/env bash
# Builds one recipe twice and compares every output byte for byte: once from
# this checkout with the usual cache, once from a copy of the checkout at
# another path with its own empty cache, another umask (077), time zone,
# locale, user and home directory. Prints the sha256 of each output of both
# builds and exits 1 if any differs (then `cmp -l | head` of the first
# difference). Both builds run the same pgkraft binary; PGKRAFT_HOME points
# the second at the copy, so the libOS, ABI, kernel config and recipe it
# builds from are the copy's (the musl and PostgreSQL patches and the source
# tarballs are found in the tree the binary was built from, by content).
# Both use the machine's cargo home.
#
#   bash ci/reproducible.sh [RECIPE]     (default recipes/postgres-17.yaml)
#
# A postgres recipe is a cold build (several minutes on two cores): a
# check, not a test; tests/reproducible.rs runs it on recipes/hello.yaml.
# PGKRAFT_PASSWORD is set to a fixed value when unset (a generated password
# would differ between the builds by design).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
recipe=${1:-recipes/postgres-17.yaml}
case $recipe in /*) ;; *) recipe=$repo/$recipe ;; esac
[ -f "$recipe" ] || { echo "reproducible: no recipe $recipe" >&2; exit 2; }
rel=${recipe#"$repo"/}
[ "$rel" != "$recipe" ] || { echo "reproducible: $recipe is not inside $repo" >&2; exit 2; }
pgkraft=${PGKRAFT:-$repo/target/release/pgkraft}
[ -x "$pgkraft" ] || { echo "reproducible: build pgkraft first (cargo build --release), or set PGKRAFT" >&2; exit 2; }
export PGKRAFT_PASSWORD=${PGKRAFT_PASSWORD:-reproducible-password}

work=$(mktemp -d)
# Kept when the builds differ, to look into.
trap '[ "${status:-1}" = 0 ] && rm -rf "$work" || echo "reproducible: outputs kept in $work" >&2' EXIT
# The copy: every file git tracks (as it is in the work tree, uncommitted
# changes included), symlinks as symlinks, under a longer, other path.
copy=$work/another/place/for/the/checkout
mkdir -p "$copy"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
  | xargs -0 cp -P --parents -t "$copy" 2>/dev/null || true)
# Files a checkout has but the work tree may lack (deleted, not committed)
# are fine to miss; the recipe itself must be there.
[ -f "$copy/$rel" ] || { echo "reproducible: $rel did not copy" >&2; exit 1; }

# The second build's user has a home of its own; cargo and rustup keep theirs.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}

echo "build A: $repo, cache ${PGKRAFT_CACHE:-default}, umask $(umask), TZ=${TZ:-unset}"
"$pgkraft" build "$recipe" --out "$work/a" --json >"$work/a.json" 2>"$work/a.log" \
  || { tail -20 "$work/a.log" >&2; exit 1; }
echo "build B: $copy, empty cache, umask 077, TZ=Pacific/Kiritimati, user nobody"
(
  umask 077
  export TZ=Pacific/Kiritimati LANG=C.UTF-8 LC_ALL=C.UTF-8 USER=nobody LOGNAME=nobody
  export HOME=$work/home PGKRAFT_HOME=$copy PGKRAFT_CACHE=$work/cache-b
  mkdir -p "$HOME"
  export CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home
  cd "$copy"
  "$pgkraft" build "$copy/$rel" --out "$work/b" --json >"$work/b.json" 2>"$work/b.log"
) || { tail -20 "$work/b.log" >&2; exit 1; }

status=0
for f in $(cd "$work/a" && ls | grep -v '^logs$'); do
  a=$(sha256sum <"$work/a/$f" | cut -c1-64)
  if [ ! -f "$work/b/$f" ]; then
    echo "DIFFERS  $f: only build A wrote it"; status=1; continue
  fi
  b=$(sha256sum <"$work/b/$f" | cut -c1-64)
  if [ "$a" = "$b" ]; then
    echo "same     $f  $a  ($(stat -c %s "$work/a/$f") bytes)"
  else
    echo "DIFFERS  $f  A $a  B $b"
    cmp -l "$work/a/$f" "$work/b/$f" | head -5 || true
    status=1
  fi
done
# No output may name either checkout or cache.
for d in "$repo" "$copy" "$work/cache-b" "${PGKRAFT_CACHE:-$HOME/.cache/pgkraft}"; do
  if grep -rlF --exclude-dir=logs "$d" "$work/a" "$work/b" >/dev/null 2>&1; then
    echo "DIFFERS  an output names the host path $d:"
    grep -rlF --exclude-dir=logs "$d" "$work/a" "$work/b" || true
    status=1
  fi
done
[ "$status" = 0 ] && echo "reproducible: all outputs bit-identical"
exit "$status"
