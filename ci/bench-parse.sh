#!/usr/bin/env bash
# What query text costs: serves each IMAGE (`pgkraft serve`, one at a time
# on its own port, all up together) and runs pgbench in simple-query mode,
# one client, with three statements whose cost is mostly reading their
# text: a 13.6 KB comment before `SELECT 1` (the lexer alone), a SELECT
# with a 1,500-literal IN list (lexer, parser, planner), and a one-row
# catalog lookup (a usual short query). The images take turns in each
# round; prints every run, then per statement the median tps of each image
# and its ratio to the first image's. Benchmark, not test: nothing here
# asserts a figure. Made to compare flex's table layouts for the SQL
# scanner (build::postgres::compile, scanner_flags; README "Image size").
#
#   PGPASSWORD=... bash ci/bench-parse.sh A.img B.img [C.img ...]
#   ROUNDS=5 SECS=10 PGPASSWORD=... bash ci/bench-parse.sh old.img new.img
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: bench-parse.sh IMAGE IMAGE [IMAGE...], with PGPASSWORD set to the images' superuser password" >&2; exit 2; }
: "${PGPASSWORD:?set PGPASSWORD to the superuser password of the images}"
export PGPASSWORD PGKRAFT_PASSWORD=$PGPASSWORD
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
PGKRAFT=${PGKRAFT:-target/release/pgkraft}
PORT=${PORT:-15560}
work=$(mktemp -d)
# Servers still running at exit are asked to stop, then killed after 10 s.
cleanup() {
  local pids
  pids=$(cat "$work/pids" 2>/dev/null || true)
  for p in $pids; do kill -INT "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work" <<'PY'
import random, sys
w = sys.argv[1]
random.seed(1)
tokens = ['select', 'from', 'where', 'and', 'or', 'abc_def', 'x1', '"Quoted Id"',
          "'lit'", '12345', '3.14e5', '+', '-', '(', ')', ',', '::int', '<=', '>=']
words = ' '.join(random.choice(tokens) for _ in range(3000))
open(f'{w}/comment.sql', 'w').write(f'/* {words} */ SELECT 1;\n')
literals = ', '.join(str(i) for i in range(1500))
open(f'{w}/inlist.sql', 'w').write(f'SELECT 1 WHERE 7 IN ({literals});\n')
open(f'{w}/short.sql', 'w').write("SELECT relname FROM pg_class WHERE oid = 1259;\n")
PY

i=0
for img in "$@"; do
  port=$((PORT + i))
  "$PGKRAFT" serve "$img" --publish "127.0.0.1:$port:5432" --json --log "$work/serve$i.log" \
    >"$work/serve$i.out" 2>&1 &
  pid=$!
  echo "$pid" >>"$work/pids"
  for _ in $(seq 600); do
    grep -q '"ready"' "$work/serve$i.out" && break
    kill -0 "$pid" 2>/dev/null || {
      echo "bench-parse: $img did not start:" >&2
      cat "$work/serve$i.out" "$work/serve$i.log" >&2 2>/dev/null
      exit 1
    }
    sleep 0.1
  done
  grep -q '"ready"' "$work/serve$i.out" || { echo "bench-parse: $img not ready after 60 s" >&2; exit 1; }
  i=$((i + 1))
done

# One pgbench run's tps, or "failed" (its output then goes to stderr).
tps() {
  local out t
  out=$(pgbench "$@" 2>&1) || true
  t=$(printf '%s\n' "$out" | awk '/^tps/ {print $3; exit}')
  if [ -z "$t" ]; then
    printf '%s\n' "$out" >&2
    echo failed
  else
    echo "$t"
  fi
}

echo "round statement image tps"
for r in $(seq "$ROUNDS"); do
  for s in comment inlist short; do
    i=0
    for img in "$@"; do
      tps=$(tps -h 127.0.0.1 -p $((PORT + i)) -U postgres -n -M simple -c 1 -T "$SECS" -f "$work/$s.sql" postgres)
      echo "$r $s $i $tps" | tee -a "$work/runs"
      i=$((i + 1))
    done
  done
done

echo
python3 - "$work/runs" "$@" <<'PY'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
images = sys.argv[2:]
print(f"{'statement':10} {'image':40} {'median tps':>11} {'ratio':>6}")
for s in ['comment', 'inlist', 'short']:
    med = [statistics.median([float(t) for r, st, i, t in runs
                              if st == s and int(i) == n and t != 'failed'] or [float('nan')])
           for n in range(len(images))]
    for n, img in enumerate(images):
        print(f"{s:10} {img[-40:]:40} {med[n]:11.0f} {med[n] / med[0]:6.2f}")
PY
