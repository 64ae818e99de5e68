#!/usr/bin/env python3
"""Convert MobileSAMv2's ``ObjectAwareModel.pt`` (an Ultralytics YOLOv8 checkpoint) to ONNX, once.

SegEvery gets its box prompts from this model, but the node runs it with onnxruntime only
(:class:`mobilesam_ros.core.engine.detector.YoloV8OnnxDetector`); Ultralytics is needed for this one
conversion step and never at run time::

    pip install ultralytics            # pulls torch + torchvision; AGPL-3.0
    python tools/export_object_aware_model.py weights/ObjectAwareModel.pt \
        -o weights/object_aware.onnx

Download ``ObjectAwareModel.pt`` from the links in the MobileSAM repository's MobileSAMv2 README
(it is not in the git repository). This script calls ``YOLO(path).export(format='onnx',
imgsz=1024, dynamic=..., opset=..., simplify=...)`` and checks the result with onnxruntime.

What our detector expects (any Ultralytics YOLOv8 detect or segment export has it):

* input ``images``: float32 (float16 with --half) ``[1, 3, H, W]``, RGB in [0, 1]; with
  ``--dynamic`` (the default) H and W are free and the detector letterboxes to a multiple of 32,
  as the official PyTorch predictor does; with ``--no-dynamic`` the input is ``imgsz x imgsz`` and
  every image is padded to that square (a little slower, boxes may differ by a pixel or so).
* output 0: float32 ``[1, 4 + nc + nm, A]``: ``cx, cy, w, h`` in input px, ``nc`` class scores
  (sigmoid, no objectness), and for a segment model ``nm`` (32) mask coefficients; a segment
  model's output 1 ``[1, nm, H/4, W/4]`` (mask prototypes) is ignored. A = anchors of strides
  8/16/32 (21504 for a 1024 x 1024 input). No NMS inside (do not pass ``nms=True``).
* metadata ``names``, ``stride``, ``imgsz`` (written by Ultralytics) tell the detector the class
  count and default size.

Run it with the v2 settings: ``YoloV8OnnxDetector(path, **V2_DETECTOR_SETTINGS)`` (imgsz 1024,
conf 0.4, iou 0.9, max_det 300, 20 px border snap).

NOT TESTED HERE: neither ``ultralytics`` nor ``torchvision`` can be installed on the machines this
project is developed and tested on, and the checkpoint is not available to them. The detector side
is tested with a real YOLOv8n ONNX export and synthetic heads. MobileSAMv2 itself used an
Ultralytics 8.0.x release (its code imports ``ultralytics.yolo.*``, which later releases removed);
if a current release cannot unpickle the checkpoint, install an 8.0.x release for this step.

Exit codes: 0 exported (and checked, unless --no-check); 1 conversion or check failed;
2 bad arguments or ultralytics missing.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path,
                   help="ObjectAwareModel.pt (Ultralytics YOLOv8 checkpoint)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="ONNX file to write (default: next to the weights, same stem)")
    p.add_argument("--imgsz", type=int, default=1024, help="input size (MobileSAMv2 uses 1024)")
    p.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="free input height/width (default on; matches the official letterbox)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                   help="run Ultralytics' onnxslim/onnxsim pass (default on)")
    p.add_argument("--half", action="store_true", help="fp16 export (needs a CUDA device)")
    p.add_argument("--device", default="cpu", help="torch device for the export (default cpu)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="load the result with our onnxruntime detector (default on)")
    p.add_argument("--check-image", type=Path, default=None,
                   help="also run the exported model on this image and print the box count")
    args = p.parse_args(argv)
    if not args.weights.is_file():
        p.error(f"weights not found: {args.weights}")
    if args.imgsz <= 0 or args.imgsz % 32:
        p.error(f"--imgsz must be a positive multiple of 32, got {args.imgsz}")
    if args.check_image is not None and not args.check_image.is_file():
        p.error(f"--check-image not found: {args.check_image}")
    return args


def export(args: argparse.Namespace) -> Path:
    try:
        from ultralytics import YOLO  # conversion-time only; never imported by the package
    except ImportError as e:
        raise SystemExit(
            "error: this one conversion step needs the `ultralytics` package (and torchvision):\n"
            "    pip install ultralytics\n"
            f"({e}). The converted .onnx then runs without it.") from e
    try:
        model = YOLO(str(args.weights))
    except Exception as e:  # unpickling an old checkpoint fails in many ways
        raise RuntimeError(
            f"Ultralytics could not load {args.weights}: {type(e).__name__}: {e}\n"
            "MobileSAMv2 was written against Ultralytics 8.0.x; try "
            "`pip install \"ultralytics<8.1\"`.") from e
    print(f"loaded {args.weights}: task={getattr(model, 'task', '?')}, "
          f"classes={len(getattr(model, 'names', {}) or {})}")
    written = model.export(format="onnx", imgsz=args.imgsz, dynamic=args.dynamic, opset=args.opset,
                           simplify=args.simplify, half=args.half, device=args.device, nms=False)
    written = Path(str(written))
    out = args.output or args.weights.with_suffix(".onnx")
    if written.resolve() != out.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), out)
    return out


def check(path: Path, imgsz: int, image: Path | None) -> None:
    """Load with our detector (validates I/O) and print the model's interface."""
    sys.path.insert(0, str(ROOT))  # run from a checkout: use this tree's detector
    from mobilesam_ros.core.engine.detector import V2_DETECTOR_SETTINGS, YoloV8OnnxDetector

    settings = dict(V2_DETECTOR_SETTINGS)
    settings["imgsz"] = imgsz
    det = YoloV8OnnxDetector(path, **settings)
    sess = det._session
    for i in sess.get_inputs():
        print(f"  input  {i.name}: {i.type} {i.shape}")
    for o in sess.get_outputs():
        print(f"  output {o.name}: {o.type} {o.shape}")
    print(f"  dynamic={det.dynamic} imgsz={det.input_hw} stride={det.stride} "
          f"classes={len(det.names)}")
    if image is not None:
        import cv2

        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f"could not read {image}")
        boxes = det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        print(f"  {image.name}: {len(boxes)} boxes at the v2 settings, "
              f"{det.last_timings['inference_ms']:.0f} ms inference")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = export(args)
        print(f"wrote {out}")
        if args.check:
            check(out, args.imgsz, args.check_image)
    except SystemExit as e:  # the missing-package message
        print(e, file=sys.stderr)
        return 2
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
