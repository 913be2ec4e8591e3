#!/usr/bin/env bash
# First boot of an image built with `cluster.preinit: false` (docs/
# ARCHITECTURE.md §3, "First boot"): the time its starter takes to make the
# cluster, in memory and on an empty volume, against the same build's
# host-linked programs on the same disk: initdb itself (without and with
# sync), and the image's own plan replayed by the shell loop below.
# Prints one line per run; ROUNDS runs each (default 3).
#
# Usage: ci/bench-first-boot.sh IMAGE INSTALL
#   IMAGE    a postgres image built with cluster.preinit: false
#   INSTALL  its build's host installation (bin/postgres, bin/initdb,
#            share/): the pg-link cache entry's install/ directory
#   DIR      (env) where the volumes and native clusters go (default: a
#            temporary directory under /tmp)
set -euo pipefail
image=$(realpath "$1")
install=$(realpath "$2")
rounds=${ROUNDS:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
pgkraft=${PGKRAFT:-$repo/target/release/pgkraft}
work=${DIR:-$(mktemp -d /tmp/bench-first-boot.XXXXXX)}
chmod 755 "$work"

# The image's plan and share files, and a copy of the installation that
# `nobody` can run (PostgreSQL refuses root).
objcopy -O binary --only-section=.pgkraft.rootfs "$image" "$work/rootfs.tar.zst"
mkdir -p "$work/rootfs" && tar --zstd -xf "$work/rootfs.tar.zst" -C "$work/rootfs"
plan=$work/rootfs/usr/local/pgsql/share/pgkraft-first-boot
cp -r "$install" "$work/pg" && chmod -R a+rX "$work"
mkdir -m 700 "$work/native"
as_nobody=()
if [ "$(id -u)" = 0 ]; then
  as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
  chown nobody "$work/native"
fi

replay() { # DATA [sync]: the plan's steps, as the image's starter takes them
  local data=$1 op a b rest
  mkdir -m 700 "$data"
  while read -r op a b rest; do
    case $op in
      mkdir) mkdir -m 700 "$data/$a" ;;
      write) install -m 600 "$plan/$b" "$data/$a" ;;
      run) sed "s#/usr/local/pgsql/share/#$work/pg/share/#" "$plan/$a" |
             PGDATA=$data "$work/pg/bin/postgres" $b $rest >/dev/null ;;
    esac
  done <"$plan/plan"
  if [ "${2:-}" = sync ]; then sync -f "$data"; fi
}
export -f replay
export plan work

ms() { # milliseconds COMMAND takes; it must succeed
  local t0; t0=$(date +%s%N)
  "$@" >"$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
for i in $(seq "$rounds"); do
  echo "guest, in memory: $("$pgkraft" smoke "$image" --vm "$repo/test-vms/single-user.yaml" --json 2>/dev/null |
    grep -o 'cluster ready in [0-9]* ms' | head -1)"
  vol=$work/volume-$i && mkdir -m 700 "$vol"
  echo "guest, on a volume: $("$pgkraft" run "$image" --volume "$vol" -- --single -j -D /data postgres </dev/null 2>&1 |
    grep -o 'cluster ready in [0-9]* ms')"
  for sync in "" sync; do
    echo "native replay ${sync:-no sync}: $(ms "${as_nobody[@]}" bash -c "replay $work/native/replay-$i$sync $sync") ms"
  done
  for n in -N ""; do
    echo "native initdb ${n:-synced}: $(ms "${as_nobody[@]}" env TZ=UTC LC_ALL=C "$work/pg/bin/initdb" \
      -D "$work/native/initdb-$i$n" -U postgres -E UTF8 --locale=C --wal-segsize=1 --auth=trust $n) ms"
  done
done
