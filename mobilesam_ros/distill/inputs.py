"""Teacher/student inputs: frames -> cached uint8 1024x1024 inputs -> normalised model inputs.

The cache stores each frame resized (longest side 1024, Pillow-exact bilinear as at inference)
and zero-padded bottom/right as uint8 (TeacherCache's `inputs.npy`), and beside it the resized
size (h, w) (TeacherCache's `sizes.npy`). Inference normalises the *resized* image and pads with
zeros afterwards (`core.ops.transforms.normalize_and_pad`), so padding pixels are 0 in the
normalised input, not (0 - mean) / std; `model_input` gives teacher and student exactly that
input from a cached row and its size.

Optional augmentation: `MirroredSource` adds a mirrored copy of every frame (key suffix
`HFLIP_SUFFIX`) that the teacher encodes on its own. Mirroring the *teacher embedding* instead
would be wrong: SAM's encoders are not equivariant to flips (absolute/relative position terms,
padding on one side only), so only augmentations whose target the teacher computes are used.
"""
from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mobilesam_ros.core.ops.transforms import ResizeLongestSide, normalize_and_pad
from mobilesam_ros.distill.data import Frame, FrameSource

INPUT_SIZE = 1024
HFLIP_SUFFIX = "|hflip"
# Describes the uint8 rows and how they are normalised; part of the cache's identity.
PREPROCESSING_VERSION = "sam-resize-longest-1024-pad-v1+normalise-then-zero-pad"


def base_key(key: str) -> str:
    """The source frame a (possibly augmented) cache key comes from."""
    return key[:-len(HFLIP_SUFFIX)] if key.endswith(HFLIP_SUFFIX) else key


def resized_size(image_hw: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the resized image inside the 1024x1024 input for an original (H, W)."""
    return ResizeLongestSide(INPUT_SIZE).input_size((int(image_hw[0]), int(image_hw[1])))


def preprocess_frame(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((1024, 1024, 3) uint8 resized as inference does and zero-padded
    bottom/right, (h, w) of the resized image inside it, input px)."""
    resized = ResizeLongestSide(INPUT_SIZE).apply_image(image)
    out = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    out[:resized.shape[0], :resized.shape[1]] = resized
    return out, (int(resized.shape[0]), int(resized.shape[1]))


def model_input(batch: np.ndarray | torch.Tensor, sizes: Sequence[Sequence[int]] | np.ndarray,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 1024, 1024, 3) uint8 rows + their resized (h, w) (B, 2) -> (B, 3, 1024, 1024) float32
    on `device`: the inference input of each row (`core.ops.transforms.normalize_and_pad` of
    its resized image), so (x - mean) / std inside the image and exactly 0 in the padding."""
    x = torch.as_tensor(np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else batch)
    if len(sizes) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} rows but {len(sizes)} sizes")
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return torch.cat([normalize_and_pad(x[i:i + 1, :, :int(h), :int(w)], INPUT_SIZE)
                      for i, (h, w) in enumerate(sizes)])


class MirroredSource(FrameSource):
    """Wraps a frame source for a teacher-cache build, adding a mirrored copy (key + HFLIP_SUFFIX)
    of every frame right after it when `hflip` is set."""

    def __init__(self, inner: FrameSource, hflip: bool = False) -> None:
        self.inner = inner
        self.path = inner.path
        self.hflip = hflip
        self.skipped: list[str] = []
        self.random_access = False  # inputs must be stored: mirrored frames exist nowhere else

    def keys(self) -> list[str]:
        keys = self.inner.keys()
        if not self.hflip:
            return keys
        return [k2 for k in keys for k2 in (k, k + HFLIP_SUFFIX)]

    def frames(self, only: Container[str] | None = None) -> Iterator[Frame]:
        wanted = None
        if only is not None:
            try:
                wanted = {base_key(k) for k in only}  # type: ignore[attr-defined]
            except TypeError:  # a Container that cannot be iterated: ask the source (slower)
                wanted = {base_key(k) for k in self.keys() if k in only}
        for frame in self.inner.frames(only=wanted):
            variants = [(frame.key, frame.image)]
            if self.hflip:
                variants.append((frame.key + HFLIP_SUFFIX,
                                 np.ascontiguousarray(frame.image[:, ::-1])))
            for key, image in variants:
                if only is None or key in only:
                    yield Frame(key, image)
        self.skipped = [k2 for k in self.inner.skipped
                        for k2 in ((k, k + HFLIP_SUFFIX) if self.hflip else (k,))]

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "hflip": self.hflip}
