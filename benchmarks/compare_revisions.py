#!/usr/bin/env python3
"""Before / after a change, side by side in ONE run: each revision's own benchmark scripts
(bench_segany, bench_segevery) run against that revision's source, alternating A B B A ... so
that drift of a shared host falls on both. Ratios are after / before of the medians of each
round's median (and of the minima); below 1 means faster after.

    source scripts/activate.sh && python benchmarks/compare_revisions.py --before <rev> [--rounds 2]

The before revision is checked out with `git worktree add --detach` beside this checkout (so its
benchmarks find ../shared as this one does) and removed afterwards unless --keep. Both revisions
must have the named benchmark scripts. Each tree exports its own ONNX graphs once, with its own
exporter, and its bench_segany reuses them (--onnx-dir), so export time is not benchmarked.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, SHARED, machine, print_table, write_json

BENCHES = {  # script -> extra arguments (both trees' scripts take these)
    "bench_segany": ["--backends", "torch,onnx"],
    "bench_segevery": [],
}


def _env(tree: Path) -> dict:
    env = dict(os.environ)
    # the tree's source first: it shadows the installed package (core benchmarks need no messages)
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _export(tree: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mobilesam_ros", "export", "--checkpoint",
                    str(SHARED / "fixtures" / "mobile_sam_seed1.pt"), "--out-dir", str(out)],
                   cwd=tree, env=_env(tree), check=True, capture_output=True, text=True)


def _run(tree: Path, bench: str, onnx_dir: Path, repeat: int, scratch: Path) -> list[dict]:
    out = scratch / f"{tree.name}_{bench}.json"
    args = [sys.executable, str(tree / "benchmarks" / f"{bench}.py"), "--repeat", str(repeat),
            "--json", str(out)] + BENCHES[bench]
    if bench == "bench_segany":
        args += ["--onnx-dir", str(onnx_dir)]
    res = subprocess.run(args, cwd=tree, env=_env(tree), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{bench} failed in {tree}:\n{res.stderr[-3000:]}")
    with open(out) as fh:
        return json.load(fh)["results"]


def _key(row: dict) -> str:
    return f"{row.get('backend', 'torch')} {row['case']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision to compare against (e.g. main~5)")
    ap.add_argument("--benches", default=",".join(BENCHES), help="comma-separated subset of %(default)s")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (order alternates each round)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case inside each benchmark")
    ap.add_argument("--keep", action="store_true", help="keep the before worktree")
    ap.add_argument("--json", default="out/compare_revisions.json")
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    before = ROOT.parent / f"mobilesam_ros_before_{rev}"
    if not before.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(before), rev], cwd=ROOT, check=True,
                       capture_output=True)
    trees = {"before": before, "after": ROOT}
    benches = [b for b in args.benches.split(",") if b]
    samples: dict[tuple[str, str], list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="compare_") as tmp:
            scratch = Path(tmp)
            onnx = {}
            for label, tree in trees.items():
                onnx[label] = scratch / f"onnx_{label}"
                _export(tree, onnx[label])
            for r in range(args.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for bench in benches:
                    for label in order:
                        for row in _run(trees[label], bench, onnx[label], args.repeat, scratch):
                            if "min_s" in row:
                                samples.setdefault((f"{bench} {_key(row)}", label), []).append(row)
                        print(f"  round {r + 1}: {label} {bench} done", file=sys.stderr)
    finally:
        if not args.keep:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
    rows = []
    for case in sorted({c for c, _ in samples}):
        b, a = samples.get((case, "before"), []), samples.get((case, "after"), [])
        if not a or not b:
            continue
        med = {k: statistics.median(x["median_s"] for x in v) for k, v in (("b", b), ("a", a))}
        mins = {k: min(x["min_s"] for x in v) for k, v in (("b", b), ("a", a))}
        rows.append({"case": case, "before_min_s": mins["b"], "before_median_s": med["b"],
                     "after_min_s": mins["a"], "after_median_s": med["a"],
                     "ratio_min": mins["a"] / mins["b"], "ratio_median": med["a"] / med["b"]})
    print_table(rows, [("case", "case", ""), ("before_min_s", "before min s", "{:.3f}"),
                       ("before_median_s", "before median s", "{:.3f}"), ("after_min_s", "after min s", "{:.3f}"),
                       ("after_median_s", "after median s", "{:.3f}"), ("ratio_min", "after/before min", "{:.2f}"),
                       ("ratio_median", "after/before median", "{:.2f}")])
    write_json(args.json, {"machine": machine(), "before": rev, "rounds": args.rounds, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
