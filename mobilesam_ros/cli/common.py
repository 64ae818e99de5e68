"""Options and helpers shared by the subcommands: model selection, image I/O, exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback

import numpy as np

from mobilesam_ros.core.config import (BACKENDS, OMP_WAIT_POLICIES, PRECISION_CHOICES, CpuPolicy, ModelConfig,
                                       name_settings)
from mobilesam_ros.core.errors import UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# the core's messages name these settings by the options below (core/config.setting_name)
name_settings({(ModelConfig, "onnx_cache_dir"): "--onnx-cache-dir", (ModelConfig, "onnx_encoder"): "--onnx-encoder",
               (ModelConfig, "onnx_decoder"): "--onnx-decoder", (ModelConfig, "checkpoint"): "--checkpoint"})


class CliError(UsageError):
    """A bad command line (option value, unreadable/unwritable file): one line, exit code 2."""


def add_model_args(ap: argparse.ArgumentParser, need_checkpoint: bool = True) -> None:
    """--checkpoint ... --precision, defaults from core/config.ModelConfig, plus add_cpu_args."""
    d = ModelConfig()
    g = ap.add_argument_group("model")
    g.add_argument("--checkpoint", required=need_checkpoint, default=d.checkpoint,
                   help="mobile_sam.pt (official flat format) or a MobileSAMv2 encoder file")
    g.add_argument("--decoder-checkpoint", default=d.decoder_checkpoint,
                   help="MobileSAMv2 Prompt_guided_Mask_Decoder.pt (with a v2 encoder file)")
    g.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="inference backend; auto: ONNX Runtime on CPU (graphs exported once into the "
                   "cache), torch on CUDA (default: %(default)s)")
    g.add_argument("--onnx-encoder", default=d.onnx_encoder, help="encoder .onnx (see `export`); default: "
                   "exported into the cache")
    g.add_argument("--onnx-decoder", default=d.onnx_decoder, help="decoder .onnx (with --onnx-encoder)")
    g.add_argument("--onnx-cache-dir", default=d.onnx_cache_dir, help="cache of exported graphs (default: "
                   "$MOBILESAM_CACHE_DIR or ~/.cache/mobilesam_ros)")
    g.add_argument("--providers", default=",".join(d.providers),
                   help="comma-separated ONNX Runtime providers, in priority order (default: %(default)s)")
    g.add_argument("--device", default=d.device, help="torch device: cpu, cuda, cuda:N; cuda:N is also the GPU "
                   "of ONNX Runtime's CUDA/TensorRT providers (default: %(default)s)")
    g.add_argument("--precision", choices=PRECISION_CHOICES, default=d.precision,
                   help="compute precision: backend torch autocast (norms stay fp32); backend onnx: fp32, "
                   "or fp16 with TensorrtExecutionProvider (default: %(default)s)")
    g.add_argument("--tf32", action="store_true", default=d.tf32,
                   help="backend torch fp32 on CUDA: allow TF32 matmuls/convolutions (faster; inputs "
                   "rounded to a 10-bit mantissa, outside the fp32 golden tolerances)")
    add_cpu_args(ap)


def add_cpu_args(ap: argparse.ArgumentParser) -> None:
    """The process's CPU policy (core/runtime/cpu_policy.py); applied by __main__ before torch loads."""
    d = CpuPolicy()
    g = ap.add_argument_group("CPU sharing")
    g.add_argument("--threads", type=int, default=d.threads,
                   help="intra-op threads of torch and ONNX Runtime (0 = physical cores)")
    g.add_argument("--omp-wait-policy", choices=OMP_WAIT_POLICIES, default=d.omp_wait_policy,
                   help="passive: idle OpenMP workers sleep (fair on a shared CPU); active: they spin; "
                   "env: leave OMP_WAIT_POLICY alone (default: %(default)s)")
    g.add_argument("--ort-spinning", action="store_true", default=d.ort_spinning,
                   help="let ONNX Runtime threads spin between ops (dedicated CPUs only)")
    g.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                   default=d.keep_freed_memory, help="leave glibc's malloc thresholds alone")


def cpu_policy(args: argparse.Namespace) -> CpuPolicy:
    """The CpuPolicy of add_cpu_args' options (each option is named after its field)."""
    return CpuPolicy(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CpuPolicy)})


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The ModelConfig of add_model_args' options (each option is named after its field)."""
    # sessions: a command line calls the model from one thread, so one session per graph (the default)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelConfig)
             if f.name not in ("cpu", "sessions")}
    given.update(checkpoint=args.checkpoint or "", providers=tuple(p for p in args.providers.split(",") if p))
    return ModelConfig(**given, cpu=cpu_policy(args))


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


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input (options, files, checkpoints, images, prompts,
    distillation data), as opposed to a bug."""
    from mobilesam_ros.core.engine.predictor import ImageError
    from mobilesam_ros.core.io.checkpoints import CheckpointError
    from mobilesam_ros.core.io.image_codec import ImageMessageError
    from mobilesam_ros.core.io.weights import WeightsMissing
    from mobilesam_ros.core.ops.geometry3d import DepthError
    from mobilesam_ros.core.structures.prompts import PromptError
    from mobilesam_ros.distill.data import SourceError
    from mobilesam_ros.distill.teacher_cache import CacheError
    # core/eval's GroundTruthError and LabelFileError are UsageErrors

    return (UsageError, FileNotFoundError, CheckpointError, WeightsMissing, ImageError,
            ImageMessageError, PromptError, DepthError, SourceError, CacheError)


def fail(exc: BaseException) -> int:
    """Report an exception that ended a subcommand. Bad input: its first line, exit 2. Anything
    else is a bug (e.g. a ValueError from inside numpy): the traceback, exit 1."""
    if isinstance(exc, user_errors()):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"mobilesam_ros: error: {first}", file=sys.stderr)
        return EXIT_USAGE
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"mobilesam_ros: internal error (a bug, not your input; please report it with the "
          f"traceback above): {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_ERROR
