"""`label`: SegEvery (or prompts from a JSON file) over every frame of a folder, video or bag ->
a COCO instances file with RLE masks, scores and track ids, resumable after a kill.

Prompts file (--prompts): JSON object, frame key -> {"boxes": [[x0, y0, x1, y1], ...],
"points": [[x, y], ...]} in original-image px; each box and each point (a positive click) is one
object. Keys are the frames' keys: the path relative to the folder (`a/000001.jpg`), `frame_000123`
(0-based video frame) or `<topic>@<header stamp ns>` (bag). Frames without an entry get no objects.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from mobilesam_ros.cli.common import (EXIT_OK, CliError, add_model_args, cpu_policy, model_config,
                                      write_rgb)
from mobilesam_ros.core.config import CLI_FILTERS, DetectorConfig, EvalConfig

_EPILOG = """\
examples:
  mobilesam label --checkpoint mobile_sam.pt --detector yolov8n.onnx --input frames/ --out ann.json
  mobilesam label --checkpoint mobile_sam.pt --input run.mcap:/camera/image_raw --out run.json
  mobilesam label --checkpoint mobile_sam.pt --input clip.mp4 --prompts clicks.json --out clip.json
Killed or interrupted? Run the same command again: frames already written are skipped.
"""


def add_parser(sub) -> None:
    d, det, filt = EvalConfig(), DetectorConfig(), CLI_FILTERS
    ap = sub.add_parser(
        "label", help="label a folder, video or bag: COCO instances JSON with RLE masks",
        description=__doc__.split("\n\n", 1)[1], epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--input", required=True, help="image folder, video file, or ROS 2 bag[:topic]")
    ap.add_argument("--topic", help="bag only: the image topic (same as bag:topic)")
    ap.add_argument("--out", required=True, help="COCO instances JSON to write (resumed if present)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--detector", help="YOLOv8-style ONNX: SegEvery on its boxes (default: the grid)")
    src.add_argument("--prompts", help="JSON file of per-frame boxes / points (see above)")
    ap.add_argument("--grid", type=int, default=d.grid, metavar="N",
                    help="grid SegEvery: N x N points (default: %(default)s)")
    ap.add_argument("--conf", type=float, default=det.conf, help="detector confidence (default: %(default)s)")
    ap.add_argument("--iou", type=float, default=det.iou, help="detector NMS IoU (default: %(default)s)")
    ap.add_argument("--pred-iou-thresh", type=float, default=d.grid_pred_iou_thresh,
                    help="drop masks below this predicted IoU (default: %(default)s, SAM's grid value)")
    ap.add_argument("--stability-thresh", type=float, default=d.grid_stability_thresh,
                    help="drop masks below this stability (default: %(default)s, SAM's grid value)")
    ap.add_argument("--min-area", type=int, default=filt.min_area, help="drop smaller masks (px)")
    ap.add_argument("--max-instances", type=int, default=filt.max_instances, help="per frame")
    ap.add_argument("--no-track", action="store_true", help="no track ids (all 0)")
    ap.add_argument("--fps", type=float, default=d.label_fps,
                    help="folders and videos: frame rate the tracker assumes (default: %(default)s); "
                    "bags use header stamps")
    ap.add_argument("--max-frames", type=int, help="label at most this many frames (in order)")
    ap.add_argument("--overlays", metavar="DIR", help="also write an overlay PNG per frame here")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    ap.set_defaults(run=run)


def load_prompts(path: str) -> dict[str, dict[str, list]]:
    """The --prompts file, checked: key -> {"boxes": [[4 numbers]...], "points": [[2 numbers]...]}."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise CliError(f"cannot read --prompts {path}: {e}") from e
    except ValueError as e:
        raise CliError(f"--prompts {path} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise CliError(f"--prompts {path}: expected an object of frame key -> prompts")
    for key, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"boxes", "points"}:
            raise CliError(f"--prompts {path}: {key!r} must map to {{\"boxes\": [...], \"points\": [...]}}")
        for name, n in (("boxes", 4), ("points", 2)):
            arr = np.asarray(entry.get(name, []), np.float64)
            if arr.size and (arr.ndim != 2 or arr.shape[1] != n or not np.isfinite(arr).all()):
                raise CliError(f"--prompts {path}: {key!r} {name} must be a list of {n} numbers each")
    return data


def _file_prompts(entry: dict[str, list], hw: tuple[int, int]) -> list:
    from mobilesam_ros.core.structures.prompts import make_prompt

    out = [make_prompt(box=b, image_size=hw) for b in entry.get("boxes", [])]
    out += [make_prompt([p], [1], multimask=True, image_size=hw) for p in entry.get("points", [])]
    return out


def _overlay_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") + ".png"


def run(args: argparse.Namespace) -> int:
    from mobilesam_ros.cli.evaluate import grid_instances
    from mobilesam_ros.cli.inputs import open_input, stamp_ns
    from mobilesam_ros.core.config import FilterConfig
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.engine.segany import decode_prompts
    from mobilesam_ros.core.engine.segevery import decode_boxes
    from mobilesam_ros.core.engine.tracking import Tracker
    from mobilesam_ros.core.eval.labels import LabelWriter, frame_record
    from mobilesam_ros.core.ops.filters import keep_indices
    from mobilesam_ros.core.ops.overlay import draw_overlay
    from mobilesam_ros.core.runtime.factory import build_backend

    for name in ("grid", "max_instances", "max_frames"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.fps <= 0:
        raise CliError(f"--fps must be > 0, got {args.fps}")
    prompts = load_prompts(args.prompts) if args.prompts else None
    source = open_input(args.input, args.topic)
    keys = source.keys()[:args.max_frames] if args.max_frames else source.keys()
    index = {k: i for i, k in enumerate(keys)}
    writer = LabelWriter(args.out)
    todo = [k for k in keys if k not in writer.done]
    if args.overlays:
        Path(args.overlays).mkdir(parents=True, exist_ok=True)
    detector, categories = None, [{"id": 1, "name": "object"}]
    if args.detector:
        from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector

        detector = YoloV8OnnxDetector(args.detector, conf=args.conf, iou=args.iou, cpu=cpu_policy(args))
        categories = [{"id": c + 1, "name": n} for c, n in sorted(detector.names.items())] or categories
    predictor = SamPredictor(build_backend(model_config(args)))
    limits = FilterConfig(args.pred_iou_thresh, args.stability_thresh, args.min_area, 1.0, args.max_instances)
    tracker = None if args.no_track else Tracker()
    id_offset = writer.max_track_id()  # a resumed run numbers its tracks above the ones written
    print(f"{len(keys)} frame(s), {len(keys) - len(todo)} already labelled in {args.out}")
    t0, done, n_inst = time.perf_counter(), 0, 0
    frames = source.frames(only=set(todo))
    if not args.no_progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(todo), desc="label", unit="frame")
    for fr in frames:
        frame = predictor.set_image(fr.image)
        if prompts is not None:
            inst = decode_prompts(predictor, _file_prompts(prompts.get(fr.key, {}), fr.image.shape[:2]),
                                  frame).instances
        elif detector is not None:
            det = detector.detect(fr.image)
            inst = decode_boxes(predictor, det.boxes, frame, class_ids=det.class_ids,
                                det_scores=det.scores)
        else:
            inst = grid_instances(predictor, fr.image, frame, args)
        # Detector and prompt masks are what the user asked for: no score floor, only area and count.
        lim = limits if prompts is None and detector is None else FilterConfig(
            0.0, 0.0, args.min_area, 1.0, args.max_instances)
        inst = inst.select(keep_indices(inst, lim))
        ids = np.zeros(len(inst), np.int64)
        if tracker is not None:
            ids = tracker.update(inst, stamp_ns(fr.key, index[fr.key], args.fps)).ids.astype(np.int64) + id_offset
        cats = [int(c) + 1 if c >= 0 and detector is not None else 1 for c in inst.class_ids]
        writer.add(frame_record(fr.key, index[fr.key], inst, ids.tolist(), cats))
        if args.overlays:
            write_rgb(str(Path(args.overlays) / _overlay_name(fr.key)),
                      draw_overlay(fr.image, inst.to_label_image(), inst.boxes, ids.tolist(), inst.scores))
        done += 1
        n_inst += len(inst)
    dt = time.perf_counter() - t0
    info: dict[str, Any] = {"description": "mobilesam label", "input": str(args.input),
                            "checkpoint": args.checkpoint}
    data = writer.finish(categories, info)
    rate = f", {done / dt:.2f} frames/s" if done and dt > 0 else ""
    print(f"labelled {done} frame(s) ({n_inst} masks) in {dt:.1f} s{rate}; {len(data['images'])} images, "
          f"{len(data['annotations'])} annotations -> {args.out}")
    return EXIT_OK
