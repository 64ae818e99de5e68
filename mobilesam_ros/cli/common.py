"""Options and helpers shared by the subcommands: model selection, image I/O, exit codes."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ..core.factory import ModelConfig

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def add_model_args(ap: argparse.ArgumentParser, need_checkpoint: bool = True) -> None:
    g = ap.add_argument_group("model")
    g.add_argument("--checkpoint", required=need_checkpoint,
                   help="mobile_sam.pt (official flat format) or a MobileSAMv2 encoder file")
    g.add_argument("--decoder-checkpoint", default="",
                   help="MobileSAMv2 Prompt_guided_Mask_Decoder.pt (with a v2 encoder file)")
    g.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend")
    g.add_argument("--onnx-encoder", default="", help="encoder .onnx (backend onnx; see `export`)")
    g.add_argument("--onnx-decoder", default="", help="decoder .onnx (backend onnx)")
    g.add_argument("--providers", default="CPUExecutionProvider",
                   help="comma-separated ONNX Runtime providers, in priority order")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    g.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(args.checkpoint or "", args.decoder_checkpoint, args.backend, args.onnx_encoder,
                       args.onnx_decoder, tuple(p for p in args.providers.split(",") if p),
                       args.device, args.fp16, args.threads)


def read_rgb(path: str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB (OpenCV decoding, as the node's CompressedImage path)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise CliError(f"cannot read image {path!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_rgb(path: str, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise CliError(f"cannot write {path!r}")


def numbers(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise CliError(f"{what} {text!r}: expected {n} comma-separated numbers") from None
    if len(vals) != n:
        raise CliError(f"{what} {text!r}: expected {n} comma-separated numbers, got {len(vals)}")
    return vals


def fail(exc: BaseException) -> int:
    """Print one line; exit 2 for bad input (arguments, files, checkpoints), 1 for anything else."""
    from ..core.checkpoints import CheckpointError

    print(f"mobilesam_ros: error: {exc}", file=sys.stderr)
    user = (CliError, ValueError, FileNotFoundError, CheckpointError)
    return EXIT_USAGE if isinstance(exc, user) else EXIT_ERROR
