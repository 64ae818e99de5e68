#!/usr/bin/env python3
"""Tracking benchmark: SegEvery tracker (core.engine.tracking) vs three baselines on synthetic
COCO128-seg sequences with ground truth, and the tracker's cost per frame.

    . scripts/activate.sh && python benchmarks/bench_tracking.py [--seeds 5] [--repeat 3]

Quality: per difficulty level (benchmarks/tracking_sim.py LEVELS) and the exit-and-re-entry case
(REENTRY), summed over `--seeds` seeded sequences: ID switches, IDF1 and MOTA from full-resolution
masks (IoU >= 0.5), side by side for: the tracker (defaults); the same tracker with motion
prediction off (velocity_smoothing 0); a SORT-style box-IoU matcher with constant-velocity
prediction, Hungarian assignment and 1 s coasting (SortMatcher); the naive greedy matcher that
remembers one frame (GreedyMatcher). All get the same detections, so FN and FP are equal and they
differ only in association.
Cost: Tracker.update per frame (wall and this process's CPU time) at 640x480 with 20 and 100
objects; min / median over all frames of `--repeat` passes. The machine is shared and noisy.
Target (issue 13): <= 5 ms per frame at 100 tracks.
Click-to-track (`--follow`): core.engine.follow.follow_step on a 640x480 camera frame with N followed
objects (one batched decode of box + low-res mask prompts, masks to full size), torch backend,
seeded official-format checkpoint (timing does not depend on the weights); min / median of
`--repeat` steps after one warm-up, and per object.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, write_json  # noqa: E402
from tracking_sim import (LEVELS, REENTRY, GreedyMatcher, Level, SortMatcher, evaluate,  # noqa: E402
                          ground_truth, make_sequence, run_matcher)

# name -> a fresh matcher; the first is the product
MATCHERS = {
    "tracker": lambda: _tracker(),
    "trk-nomotion": lambda: _tracker(velocity_smoothing=0.0),
    "SORT-style": SortMatcher,
    "greedy-1frame": GreedyMatcher,
}


def _tracker(**cfg):
    from mobilesam_ros.core.engine.tracking import Tracker, TrackerConfig

    return Tracker(TrackerConfig(**cfg))


def quality(seeds: int) -> list[dict]:
    """One row per (case, matcher): totals over `seeds` sequences."""
    rows = []
    for level in LEVELS + (REENTRY,):
        tot = {m: {"idsw": 0, "idtp": 0, "gt": 0, "hyp": 0, "fn": 0, "fp": 0} for m in MATCHERS}
        frames = 0
        for seed in range(seeds):
            seq = make_sequence(level, seed)
            frames += len(seq.frames)
            gt = ground_truth(seq)
            for m, make in MATCHERS.items():
                r = evaluate(gt, run_matcher(seq, make()))
                for k in tot[m]:
                    tot[m][k] += r[k]
        for m, t in tot.items():
            rows.append({"level": level.name, "matcher": m, "frames": frames, "gt": t["gt"], "idsw": t["idsw"],
                         "idf1": 2 * t["idtp"] / max(t["gt"] + t["hyp"], 1),
                         "mota": 1 - (t["fn"] + t["fp"] + t["idsw"]) / max(t["gt"], 1)})
    return rows


def overhead(n_objects: int, repeat: int) -> dict:
    from mobilesam_ros.core.engine.tracking import Tracker

    level = Level(f"cost{n_objects}", objects=n_objects, frames=30, speed_px_s=(20, 80),
                  size_px=(30, 90), drop_prob=0.0, noise_px=1, jitter_px=1, fp_per_frame=0.0,
                  skip_prob=0.0, occluded_drop=0.0, inside_frac=1.0, canvas_hw=(480, 640))
    seq = make_sequence(level, seed=0, min_visible=0.05)
    dets = [seq.detections(k) for k in range(len(seq.frames))]
    wall, cpu, tracks = [], [], []
    for _ in range(repeat):
        tr = Tracker()
        for k, d in enumerate(dets):
            w0, c0 = time.perf_counter(), time.process_time()
            tr.update(d, seq.frames[k].stamp_ns)
            if k:  # the first frame only creates tracks
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
                tracks.append(tr.tracks)
    return {"objects": n_objects, "instances_per_frame": float(np.mean([len(d) for d in dets])),
            "tracks_mean": float(np.mean(tracks)), "wall_min_ms": 1e3 * min(wall),
            "wall_median_ms": 1e3 * statistics.median(wall), "cpu_median_ms": 1e3 * statistics.median(cpu),
            "frames": len(wall)}


def follow_cost(counts: tuple[int, ...], repeat: int) -> list[dict]:
    import cv2

    from common import SHARED
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.engine.follow import FollowConfig, FollowSet, follow_step
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.structures.prompts import make_prompt

    p = SamPredictor(TorchBackend(load_mobile_sam(str(SHARED / "fixtures" / "mobile_sam_seed1.pt"))))
    img = cv2.cvtColor(cv2.imread(str(SHARED / "data" / "sequence" / "000000.jpg")), cv2.COLOR_BGR2RGB)
    p.set_image(img, 0)
    rng = np.random.default_rng(0)
    rows = []
    for n in counts:
        xy = rng.uniform([0, 0], [560, 400], (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(30, 80, (n, 2))], axis=1)
        fs = FollowSet(FollowConfig(max_objects=max(counts), min_pred_iou=0.0, max_area_change=1e9))
        fs.add(list(range(1, n + 1)), p.predict_batch([make_prompt(box=b) for b in boxes], 0), 0)
        ts = []
        for k in range(repeat + 1):
            t0 = time.perf_counter()
            follow_step(p, fs, p.frame(0))
            ts.append(time.perf_counter() - t0)
        ts = ts[1:]
        rows.append({"objects": n, "followed": len(fs), "min_ms": 1e3 * min(ts),
                     "median_ms": 1e3 * statistics.median(ts),
                     "per_object_ms": 1e3 * statistics.median(ts) / n})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--follow", action="store_true", help="also time click-to-track steps (loads a model)")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench_tracking.json"))
    args = ap.parse_args()

    rows = quality(args.seeds)
    print(f"synthetic sequences, {args.seeds} seeds per case; same detections for every matcher")
    print_table(rows, [("level", "case", ""), ("matcher", "matcher", ""), ("frames", "frames", "{:d}"),
                       ("gt", "gt objects", "{:d}"), ("idsw", "IDSW", "{:d}"), ("idf1", "IDF1", "{:.3f}"),
                       ("mota", "MOTA", "{:.3f}")])
    cost = [overhead(n, args.repeat) for n in (20, 100)]
    print("\nTracker.update per frame, 640x480")
    print_table(cost, [("objects", "objects", "{:d}"), ("instances_per_frame", "inst/frame", "{:.1f}"),
                       ("tracks_mean", "live tracks", "{:.1f}"), ("wall_min_ms", "min ms", "{:.2f}"),
                       ("wall_median_ms", "median ms", "{:.2f}"), ("cpu_median_ms", "cpu med ms", "{:.2f}")])
    follow = []
    if args.follow:
        follow = follow_cost((1, 5, 10), max(args.repeat, 5))
        print("\nclick-to-track step (one batched decode of N followed objects), 640x480, torch")
        print_table(follow, [("objects", "objects", "{:d}"), ("min_ms", "min ms", "{:.1f}"),
                             ("median_ms", "median ms", "{:.1f}"), ("per_object_ms", "ms/object", "{:.1f}")])
    write_json(args.json, {"benchmark": "bench_tracking", "target_ms_100_tracks": 5.0,
                           "loadavg_1min": os.getloadavg()[0], "seeds": args.seeds,
                           "levels": [lv.__dict__ for lv in LEVELS + (REENTRY,)], "matchers": list(MATCHERS),
                           "quality": rows, "cost": cost,
                           "follow": follow})


if __name__ == "__main__":
    main()
