#!/usr/bin/env bash
# Build benchmark for a postgres recipe, all in one run on this machine:
#   cold build (empty stage cache), no-change rebuild, settings-only change,
#   image bytes with and without the pre-initialized cluster,
#   and the installed closure of Debian's own package of the same major.
# Usage: ci/bench-build.sh [RECIPE]   (default recipes/postgres-17.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-recipes/postgres-17.yaml}
bash ci/bootstrap.sh
cargo build --release --locked -q
pgk=$PWD/target/release/pgkraft

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PGKRAFT_CACHE=$work/cache        # cold: nothing cached
export PGKRAFT_PASSWORD=bench-password  # a fixed password keeps builds reproducible

secs() { local t0=$1 t1=$2; awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'; }
now() { date +%s.%N; }

t0=$(now); "$pgk" build "$recipe" --out "$work/a" --json > "$work/a.json"; t1=$(now)
cold=$(secs "$t0" "$t1")
t0=$(now); "$pgk" build "$recipe" --out "$work/a" --json > "$work/b.json"; t1=$(now)
nochange=$(secs "$t0" "$t1")

# Settings-only change: the same recipe with one more postgresql.conf setting.
dir=$(dirname "$recipe")
changed=$dir/.bench-settings-$$.yaml
trap 'rm -rf "$work" "$changed"' EXIT
python3 - "$recipe" "$changed" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
# append a setting under postgres.settings (created if absent)
if re.search(r'^  settings:\s*$', text, re.M):
    text = re.sub(r'^(  settings:\s*\n)', r'\1    work_mem: 5MB\n', text, count=1, flags=re.M)
else:
    text = re.sub(r'^(postgres:\s*\n)', r'\1  settings:\n    work_mem: 5MB\n', text, count=1, flags=re.M)
open(sys.argv[2], 'w').write(text)
PY
t0=$(now); "$pgk" build "$changed" --out "$work/c" --json > "$work/c.json"; t1=$(now)
settings=$(secs "$t0" "$t1")

img=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$work/a.json")
"$pgk" inspect "$img" --json > "$work/inspect.json"
read -r bytes without < <(python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); print(i["file_bytes"], i["file_bytes_without_cluster"])' "$work/inspect.json")

major=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["build"]["postgres"]["version"].split(".")[0])' "$work/inspect.json")
# Debian's package and every package it depends on, recursively (what
# `apt-get install postgresql-N` puts on a bare system), by Installed-Size.
deb=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "postgresql-$major" 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u |
      xargs apt-cache show --no-all-versions 2>/dev/null | awk '/^Installed-Size:/ { s += $2 } END { print s * 1024 }')

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "pgkraft build benchmark: $recipe on $(nproc) cores"
echo "  cold build:            ${cold} s   (target < 480 s)"
echo "  no-change rebuild:     ${nochange} s   (target < 3 s)"
echo "  settings-only change:  ${settings} s   (target < 15 s)"
echo "  image:                 $(mib "$bytes") ($bytes bytes; target < 16 MiB)"
echo "  image, no cluster:     $(mib "$without") (~$without bytes)"
if [ -n "$deb" ] && [ "$deb" != 0 ]; then
  echo "  Debian postgresql-$major installed closure: $(mib "$deb") ($deb bytes)"
  awk -v a="$deb" -v b="$bytes" 'BEGIN { printf "  Debian closure / pgkraft image: %.1fx\n", a / b }'
else
  echo "  Debian postgresql-$major: not in this machine's apt index (apt-get update?)"
fi
