"""PyTorch backend: the project's MobileSAM modules, CPU or CUDA, in fp32, fp16 or bf16.

Encoding runs the TinyViT encoder; decoding runs the exact fast decoder (per-frame precomputation
in the handle, so every prompt after the first costs only its own tokens).

Reduced precision is mixed precision by design: the weights stay fp32 and the forward passes run
under `torch.autocast(device, fp16|bf16)`, so convolutions and matmuls run in 16 bits while every
LayerNorm (incl. SAM's LayerNorm2d), softmax and the prompts' positional encoding compute in fp32
(modeling/common.py; CPU autocast would not upcast them by itself). Converting the whole model
(`sam.half()`, 16-bit norms) is the path reported to give wrong fp16 MobileSAM embeddings
(MobileSAM issue #10); README "Precision" compares both with the goldens. TinyViT's attention
biases are gathered from the fp32 parameter on every call (never cached at eval()), so they cannot
go stale or keep a dtype of their own. The embedding and all outputs at this interface are fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from mobilesam_ros.core.runtime.fast_decoder import FastMaskDecoder, FrameContext
from mobilesam_ros.core.modeling.sam import Sam
from mobilesam_ros.core.runtime.base import Backend, check_tokens
from mobilesam_ros.core.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TorchFrame:
    """A frame handle: the embedding (1, 256, 64, 64) float32 and the fast decoder's per-frame context."""

    embedding: torch.Tensor
    ctx: FrameContext


def set_tf32(enabled: bool) -> None:
    """Set both TF32 switches explicitly (process-wide torch flags; no effect on CPU).

    torch's defaults differ between the two (CUDA matmuls off, cuDNN convolutions ON), so an
    fp32 encoder on an Ampere-or-later GPU would otherwise run its convolutions in TF32 (10-bit
    mantissa inputs) and miss the fp32 goldens. ModelConfig.tf32 documents the trade.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


class TorchBackend(Backend):
    """precision: "fp32", "fp16" or "bf16" (autocast compute dtype). fp16=True is the older
    spelling of precision="fp16". 16-bit precisions also run on CPU (torch's CPU autocast), where
    they serve to check the numbers: on CPUs without native fp16/bf16 matmuls they are slower.
    tf32: TF32 for CUDA matmuls and cuDNN convolutions (core/config.ModelConfig.tf32); both
    flags are set by every constructor, on or off (process-wide: the last backend built decides)."""

    name = "torch"

    def __init__(self, sam: Sam, device: str = "cpu", fp16: bool = False, precision: str = "fp32",
                 tf32: bool = False) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}; install a CUDA build of torch)")
        if fp16:
            precision = "fp16"
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.tf32 = bool(tf32)
        set_tf32(self.tf32)
        self.sam = sam.to(self.device, torch.float32).eval()
        # micro_batch (a CPU cache optimisation, not chunking): 2 keeps a CPU's caches warm; on a
        # GPU it would only multiply kernel launches
        self.fast = FastMaskDecoder(self.sam.prompt_encoder, self.sam.mask_decoder,  # after .to(): it keeps views
                                    micro_batch=2 if self.device.type == "cpu" else 32)

    def describe(self) -> str:
        tf32 = " tf32" if self.tf32 and self.precision == "fp32" and self.device.type == "cuda" else ""
        return f"torch {self.device}{'' if self.precision == 'fp32' else ' ' + self.precision}{tf32}"

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.precision != "fp32")

    @torch.inference_mode()
    def encode(self, x: np.ndarray) -> TorchFrame:
        with self._autocast():
            emb = self.sam.image_encoder(torch.from_numpy(x).to(self.device)).float()
            return TorchFrame(emb, self.fast.prepare(emb))

    @torch.inference_mode()
    def handle_from_embedding(self, embedding: np.ndarray) -> TorchFrame:
        emb = torch.from_numpy(np.ascontiguousarray(embedding, np.float32)).to(self.device)
        with self._autocast():
            return TorchFrame(emb, self.fast.prepare(emb))

    def embedding(self, handle: TorchFrame) -> np.ndarray:
        return handle.embedding.cpu().numpy()

    @torch.inference_mode()
    def decode(self, handle: TorchFrame, coords: np.ndarray, labels: np.ndarray,
               mask_input: Optional[np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        check_tokens(coords, labels, mask_input)
        pe = self.sam.prompt_encoder
        with self._autocast():
            sparse = pe.embed_tokens(torch.from_numpy(coords).to(self.device),
                                     torch.from_numpy(labels).to(self.device))
            dense = None
            if mask_input is not None:
                dense = pe.embed_masks(torch.from_numpy(mask_input).to(self.device))
            low, iou = self.fast.decode(handle.ctx, sparse, dense, multimask)
        return low.float().cpu().numpy(), iou.float().cpu().numpy()
