"""Teacher/student inputs: frames -> cached uint8 1024x1024 inputs -> normalised model inputs.

The cache stores each frame resized (longest side 1024, Pillow-exact bilinear as at inference)
and zero-padded bottom/right as uint8 (TeacherCache's `inputs.npy`). Inference normalises the
*resized* image and pads with zeros afterwards (`normalize_and_pad`), so padding pixels are 0 in
the normalised input, not (0 - mean) / std. To give teacher and student exactly the inference
input, `model_input` needs each row's resized size (h, w): the padding is zeroed after
normalisation. Sizes are recorded while the cache is built (`SizedSource`) and kept beside it in
`SIZES_FILE`; they are a pure function of the original frame size, so they can be recomputed.

Optional augmentation: `SizedSource(hflip=True)` adds a mirrored copy of every frame (key suffix
`HFLIP_SUFFIX`) that the teacher encodes on its own. Mirroring the *teacher embedding* instead
would be wrong: SAM's encoders are not equivariant to flips (absolute/relative position terms,
padding on one side only), so only augmentations whose target the teacher computes are used.
"""
from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Container, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilesam_ros.core.ops.transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide
from mobilesam_ros.distill.data import Frame, FrameSource

INPUT_SIZE = 1024
HFLIP_SUFFIX = "|hflip"
SIZES_FILE = "distill_input_sizes.json"
# Describes the uint8 rows and how they are normalised; part of the cache's identity.
PREPROCESSING_VERSION = "sam-resize-longest-1024-pad-v1+normalise-then-zero-pad"


def base_key(key: str) -> str:
    """The source frame a (possibly augmented) cache key comes from."""
    return key[:-len(HFLIP_SUFFIX)] if key.endswith(HFLIP_SUFFIX) else key


def resized_size(image_hw: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the resized image inside the 1024x1024 input for an original (H, W)."""
    return ResizeLongestSide(INPUT_SIZE).input_size((int(image_hw[0]), int(image_hw[1])))


def preprocess_frame(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1024, 1024, 3) uint8: resized as inference does, zero-padded."""
    resized = ResizeLongestSide(INPUT_SIZE).apply_image(image)
    out = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    out[:resized.shape[0], :resized.shape[1]] = resized
    return out


def model_input(batch: np.ndarray | torch.Tensor, sizes: Sequence[Sequence[int]],
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 1024, 1024, 3) uint8 rows + their resized (h, w) -> (B, 3, 1024, 1024) float32 on
    `device`: (x - mean) / std inside the resized image, exactly 0 in the padding (as
    `core.ops.transforms.preprocess_image`)."""
    x = torch.as_tensor(np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else batch)
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.tensor(PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if len(sizes) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} rows but {len(sizes)} sizes")
    for i, (h, w) in enumerate(sizes):
        x[i, :, int(h):, :] = 0.0
        x[i, :, :, int(w):] = 0.0
    return x


class SizedSource(FrameSource):
    """Wraps a frame source for a teacher-cache build: records each yielded frame's resized size,
    queues the keys in yield order for `pop_sizes`, and optionally adds mirrored copies.

    TeacherCache preprocesses frames in the order they are yielded and hands them to its encode
    function in that order, batch by batch, so the encode function pops as many sizes as its batch
    has rows (`pop_sizes`) and checks each against the row's zero padding.
    """

    def __init__(self, inner: FrameSource, hflip: bool = False,
                 known_sizes: dict[str, tuple[int, int]] | None = None) -> None:
        self.inner = inner
        self.path = inner.path
        self.hflip = hflip
        self.skipped: list[str] = []
        self.random_access = False  # inputs must be stored: mirrored frames exist nowhere else
        self.sizes: dict[str, tuple[int, int]] = dict(known_sizes or {})
        self._queue: deque[str] = deque()

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
            size = resized_size(frame.image.shape[:2])
            variants = [(frame.key, frame.image)]
            if self.hflip:
                variants.append((frame.key + HFLIP_SUFFIX,
                                 np.ascontiguousarray(frame.image[:, ::-1])))
            for key, image in variants:
                if only is None or key in only:
                    self.sizes[key] = size
                    self._queue.append(key)
                    yield Frame(key, image)
        self.skipped = [k2 for k in self.inner.skipped
                        for k2 in ((k, k + HFLIP_SUFFIX) if self.hflip else (k,))]

    def pop_sizes(self, batch: np.ndarray) -> list[tuple[int, int]]:
        """Sizes of the next len(batch) queued frames; checks that each row is zero outside."""
        sizes = []
        for row in batch:
            if not self._queue:
                raise RuntimeError("encode called with more rows than frames were yielded")
            h, w = self.sizes[self._queue.popleft()]
            if row[h:].any() or row[:, w:].any():
                raise RuntimeError("cache row and recorded size disagree (frame order changed?)")
            sizes.append((h, w))
        return sizes

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "hflip": self.hflip}


def load_sizes(cache_dir: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """The recorded resized sizes of a cache directory ({} when none were recorded)."""
    p = Path(cache_dir) / SIZES_FILE
    if not p.is_file():
        return {}
    return {k: (int(v[0]), int(v[1])) for k, v in json.loads(p.read_text()).items()}


def save_sizes(cache_dir: str | os.PathLike[str], sizes: dict[str, tuple[int, int]]) -> None:
    """Atomically write `sizes` ({key: (h, w)}) beside the cache."""
    p = Path(cache_dir) / SIZES_FILE
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({k: list(v) for k, v in sorted(sizes.items())}))
    os.replace(tmp, p)
