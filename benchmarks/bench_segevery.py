#!/usr/bin/env python3
"""SegEvery benchmark, one frame, torch backend (issue 4): detector, encoder, decode + post-process
for 10/100/300 boxes, peak memory, against the 32x32 grid mode on the same image (measured in the
same run). Every case runs in its own process.

No official MobileSAMv2 figures: the official code is not installed here, and figures from another
host or day are not comparable (these shared hosts differ up to 3x between days). The README's
"Measured" section holds the one side-by-side run of both codes on one host.

    source scripts/activate.sh && python benchmarks/bench_segevery.py [--grid] [--json out/bench_segevery.json]

`--classes person` (issue 21) measures instead what detector.classes saves: on one image (default
bus.jpg) encoded once, the decode of all the detector's boxes and of the boxes of the named classes
only (the node's filter, applied before decoding), alternated in one process, min and median.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from common import NO_OFFICIAL, SHARED, machine, peak_rss_mb, print_table, run_case_subprocess, timed, write_json



def boxes_for(n: int, h: int, w: int, detected: np.ndarray) -> np.ndarray:
    """The detector's boxes first, then seeded random boxes (5%..55% of the image side)."""
    rng = np.random.default_rng(0)
    extra = max(0, n - len(detected))
    xy = rng.random((extra, 2)) * [w * 0.8, h * 0.8]
    wh = (rng.random((extra, 2)) * 0.5 + 0.05) * [w, h]
    rand = np.concatenate([xy, np.minimum(xy + wh, [w - 1, h - 1])], 1)
    return np.concatenate([detected.reshape(-1, 4), rand]).astype(np.float32)[:n]


def single(args) -> dict:
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector
    from mobilesam_ros.core.config import FilterConfig
    from mobilesam_ros.core.ops.filters import filter_instances
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.engine.segevery import decode_boxes

    image = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    pred = SamPredictor(TorchBackend(load_mobile_sam(args.checkpoint)))
    det = YoloV8OnnxDetector(args.detector, conf=0.4, iou=0.9, border_snap_px=20)
    case = args.single
    if case == "detector":
        r = timed(lambda: det.detect(image), args.repeat)
        r["boxes"] = len(det.detect(image))
    elif case == "encode":
        r = timed(lambda: pred.set_image(image, 1), args.repeat)
    elif case.startswith("decode_"):
        n = int(case.split("_")[1])
        pred.set_image(image, 1)
        boxes = boxes_for(n, h, w, det.detect(image).boxes)
        inst = {}
        r = timed(lambda: inst.setdefault("x", decode_boxes(pred, boxes, pred.frame(1))), args.repeat)
        filt = FilterConfig(max_instances=1000, mask_nms_thresh=0.9)
        r["postprocess"] = timed(lambda: filter_instances(inst["x"], filt), args.repeat, warmup=0)["min_s"]
    elif case == "frame":  # the whole SegEvery frame: detector + encoder + decode + post-process
        filt = FilterConfig()

        def frame():
            pred.set_image(image, 1)
            d = det.detect(image)
            return filter_instances(decode_boxes(pred, d.boxes, pred.frame(1), d.class_ids, d.scores), filt)
        r = timed(frame, args.repeat)
        r["instances"] = len(frame())
    elif case == "grid32":
        from mobilesam_ros.core.engine.amg import AutomaticMaskGenerator

        amg = AutomaticMaskGenerator(pred, points_per_side=32, stability_score_thresh=0.05)
        r = timed(lambda: amg.generate(image, 1), 1, warmup=0)
        r["instances"] = len(amg.generate(image, 1).instances) if args.repeat > 1 else None
    else:
        raise SystemExit(f"unknown case {case}")
    r.update(case=case, peak_rss_mb=peak_rss_mb())
    return r


def classes_case(args) -> dict:
    """Decoder time of all detector boxes vs those of args.classes, alternated (one process, one
    encoded frame, the same boxes each round)."""
    import time

    import cv2

    from mobilesam_ros.core.engine.class_names import ClassNames
    from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.engine.segevery import decode_boxes
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    import torch

    torch.set_num_threads(args.threads)
    image = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)
    pred = SamPredictor(TorchBackend(load_mobile_sam(args.checkpoint)))
    det = YoloV8OnnxDetector(args.detector, conf=0.4, iou=0.9, border_snap_px=20)
    pred.set_image(image, 1)
    frame = pred.frame(1)
    boxes = det.detect(image)
    ids, unknown = ClassNames(det.names).ids_of(args.classes.split(","))
    if unknown:
        raise SystemExit(f"unknown classes {unknown}")
    kept = boxes.select(np.isin(boxes.class_ids, list(ids)))  # the node's rule (CameraStream._keep_classes)
    times: dict = {"all": [], "filtered": []}
    decode_boxes(pred, boxes.boxes, frame, boxes.class_ids, boxes.scores)  # warm-up
    for _ in range(args.repeat):
        for name, d in (("all", boxes), ("filtered", kept)):
            t0 = time.perf_counter()
            decode_boxes(pred, d.boxes, frame, d.class_ids, d.scores)
            times[name].append(time.perf_counter() - t0)
    out = {"case": "classes", "image": args.image, "classes": args.classes, "boxes_all": len(boxes),
           "boxes_filtered": len(kept), "repeat": args.repeat}
    for name, t in times.items():
        out[f"{name}_min_s"], out[f"{name}_median_s"] = float(np.min(t)), float(np.median(t))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(SHARED / "fixtures" / "mobile_sam_seed1.pt"))
    ap.add_argument("--image", default=str(SHARED / "fixtures" / "picture1.jpg"))
    ap.add_argument("--detector", default=str(SHARED / "data" / "models" / "yolov8n_int8.onnx"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--grid", action="store_true", help="also run the 32x32 grid baseline (minutes)")
    ap.add_argument("--json", default="out/bench_segevery.json")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    ap.add_argument("--classes", help="comma-separated class names: measure the detector.classes filter "
                                      "(default image bus.jpg, --repeat rounds, alternated)")
    args = ap.parse_args()
    if args.classes:
        if args.image == ap.get_default("image"):
            args.image = str(SHARED / "data" / "images" / "bus.jpg")
        r = classes_case(args)
        print(json.dumps(r, indent=1))
        write_json(args.json.replace(".json", "_classes.json"), {"machine": machine(), "results": [r]})
        return 0
    if args.single:
        print(json.dumps(single(args)))
        return 0
    cases = ["detector", "encode", "decode_10", "decode_100", "decode_300", "frame"] + (["grid32"] if args.grid else [])
    extra = ["--checkpoint", args.checkpoint, "--image", args.image, "--detector", args.detector,
             "--threads", str(args.threads), "--repeat", str(args.repeat)]
    rows = []
    for c in cases:
        r = run_case_subprocess(__file__, c, extra)
        rows.append(r)
        print(f"  {c}: {r.get('min_s', r.get('error'))}", file=sys.stderr)
    by = {r["case"]: r for r in rows}
    if "grid32" in by and "min_s" in by["grid32"] and "min_s" in by.get("frame", {}):
        by["frame"]["speedup_vs_grid32"] = by["grid32"]["min_s"] / by["frame"]["min_s"]
    print_table(rows, [("case", "case", ""), ("min_s", "min s", "{:.3f}"), ("median_s", "median s", "{:.3f}"),
                       ("postprocess", "postproc s", "{:.3f}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
                       ("speedup_vs_grid32", "x vs grid", "{:.1f}"), ("error", "error", "")])
    print(NO_OFFICIAL)
    write_json(args.json, {"machine": machine(), "image": args.image, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
