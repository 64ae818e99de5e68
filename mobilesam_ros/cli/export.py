"""`export`: write encoder.onnx and decoder.onnx for the ONNX Runtime backend, and check them."""
from __future__ import annotations

import argparse
import os

import numpy as np

from .common import EXIT_ERROR, EXIT_OK, add_model_args, model_config


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
    from ..core.backends.export import export_decoder, export_encoder, quantize_encoder
    from ..core.factory import load_sam

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
    return EXIT_OK if err["embedding"] < 1e-3 and err["low_res"] < 5e-3 and err["iou"] < 1e-3 else EXIT_ERROR


def check_export(sam, encoder_path: str, decoder_path: str) -> dict[str, float]:
    """Max abs differences between the ONNX graphs and the torch backend on a seeded random image
    with a box + point prompt and a point-only prompt batch."""
    from ..core.backends.onnx_backend import OnnxBackend
    from ..core.backends.torch_backend import TorchBackend

    x = np.random.default_rng(0).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
    tb, ob = TorchBackend(sam), OnnxBackend(encoder_path, decoder_path)
    ht, ho = tb.encode(x), ob.encode(x)
    coords = np.array([[[100, 200], [50, 60], [700, 800]], [[300, 300], [600, 400], [0, 0]]], np.float32)
    labels = np.array([[1, 2, 3], [1, 0, -1]], np.float32)
    lt, it = tb.decode(ht, coords, labels, None, True)
    lo, io = ob.decode(ho, coords, labels, None, True)
    return {"embedding": float(np.abs(tb.embedding(ht) - ob.embedding(ho)).max()),
            "low_res": float(np.abs(lt - lo).max()), "iou": float(np.abs(it - io).max())}
