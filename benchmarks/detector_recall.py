#!/usr/bin/env python3
"""Class-agnostic box recall of a YOLOv8 ONNX detector against YOLO-seg polygon labels.

Ground truth: one box per polygon label line (``cls x1 y1 x2 y2 ...`` normalised to the image),
the min/max of its points in original-image px. A prediction matches an unmatched ground-truth box
when IoU >= --match-iou, greedily in descending score order (one-to-one). Reported per setting:
recall (class-agnostic), recall with the class required to match, precision, mean detector
latency. Settings:

* ``ref`` -- conf 0.25, per-class NMS IoU 0.45: the reference in ../shared/data/models/README.md
  (YOLOv8n int8: 0.489 on coco128-seg, 0.633 on coco8-seg).
* ``v2``  -- MobileSAMv2's ObjectAwareModel settings: conf 0.4, NMS IoU 0.9, max_det 300, 20 px
  border snap, class-agnostic NMS; imgsz 1024 where the model accepts it (a fixed-size model
  keeps its own input size; the table says which size ran).

Usage::

    python benchmarks/detector_recall.py                         # coco128-seg, both settings
    python benchmarks/detector_recall.py --dataset ../shared/data/coco8-seg --json out.json

Exit codes: 0 done; 1 the model could not be loaded or an image could not be read;
2 bad arguments or no labelled images found; 3 a recall fell below --min-recall.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout tool: measure this tree's detector (core needs no msgs)

from mobilesam_ros.core.engine.detector import V2_DETECTOR_SETTINGS, YoloV8OnnxDetector  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SETTINGS = {
    "ref": dict(conf=0.25, iou=0.45, max_det=300, class_agnostic=False, border_snap_px=0.0),
    "v2": dict(V2_DETECTOR_SETTINGS, class_agnostic=True),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Sample:
    image: Path
    label: Path | None  # None: a background image (no label file)


def find_samples(dataset: Path) -> tuple[list[Sample], int]:
    """Images under <dataset>/images/** paired with <dataset>/labels/**/<stem>.txt (YOLO layout).
    Returns the samples and the number of label files without an image."""
    images = sorted(p for p in (dataset / "images").rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES)
    samples, used = [], set()
    for img in images:
        label = dataset / "labels" / img.relative_to(dataset / "images").with_suffix(".txt")
        samples.append(Sample(img, label if label.is_file() else None))
        used.add(label)
    orphans = sum(1 for p in (dataset / "labels").rglob("*.txt") if p not in used)
    return samples, orphans


def polygon_boxes(label: Path | None, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, 4) float64 xyxy px boxes and (G,) class ids from a YOLO-seg label file."""
    boxes, classes = [], []
    if label is not None:
        for n, line in enumerate(label.read_text().splitlines(), 1):
            v = line.split()
            if not v:
                continue
            if len(v) < 7 or len(v) % 2 == 0:
                raise ValueError(f"{label}:{n}: expected 'cls x1 y1 x2 y2 x3 y3 ...'")
            pts = np.asarray(v[1:], np.float64).reshape(-1, 2) * (w, h)
            boxes.append([*pts.min(0), *pts.max(0)])
            classes.append(int(float(v[0])))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P, 4) x (G, 4) xyxy -> (P, G) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(inter / (area_a[:, None] + area_b[None, :] - inter))


def greedy_matches(iou: np.ndarray, thr: float, allowed: np.ndarray | None = None) -> int:
    """Predictions (rows, best score first) each take the best unmatched GT with IoU >= thr."""
    if allowed is not None:
        iou = np.where(allowed, iou, -1.0)
    taken = np.zeros(iou.shape[1], bool)
    for row in iou:
        row = np.where(taken, -1.0, row)
        if row.size and row.max() >= thr:
            taken[row.argmax()] = True
    return int(taken.sum())


def evaluate(detector: YoloV8OnnxDetector, samples: list[Sample], match_iou: float,
             desc: str) -> dict:
    from tqdm import tqdm

    gt_total = pred_total = hit = hit_cls = 0
    latencies = []
    for s in tqdm(samples, desc=desc, unit="img", leave=False):
        bgr = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"could not read image {s.image}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        gt, gt_cls = polygon_boxes(s.label, rgb.shape[1], rgb.shape[0])
        t0 = time.perf_counter()
        det = detector.detect(rgb)
        latencies.append(time.perf_counter() - t0)
        iou = iou_matrix(det.boxes.astype(np.float64), gt)
        hit += greedy_matches(iou, match_iou)
        hit_cls += greedy_matches(iou, match_iou, det.class_ids[:, None] == gt_cls[None, :])
        gt_total += len(gt)
        pred_total += len(det)
    lat = np.asarray(latencies) * 1e3
    return {
        "images": len(samples), "gt_boxes": gt_total, "predictions": pred_total,
        "matched": hit, "recall": hit / gt_total if gt_total else float("nan"),
        "matched_same_class": hit_cls,
        "recall_same_class": hit_cls / gt_total if gt_total else float("nan"),
        "precision": hit / pred_total if pred_total else float("nan"),
        "latency_ms_median": float(np.median(lat)) if lat.size else float("nan"),
        "latency_ms_min": float(lat.min()) if lat.size else float("nan"),
    }


def build_detector(model: Path, setting: dict, threads: int | None
                   ) -> tuple[YoloV8OnnxDetector, dict]:
    """Apply a setting; a fixed-size model keeps its own imgsz (reported in the result)."""
    kw = dict(setting)
    imgsz = kw.pop("imgsz", None)
    try:
        det = YoloV8OnnxDetector(model, imgsz=imgsz, cpu=CpuPolicy(threads=threads or 0), **kw)
    except ValueError as e:
        if imgsz is None or "fixed input size" not in str(e):
            raise
        det = YoloV8OnnxDetector(model, cpu=CpuPolicy(threads=threads or 0), **kw)
    used = dict(kw, imgsz=list(det.input_hw), dynamic=det.dynamic)
    return det, used


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=SHARED / "models" / "yolov8n_int8.onnx",
                   help="YOLOv8 detect/segment ONNX model (default: the shared YOLOv8n int8)")
    p.add_argument("--dataset", type=Path, action="append",
                   help="YOLO-seg dataset folder with images/ and labels/ (repeatable; "
                        "default: ../shared/data/coco128-seg)")
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["ref", "v2"])
    p.add_argument("--match-iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--min-recall", type=float, default=None,
                   help="exit 3 when any class-agnostic recall is below this")
    args = p.parse_args(argv)
    if not 0 < args.match_iou <= 1:
        p.error("--match-iou must be in (0, 1]")
    if args.limit < 0:
        p.error("--limit must be >= 0")
    args.dataset = args.dataset or [SHARED / "coco128-seg"]
    for d in args.dataset:
        if not (d / "images").is_dir() or not (d / "labels").is_dir():
            p.error(f"{d} is not a YOLO dataset folder (needs images/ and labels/)")
    if not args.model.is_file():
        p.error(f"model not found: {args.model}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    try:
        for dataset in args.dataset:
            samples, orphans = find_samples(dataset)
            samples = samples[: args.limit] if args.limit else samples
            if not any(s.label for s in samples):
                print(f"error: no labelled images under {dataset}", file=sys.stderr)
                return 2
            for name in args.settings:
                det, used = build_detector(args.model, SETTINGS[name], args.threads)
                r = evaluate(det, samples, args.match_iou, f"{dataset.name}/{name}")
                r.update(dataset=str(dataset), setting=name, params=used,
                         labels_without_image=orphans)
                results.append(r)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    head = (f"{'dataset':<14}{'setting':<8}{'imgsz':>10}{'conf':>6}{'iou':>6}{'imgs':>6}{'GT':>6}"
            f"{'pred':>6}{'recall':>9}{'rec_cls':>9}{'prec':>7}{'ms/img':>8}")
    print(head)
    print("-" * len(head))
    for r in results:
        p = r["params"]
        size = "x".join(map(str, p["imgsz"]))
        print(f"{Path(r['dataset']).name:<14}{r['setting']:<8}{size:>10}{p['conf']:>6.2f}"
              f"{p['iou']:>6.2f}{r['images']:>6}{r['gt_boxes']:>6}{r['predictions']:>6}"
              f"{r['recall']:>9.3f}{r['recall_same_class']:>9.3f}{r['precision']:>7.3f}"
              f"{r['latency_ms_median']:>8.1f}")
    print(f"(recall {args.match_iou:g}-IoU, greedy one-to-one in score order; ms/img = median "
          "detect() time incl. letterbox and NMS)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": str(args.model), "match_iou": args.match_iou,
                "python": platform.python_version(), "machine": platform.machine(),
                "threads": args.threads}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"wrote {args.json}")
    if args.min_recall is not None and any(r["recall"] < args.min_recall for r in results):
        print(f"recall below --min-recall {args.min_recall}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
