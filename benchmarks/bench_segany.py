#!/usr/bin/env python3
"""SegAny benchmark (issue 3), per backend: encoder, decoder for 1 point (prompt encoder + mask
decoder, multimask) and `predict()` for 1 point including the upsampling to the image, batched
decoding of 1/10/100/300 boxes (low-res, chunks of 32), and each case's peak RSS. Each (backend,
case) runs in its own process.

No official figures: the official MobileSAM code is not installed here, and figures from another
host or day are not comparable (these shared hosts differ up to 3x between days). The README's
"Measured" section holds the one side-by-side run of both codes on one host.

    source scripts/activate.sh && python benchmarks/bench_segany.py [--backends torch,onnx]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from common import NO_OFFICIAL, SHARED, machine, peak_rss_mb, print_table, run_case_subprocess, timed, write_json

CASES = ["encode", "set_image", "decode_1pt", "predict_1pt", "boxes_1", "boxes_10", "boxes_100", "boxes_300"]


def boxes(n: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    xy = rng.random((n, 2)) * [w * 0.8, h * 0.8]
    wh = (rng.random((n, 2)) * 0.5 + 0.05) * [w, h]
    return np.concatenate([xy, np.minimum(xy + wh, [w - 1, h - 1])], 1).astype(np.float32)


def backend_for(name: str, onnx_dir: str, threads: int):
    from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy
    from mobilesam_ros.core.runtime.factory import ModelConfig, build_backend

    ckpt = str(SHARED / "fixtures" / "mobile_sam_seed1.pt")
    return build_backend(ModelConfig(ckpt, backend=name, onnx_encoder=os.path.join(onnx_dir, "encoder.onnx"),
                                     onnx_decoder=os.path.join(onnx_dir, "decoder.onnx"),
                                     cpu=CpuPolicy(threads=threads)))


def single(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.structures.prompts import make_prompt, to_tokens
    from mobilesam_ros.core.ops.transforms import preprocess_image

    g = np.load(SHARED / "fixtures" / "golden_seed1.npz")
    image = g["image"]
    name, case = args.single.split(":")
    be = backend_for(name, args.onnx_dir, args.threads)
    pred = SamPredictor(be, decode_chunk=32)
    pred.set_embedding(g["embedding"], image.shape[:2], 1)
    pt = make_prompt(g["p1_multi_point_coords"], g["p1_multi_point_labels"], multimask=True)
    if case == "encode":
        x = preprocess_image(image)[0].numpy()
        r = timed(lambda: be.encode(x), args.repeat)
    elif case == "set_image":
        r = timed(lambda: pred.set_image(image, 2), args.repeat)
    elif case == "decode_1pt":
        handle = pred.frame(1).handle
        c, lab = to_tokens([pt], lambda c: pred.transform.apply_coords(c, image.shape[:2]))
        r = timed(lambda: be.decode(handle, c, lab, None, True), args.repeat * 5)
    elif case == "predict_1pt":
        r = timed(lambda: pred.predict(g["p1_multi_point_coords"], g["p1_multi_point_labels"], stamp_ns=1),
                  args.repeat * 5)
    elif case.startswith("boxes_"):
        objs = [make_prompt(box=b) for b in boxes(int(case.split("_")[1]), *image.shape[:2])]
        r = timed(lambda: pred.predict_batch(objs, 1, return_masks=False), args.repeat)
    else:
        raise SystemExit(f"unknown case {case}")
    r.update(case=case, backend=name, peak_rss_mb=peak_rss_mb())
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="torch,onnx", help="comma-separated: torch, onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--onnx-dir", default="", help="exported graphs (default: export to a temp dir)")
    ap.add_argument("--json", default="out/bench_segany.json")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.single:
        print(json.dumps(single(args)))
        return 0
    names = [b for b in args.backends.split(",") if b]
    onnx_dir = args.onnx_dir
    if "onnx" in names and not onnx_dir:
        from mobilesam_ros.core.runtime.export import export_decoder, export_encoder
        from mobilesam_ros.core.io.checkpoints import load_mobile_sam

        onnx_dir = tempfile.mkdtemp(prefix="mobilesam_onnx_")
        sam = load_mobile_sam(str(SHARED / "fixtures" / "mobile_sam_seed1.pt"))
        export_encoder(sam, os.path.join(onnx_dir, "encoder.onnx"))
        export_decoder(sam, os.path.join(onnx_dir, "decoder.onnx"))
    rows = []
    for name in names:
        for case in CASES:
            r = run_case_subprocess(__file__, f"{name}:{case}", ["--threads", str(args.threads), "--repeat",
                                                                str(args.repeat), "--onnx-dir", onnx_dir])
            r.update(backend=name, case=case)
            rows.append(r)
            print(f"  {name} {case}: {r.get('min_s', r.get('error'))}", file=sys.stderr)
    print_table(rows, [("backend", "backend", ""), ("case", "case", ""), ("min_s", "min s", "{:.3f}"),
                       ("median_s", "median s", "{:.3f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
                       ("error", "error", "")])
    print(NO_OFFICIAL)
    write_json(args.json, {"machine": machine(), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
