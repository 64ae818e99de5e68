"""`export`: write encoder.onnx and decoder.onnx for the ONNX Runtime backend, and check them."""
from __future__ import annotations

import argparse
import os

from mobilesam_ros.cli.common import EXIT_ERROR, EXIT_OK, add_model_args, model_config


def add_parser(sub) -> None:
    ap = sub.add_parser("export", help="export the model to ONNX (encoder + decoder graphs)",
                        description="Write <out-dir>/encoder.onnx and <out-dir>/decoder.onnx (decoder: "
                        "dynamic batch of prompts and tokens, low-res outputs), then run both with "
                        "ONNX Runtime and compare with PyTorch on a real prompt. --int8 adds "
                        "encoder_int8.onnx beside encoder.onnx.")
    add_model_args(ap)
    ap.add_argument("--out-dir", required=True, help="output folder")
    ap.add_argument("--skip-check", action="store_true", help="do not compare ONNX Runtime with PyTorch")
    ap.add_argument("--int8", action="store_true",
                    help="also write <out-dir>/encoder_int8.onnx (dynamic int8 MatMuls; embedding error "
                    "~6%% relative, masks 95-99%% pixel agreement with fp32; see README 'int8 encoder')")
    ap.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mobilesam_ros.core.runtime.export import (check_export, export_decoder, export_encoder, export_matches,
                                        quantize_encoder)
    from mobilesam_ros.core.runtime.factory import load_sam

    sam = load_sam(model_config(args))
    os.makedirs(args.out_dir, exist_ok=True)
    enc = export_encoder(sam, os.path.join(args.out_dir, "encoder.onnx"))
    dec = export_decoder(sam, os.path.join(args.out_dir, "decoder.onnx"))
    print(f"wrote {enc} ({os.path.getsize(enc) / 1e6:.1f} MB) and {dec} ({os.path.getsize(dec) / 1e6:.1f} MB)")
    if args.int8:
        q = quantize_encoder(enc, os.path.join(args.out_dir, "encoder_int8.onnx"))
        print(f"wrote {q} ({os.path.getsize(q) / 1e6:.1f} MB)")
    if args.skip_check:
        return EXIT_OK
    err = check_export(sam, enc, dec)
    print(f"ONNX Runtime vs PyTorch: embedding max |diff| {err['embedding']:.2e}, "
          f"low-res logits max |diff| {err['low_res']:.2e}, IoU max |diff| {err['iou']:.2e}")
    return EXIT_OK if export_matches(err) else EXIT_ERROR
