"""Model configuration -> a ready backend. One place that the CLI and the node both use."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mobilesam_ros.core.runtime.base import Backend
from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy
from mobilesam_ros.core.errors import ConfigError

LOG = logging.getLogger("mobilesam_ros")
BACKENDS = ("auto", "torch", "onnx")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
PRECISION_CHOICES = ("fp32", "fp16", "bf16")  # backends/torch_backend.PRECISIONS, without importing torch


@dataclass
class ModelConfig:
    """Which weights and which runtime.

    checkpoint: official mobile_sam.pt (flat) or a MobileSAMv2 encoder file; with
    decoder_checkpoint (MobileSAMv2 Prompt_guided_Mask_Decoder.pt) the v2 pair is loaded.
    backend "onnx" runs onnx_encoder/onnx_decoder (written by `export`) on `providers`; with no
    graphs given they are exported once into the cache (runtime/onnx_cache.py, under onnx_cache_dir).
    backend "auto": ONNX Runtime on CPU (graphs given or cached; torch with a warning if they cannot
    be exported), torch on a CUDA device unless `providers` names a GPU provider.
    precision: torch backend compute precision (fp32 | fp16 | bf16; autocast with fp32 norms).
    cpu: threading of the ONNX Runtime sessions (the process-wide part is the entry point's job).
    """

    checkpoint: str = ""
    decoder_checkpoint: str = ""
    backend: str = "auto"
    onnx_encoder: str = ""
    onnx_decoder: str = ""
    providers: tuple = field(default_factory=lambda: ("CPUExecutionProvider",))
    device: str = "cpu"
    precision: str = "fp32"
    onnx_cache_dir: str = ""
    cpu: CpuPolicy = field(default_factory=CpuPolicy)


def checkpoint_files(cfg: ModelConfig) -> list[str]:
    """cfg's checkpoint file(s), encoder first; CheckpointError when missing, not a file or empty."""
    from mobilesam_ros.core.io.checkpoints import CheckpointError, check_file

    if not cfg.checkpoint:
        raise CheckpointError("no checkpoint given (model.checkpoint / --checkpoint): "
                              "download mobile_sam.pt, see README 'Weights'")
    return [check_file(f) for f in (cfg.checkpoint, cfg.decoder_checkpoint) if f]


def load_sam(cfg: ModelConfig):
    """The torch `Sam` for cfg's checkpoint(s); CheckpointError names any problem."""
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam, load_v2

    files = checkpoint_files(cfg)
    return load_v2(*files) if len(files) == 2 else load_mobile_sam(files[0])


def resolve_backend(cfg: ModelConfig) -> str:
    """The backend `auto` stands for under cfg ("torch" or "onnx"); others are returned as given."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {cfg.backend!r} (one of {', '.join(BACKENDS)})")
    if cfg.backend != "auto":
        return cfg.backend
    if cfg.device.startswith("cuda"):
        return "onnx" if any(p in GPU_PROVIDERS for p in cfg.providers) else "torch"
    return "onnx"


def build_backend(cfg: ModelConfig) -> Backend:
    name = resolve_backend(cfg)
    if name == "onnx":
        try:
            return _onnx_backend(cfg)
        except Exception as exc:  # noqa: BLE001  auto falls back; an explicit onnx choice does not
            from mobilesam_ros.core.runtime.onnx_cache import ExportUnavailable

            if cfg.backend != "auto" or not isinstance(exc, (ExportUnavailable, ImportError)):
                raise
            LOG.warning("backend auto: %s; falling back to torch (slower on CPU)", exc)
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    return TorchBackend(load_sam(cfg), device=cfg.device, precision=cfg.precision)


def _onnx_backend(cfg: ModelConfig) -> Backend:
    from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend

    encoder, decoder = cfg.onnx_encoder, cfg.onnx_decoder
    if bool(encoder) != bool(decoder):
        raise ConfigError("give both onnx_encoder and onnx_decoder, or neither (then they are exported "
                         "into the cache on first use)")
    if not encoder:
        from mobilesam_ros.core.runtime.onnx_cache import cached_graphs

        # loaded only to export: an entry exists only for bytes that once loaded strictly
        encoder, decoder = cached_graphs(checkpoint_files(cfg), lambda: load_sam(cfg), cfg.onnx_cache_dir)
    return OnnxBackend(encoder, decoder, cfg.providers, cfg.cpu)

