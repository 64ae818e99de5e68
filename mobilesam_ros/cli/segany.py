"""`segany`: point/box prompts on one image -> masks, predicted IoUs, low-res logits (.npz)."""
from __future__ import annotations

import argparse

import numpy as np

from mobilesam_ros.cli.common import CliError, EXIT_OK, add_model_args, model_config, numbers, read_rgb, write_rgb


def add_parser(sub) -> None:
    ap = sub.add_parser("segany", help="segment one object from point/box prompts",
                        description="Segment one object of an image from point and/or box prompts "
                        "(original-image pixels). Writes masks (C,H,W bool), iou (C,), "
                        "low_res_logits (C,256,256).")
    add_model_args(ap)
    ap.add_argument("--image", required=True, help="input image file")
    ap.add_argument("--point", action="append", default=[], metavar="X,Y,LABEL",
                    help="a point prompt; LABEL 1 = positive, 0 = negative (repeatable)")
    ap.add_argument("--box", metavar="X1,Y1,X2,Y2", help="a box prompt, xyxy pixels")
    ap.add_argument("--mask-input", metavar="NPZ", help=".npz whose low_res_logits[best] refines the mask")
    ap.add_argument("--multimask", action="store_true", help="return SAM's 3 candidate masks")
    ap.add_argument("--output", required=True, help="output .npz")
    ap.add_argument("--overlay", help="also write an overlay PNG of the best mask")
    ap.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mobilesam_ros.core.runtime.factory import build_backend
    from mobilesam_ros.core.ops.overlay import draw_overlay
    from mobilesam_ros.core.engine.predictor import SamPredictor

    pts = [numbers(p, 3, "--point") for p in args.point]
    box = np.array(numbers(args.box, 4, "--box"), np.float32) if args.box else None
    mask_input = None
    if args.mask_input:
        prev = np.load(args.mask_input)
        mask_input = prev["low_res_logits"][int(np.argmax(prev["iou"]))][None]
    if not pts and box is None and mask_input is None:
        raise CliError("give at least one --point or a --box")
    image = read_rgb(args.image)
    predictor = SamPredictor(build_backend(model_config(args)))
    predictor.set_image(image)
    coords = np.array([p[:2] for p in pts], np.float32) if pts else None
    labels = np.array([int(p[2]) for p in pts]) if pts else None
    pred = predictor.predict(coords, labels, box, mask_input, multimask_output=args.multimask)
    np.savez_compressed(args.output, masks=pred.masks, iou=pred.iou, low_res_logits=pred.low_res_logits,
                        stability=pred.stability)
    best = int(np.argmax(pred.iou))
    print(f"{len(pred.iou)} mask(s), predicted IoU {np.round(pred.iou, 3).tolist()}, best {best}: "
          f"{int(pred.masks[best].sum())} px -> {args.output}")
    if args.overlay:
        label = pred.masks[best].astype(np.uint16)
        ys, xs = np.nonzero(pred.masks[best])
        boxes = np.array([[xs.min(), ys.min(), xs.max(), ys.max()]]) if xs.size else None
        write_rgb(args.overlay, draw_overlay(image, label, boxes, [1] if xs.size else None, pred.iou[best:best + 1]))
    return EXIT_OK
