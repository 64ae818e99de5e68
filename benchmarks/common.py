"""Shared benchmark plumbing: each case runs in its own process (so its peak RSS is its own),
timings are min/median of repeats, results print as a table and are written as JSON."""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# Printed under the tables of the benchmarks that used to carry official columns: the official code
# is not installed here, and figures from another host or day are not comparable with these.
NO_OFFICIAL = ("official code: not measured in this run (not installed here); figures from another host or "
               "day are not shown beside these (README 'Measured' has one side-by-side run on one host)")


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"min_s": min(ts), "median_s": statistics.median(ts), "runs": len(ts)}


def run_case_subprocess(script: str, case: str, extra: list[str], timeout: float = 1800) -> dict:
    """python script --single case ... in a fresh process; it prints one JSON line last.
    (Run as a script, sys.path[0] is benchmarks/, never the repo root: the installed package
    with its generated messages is what gets imported.)"""
    cmd = [sys.executable, script, "--single", case, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        return {"case": case, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "loadavg_1min": os.getloadavg()[0]}


def print_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> None:
    """cols: (key, header, format)."""
    widths = [max(len(h), 12) for _, h, _ in cols]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths)))
    for r in rows:
        cells = []
        for (k, _, fmt), w in zip(cols, widths):
            v = r.get(k, "")
            cells.append((fmt.format(v) if isinstance(v, (int, float)) and fmt else str(v)).rjust(w))
        print("  ".join(cells))


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}")
