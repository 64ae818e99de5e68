"""The one interface every inference backend implements.

Data at the boundary is numpy float32 so backends are interchangeable:
  encode(x (1, 3, 1024, 1024) normalised + padded)          -> frame handle (backend-specific)
  decode(handle, coords (B, N, 2) in the 1024 frame, labels (B, N) float32 (1/0 points, 2/3 box
         corners, -1 padding), mask_input (B, 1, 256, 256) logits or None, multimask)
                                                             -> low_res (B, C, 256, 256), iou (B, C)
with C = 3 when multimask else 1 (SAM's slicing: masks 1..3, or mask 0).
The handle may hold more than the embedding (per-frame precomputation for fast decoding); it is
the `handle` of a CachedFrame (core/structures/frame.py). Callers decode through
SamPredictor.decode_tokens, which takes original px and owns the chunking.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np


class Backend(ABC):
    """Image encoder + prompt encoder/mask decoder behind numpy arrays."""

    name: str = "abstract"

    @abstractmethod
    def encode(self, x: np.ndarray) -> Any:
        """(1, 3, 1024, 1024) float32 preprocessed image -> frame handle."""

    @abstractmethod
    def handle_from_embedding(self, embedding: np.ndarray) -> Any:
        """(1, 256, 64, 64) float32 image embedding -> frame handle (as `encode` would give)."""

    @abstractmethod
    def embedding(self, handle: Any) -> np.ndarray:
        """The (1, 256, 64, 64) float32 image embedding inside a handle."""

    @abstractmethod
    def decode(self, handle: Any, coords: np.ndarray, labels: np.ndarray,
               mask_input: Optional[np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """Decode B prompts of one token layout against one frame -> (low_res (B,C,256,256), iou (B,C))."""


def check_tokens(coords: np.ndarray, labels: np.ndarray, mask_input: Optional[np.ndarray]) -> None:
    """Shape checks shared by all backends (a wrong shape here is a bug upstream, say so plainly)."""
    if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
        raise ValueError(f"decode expects coords (B, N, 2) and labels (B, N); got {coords.shape}, {labels.shape}")
    if mask_input is not None and mask_input.shape != (coords.shape[0], 1, 256, 256):
        raise ValueError(f"mask_input must be (B, 1, 256, 256), got {mask_input.shape}")
