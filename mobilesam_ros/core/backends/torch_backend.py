"""PyTorch backend: the project's MobileSAM modules, CPU or CUDA, fp32 or fp16.

Encoding runs the TinyViT encoder; decoding runs the exact fast decoder (per-frame precomputation
in the handle, so every prompt after the first costs only its own tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..modeling.fast_decoder import FastMaskDecoder, FrameContext
from ..modeling.sam import Sam
from .base import Backend, check_tokens


@dataclass
class TorchFrame:
    """A frame handle: the embedding (1, 256, 64, 64) and the fast decoder's per-frame context."""

    embedding: torch.Tensor
    ctx: FrameContext


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, sam: Sam, device: str = "cpu", fp16: bool = False) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}; install a CUDA build of torch)")
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device (half-precision matmuls on CPU are slow and inexact)")
        self.dtype = torch.float16 if fp16 else torch.float32
        self.sam = sam.to(self.device, self.dtype).eval()
        self.fast = FastMaskDecoder(self.sam.prompt_encoder, self.sam.mask_decoder)  # after .to(): it keeps views

    def describe(self) -> str:
        return f"torch {self.device}{' fp16' if self.dtype == torch.float16 else ''}"

    @torch.inference_mode()
    def encode(self, x: np.ndarray) -> TorchFrame:
        emb = self.sam.image_encoder(torch.from_numpy(x).to(self.device, self.dtype))
        return TorchFrame(emb, self.fast.prepare(emb))

    @torch.inference_mode()
    def handle_from_embedding(self, embedding: np.ndarray) -> TorchFrame:
        emb = torch.from_numpy(np.ascontiguousarray(embedding, np.float32)).to(self.device, self.dtype)
        return TorchFrame(emb, self.fast.prepare(emb))

    def embedding(self, handle: TorchFrame) -> np.ndarray:
        return handle.embedding.float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, handle: TorchFrame, coords: np.ndarray, labels: np.ndarray,
               mask_input: Optional[np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        check_tokens(coords, labels, mask_input)
        pe = self.sam.prompt_encoder
        sparse = pe.embed_tokens(torch.from_numpy(coords).to(self.device, self.dtype),
                                 torch.from_numpy(labels).to(self.device, self.dtype))
        dense = None
        if mask_input is not None:
            dense = pe._embed_masks(torch.from_numpy(mask_input).to(self.device, self.dtype))
        low, iou = self.fast.decode(handle.ctx, sparse, dense, multimask)
        return low.float().cpu().numpy(), iou.float().cpu().numpy()
