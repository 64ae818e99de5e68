"""Model configuration (core/config.ModelConfig) -> a ready backend. One place that the CLI and the
node both use."""
from __future__ import annotations

import dataclasses
import logging

from mobilesam_ros.core.config import BACKENDS, ModelConfig
from mobilesam_ros.core.runtime.base import Backend
from mobilesam_ros.core.errors import ConfigError
from mobilesam_ros.core.runtime.ort_providers import GPU_PROVIDERS, TRT

LOG = logging.getLogger("mobilesam_ros")


def checkpoint_files(cfg: ModelConfig) -> list[str]:
    """cfg's checkpoint file(s), encoder first; CheckpointError when missing, not a file or empty."""
    from mobilesam_ros.core.io.checkpoints import CheckpointError, check_file

    if not cfg.checkpoint:
        raise CheckpointError("no checkpoint given: "
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
    if cfg.precision != "fp32" and not (cfg.precision == "fp16" and TRT in cfg.providers):
        return "torch"  # the ONNX graphs are fp32: only torch (or TensorRT fp16) honours the precision
    if cfg.device.startswith("cuda"):
        return "onnx" if any(p in GPU_PROVIDERS for p in cfg.providers) else "torch"
    return "onnx"


def build_backend(cfg: ModelConfig) -> Backend:
    name = resolve_backend(cfg)
    if name == "onnx":
        from mobilesam_ros.core.runtime.onnx_backend import ProviderUnavailable

        try:
            return _onnx_backend(cfg)
        except ProviderUnavailable as exc:
            if cfg.backend != "auto":
                raise
            fallback = _after_gpu_provider_failure(cfg, exc)
            if fallback is not None:
                return fallback
        except Exception as exc:  # noqa: BLE001  auto falls back; an explicit onnx choice does not
            from mobilesam_ros.core.runtime.onnx_cache import ExportUnavailable

            if cfg.backend != "auto" or not isinstance(exc, (ExportUnavailable, ImportError)):
                raise
            LOG.warning("backend auto: %s; falling back to torch (slower on CPU)", exc)
    return _torch_backend(cfg)


def _torch_backend(cfg: ModelConfig) -> Backend:
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    return TorchBackend(load_sam(cfg), device=cfg.device, precision=cfg.precision, tf32=cfg.tf32)


def _after_gpu_provider_failure(cfg: ModelConfig, exc: Exception):
    """Backend auto, a GPU provider failed to start: one warning, then torch on a CUDA device (a
    GPU beats ONNX Runtime on the CPU) or for a 16-bit precision (which only TensorRT honoured),
    else ONNX Runtime on the providers left (CPU); None = torch."""
    rest = tuple(p for p in cfg.providers if p not in GPU_PROVIDERS)
    if cfg.device.startswith("cuda") or not rest or cfg.precision != "fp32":
        LOG.warning("backend auto: %s; falling back to torch on %s", exc, cfg.device)
        return None
    LOG.warning("backend auto: %s; falling back to ONNX Runtime on %s", exc, ", ".join(rest))
    return _onnx_backend(dataclasses.replace(cfg, providers=rest))


def _onnx_backend(cfg: ModelConfig) -> Backend:
    from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend
    from mobilesam_ros.core.runtime.ort_providers import check_precision

    check_precision(cfg.providers, cfg.precision)  # before any export: a refusal costs nothing
    encoder, decoder = cfg.onnx_encoder, cfg.onnx_decoder
    if bool(encoder) != bool(decoder):
        raise ConfigError("give both onnx_encoder and onnx_decoder, or neither (then they are exported "
                         "into the cache on first use)")
    if not encoder:
        from mobilesam_ros.core.runtime.onnx_cache import cached_graphs

        # loaded only to export: an entry exists only for bytes that once loaded strictly
        encoder, decoder = cached_graphs(checkpoint_files(cfg), lambda: load_sam(cfg), cfg.onnx_cache_dir)
    return OnnxBackend(encoder, decoder, onnx_providers(cfg, encoder, decoder), cfg.cpu, cfg.sessions)


def onnx_providers(cfg: ModelConfig, encoder: str, decoder: str) -> dict:
    """{"encoder": [...], "decoder": [...]}: cfg.providers with their options per graph
    (runtime/ort_providers.py); ConfigError for a precision these providers cannot honour."""
    from mobilesam_ros.core.runtime.ort_providers import check_precision, provider_options, trt_cache_dir

    check_precision(cfg.providers, cfg.precision)
    trt = TRT in cfg.providers
    return {role: provider_options(cfg.providers, cfg.device, cfg.precision,
                                   trt_cache_dir(path, cfg.onnx_cache_dir) if trt else None,
                                   decoder=role == "decoder", tf32=cfg.tf32)
            for role, path in (("encoder", encoder), ("decoder", decoder))}

