"""SegAny: encode a frame once, then decode any number of prompts against its cached embedding.

`set_image` runs the encoder and stores the frame in a stamp-keyed EmbeddingCache; `predict` is
the official `SamPredictor.predict` (one object); `predict_batch` decodes many objects, batching
all objects of one token layout into single decoder calls (so every result equals its single call).
All coordinates in and masks out are in ORIGINAL-image pixels.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from mobilesam_ros.core.runtime.base import Backend
from mobilesam_ros.core.engine.embedding_cache import CachedFrame, EmbeddingCache
from mobilesam_ros.core.ops.postprocess import stability_score
from mobilesam_ros.core.structures.prompts import ObjectPrompt, group_by_layout, make_prompt, to_tokens
from mobilesam_ros.core.ops.transforms import ResizeLongestSide, postprocess_masks, preprocess_image

IMG_SIZE = 1024
STABILITY_OFFSET = 1.0  # SAM's automatic mask generator default
# Upper bound on one chunk's full-resolution float32 logits: big frames decode in smaller chunks
# (results are identical, chunking is exact) so one chunk never needs gigabytes.
CHUNK_LOGIT_BYTES = 256 << 20


class ImageError(ValueError):
    """An image the encoder cannot take (wrong dtype, shape, empty)."""


@dataclass
class FrameEntry:
    """What the cache keeps per frame: the backend handle, resized input size (h, w), the image."""

    handle: object
    input_size: tuple[int, int]
    image: Optional[np.ndarray] = None


@dataclass
class Prediction:
    """One object's result. masks (C, H, W) bool original px; iou (C,); low_res_logits (C, 256, 256);
    stability (C,): SAM's stability score of the full-resolution logits (None without masks)."""

    masks: Optional[np.ndarray]
    iou: np.ndarray
    low_res_logits: np.ndarray
    stability: Optional[np.ndarray] = None


def check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"empty image {image.shape}")
    return image


class SamPredictor:
    """SegAny over any backend, with a cache of the last `cache_size` frames' embeddings."""

    def __init__(self, backend: Backend, cache_size: int = 4, mask_threshold: float = 0.0,
                 keep_images: bool = False, decode_chunk: int = 32) -> None:
        self.backend = backend
        self.cache: EmbeddingCache[FrameEntry] = EmbeddingCache(cache_size)
        self.transform = ResizeLongestSide(IMG_SIZE)
        self.mask_threshold = mask_threshold
        self.keep_images = keep_images
        self.decode_chunk = decode_chunk
        self._auto_stamp = itertools.count(1)

    # ------------------------------------------------------------------ frames
    def set_image(self, image: np.ndarray, stamp_ns: Optional[int] = None) -> CachedFrame[FrameEntry]:
        """Encode an (H, W, 3) uint8 RGB image and cache it under `stamp_ns` (None: a counter)."""
        check_image(image)
        x, input_size = preprocess_image(image, IMG_SIZE)
        handle = self.backend.encode(x.numpy())
        return self._put(handle, input_size, image.shape[:2], stamp_ns, image)

    def set_embedding(self, embedding: np.ndarray, original_size: tuple[int, int],
                      stamp_ns: Optional[int] = None) -> CachedFrame[FrameEntry]:
        """Cache a precomputed (1, 256, 64, 64) embedding of an image of original_size (H, W)."""
        input_size = self.transform.input_size(tuple(original_size))
        return self._put(self.backend.handle_from_embedding(embedding), input_size, original_size, stamp_ns, None)

    def _put(self, handle, input_size, original_size, stamp_ns, image) -> CachedFrame[FrameEntry]:
        stamp = next(self._auto_stamp) if stamp_ns is None else int(stamp_ns)
        entry = FrameEntry(handle, tuple(int(v) for v in input_size), image if self.keep_images else None)
        return self.cache.put(stamp, tuple(original_size), entry)

    def frame(self, stamp_ns: Optional[int] = None, tolerance_ns: int = 0) -> CachedFrame[FrameEntry]:
        return self.cache.get(stamp_ns, tolerance_ns)

    def embedding(self, stamp_ns: Optional[int] = None) -> np.ndarray:
        return self.backend.embedding(self.frame(stamp_ns).embedding.handle)

    # ------------------------------------------------------------------ prompts
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, stamp_ns: Optional[int] = None,
                tolerance_ns: int = 0) -> Prediction:
        """The official single-object predict: all C candidates, no selection."""
        frame = self.frame(stamp_ns, tolerance_ns)
        prompt = make_prompt(point_coords, point_labels, box, mask_input, multimask_output,
                             image_size=None)
        return self._decode_group(frame, [prompt], multimask_output, select_best=False)[0]

    def predict_batch(self, prompts: Sequence[ObjectPrompt], stamp_ns: Optional[int] = None,
                      tolerance_ns: int = 0, select_best: bool = True, return_masks: bool = True,
                      stability_offset: float = STABILITY_OFFSET,
                      check: Optional[Callable[[int, int], None]] = None) -> list[Prediction]:
        """Many objects against one frame, in order. Objects sharing a token layout go through the
        decoder together (chunks of `decode_chunk`, fewer on big frames: CHUNK_LOGIT_BYTES). With
        select_best, a multimask object keeps its highest-IoU candidate (C = 1).

        check(done, total), when given, runs before every chunk; an exception it raises abandons
        the batch there (a time budget, a shutdown), so no call blocks longer than one chunk.
        """
        frame = self.frame(stamp_ns, tolerance_ns)
        out: list[Optional[Prediction]] = [None] * len(prompts)
        h, w = frame.original_size
        candidates = 1 if select_best else 3
        per_chunk = max(1, min(self.decode_chunk, CHUNK_LOGIT_BYTES // (h * w * 4 * candidates)))
        done = 0
        for (_, _, _, multimask), idxs in group_by_layout(prompts).items():
            for start in range(0, len(idxs), per_chunk):
                chunk = idxs[start:start + per_chunk]
                if check is not None:
                    check(done, len(prompts))
                done += len(chunk)
                preds = self._decode_group(frame, [prompts[i] for i in chunk], multimask, select_best,
                                           return_masks, stability_offset)
                for i, p in zip(chunk, preds):
                    out[i] = p
        return out  # type: ignore[return-value]

    def _decode_group(self, frame: CachedFrame[FrameEntry], prompts: Sequence[ObjectPrompt],
                      multimask: bool, select_best: bool, return_masks: bool = True,
                      stability_offset: float = STABILITY_OFFSET) -> list[Prediction]:
        entry = frame.embedding
        coords, labels = to_tokens(prompts, lambda c: self.transform.apply_coords(c, frame.original_size))
        masks_in = None
        if prompts[0].mask_input is not None:
            masks_in = np.stack([p.mask_input for p in prompts]).astype(np.float32)
        low, iou = self.backend.decode(entry.handle, coords, labels, masks_in, multimask)
        if multimask and select_best:
            best = iou.argmax(1)
            rows = np.arange(len(best))
            low, iou = low[rows, best][:, None], iou[rows, best][:, None]
        if not return_masks:
            return [Prediction(None, iou[k], low[k]) for k in range(len(prompts))]
        logits = postprocess_masks(torch.from_numpy(low), entry.input_size, frame.original_size)
        stab = stability_score(logits, self.mask_threshold, stability_offset).numpy()
        full = (logits > self.mask_threshold).numpy()
        return [Prediction(full[k], iou[k], low[k], stab[k]) for k in range(len(prompts))]
