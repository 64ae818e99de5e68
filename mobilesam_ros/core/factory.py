"""Model configuration -> a ready backend. One place that the CLI and the node both use."""
from __future__ import annotations

from dataclasses import dataclass, field

from .backends.base import Backend


@dataclass
class ModelConfig:
    """Which weights and which runtime.

    checkpoint: official mobile_sam.pt (flat) or a MobileSAMv2 encoder file; with
    decoder_checkpoint (MobileSAMv2 Prompt_guided_Mask_Decoder.pt) the v2 pair is loaded.
    backend "onnx" runs onnx_encoder/onnx_decoder (written by `export`) on `providers`.
    """

    checkpoint: str = ""
    decoder_checkpoint: str = ""
    backend: str = "torch"
    onnx_encoder: str = ""
    onnx_decoder: str = ""
    providers: tuple = field(default_factory=lambda: ("CPUExecutionProvider",))
    device: str = "cpu"
    fp16: bool = False
    threads: int = 0


def load_sam(cfg: ModelConfig):
    """The torch `Sam` for cfg's checkpoint(s); CheckpointError names any problem."""
    from .checkpoints import CheckpointError, load_mobile_sam, load_v2

    if not cfg.checkpoint:
        raise CheckpointError("no checkpoint given (model.checkpoint / --checkpoint): "
                              "download mobile_sam.pt, see README 'Weights'")
    if cfg.decoder_checkpoint:
        return load_v2(cfg.checkpoint, cfg.decoder_checkpoint)
    return load_mobile_sam(cfg.checkpoint)


def build_backend(cfg: ModelConfig) -> Backend:
    if cfg.backend == "torch":
        from .backends.torch_backend import TorchBackend

        return TorchBackend(load_sam(cfg), device=cfg.device, fp16=cfg.fp16, threads=cfg.threads)
    if cfg.backend == "onnx":
        from .backends.onnx_backend import OnnxBackend

        if not (cfg.onnx_encoder and cfg.onnx_decoder):
            raise ValueError("backend onnx needs onnx_encoder and onnx_decoder "
                             "(write them with `python -m mobilesam_ros export`)")
        return OnnxBackend(cfg.onnx_encoder, cfg.onnx_decoder, cfg.providers, cfg.threads)
    raise ValueError(f"unknown backend {cfg.backend!r} (torch or onnx)")
