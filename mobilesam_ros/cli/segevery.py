"""`segevery`: all objects of one image -> packed masks, boxes, scores, areas (.npz)."""
from __future__ import annotations

import argparse
import time

import numpy as np

from mobilesam_ros.cli.common import CliError, EXIT_OK, add_model_args, model_config, read_rgb, write_rgb
from mobilesam_ros.core.config import CLI_FILTERS, DetectorConfig, FilterConfig


def add_parser(sub) -> None:
    ap = sub.add_parser("segevery", help="segment every object of an image",
                        description="SegEvery: box prompts from a detector (MobileSAMv2), from a "
                        ".npy file, or SAM's point grid, decoded in batches. The .npz holds "
                        "masks_packed (N,H,ceil(W/8), np.packbits on the last axis) + masks_shape, "
                        "boxes (N,4 xyxy px, tight mask boxes), prompt_boxes, scores (predicted IoU), "
                        "stability, areas, class_ids, det_scores; sorted by score.")
    add_model_args(ap)
    ap.add_argument("--image", required=True, help="input image file")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--detector", help="YOLOv8-style ONNX detector proposing boxes")
    src.add_argument("--boxes", help=".npy of (N,4) xyxy boxes in image pixels")
    src.add_argument("--grid", type=int, metavar="N", help="SAM's automatic mask generator, N x N points")
    det, filt = DetectorConfig(), CLI_FILTERS
    ap.add_argument("--conf", type=float, default=det.conf,
                    help="detector confidence (default: %(default)s, MobileSAMv2's)")
    ap.add_argument("--iou", type=float, default=det.iou,
                    help="detector NMS IoU (default: %(default)s, MobileSAMv2's)")
    ap.add_argument("--pred-iou-thresh", type=float, default=filt.pred_iou_thresh,
                    help="drop masks below this predicted IoU")
    ap.add_argument("--stability-thresh", type=float, default=filt.stability_thresh,
                    help="drop masks below this stability")
    ap.add_argument("--min-area", type=int, default=filt.min_area, help="drop masks smaller than this (px)")
    ap.add_argument("--mask-nms", type=float, default=filt.mask_nms_thresh, help="mask NMS IoU (1.0 = off)")
    ap.add_argument("--max-instances", type=int, default=filt.max_instances,
                    help="keep at most this many (default: %(default)s)")
    ap.add_argument("--output", required=True, help="output .npz")
    ap.add_argument("--overlay", help="also write an overlay PNG")
    ap.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mobilesam_ros.core.runtime.factory import build_backend
    from mobilesam_ros.core.ops.overlay import draw_overlay
    from mobilesam_ros.core.ops.filters import keep_indices
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.engine.segevery import decode_boxes

    image = read_rgb(args.image)
    predictor = SamPredictor(build_backend(model_config(args)))
    t0 = time.perf_counter()
    frame = predictor.set_image(image)
    prompt_boxes = None
    if args.grid:
        from mobilesam_ros.core.engine.amg import AutomaticMaskGenerator

        inst = AutomaticMaskGenerator(predictor, points_per_side=args.grid).generate(image, frame=frame).instances
    else:
        if args.detector:
            from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector

            det = YoloV8OnnxDetector(args.detector, conf=args.conf, iou=args.iou).detect(image)
        else:
            from mobilesam_ros.core.structures.detections import Detections

            try:
                det = Detections.from_arrays(np.load(args.boxes))
            except (OSError, ValueError) as exc:
                raise CliError(f"--boxes {args.boxes}: {exc}") from exc
        inst = decode_boxes(predictor, det.boxes, frame, det.class_ids, det.scores)
        prompt_boxes = det.boxes
    filters = FilterConfig(args.pred_iou_thresh, args.stability_thresh, args.min_area, args.mask_nms,
                           args.max_instances)
    order = keep_indices(inst, filters)
    inst = inst.select(order)
    dt = time.perf_counter() - t0
    packed = inst.pack_bits()
    out = dict(masks_packed=packed.masks, masks_shape=np.array([len(inst), *inst.image_hw]),
               boxes=inst.boxes, scores=inst.scores, stability=inst.stability, areas=inst.areas,
               class_ids=inst.class_ids, det_scores=inst.det_scores)
    if prompt_boxes is not None:
        out["prompt_boxes"] = prompt_boxes[order]
    np.savez_compressed(args.output, **out)
    print(f"{len(inst)} instance(s) in {dt:.2f} s -> {args.output}")
    if args.overlay:
        ids = list(range(1, len(inst) + 1))
        write_rgb(args.overlay, draw_overlay(image, inst.to_label_image(), inst.boxes, ids, inst.scores))
    return EXIT_OK

