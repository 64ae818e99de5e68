"""ONNX Runtime backend: the encoder and the prompt-encoder + mask-decoder graphs written by
`python -m mobilesam_ros export` (see runtime/export.py for their inputs and outputs).

Providers are tried in the order given, e.g. ["TensorrtExecutionProvider", "CUDAExecutionProvider",
"CPUExecutionProvider"]; ONNX Runtime falls back along the list. The decoder graph returns all four
mask tokens; the multimask slice (1..3 or 0) is taken here, as SAM does.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, ort_session_options
from mobilesam_ros.core.runtime.base import Backend, check_tokens
from mobilesam_ros.core.errors import ConfigError

ENCODER_INPUT, ENCODER_OUTPUT = "image", "image_embeddings"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")


def make_session(path: str, providers: Optional[Sequence[str]] = None, cpu: Optional[CpuPolicy] = None):
    """An InferenceSession with all graph optimisations and `cpu`'s threading (default: CpuPolicy());
    clear errors for a missing/corrupt file or a provider this onnxruntime build lacks."""
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model not found: {path} (write it with `python -m mobilesam_ros export`)")
    providers = list(providers or ["CPUExecutionProvider"])
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise ConfigError(f"ONNX Runtime providers {missing} are not available in this onnxruntime build "
                         f"(available: {ort.get_available_providers()}; GPU providers need onnxruntime-gpu)")
    opts = ort_session_options(cpu or CpuPolicy())
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ConfigError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from exc


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, encoder_path: str, decoder_path: str, providers: Optional[Sequence[str]] = None,
                 cpu: Optional[CpuPolicy] = None) -> None:
        self.encoder = make_session(encoder_path, providers, cpu)
        self.decoder = make_session(decoder_path, providers, cpu)
        for sess, names, path in ((self.encoder, (ENCODER_INPUT,), encoder_path),
                                  (self.decoder, DECODER_INPUTS, decoder_path)):
            have = [i.name for i in sess.get_inputs()]
            if list(names) != have:
                raise ConfigError(f"{path} has inputs {have}, expected {list(names)}: not a graph written "
                                 "by `python -m mobilesam_ros export`")
        self.providers = self.encoder.get_providers()

    def describe(self) -> str:
        return f"onnxruntime {'/'.join(p.replace('ExecutionProvider', '') for p in self.providers)}"

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: np.ascontiguousarray(x, np.float32)})[0]

    def handle_from_embedding(self, embedding: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(embedding, np.float32)

    def embedding(self, handle: np.ndarray) -> np.ndarray:
        return handle

    def decode(self, handle: np.ndarray, coords: np.ndarray, labels: np.ndarray,
               mask_input: Optional[np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        check_tokens(coords, labels, mask_input)
        b = coords.shape[0]
        has = np.full((b,), 0.0 if mask_input is None else 1.0, np.float32)
        if mask_input is None:
            mask_input = np.zeros((b, 1, 256, 256), np.float32)
        low, iou = self.decoder.run(list(DECODER_OUTPUTS), {
            "image_embeddings": handle, "point_coords": np.ascontiguousarray(coords, np.float32),
            "point_labels": np.ascontiguousarray(labels, np.float32),
            "mask_input": np.ascontiguousarray(mask_input, np.float32), "has_mask_input": has})
        sl = slice(1, None) if multimask else slice(0, 1)
        return low[:, sl], iou[:, sl]
