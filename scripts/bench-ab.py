#!/usr/bin/env python3
"""Compares the benchmarks of two commits, side by side in one run: builds
each commit's bench binaries (the other commit in a git worktree with a
target directory of its own), then runs them alternately, round after round,
so that a change in the machine's speed hits both alike. Prints, per bench,
the median of each side over the rounds, the ratio, and every round's value.

    python3 scripts/bench-ab.py 8c8143c                         # that commit against the work tree
    python3 scripts/bench-ab.py 8c8143c HEAD --rounds 8
    python3 scripts/bench-ab.py cf81fa9 --bench granularity --filter 'granularity/(parapipe|sequential)/1[45]'

A change is within noise when the ratio is near 1 compared with the spread
of the rounds; run a control row (the sequential loop, rayon) beside
parapipe's to see that spread. Standard library only.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def build(tree: Path, target: Path, benches):
    """The bench binaries of the checkout at `tree`, by bench name."""
    args = ["cargo", "bench", "--no-run", "--message-format=json"]
    for b in benches:
        args += ["--bench", b]
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    out = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"building the benches in {tree} failed:\n{out.stderr[-3000:]}")
    found = {}
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        target = msg.get("target") or {}
        if msg.get("executable") and "bench" in target.get("kind", []) and target.get("name") in benches:
            found[target["name"]] = msg["executable"]
    missing = [b for b in benches if b not in found]
    if missing:
        sys.exit(f"no executable for {missing} in {tree}")
    return found


def medians(output: str):
    """Criterion's median time (ms) per bench id in one run's output."""
    got, name = {}, None
    for line in output.splitlines():
        m = re.match(r"^(\S+/\S+)", line)
        if m:
            name = m.group(1)
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m and name and "%" not in line:
            got[name] = float(m.group(1)) * UNITS.get(m.group(2), 1.0)
            name = None
    return got


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="the commit to compare against")
    p.add_argument("after", nargs="?", help="the other commit (default: the work tree as it is)")
    p.add_argument("--bench", action="append", help="bench file (repeatable; default overhead and granularity)")
    p.add_argument("--filter", default="/parapipe", help="criterion filter (default: parapipe's rows)")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    benches = args.bench or ["overhead", "granularity"]

    sides = {}
    for label, commit in (("before", args.before), ("after", args.after)):
        if commit is None:
            tree, target = ROOT, Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        else:
            sha = subprocess.check_output(["git", "rev-parse", "--short", commit], cwd=ROOT, text=True).strip()
            tree, target = Path(f"/tmp/parapipe-ab-{sha}"), Path(f"/tmp/parapipe-ab-target-{sha}")
            if not tree.exists():
                subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True)
        print(f"building {label} ({commit or 'work tree'}) in {tree}", file=sys.stderr)
        sides[label] = (tree, build(tree, target, benches))

    values = {}
    for r in range(1, args.rounds + 1):
        for label, (tree, bins) in sides.items():
            for bench in benches:
                run = subprocess.run([bins[bench], "--bench", args.filter, "--noplot"],
                                     cwd=tree, capture_output=True, text=True)
                for name, ms in medians(run.stdout).items():
                    values.setdefault(name, {}).setdefault(label, []).append(ms)
        print(f"round {r} of {args.rounds} done", file=sys.stderr)

    print(f"{'bench':42} {'before ms':>10} {'after ms':>10} {'after/before':>13}  rounds (before | after)")
    for name, v in values.items():
        b, a = v.get("before", []), v.get("after", [])
        if not a or not b:
            continue
        mb, ma = statistics.median(b), statistics.median(a)
        rounds = " ".join(f"{x:.1f}" for x in b) + " | " + " ".join(f"{x:.1f}" for x in a)
        print(f"{name:42} {mb:10.2f} {ma:10.2f} {ma / mb:13.2f}  {rounds}")


if __name__ == "__main__":
    main()
