"""On-demand fuzz of the mobilesam node (issue 12): every hostile class N times (default 1000),
a valid frame answered after each class, the node alive and its peak RSS under the README bound.

    source scripts/activate.sh && python -P tools/fuzz_node.py --n 1000

Starts the node (seed checkpoint, YOLOv8n, mode both, reliable images) in its own DDS domain and
prints one line per class; JSON in out/fuzz_node.json. Needs ../shared (fixtures and data)."""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "test" / "ros")]


def worst_case(client, timeout: float, rounds: int = 3) -> list:
    """The largest admitted frame (image.max_pixels = 4096 x 2048, noise), answered in mode both, then
    `rounds` prompts of segany.max_objects boxes covering the whole frame (full-size masks)."""
    import numpy as np
    from fuzz import ClassResult, peak_rss_mb
    from hostile import _prompt
    from mobilesam_ros.msg import PromptObject
    from mobilesam_ros.ros.params import PARAMS

    limits = {p.name: p.default for p in PARAMS}
    h, w = 2048, limits["image.max_pixels"] // 2048
    client.wait_ready()
    client.valid_rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    t = client.valid_frame(timeout)
    out = [ClassResult(f"frame {w}x{h}", 1, t, peak_rss_mb(client.proc.pid))]
    box = np.array([0, 0, w, h], np.float32)
    for r in range(rounds):
        def segany():
            return sum(a.mode == "segany" for a in client.answers)
        n0 = segany()
        client.pubs["prompt"].publish(_prompt(client.sec, [PromptObject(id=i + 1, has_box=True, box=box)
                                                           for i in range(limits["segany.max_objects"])])[1])
        t0 = time.monotonic()
        while segany() == n0 and time.monotonic() - t0 < timeout and client.proc.poll() is None:
            time.sleep(0.05)
        out.append(ClassResult(f"prompt round {r}", limits["segany.max_objects"], time.monotonic() - t0,
                               peak_rss_mb(client.proc.pid)))
        print(out[-1])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="messages per class (default 1000)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for the valid frame after a class")
    ap.add_argument("--classes", nargs="*", help="subset of classes (default: all)")
    ap.add_argument("--out", default=str(ROOT / "out" / "fuzz_node.json"))
    ap.add_argument("--worst-case", action="store_true", help="instead: a frame of image.max_pixels, then "
                    "rounds of segany.max_objects full-image boxes; reports the peak RSS")
    args = ap.parse_args(argv)

    import hostile
    from conftest import DATA, spun_node
    from fuzz import FuzzClient, run
    from nodeutil import node_argv, read_rgb
    from test_node_reliability import PEAK_RSS_BOUND_MB

    env = {**os.environ, "ROS_DOMAIN_ID": str(random.randint(102, 200)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    os.environ.update(env)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    log = open(Path(args.out).with_suffix(".node.log"), "wb")
    # worst case: the budget must not cut the largest prompt short, or its answer would never exist
    extra = {"segany.max_batch_s": 3600.0} if args.worst_case else {}
    proc = subprocess.Popen(node_argv(mode="both", **{"image.reliable": True, **extra}), env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    try:
        with spun_node(int(env["ROS_DOMAIN_ID"]), "fuzz_client") as probe:
            client = FuzzClient(probe, proc, read_rgb(str(DATA / "sequence" / "000000.jpg")))
            if args.worst_case:
                results = worst_case(client, args.timeout)
            else:
                results = run(client, args.n, args.seed, args.timeout, args.classes or list(hostile.CLASSES))
        ok = proc.poll() is None and max(r.peak_rss_mb for r in results) < PEAK_RSS_BOUND_MB
    finally:
        proc.terminate()
        proc.wait(30)
    summary = {"n_per_class": args.n, "seed": args.seed, "wall_s": time.monotonic() - t0,
               "rss_bound_mib": PEAK_RSS_BOUND_MB, "node_exit_code": proc.returncode, "ok": ok,
               "classes": [asdict(r) for r in results]}
    Path(args.out).write_text(json.dumps(summary, indent=1))
    what = "worst case" if args.worst_case else f"classes x {args.n}"
    print(f"{'OK' if ok else 'FAILED'}: {len(results)} steps ({what}) in {summary['wall_s']:.0f} s, "
          f"peak RSS {max(r.peak_rss_mb for r in results):.0f} MiB (bound {PEAK_RSS_BOUND_MB}); node exit "
          f"{proc.returncode}; {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
