"""ONNX Runtime backend: the encoder and the prompt-encoder + mask-decoder graphs written by
`python -m mobilesam_ros export` (see runtime/export.py for their inputs and outputs).

Providers are given in priority order, e.g. ["TensorrtExecutionProvider", "CUDAExecutionProvider",
"CPUExecutionProvider"], each with its options (runtime/ort_providers.py: device_id, TensorRT's
engine cache, fp16 and profiles). A GPU provider that this onnxruntime build lacks, or that fails
to start (ONNX Runtime then drops it silently and runs the graph on the next one), raises
ProviderUnavailable: backend onnx refuses to start, backend auto falls back (runtime/factory.py).
The decoder graph returns all four mask tokens; the multimask slice (1..3 or 0) is taken here,
as SAM does.

IO binding: a frame handle holds the embedding as an OrtValue on the session's device (the GPU
under CUDA/TensorRT), written there by the encoder and bound as the decoder's input on every
decode, so the 4 MB embedding crosses the bus once per frame instead of once per prompt batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, ort_session_options
from mobilesam_ros.core.runtime.base import Backend, check_tokens
from mobilesam_ros.core.runtime.ort_providers import GPU_PROVIDERS
from mobilesam_ros.core.runtime.session_pool import SessionPool
from mobilesam_ros.core.errors import ConfigError

ENCODER_INPUT, ENCODER_OUTPUT = "image", "image_embeddings"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")
ProviderSpec = Union[str, tuple]  # a provider name, or (name, options dict)


class ProviderUnavailable(ConfigError):
    """A requested GPU provider is missing from this onnxruntime build or failed to start."""


def _name(p: ProviderSpec) -> str:
    return p if isinstance(p, str) else p[0]


def make_session(path: str, providers: Optional[Sequence[ProviderSpec]] = None, cpu: Optional[CpuPolicy] = None):
    """An InferenceSession with all graph optimisations and `cpu`'s threading (default: CpuPolicy());
    providers: names or (name, options) pairs (runtime/ort_providers.provider_options).
    Clear errors for a missing/corrupt file; ProviderUnavailable for a provider this onnxruntime
    build lacks or a GPU provider the session did not keep."""
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model not found: {path} (write it with `python -m mobilesam_ros export`)")
    providers = list(providers or ["CPUExecutionProvider"])
    names = [_name(p) for p in providers]
    missing = [p for p in names if p not in ort.get_available_providers()]
    if missing:
        raise ProviderUnavailable(f"ONNX Runtime providers {missing} are not available in this onnxruntime build "
                                  f"(available: {ort.get_available_providers()}; GPU providers need onnxruntime-gpu)")
    opts = ort_session_options(cpu or CpuPolicy())
    try:
        sess = ort.InferenceSession(path, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if any(n in GPU_PROVIDERS for n in names):  # e.g. a CUDA/TensorRT library that does not load
            raise ProviderUnavailable(f"cannot start {names} for {path}: {msg}") from exc
        raise ConfigError(f"cannot load ONNX model {path}: {msg}") from exc
    dropped = [n for n in names if n in GPU_PROVIDERS and n not in sess.get_providers()]
    if dropped:  # ONNX Runtime logs the cause (missing libcudnn, ...) and runs on what is left
        raise ProviderUnavailable(f"{dropped} failed to start for {path} (session runs on "
                                  f"{sess.get_providers()}; see ONNX Runtime's error above)")
    return sess


@dataclass
class OnnxFrame:
    """A frame handle: the (1, 256, 64, 64) float32 embedding as an OrtValue on `device`."""

    value: Any  # onnxruntime.OrtValue
    device: tuple  # (ONNX Runtime device type "cpu" | "cuda", device id)


class OnnxBackend(Backend):
    """encoder_path, decoder_path: the graphs. providers: names, or (name, options) pairs; a
    dict {"encoder": [...], "decoder": [...]} gives each session its own (TensorRT profiles are
    per graph; runtime/factory.py builds them). sessions: up to this many sessions per graph, one
    per concurrent call (runtime/session_pool.py; made only when calls overlap)."""

    name = "onnx"

    def __init__(self, encoder_path: str, decoder_path: str,
                 providers: Optional[Union[Sequence[ProviderSpec], dict]] = None,
                 cpu: Optional[CpuPolicy] = None, sessions: int = 1) -> None:
        per = providers if isinstance(providers, dict) else {"encoder": providers, "decoder": providers}
        self._encoders = SessionPool(lambda: make_session(encoder_path, per["encoder"], cpu), sessions)
        self._decoders = SessionPool(lambda: make_session(decoder_path, per["decoder"], cpu), sessions)
        self.encoder, self.decoder = self._encoders.first, self._decoders.first
        for sess, names, path in ((self.encoder, (ENCODER_INPUT,), encoder_path),
                                  (self.decoder, DECODER_INPUTS, decoder_path)):
            have = [i.name for i in sess.get_inputs()]
            if list(names) != have:
                raise ConfigError(f"{path} has inputs {have}, expected {list(names)}: not a graph written "
                                 "by `python -m mobilesam_ros export`")
        self.providers = self.encoder.get_providers()
        self.device = self._device(self.decoder)

    @staticmethod
    def _device(sess) -> tuple:
        """Where the decoder's first provider keeps its tensors: ("cuda", id) or ("cpu", 0)."""
        first = sess.get_providers()[0]
        if first in GPU_PROVIDERS:
            return "cuda", int(sess.get_provider_options()[first].get("device_id", 0))
        return "cpu", 0

    def describe(self) -> str:
        return f"onnxruntime {'/'.join(p.replace('ExecutionProvider', '') for p in self.providers)}"

    def encode(self, x: np.ndarray) -> OnnxFrame:
        with self._encoders.lend() as sess:
            io = sess.io_binding()
            io.bind_cpu_input(ENCODER_INPUT, np.ascontiguousarray(x, np.float32))
            io.bind_output(ENCODER_OUTPUT, *self.device)  # the embedding stays where the decoder runs
            sess.run_with_iobinding(io)
            return OnnxFrame(io.get_outputs()[0], self.device)

    def handle_from_embedding(self, embedding: np.ndarray) -> OnnxFrame:
        import onnxruntime as ort

        arr = np.ascontiguousarray(embedding, np.float32)
        if self.device[0] == "cpu":
            arr = arr.copy()  # an OrtValue on the CPU shares the array's memory: own it
        return OnnxFrame(ort.OrtValue.ortvalue_from_numpy(arr, *self.device), self.device)

    def embedding(self, handle: OnnxFrame) -> np.ndarray:
        return handle.value.numpy()

    def decode(self, handle: OnnxFrame, coords: np.ndarray, labels: np.ndarray,
               mask_input: Optional[np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        check_tokens(coords, labels, mask_input)
        b = coords.shape[0]
        has = np.full((b,), 0.0 if mask_input is None else 1.0, np.float32)
        if mask_input is None:
            mask_input = np.zeros((b, 1, 256, 256), np.float32)
        with self._decoders.lend() as sess:
            io = sess.io_binding()
            io.bind_ortvalue_input("image_embeddings", handle.value)  # already on the device: no copy
            for name, arr in (("point_coords", coords), ("point_labels", labels), ("mask_input", mask_input),
                              ("has_mask_input", has)):
                io.bind_cpu_input(name, np.ascontiguousarray(arr, np.float32))
            for name in DECODER_OUTPUTS:
                io.bind_output(name, "cpu")  # the caller wants numpy: one copy, written by ONNX Runtime
            sess.run_with_iobinding(io)
            low, iou = io.copy_outputs_to_cpu()
        sl = slice(1, None) if multimask else slice(0, 1)
        return low[:, sl], iou[:, sl]
