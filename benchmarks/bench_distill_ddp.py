#!/usr/bin/env python3
"""Distillation throughput on 1 vs N processes (torchrun, gloo on CPU): steps/s and peak RSS per rank.

Every case trains the same fresh TinyViT-5M student for `--steps` optimizer steps of the same
global batch on real frames (teacher: the seeded `mobile_sam_seed2.pt`; its cache is built once
before the cases, so only training is timed). Each case is one torchrun launch of this script
(`--worker`); each rank times its steps through `distill(on_step=...)` (the first step is warm-up
and not counted) and reports its own peak RSS (VmHWM). Cases: 1 process x 1 thread, 1 process x
N threads (the same cores as N ranks), N processes x 1 thread.

    . scripts/activate.sh && python benchmarks/bench_distill_ddp.py --steps 4

The machine is shared and noisy (2 cores, other jobs): compare within one run, quote the load.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED, machine, peak_rss_mb, print_table, write_json

FRAMES = [f"{i:06d}.jpg" for i in range(0, 48, 6)]  # 8 real frames


def _config(work: Path, steps: int, batch: int, progress: bool = False) -> dict:
    return dict(teacher=str(SHARED / "fixtures" / "mobile_sam_seed2.pt"), data=str(work / "frames"),
                out=str(work / "run" / "student.pt"), cache_dir=str(work / "teacher_cache"),
                steps=steps, batch_size=batch, warmup_steps=1, val_fraction=0.0,
                train_eval_frames=1, val_every=steps, checkpoint_every=steps, bn="train",
                progress=progress)


def worker(args: argparse.Namespace) -> int:
    """One rank of a case: train, then write {rank, steps_per_s, peak_rss_mb} to --result."""
    import torch

    torch.set_num_threads(args.threads)
    from mobilesam_ros.distill.config import DistillConfig
    from mobilesam_ros.distill.train import distill

    stamps: list[float] = []
    distill(DistillConfig(**_config(Path(args.work), args.steps, args.batch)),
            on_step=lambda step, loss: stamps.append(time.perf_counter()))
    rank = int(os.environ.get("RANK", "0"))
    timed = len(stamps) - 1  # steps after the first (warm-up: allocator, first all-reduce)
    rec = {"rank": rank, "steps_per_s": timed / (stamps[-1] - stamps[0]) if timed else None,
           "peak_rss_mb": peak_rss_mb()}
    Path(args.result).with_name(f"{Path(args.result).name}.{rank}").write_text(json.dumps(rec))
    return 0


def run_case(work: Path, procs: int, threads: int, steps: int, batch: int) -> dict:
    """torchrun this script with `procs` ranks of `threads` threads; per-rank results."""
    result = work / f"case_{procs}x{threads}"
    shutil.rmtree(work / "run", ignore_errors=True)  # a fresh run each case (no resume)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(procs), str(Path(__file__).resolve()), "--worker", "--work", str(work),
           "--steps", str(steps), "--batch", str(batch), "--threads", str(threads),
           "--result", str(result)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=work,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    case = {"case": f"{procs} proc x {threads} thr", "processes": procs, "threads": threads,
            "wall_s": wall}
    if res.returncode != 0:
        case["error"] = (res.stderr.strip().splitlines() or ["?"])[-1]
        return case
    ranks = [json.loads(p.read_text()) for p in sorted(work.glob(result.name + ".*"))]
    case["ranks"] = ranks
    case["steps_per_s"] = min(r["steps_per_s"] for r in ranks)  # the slowest rank sets the pace
    case["samples_per_s"] = case["steps_per_s"] * batch
    case["peak_rss_mb_per_rank"] = max(r["peak_rss_mb"] for r in ranks)
    return case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per case (default 4)")
    ap.add_argument("--batch", type=int, default=2, help="global batch size (default 2)")
    ap.add_argument("--procs", type=int, default=2, help="processes of the multi-process case")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench_distill_ddp.json"),
                    help="where to write the results")
    ap.add_argument("--work", help="work directory (default: out/bench_distill_ddp/)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    work = Path(args.work or ROOT / "out" / "bench_distill_ddp").resolve()
    (work / "frames").mkdir(parents=True, exist_ok=True)
    for name in FRAMES:
        shutil.copy(SHARED / "data" / "sequence" / name, work / "frames" / name)
    import torch

    from mobilesam_ros.distill.config import DistillConfig
    from mobilesam_ros.distill.prepare import prepare_cache

    print("building the teacher cache once (not timed) ...", flush=True)
    prepare_cache(DistillConfig(**_config(work, args.steps, args.batch)), work / "teacher_cache",
                  torch.device("cpu"))
    cases = [(1, 1), (1, args.procs), (args.procs, 1)]
    rows = [run_case(work, p, t, args.steps, args.batch) for p, t in cases]
    print(f"\n{args.steps} steps (first not timed) of global batch {args.batch}, fresh TinyViT-5M "
          f"student, 1024x1024 inputs; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (shared machine)")
    print_table(rows, [("case", "case", ""), ("steps_per_s", "steps/s", "{:.4f}"),
                       ("samples_per_s", "samples/s", "{:.3f}"),
                       ("peak_rss_mb_per_rank", "peak RSS/rank MB", "{:.0f}"),
                       ("wall_s", "wall s", "{:.0f}"), ("error", "error", "")])
    write_json(args.json, {"benchmark": "bench_distill_ddp", "steps": args.steps,
                           "global_batch": args.batch, "machine": machine(), "cases": rows})
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
