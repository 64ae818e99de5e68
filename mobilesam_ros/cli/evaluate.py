"""`eval segany` (student vs teacher mIoU per prompt kind, MobileSAM's metric) and `eval segevery`
(mask AR@10/100/1000 and AP against COCO / YOLO-seg ground truth, MobileSAMv2's metric)."""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from mobilesam_ros.cli.common import (EXIT_OK, CliError, add_cpu_args, add_model_args, cpu_policy,
                                      model_config)
from mobilesam_ros.core.config import BACKENDS, PRECISION_CHOICES, DetectorConfig, EvalConfig, ModelConfig

_EPILOG = """\
examples (real weights; see the README section "Measuring models"):
  mobilesam eval segany --teacher mobile_sam.pt --student student.pt --data frames/ --json r.json
  mobilesam eval segany --teacher a.pt --student b.pt --data run.mcap:/camera/image_raw
  mobilesam eval segevery --checkpoint mobile_sam.pt --detector yolov8n.onnx \\
      --gt instances_val2017.json --images val2017/ --json ar.json
"""


def add_parser(sub) -> None:
    ap = sub.add_parser("eval", help="measure models: SegAny agreement, SegEvery mask AR/AP",
                        description="Measure a model as the MobileSAM / MobileSAMv2 papers do.",
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    _add_segany(which)
    _add_segevery(which)


def _add_common(ap: argparse.ArgumentParser, d: EvalConfig) -> None:
    ap.add_argument("--grid", type=int, default=d.grid, metavar="N",
                    help="grid SegEvery: N x N points (default: %(default)s, SAM's)")
    ap.add_argument("--pred-iou-thresh", type=float, default=d.grid_pred_iou_thresh,
                    help="grid SegEvery: drop masks below this predicted IoU (default: %(default)s, SAM's)")
    ap.add_argument("--stability-thresh", type=float, default=d.grid_stability_thresh,
                    help="grid SegEvery: drop masks below this stability (default: %(default)s, SAM's)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def _add_segany(which) -> None:
    d, m = EvalConfig(), ModelConfig()
    ap = which.add_parser(
        "segany", help="mIoU of a student's masks against a teacher's, per prompt kind",
        description="Per image, prompts (1 point, 3 points, 1 box) are sampled with --seed from "
        "reference masks: the teacher's own SegEvery (grid, or --detector boxes) or --gt; both "
        "models decode them; the IoU of student vs teacher mask is averaged per prompt kind (mIoU) "
        "with a bootstrap 95%% interval over images.")
    ap.add_argument("--teacher", required=True, help="teacher checkpoint (e.g. mobile_sam.pt)")
    ap.add_argument("--student", required=True, help="student checkpoint (same formats)")
    ap.add_argument("--data", required=True, help="image folder, video file, or ROS 2 bag[:topic]")
    ap.add_argument("--topic", help="bag only: the image topic (same as bag:topic)")
    ap.add_argument("--max-images", type=int, help="use at most this many frames (in order)")
    ap.add_argument("--detector", help="YOLOv8-style ONNX: reference masks from the teacher's "
                    "SegEvery on its boxes (default: the grid)")
    ap.add_argument("--gt", help="reference masks from ground truth instead: COCO instances JSON or "
                    "YOLO-seg labels folder (--data must then be the image folder)")
    ap.add_argument("--max-objects", type=int, default=d.max_objects,
                    help="reference masks per image (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=d.seed, help="prompt and bootstrap seed")
    ap.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap resamples")
    g = ap.add_argument_group("runtime (both models)")
    g.add_argument("--backend", choices=BACKENDS, default=m.backend, help="default: %(default)s")
    g.add_argument("--device", default=m.device, help="torch device (default: %(default)s)")
    g.add_argument("--precision", choices=PRECISION_CHOICES, default=m.precision)
    g.add_argument("--providers", default=",".join(m.providers), help="ONNX Runtime providers")
    g.add_argument("--onnx-cache-dir", default=m.onnx_cache_dir, help="cache of exported graphs")
    _add_common(ap, d)
    add_cpu_args(ap)
    ap.set_defaults(run=run_segany)


def _add_segevery(which) -> None:
    d = EvalConfig()
    ap = which.add_parser(
        "segevery", help="mask AR@10/100/1000 and AP of SegEvery (detector and grid)",
        description="COCO mask metrics (pycocotools COCOeval, class-agnostic, IoU 0.50:0.95, all "
        "areas) of the detector SegEvery (with --detector) and of the grid, side by side, with "
        "time per image. Masks are ranked by detector score (detector) or predicted IoU (grid).")
    add_model_args(ap)
    ap.add_argument("--gt", required=True, help="COCO instances JSON or YOLO-seg labels folder")
    ap.add_argument("--images", required=True, help="image folder (file names as in --gt)")
    ap.add_argument("--detector", help="YOLOv8-style ONNX detector proposing boxes")
    ap.add_argument("--conf", type=float, default=d.ar_conf,
                    help="detector confidence floor (default: %(default)s: low, so AR@1000 means "
                    "something)")
    ap.add_argument("--iou", type=float, default=DetectorConfig.iou,
                    help="detector NMS IoU (default: %(default)s)")
    ap.add_argument("--max-det", type=int, default=d.ar_max_det, help="boxes per image (default: "
                    "%(default)s)")
    ap.add_argument("--no-grid", action="store_true", help="score the detector SegEvery only")
    ap.add_argument("--max-images", type=int, help="score at most this many images")
    _add_common(ap, d)
    ap.set_defaults(run=run_segevery)


# ----------------------------------------------------------------------------- helpers
def _progress(it, total: int, quiet: bool, desc: str):
    if quiet:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img")


def _predictor(cfg: ModelConfig):
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.runtime.factory import build_backend

    return SamPredictor(build_backend(cfg))


def grid_instances(predictor, image: np.ndarray, frame, args: argparse.Namespace):
    """SAM's grid SegEvery on the predictor's cached `frame` of `image` -> Instances (packed)."""
    from mobilesam_ros.core.engine.amg import AutomaticMaskGenerator

    amg = AutomaticMaskGenerator(predictor, points_per_side=args.grid,
                                 pred_iou_thresh=args.pred_iou_thresh,
                                 stability_score_thresh=args.stability_thresh)
    return amg.generate(image, frame=frame).instances


def _check_positive(**kw: Any) -> None:
    for name, v in kw.items():
        if v is not None and v < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _write_json(path: str | None, obj: Any) -> None:
    if path:
        from mobilesam_ros.core.io.atomic import atomic_write_json

        try:
            atomic_write_json(path, obj)
        except OSError as e:
            raise CliError(f"cannot write {path}: {e}") from e


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


# ----------------------------------------------------------------------------- segany
def _reference_masks(teacher, image, frame, key, args, detector, gt_index) -> np.ndarray:
    """(N, H, W) bool reference masks of one image, best first, at most --max-objects."""
    from mobilesam_ros.core.engine.segevery import decode_boxes

    if gt_index is not None:
        coco, by_name = gt_index
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[key]])) if key in by_name else []
        # crowd regions are several objects in one mask: no single object for a prompt to pick
        anns = sorted((a for a in anns if not a.get("iscrowd")), key=lambda a: -a["area"])[:args.max_objects]
        from mobilesam_ros.core.eval.coco import annotation_mask

        masks = [annotation_mask(coco, a) for a in anns]
        h, w = image.shape[:2]
        return np.stack(masks) if masks else np.zeros((0, h, w), bool)
    if detector is not None:
        det = detector.detect(image)
        inst = decode_boxes(teacher, det.boxes, frame)
    else:
        inst = grid_instances(teacher, image, frame, args)
    order = np.argsort(-inst.scores, kind="stable")[:args.max_objects]
    return inst.select(order).dense_masks()


def run_segany(args: argparse.Namespace) -> int:
    from mobilesam_ros.cli.inputs import open_input
    from mobilesam_ros.core.eval.metrics import bootstrap_ci, pooled_mean
    from mobilesam_ros.core.eval.prompts import PROMPT_KINDS
    from mobilesam_ros.core.eval.segany import agreement

    _check_positive(max_images=args.max_images, max_objects=args.max_objects, bootstrap=args.bootstrap,
                    grid=args.grid)
    if args.detector and args.gt:
        raise CliError("--detector and --gt both choose the reference masks: give one")
    source = open_input(args.data, args.topic)
    keys = source.keys()[:args.max_images] if args.max_images else source.keys()
    gt_index = None
    if args.gt:
        from mobilesam_ros.core.eval.coco import coco_from_dict, load_ground_truth

        if not Path(args.data).is_dir():
            raise CliError("--gt needs --data to be the image folder the labels describe")
        coco = coco_from_dict(load_ground_truth(args.gt, args.data))
        gt_index = (coco, {img["file_name"]: i for i, img in coco.imgs.items()})
    detector = None
    if args.detector:
        from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector

        detector = YoloV8OnnxDetector(args.detector, cpu=cpu_policy(args))
    base = ModelConfig(backend=args.backend, device=args.device, precision=args.precision,
                       providers=tuple(p for p in args.providers.split(",") if p),
                       onnx_cache_dir=args.onnx_cache_dir, cpu=cpu_policy(args))
    teacher = _predictor(dataclasses.replace(base, checkpoint=args.teacher))
    student = _predictor(dataclasses.replace(base, checkpoint=args.student))
    groups: dict[str, list[np.ndarray]] = {k: [] for k in PROMPT_KINDS}
    t0 = time.perf_counter()
    frames = source.frames(only=set(keys))
    for idx, fr in enumerate(_progress(frames, len(keys), args.no_progress, "eval segany")):
        frame = teacher.set_image(fr.image)
        student.set_image(fr.image)
        ref = _reference_masks(teacher, fr.image, frame, fr.key, args, detector, gt_index)
        rng = np.random.default_rng([args.seed, idx])
        for kind, ious in agreement(teacher, student, ref, rng).items():
            groups[kind].append(ious)
    n_images = len(groups[PROMPT_KINDS[0]])
    out = {"miou": {}, "ci95": {}, "prompts": {}, "images": n_images,
           "reference": "gt" if args.gt else ("detector" if detector else f"grid{args.grid}"),
           "teacher": args.teacher, "student": args.student, "seed": args.seed}
    print(f"{'prompt':<6} {'mIoU':>7}  {'95% CI':>17}  {'prompts':>7}")
    for kind in PROMPT_KINDS:
        m = pooled_mean(groups[kind])
        lo, hi = bootstrap_ci(groups[kind], seed=args.seed, resamples=args.bootstrap)
        n = int(sum(len(g) for g in groups[kind]))
        out["miou"][kind], out["ci95"][kind] = _nan_to_none(m), [_nan_to_none(lo), _nan_to_none(hi)]
        out["prompts"][kind] = n
        print(f"{kind:<6} {m:7.4f}  [{lo:7.4f}, {hi:7.4f}]  {n:7d}")
    print(f"{n_images} image(s), {time.perf_counter() - t0:.1f} s")
    _write_json(args.json, out)
    return EXIT_OK


# ----------------------------------------------------------------------------- segevery
def run_segevery(args: argparse.Namespace) -> int:
    from mobilesam_ros.cli.common import read_rgb
    from mobilesam_ros.core.engine.segevery import decode_boxes
    from mobilesam_ros.core.eval.coco import encode_rle, load_ground_truth, mask_ar_ap

    _check_positive(max_images=args.max_images, max_det=args.max_det, grid=args.grid)
    if args.no_grid and not args.detector:
        raise CliError("--no-grid leaves nothing to score without --detector")
    gt = load_ground_truth(args.gt, args.images)
    if args.max_images:
        ids = {img["id"] for img in gt["images"][:args.max_images]}
        gt = {**gt, "images": gt["images"][:args.max_images],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    predictor = _predictor(model_config(args))
    detector = None
    if args.detector:
        from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector

        detector = YoloV8OnnxDetector(args.detector, conf=args.conf, iou=args.iou, max_det=args.max_det,
                                      cpu=cpu_policy(args))
    methods = ([] if args.no_grid else [f"grid{args.grid}"]) + (["detector"] if detector else [])
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    for img in _progress(gt["images"], len(gt["images"]), args.no_progress, "eval segevery"):
        image = read_rgb(str(Path(args.images) / img["file_name"]))
        t0 = time.perf_counter()
        frame = predictor.set_image(image)
        t_enc = time.perf_counter() - t0  # the encoder pass both methods need, counted in each
        for m in methods:
            t0 = time.perf_counter()
            if m == "detector":
                det = detector.detect(image)
                inst = decode_boxes(predictor, det.boxes, frame, det_scores=det.scores)
                rank = inst.det_scores
            else:
                inst = grid_instances(predictor, image, frame, args)
                rank = inst.scores
            seconds[m] += time.perf_counter() - t0 + t_enc
            results[m] += [{"image_id": img["id"], "category_id": 1, "segmentation": encode_rle(inst.mask(i)),
                            "score": float(rank[i])} for i in range(len(inst))]
    n = len(gt["images"])
    out: dict[str, Any] = {}
    print(f"{'method':<10} {'AR@10':>7} {'AR@100':>7} {'AR@1000':>7} {'AP':>7} {'s/img':>7} {'masks/img':>9}")
    for m in methods:
        s = mask_ar_ap(gt, results[m])
        out[m] = {"ar@10": _nan_to_none(s.ar[10]), "ar@100": _nan_to_none(s.ar[100]),
                  "ar@1000": _nan_to_none(s.ar[1000]), "ap": _nan_to_none(s.ap),
                  "s_per_image": round(seconds[m] / max(n, 1), 4),
                  "masks_per_image": round(len(results[m]) / max(n, 1), 2)}
        print(f"{m:<10} {s.ar[10]:7.4f} {s.ar[100]:7.4f} {s.ar[1000]:7.4f} {s.ap:7.4f} "
              f"{seconds[m] / max(n, 1):7.2f} {len(results[m]) / max(n, 1):9.1f}")
    print(f"{n} image(s), {len(gt['annotations'])} ground-truth masks")
    _write_json(args.json, out)
    return EXIT_OK
