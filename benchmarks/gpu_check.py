#!/usr/bin/env python3
"""One-command check for a machine with a CUDA GPU and stock PyTorch (numpy + torch + this repo;
no onnxruntime, opencv, ROS or install step needed), run from the repo root:

    python benchmarks/gpu_check.py --fixtures ../shared/fixtures            # CUDA, fp32 + fp16 + bf16
    python benchmarks/gpu_check.py --fixtures ../shared/fixtures --device cpu --quick   # CI

Per precision of the torch backend (fp32 weights; fp16/bf16 = autocast with fp32 norms/softmax):
1. goldens: the seeded checkpoint mobile_sam_seed2.pt on golden_seed2.npz's preprocessed photo ->
   embedding error, then every predictor case + the 8-box batch decoded from that embedding
   (logits, IoU, mask agreement), PASS/FAIL against `core.engine.goldens.TOLERANCES[precision]`;
2. timings, min / median in ms (CUDA events after warm-up on CUDA; wall clock on CPU), numpy in and
   numpy out as the node calls the backend: encoder (1024x1024 input), 1-point decode (multimask,
   low-res), 100 boxes (low-res, no upsampling), a SegEvery-like frame (encoder + the boxes)
   (`--boxes`, default 100);
3. peak memory: torch.cuda.max_memory_allocated per precision (CPU: the process's peak RSS so far).
`--compile` adds rows with the encoder under torch.compile (mode "reduce-overhead" = CUDA graphs).
Prints a table, writes JSON (default out/gpu_check_<device>.json); exit status 1 if a golden fails.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from common import ROOT, SHARED, machine, peak_rss_mb, print_table, write_json

try:  # installed (colcon) package first; on a bare GPU machine, the source tree beside benchmarks/
    import mobilesam_ros  # noqa: F401
except ImportError:
    sys.path.append(str(ROOT))

from bench_segany import boxes  # noqa: E402  (after the path fallback: same seeded box sampler)


def timed_ms(fn: Callable[[], object], repeat: int, warmup: int, cuda: bool) -> dict:
    """min / median of `repeat` calls in ms; CUDA events bracket each call on a GPU."""
    import torch

    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    ts = []
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return {"min_ms": min(ts), "median_ms": statistics.median(ts), "runs": len(ts)}


@contextlib.contextmanager
def compiled_encoder(sam, mode: str) -> Iterator[str]:
    """sam's image encoder under torch.compile(mode) inside the block (restored after); yields the
    row label suffix."""
    if mode == "off":
        yield ""
        return
    import torch

    encoder = sam.image_encoder
    sam.image_encoder = torch.compile(encoder, mode=mode)
    try:
        yield f"+compile({mode})"
    finally:
        sam.image_encoder = encoder


def check_precision(sam, golden: dict, device: str, precision: str, label: str,
                    repeat: int, warmup: int, n_boxes: int) -> dict:
    """Goldens + timings + peak memory of one precision -> one result row."""
    import torch

    from mobilesam_ros.core.engine import goldens
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.structures.prompts import make_prompt, to_tokens

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    be = TorchBackend(sam, device=device, precision=precision)
    row: dict = {"precision": precision + label}
    size = tuple(int(v) for v in golden["original_size"])
    x = golden["preprocessed"]

    handle = be.encode(x)  # goldens: our embedding, then every case decoded from it
    errs = goldens.embedding_errors(be.embedding(handle), golden["embedding"])
    pred = SamPredictor(be)
    pred.set_embedding(be.embedding(handle), size, 1)
    cases = goldens.predictor_errors(pred, golden)
    errs.update(goldens.worst(cases))
    bad = goldens.failures(errs, goldens.TOLERANCES[precision])
    row.update(errs, golden="PASS" if not bad else "FAIL", failures=bad, cases=cases)

    pt = make_prompt(golden["p1_multi_point_coords"], golden["p1_multi_point_labels"], multimask=True)
    coords, labels = to_tokens([pt], lambda c: pred.transform.apply_coords(c, size))
    bcoords, blabels = to_tokens([make_prompt(box=b) for b in boxes(n_boxes, *size)],
                                 lambda c: pred.transform.apply_coords(c, size))
    timings = {
        "encoder": timed_ms(lambda: be.encode(x), repeat, warmup, cuda),
        "decode_1pt": timed_ms(lambda: be.decode(handle, coords, labels, None, True), repeat * 3, warmup, cuda),
        "boxes": timed_ms(lambda: be.decode(handle, bcoords, blabels, None, False), repeat, warmup, cuda),
        "segevery_frame": timed_ms(lambda: be.decode(be.encode(x), bcoords, blabels, None, False),
                                   repeat, warmup, cuda),
    }
    row["timings"] = timings
    for k, t in timings.items():
        row[f"{k}_ms"] = f"{t['min_ms']:.1f}/{t['median_ms']:.1f}"
    row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=str(SHARED / "fixtures"),
                    help="folder with mobile_sam_seed2.pt and golden_seed2.npz")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--precisions", default=None,
                    help="comma list of fp32,fp16,bf16 (default: all on CUDA, fp32 on CPU, where 16-bit "
                    "convolutions without native support take minutes)")
    ap.add_argument("--quick", action="store_true", help="CI: one timed run each, no warm-up, 20 boxes")
    ap.add_argument("--boxes", type=int, default=None, help="boxes per batch decode (default 100)")
    ap.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead", "max-autotune"],
                    help="also time the encoder under torch.compile with this mode (extra rows)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's default)")
    ap.add_argument("--out", default=None, help="JSON path (default out/gpu_check_<device>.json)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from mobilesam_ros.core.io.checkpoints import load_mobile_sam

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__}; use --device cpu", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cpu = args.device == "cpu"
    precisions = (args.precisions or ("fp32" if cpu else "fp32,fp16,bf16")).split(",")
    repeat, warmup = (1, 0) if args.quick else ((5, 1) if cpu else (20, 3))
    n_boxes = args.boxes or (20 if args.quick else 100)
    fixtures = Path(args.fixtures)
    t0 = time.perf_counter()
    with np.load(fixtures / "golden_seed2.npz") as z:
        golden = {k: z[k] for k in z.files}
    sam = load_mobile_sam(fixtures / "mobile_sam_seed2.pt")
    rows = []
    for prec in precisions:
        rows.append(check_precision(sam, golden, args.device, prec, "", repeat, warmup, n_boxes))
        if args.compile != "off":
            try:
                with compiled_encoder(sam, args.compile) as label:
                    rows.append(check_precision(sam, golden, args.device, prec, label, repeat, warmup, n_boxes))
            except Exception as exc:  # a compiler problem is reported, not a golden failure
                rows.append({"precision": f"{prec}+compile({args.compile})", "golden": "n/a",
                             "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    elapsed = time.perf_counter() - t0
    print(f"device {args.device}" + (f" ({torch.cuda.get_device_name(args.device)})" if not cpu else "")
          + f"; goldens: seed2 on picture1; timings min/median ms over {repeat} runs"
          + f" (1pt: {3 * repeat}); frame = encoder + {n_boxes} boxes")
    print_table(rows, [("precision", "precision", ""), ("golden", "golden", ""), ("emb_max", "emb max", "{:.2e}"),
                       ("emb_mean", "emb mean", "{:.2e}"), ("logits", "logits max", "{:.2e}"),
                       ("iou", "IoU max", "{:.2e}"), ("mask_agree", "mask agree", "{:.5f}"),
                       ("encoder_ms", "encoder ms", ""), ("decode_1pt_ms", "1pt ms", ""),
                       ("boxes_ms", f"{n_boxes} boxes ms", ""), ("segevery_frame_ms", "frame ms", ""),
                       ("peak_mb", "peak MB", "{:.0f}")])
    for r in rows:
        for line in r.get("failures", []) + ([r["error"]] if "error" in r else []):
            print(f"  {r['precision']}: {line}")
    print(f"total {elapsed:.1f} s")
    out = args.out or str(ROOT / "out" / f"gpu_check_{args.device.replace(':', '')}.json")
    write_json(out, {"device": args.device, "machine": machine(), "elapsed_s": elapsed, "repeat": repeat, "boxes": n_boxes,
                     "tolerances": {p: vars(t) for p, t in _tolerances().items()}, "rows": rows})
    return 1 if any(r.get("golden") == "FAIL" for r in rows) else 0


def _tolerances() -> dict:
    from mobilesam_ros.core.engine.goldens import TOLERANCES

    return TOLERANCES


if __name__ == "__main__":
    sys.exit(main())
