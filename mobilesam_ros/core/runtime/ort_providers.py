"""ONNX Runtime execution providers with their options: which GPU, TensorRT's engine cache, fp16
and optimisation profiles, and which precisions the ONNX backend can honour.

ModelConfig.providers names providers in priority order; ONNX Runtime takes each as
(name, options dict). Built here (pure functions, testable without a GPU):
- CUDAExecutionProvider: device_id from ModelConfig.device ("cuda:N" -> N; "cuda" or "cpu" -> 0), and
  use_tf32 from ModelConfig.tf32 (set explicitly whatever this onnxruntime's default is, so the fp32
  graphs run in fp32 unless asked; the CUDA provider option `use_tf32` needs onnxruntime >= 1.17).
- TensorrtExecutionProvider: the same device_id; an engine cache (engines are otherwise rebuilt at
  every start: minutes on a Jetson) in <cache root>/tensorrt/<key>, beside the ONNX graph cache
  <cache root>/onnx/<key> (runtime/onnx_cache.py), keyed by the graph file's sha256 and the
  onnxruntime version, so a new graph or a new onnxruntime never loads an old engine (ONNX Runtime
  puts the GPU's compute capability, e.g. sm87, into each engine's file name itself; after a
  TensorRT upgrade, delete the folder); trt_fp16_enable when ModelConfig.precision is fp16; and for
  the decoder the min/opt/max profile of its prompt batch (DECODER_PROFILE).
- CPUExecutionProvider and anything else: no options.
The int8 detector gets `detector_providers`: never TensorRT (see there).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional, Sequence

from mobilesam_ros.core.errors import ConfigError

CUDA, TRT, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"
GPU_PROVIDERS = (CUDA, TRT)

# The decoder graph's TensorRT optimisation profile (image_embeddings is always 1x256x64x64 and
# needs none). B = prompts per call, N = tokens per prompt: N >= 2 always (a box is 2 corner
# tokens; point-only prompts carry SAM's padding token), opt N = 2 is SegEvery's box-only layout;
# B <= 32 is SamPredictor's default decode chunk; N = 16 allows a box with 14 points. A call
# outside [min, max] makes TensorRT rebuild its engine for the new range (slow, once).
PROFILE_MIN, PROFILE_OPT, PROFILE_MAX = (1, 2), (32, 2), (32, 16)


def decoder_profile(b: int, n: int) -> str:
    """One profile point of the decoder's inputs in ONNX Runtime's syntax ("name:dxdxd,...")."""
    return (f"point_coords:{b}x{n}x2,point_labels:{b}x{n},mask_input:{b}x1x256x256,"
            f"has_mask_input:{b}")


def device_id(device: str) -> int:
    """ModelConfig.device -> the CUDA ordinal ONNX Runtime's GPU providers run on.

    "cuda:N" -> N; "cuda" -> 0; "cpu" -> 0 (GPU providers named with the default device run on
    the first GPU, as before). Anything else is a ConfigError.
    """
    if device in ("cpu", "cuda"):
        return 0
    m = re.fullmatch(r"cuda:(\d+)", device)
    if not m:
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return int(m.group(1))


def check_precision(providers: Sequence[str], precision: str) -> None:
    """Refuse a ModelConfig.precision the ONNX backend cannot honour with these providers.

    The exported graphs are fp32. fp32 runs anywhere; fp16 is honoured only by TensorRT
    (trt_fp16_enable: TensorRT picks fp16 kernels where they are faster); the CUDA and CPU
    providers would silently run fp32, and bf16 is not offered here at all. Use backend torch
    (autocast) for fp16/bf16 without TensorRT.
    """
    if precision == "fp32":
        return
    if precision == "fp16" and TRT in providers:
        return
    raise ConfigError(f"precision {precision} is not honoured by backend onnx with providers "
                      f"{list(providers)}: the ONNX graphs are fp32; fp16 needs {TRT} (its fp16 "
                      "engines), bf16 needs backend torch. Use precision fp32 or backend torch")


def trt_cache_dir(graph_path: str, root: str = "") -> Path:
    """<cache root>/tensorrt/<key> for one ONNX graph; key = sha256(graph sha256, onnxruntime version)."""
    import onnxruntime as ort

    from mobilesam_ros.core.io.weights import sha256_of
    from mobilesam_ros.core.runtime.cache_root import cache_root

    key = hashlib.sha256(f"{sha256_of(graph_path)};onnxruntime={ort.__version__}".encode()).hexdigest()[:32]
    return cache_root(root) / "tensorrt" / key


def provider_options(providers: Sequence[str], device: str = "cpu", precision: str = "fp32",
                     trt_cache: Optional[Path] = None, decoder: bool = False,
                     tf32: bool = False) -> list[tuple[str, dict]]:
    """`providers` in order, each with its options (see the module docstring).

    trt_cache: TensorRT's engine (and timing) cache folder; required when TensorRT is named.
    decoder: add the decoder's min/opt/max profile to TensorRT's options.
    """
    out: list[tuple[str, dict]] = []
    for name in providers:
        opts: dict = {}
        if name == CUDA:
            opts = {"device_id": device_id(device), "use_tf32": int(tf32)}
        elif name == TRT:
            if trt_cache is None:
                raise ValueError("TensorRT needs an engine cache folder (trt_cache)")
            opts = {"device_id": device_id(device), "trt_fp16_enable": precision == "fp16",
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(trt_cache)}
            if decoder:
                opts.update(trt_profile_min_shapes=decoder_profile(*PROFILE_MIN),
                            trt_profile_opt_shapes=decoder_profile(*PROFILE_OPT),
                            trt_profile_max_shapes=decoder_profile(*PROFILE_MAX))
        out.append((name, opts))
    return out


def detector_providers(providers: Sequence[str], device: str = "cpu", tf32: bool = False) -> list[tuple[str, dict]]:
    """The YOLO detector's providers: `providers` without TensorRT, CPU last.

    The detector is an int8 (QDQ) graph: TensorRT would build an int8 engine of its own (or
    reject the graph) with numbers that no test here checks, and an engine build of minutes at
    every start. Under CUDA the graph runs as written (its quantize/dequantize nodes included).
    """
    names = [p for p in providers if p != TRT and p != CPU] + [CPU]
    return provider_options(names, device, tf32=tf32)
