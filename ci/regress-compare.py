#!/usr/bin/env python3
"""Compares two pg_regress runs made by ci/regress.sh: the image's and the
native server's. Prints each side's pass count, then every test whose
result differs between them with the first lines of its diff (from the
side that failed it), then the tests that failed on both.

Reads WORK/{image,native}-regress.log (pg_regress's own report, in the
TAP form of PostgreSQL 16 and later or the older `test x ... ok` form) and
WORK/out-{image,native}/regression.diffs. Exit 0; the figures are for
people, not a gate.
"""

import argparse
import os
import re
import sys

# PostgreSQL 16+: "ok 12        + boolean    31 ms" / "not ok 3 - foo  12 ms"
TAP = re.compile(r"^(not ok|ok)\s+\d+\s+[+-]?\s*(\S+)\s+.*?(#.*)?$")
# PostgreSQL 15: "test boolean ... ok 30 ms", "     boolean ... FAILED 12 ms",
# "     random ... failed (ignored)"
OLD = re.compile(r"^\s*(?:test\s+)?(\S+)\s+\.\.\.\s+(ok|FAILED|failed \(ignored\))")
DIFF_HEAD = re.compile(r"^diff .*?/expected/([^/\s]+?)(?:_\d+)?\.out\s")


def results(log):
    """Test name -> 'ok' | 'failed' | 'ignored', in schedule order."""
    out = {}
    if not os.path.exists(log):
        return out
    with open(log, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = TAP.match(line)
            if m:
                status = "ok" if m.group(1) == "ok" else "failed"
                if m.group(3) and "ignore" in m.group(3).lower():
                    status = "ignored"
                out[m.group(2)] = status
                continue
            m = OLD.match(line)
            if m:
                status = {"ok": "ok", "FAILED": "failed"}.get(m.group(2), "ignored")
                out[m.group(1)] = status
    return out


def diffs(path):
    """Test name -> its part of regression.diffs."""
    out = {}
    if not os.path.exists(path):
        return out
    current = None
    with open(path, errors="replace") as f:
        for line in f:
            m = DIFF_HEAD.match(line)
            if m:
                current = m.group(1)
                out.setdefault(current, [])
            if current:
                out[current].append(line.rstrip("\n"))
    return out


def first_lines(d, n):
    """The diff's first n changed lines with their hunk header."""
    shown = [l for l in d if l.startswith(("@@", "+", "-")) and not l.startswith(("+++", "---"))]
    return shown[:n]


def changed(d):
    """A diff's changed lines, with each side's output directory made the same."""
    return [
        re.sub(r"/out-(image|native)/", "/out-SIDE/", l)
        for l in d
        if l.startswith(("+", "-")) and not l.startswith(("+++", "---"))
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--major", required=True)
    ap.add_argument("--lines", type=int, default=8)
    a = ap.parse_args()
    sides = ("image", "native")
    res = {s: results(os.path.join(a.work, f"{s}-regress.log")) for s in sides}
    dif = {s: diffs(os.path.join(a.work, f"out-{s}", "regression.diffs")) for s in sides}
    status = {}
    for s in sides:
        p = os.path.join(a.work, f"{s}-status")
        status[s] = open(p).read().split() if os.path.exists(p) else ["?", "?"]

    print(f"PostgreSQL {a.major} regression schedule (pg_regress --use-existing)")
    for s in sides:
        r = res[s]
        passed = sum(1 for v in r.values() if v == "ok")
        failed = sum(1 for v in r.values() if v == "failed")
        ignored = sum(1 for v in r.values() if v == "ignored")
        print(
            f"  {s:6}: {passed}/{len(r)} passed, {failed} failed, {ignored} failed (ignored); "
            f"pg_regress exit {status[s][0]} after {status[s][1]} s"
        )
    for s in sides:
        # 1 is "some tests failed"; anything else (2: bail out, 124: the
        # timeout) means the schedule did not run to its end.
        if status[s][0] not in ("0", "1"):
            print(f"  WARNING: {s}: pg_regress did not finish the schedule (see {s}-regress.log)")
    names = list(res["native"]) + [t for t in res["image"] if t not in res["native"]]
    differ = [t for t in names if res["image"].get(t) != res["native"].get(t)]
    same = len(names) - len(differ)
    if names:
        print(f"  same result on both: {same}/{len(names)} ({100.0 * same / len(names):.1f}%)")
    print(f"\ntests whose result differs ({len(differ)}):")
    for t in differ:
        print(f"  {t}: image {res['image'].get(t, 'not run')}, native {res['native'].get(t, 'not run')}")
        for s in sides:
            if t in dif[s]:
                for l in first_lines(dif[s][t], a.lines):
                    print(f"      [{s}] {l[:160]}{' ...' if len(l) > 160 else ''}")
    both = [t for t in names if res["image"].get(t) == "failed" and res["native"].get(t) == "failed"]
    print(f"\nfailed on both ({len(both)}): {' '.join(both) if both else '-'}")
    # A test failed on both sides may still fail differently.
    unlike = [t for t in both if changed(dif["image"].get(t, [])) != changed(dif["native"].get(t, []))]
    print(f"  of which their diffs differ ({len(unlike)}): {' '.join(unlike) if unlike else '-'}")
    for t in unlike:
        i, n = changed(dif["image"].get(t, [])), changed(dif["native"].get(t, []))
        only = [l for l in i if l not in n][: a.lines]
        for l in only:
            print(f"      [image only] {l[:160]}{' ...' if len(l) > 160 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
