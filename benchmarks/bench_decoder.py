#!/usr/bin/env python3
"""Mask-decoder benchmark: faithful MaskDecoder vs FastMaskDecoder on the golden embedding.

Times prompt encoding + mask decoding to low-res logits (no encoder, no upsampling to the image):
1 point with multimask, and 1/10/100/300 boxes decoded in chunks (multimask off, as MobileSAMv2).
Each (decoder, case) runs in its own process so its peak RSS (VmHWM) is its own.

    . scripts/activate.sh && PYTHONPATH=$PWD python benchmarks/bench_decoder.py --json /tmp/bench.json

The machine is shared and noisy: quote min and median of several runs, compare within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


def _rss_mb() -> float:
    from common import peak_rss_mb

    return peak_rss_mb()


def _boxes(n: int, golden) -> "torch.Tensor":
    """n deterministic boxes in the 1024 input frame: the 8 golden boxes, then seeded random ones."""
    import torch

    fixed = torch.from_numpy(golden["boxes8_transformed"]).float()
    if n <= len(fixed):
        return fixed[:n].clone()
    gen = torch.Generator().manual_seed(0)
    h, w = (int(v) for v in golden["input_size"])
    xy = torch.rand((n - len(fixed), 2), generator=gen) * torch.tensor([w * 0.8, h * 0.8])
    wh = (torch.rand((n - len(fixed), 2), generator=gen) * 0.5 + 0.05) * torch.tensor([w, h])
    extra = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], dim=1)
    return torch.cat([fixed, extra])


def run_single(args: argparse.Namespace) -> dict:
    """One (impl, case) measurement in this process -> result dict."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.runtime.fast_decoder import FastMaskDecoder, keep_freed_memory_mapped

    if args.malloc == "tuned":  # process-wide, so both decoders get it when asked for
        keep_freed_memory_mapped()

    impl, case = args.single.split(":")
    sam = load_mobile_sam(args.checkpoint)
    pe, md = sam.prompt_encoder, sam.mask_decoder
    golden = np.load(args.golden)
    emb = torch.from_numpy(golden["embedding"])
    fast = FastMaskDecoder(pe, md, micro_batch=args.micro_batch, tune_malloc=False)
    dense_pe = pe.get_dense_pe()
    ctx = fast.prepare(emb) if impl == "fast" else None
    rss_loaded = _rss_mb()

    def decode(points, boxes, multimask):
        if impl == "fast":
            return fast.decode_prompts(ctx, points, boxes, None, multimask)
        sparse, dense = pe(points, boxes, None)
        return md(emb, dense_pe, sparse, dense, multimask_output=multimask)

    warm = None  # a cheaper warm-up than `work` where one exists
    if case == "prepare":
        n = 1
        work = lambda: fast.prepare(emb)  # noqa: E731
    elif case == "point1":
        n = 1
        scale = torch.tensor([float(golden["input_size"][1]) / float(golden["original_size"][1]),
                              float(golden["input_size"][0]) / float(golden["original_size"][0])], dtype=torch.float64)
        xy = (torch.from_numpy(golden["p1_multi_point_coords"]).double() * scale).float()[None]
        points = (xy, torch.from_numpy(golden["p1_multi_point_labels"])[None])
        work = lambda: decode(points, None, True)  # noqa: E731
    elif case.startswith("boxes"):
        n = int(case[len("boxes"):])
        boxes = _boxes(n, golden)
        out = torch.empty((n, 1, 256, 256))

        def work():
            for i in range(0, n, args.chunk):
                out[i:i + args.chunk] = decode(None, boxes[i:i + args.chunk], False)[0]
            return out

        warm = lambda: decode(None, boxes[:args.chunk], False)  # noqa: E731
    else:
        raise SystemExit(f"unknown case {case}")

    times = []
    with torch.inference_mode():
        (warm or work)()  # warm-up: allocator, oneDNN primitive caches
        spent = 0.0
        while len(times) < args.repeats and (not times or spent < args.max_seconds):
            t0 = time.perf_counter()
            work()
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
    return {
        "impl": impl, "malloc": args.malloc, "case": case, "n_prompts": n,
        "chunk": args.chunk if case.startswith("boxes") else None,
        "runs": len(times), "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
        "median_ms_per_prompt": 1e3 * statistics.median(times) / n,
        "rss_after_load_mb": rss_loaded, "peak_rss_mb": _rss_mb(), "threads": torch.get_num_threads(),
        "loadavg_1min": os.getloadavg()[0],  # other jobs on the machine: read the times with it
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(FIXTURES / "mobile_sam_seed1.pt"))
    ap.add_argument("--golden", default=str(FIXTURES / "golden_seed1.npz"), help="holds the embedding and prompts")
    ap.add_argument("--impl", default="faithful,fast", help="comma list of faithful, fast")
    ap.add_argument("--boxes", default="1,10,100,300", help="comma list of box counts")
    ap.add_argument("--chunk", type=int, default=25, help="prompts per decoder call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (after one warm-up)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop repeating a case after this much time")
    ap.add_argument("--faithful-max-boxes", type=int, default=100, help="skip faithful box cases above this")
    ap.add_argument("--micro-batch", type=int, default=2, help="FastMaskDecoder micro_batch")
    ap.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                    help="tuned: keep_freed_memory_mapped() in every run (FastMaskDecoder's default)")
    ap.add_argument("--json", default="bench_decoder.json", help="where to write the results")
    ap.add_argument("--single", help=argparse.SUPPRESS)  # internal: impl:case, run in this process
    args = ap.parse_args()

    if args.single:
        print(json.dumps(run_single(args)))
        return

    cases = []
    for impl in args.impl.split(","):
        cases.append((impl, "point1"))
        if impl == "fast":
            cases.append((impl, "prepare"))
        for n in (int(v) for v in args.boxes.split(",")):
            if impl == "faithful" and n > args.faithful_max_boxes:
                continue
            cases.append((impl, f"boxes{n}"))
    results = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    base = [sys.executable, os.path.abspath(__file__)] + [a for a in sys.argv[1:]]
    for impl, case in cases:
        proc = subprocess.run(base + ["--single", f"{impl}:{case}"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"{impl}:{case} failed")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{impl:9s} {case:8s} n={res['n_prompts']:4d} median {res['median_ms']:10.1f} ms  "
              f"min {res['min_ms']:10.1f} ms  {res['median_ms_per_prompt']:8.1f} ms/prompt  "
              f"peak RSS {res['peak_rss_mb']:7.0f} MB (after load {res['rss_after_load_mb']:.0f})", flush=True)

    import torch

    meta = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "threads": args.threads, "chunk": args.chunk, "micro_batch": args.micro_batch, "malloc": args.malloc,
            "checkpoint": os.path.basename(args.checkpoint)}
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    head = (f"{'impl':9s} | {'case':8s} | {'median ms':>10s} | {'min ms':>10s} | {'ms/prompt':>9s} | "
            f"{'peak RSS MB':>11s}")
    print("\n" + head + " | load avg (1 min)")
    for r in results:
        print(f"{r['impl']:9s} | {r['case']:8s} | {r['median_ms']:10.1f} | {r['min_ms']:10.1f} | "
              f"{r['median_ms_per_prompt']:9.1f} | {r['peak_rss_mb']:11.0f} | {r['loadavg_1min']:.1f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
