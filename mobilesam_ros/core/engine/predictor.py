"""SegAny: encode a frame once, then decode any number of prompts against its cached embedding.

`set_image` runs the encoder and stores the frame (one CachedFrame: stamp, sizes, backend handle,
image, caller metadata) in a stamp-keyed EmbeddingCache. Every decode goes through ONE method,
:meth:`SamPredictor.decode_tokens` (segment_anything's ``predict_torch``): `predict` (the official
single-object predict), `predict_batch` / `iter_decode` (many objects, batched by token layout and
chunked by the one chunking policy, :meth:`SamPredictor.chunk_size`), SegEvery's box decoding and
the grid generator all use it. All coordinates in and masks out are in ORIGINAL-image pixels.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from mobilesam_ros.core.config import PipelineConfig
from mobilesam_ros.core.runtime.base import Backend
from mobilesam_ros.core.engine.embedding_cache import EmbeddingCache
from mobilesam_ros.core.ops.postprocess import stability_score
from mobilesam_ros.core.structures.frame import CachedFrame
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
class Prediction:
    """One object's result. masks (C, H, W) bool original px; iou (C,); low_res_logits (C, 256, 256);
    stability (C,): SAM's stability score of the full-resolution logits (None without masks)."""

    masks: Optional[np.ndarray]
    iou: np.ndarray
    low_res_logits: np.ndarray
    stability: Optional[np.ndarray] = None


@dataclass
class DecodedBatch:
    """B prompts decoded against one frame, C candidates each (3 multimask, else 1; 1 after
    select_best). low_res: (B, C, 256, 256) float32 logits; iou: (B, C) float32 predicted IoU;
    masks: (B, C, H, W) bool over the frame's original image and stability: (B, C) float32
    (NaN for 0/0) when masks were asked for, else None."""

    low_res: np.ndarray
    iou: np.ndarray
    masks: Optional[np.ndarray] = None
    stability: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.iou.shape[0])

    def prediction(self, k: int) -> Prediction:
        """Object k of the batch as a Prediction."""
        return Prediction(None if self.masks is None else self.masks[k], self.iou[k], self.low_res[k],
                          None if self.stability is None else self.stability[k])


def check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"empty image {image.shape}")
    return image


class SamPredictor:
    """SegAny over any backend, with a cache of the last `cache_size` frames.

    decode_chunk: the most prompts per decoder call (`iter_decode`, `predict_batch`, SegEvery);
    fewer on big frames, so one chunk's full-resolution logits stay under CHUNK_LOGIT_BYTES.
    keep_images: keep each cached frame's source image (the node's overlay draws on it).
    """

    def __init__(self, backend: Backend, cache_size: int = PipelineConfig.cache_size, mask_threshold: float = 0.0,
                 keep_images: bool = False, decode_chunk: int = 32) -> None:
        self.backend = backend
        self.cache: EmbeddingCache[CachedFrame] = EmbeddingCache(cache_size)
        self.transform = ResizeLongestSide(IMG_SIZE)
        self.mask_threshold = mask_threshold
        self.keep_images = keep_images
        self.decode_chunk = decode_chunk
        self._auto_stamp = itertools.count(1)

    # ------------------------------------------------------------------ frames
    def encode_frame(self, image: np.ndarray, stamp_ns: int = -1, meta: Any = None) -> CachedFrame:
        """Encode an (H, W, 3) uint8 RGB image into a frame WITHOUT caching it (the grid
        generator's crops); `set_image` caches."""
        check_image(image)
        x, input_size = preprocess_image(image, IMG_SIZE)
        return CachedFrame(int(stamp_ns), (int(image.shape[0]), int(image.shape[1])),
                           (int(input_size[0]), int(input_size[1])), self.backend.encode(x.numpy()),
                           image if self.keep_images else None, meta)

    def set_image(self, image: np.ndarray, stamp_ns: Optional[int] = None, meta: Any = None) -> CachedFrame:
        """Encode an (H, W, 3) uint8 RGB image and cache it under `stamp_ns` (None: a counter),
        with `meta` (any object, e.g. a ROS header) travelling with the frame."""
        stamp = next(self._auto_stamp) if stamp_ns is None else int(stamp_ns)
        return self.cache.put(stamp, self.encode_frame(image, stamp, meta))

    def set_embedding(self, embedding: np.ndarray, original_size: tuple[int, int],
                      stamp_ns: Optional[int] = None, meta: Any = None) -> CachedFrame:
        """Cache a precomputed (1, 256, 64, 64) embedding of an image of original_size (H, W)."""
        stamp = next(self._auto_stamp) if stamp_ns is None else int(stamp_ns)
        hw = (int(original_size[0]), int(original_size[1]))
        input_size = tuple(int(v) for v in self.transform.input_size(hw))
        frame = CachedFrame(stamp, hw, input_size, self.backend.handle_from_embedding(embedding), None, meta)
        return self.cache.put(stamp, frame)

    def frame(self, stamp_ns: Optional[int] = None, tolerance_ns: int = 0) -> CachedFrame:
        """The cached frame nearest to stamp_ns within tolerance_ns (None: the latest);
        FrameNotCachedError when there is none."""
        return self.cache.get(stamp_ns, tolerance_ns)

    def embedding(self, stamp_ns: Optional[int] = None) -> np.ndarray:
        return self.backend.embedding(self.frame(stamp_ns).handle)

    # ------------------------------------------------------------------ the one decode path
    def decode_tokens(self, frame: CachedFrame, coords: np.ndarray, labels: np.ndarray,
                      mask_input: Optional[np.ndarray] = None, multimask: bool = True,
                      select_best: bool = False, return_masks: bool = True,
                      stability_offset: float = STABILITY_OFFSET) -> DecodedBatch:
        """Decode B prompts of one token layout against `frame` in ONE backend call.

        coords: (B, N, 2) xy in the frame's ORIGINAL px (any float dtype; padding tokens 0, 0);
        labels: (B, N) 1/0 points, 2/3 box corners, -1 padding (prompts.to_tokens builds both);
        mask_input: (B, 1, 256, 256) float32 low-res logits or None; multimask: SAM's 3 candidates
        (tokens 1..3) or mask token 0. select_best keeps each prompt's highest-IoU candidate.
        return_masks adds the full-resolution masks and stability scores (offset
        `stability_offset`), computed for this batch only: the caller bounds B (`chunk_size`).
        """
        coords = self.transform.apply_coords(coords, frame.original_size).astype(np.float32)
        if mask_input is not None:
            mask_input = np.ascontiguousarray(mask_input, np.float32)
        low, iou = self.backend.decode(frame.handle, coords, np.asarray(labels, np.float32), mask_input,
                                       multimask)
        if multimask and select_best:
            best = iou.argmax(1)
            rows = np.arange(len(best))
            low, iou = low[rows, best][:, None], iou[rows, best][:, None]
        if not return_masks:
            return DecodedBatch(low, iou)
        masks, stability = self.full_res_masks(frame, low, stability_offset)
        return DecodedBatch(low, iou, masks, stability)

    def full_res_masks(self, frame: CachedFrame, low_res: np.ndarray,
                       stability_offset: float = STABILITY_OFFSET) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, 256, 256) low-res logits of `frame` -> masks (B, C, H, W) bool over its original
        image (SAM's two-step bilinear postprocess, threshold mask_threshold) and stability (B, C)
        float32. The float logits exist only inside this call."""
        logits = postprocess_masks(torch.from_numpy(low_res), frame.input_size, frame.original_size)
        stability = stability_score(logits, self.mask_threshold, stability_offset).numpy()
        return (logits > self.mask_threshold).numpy(), stability

    def chunk_size(self, frame: CachedFrame, candidates: int, chunk: Optional[int] = None) -> int:
        """The one chunking policy: prompts per decoder call on `frame` with `candidates` masks
        each, at most `chunk` (default decode_chunk), fewer when their full-resolution float32
        logits would pass CHUNK_LOGIT_BYTES."""
        h, w = frame.original_size
        limit = self.decode_chunk if chunk is None else int(chunk)
        return max(1, min(limit, CHUNK_LOGIT_BYTES // (h * w * 4 * candidates)))

    def iter_decode_tokens(self, frame: CachedFrame, coords: np.ndarray, labels: np.ndarray,
                           mask_input: Optional[np.ndarray] = None, multimask: bool = False,
                           select_best: bool = True, return_masks: bool = True,
                           stability_offset: float = STABILITY_OFFSET, chunk: Optional[int] = None,
                           check: Optional[Callable[[int, int], None]] = None
                           ) -> Iterator[tuple[np.ndarray, DecodedBatch]]:
        """`decode_tokens` over N prompts of one token layout (coords (N, T, 2) original px,
        labels (N, T), mask_input (N, 1, 256, 256) or None), in chunks of `chunk_size`, yielding
        ((n,) int64 indices into the N, DecodedBatch) per chunk. check(done, total), when given,
        runs before every chunk; an exception it raises abandons the batch there (a time budget,
        a shutdown), so no call blocks longer than one chunk."""
        n = len(coords)
        per_chunk = self.chunk_size(frame, 1 if select_best else 3, chunk)
        for start in range(0, n, per_chunk):
            if check is not None:
                check(start, n)
            part = slice(start, start + per_chunk)
            yield np.arange(n)[part], self.decode_tokens(
                frame, coords[part], labels[part], None if mask_input is None else mask_input[part],
                multimask, select_best, return_masks, stability_offset)

    def iter_decode(self, frame: CachedFrame, prompts: Sequence[ObjectPrompt], select_best: bool = True,
                    return_masks: bool = True, stability_offset: float = STABILITY_OFFSET,
                    chunk: Optional[int] = None,
                    check: Optional[Callable[[int, int], None]] = None) -> Iterator[tuple[np.ndarray, DecodedBatch]]:
        """Decode many objects against `frame`, yielding ((n,) int64 indices into prompts,
        DecodedBatch) one chunk at a time: objects sharing a token layout go through the decoder
        together (`iter_decode_tokens`). check(done, total) counts over all the prompts."""
        done = 0
        for (_, _, has_mask, multimask), idxs in group_by_layout(prompts).items():
            group = [prompts[i] for i in idxs]
            coords, labels = to_tokens(group)
            masks_in = np.stack([p.mask_input for p in group]) if has_mask else None
            group_check = None if check is None else (lambda d, _, base=done: check(base + d, len(prompts)))
            for part, batch in self.iter_decode_tokens(frame, coords, labels, masks_in, multimask, select_best,
                                                       return_masks, stability_offset, chunk, group_check):
                yield np.asarray(idxs, np.int64)[part], batch
            done += len(idxs)

    # ------------------------------------------------------------------ prompts
    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, stamp_ns: Optional[int] = None,
                tolerance_ns: int = 0) -> Prediction:
        """The official single-object predict: all C candidates, no selection."""
        frame = self.frame(stamp_ns, tolerance_ns)
        prompt = make_prompt(point_coords, point_labels, box, mask_input, multimask_output,
                             image_size=None)
        coords, labels = to_tokens([prompt])
        masks_in = None if prompt.mask_input is None else prompt.mask_input[None]
        return self.decode_tokens(frame, coords, labels, masks_in, multimask_output).prediction(0)

    def predict_batch(self, prompts: Sequence[ObjectPrompt], stamp_ns: Optional[int] = None,
                      tolerance_ns: int = 0, select_best: bool = True, return_masks: bool = True,
                      stability_offset: float = STABILITY_OFFSET,
                      check: Optional[Callable[[int, int], None]] = None) -> list[Prediction]:
        """`predict_on` the cached frame nearest stamp_ns (None: the latest)."""
        return self.predict_on(self.frame(stamp_ns, tolerance_ns), prompts, select_best, return_masks,
                               stability_offset, check)

    def predict_on(self, frame: CachedFrame, prompts: Sequence[ObjectPrompt], select_best: bool = True,
                   return_masks: bool = True, stability_offset: float = STABILITY_OFFSET,
                   check: Optional[Callable[[int, int], None]] = None) -> list[Prediction]:
        """Many objects against `frame`, in order (`iter_decode` collected). With select_best, a
        multimask object keeps its highest-IoU candidate (C = 1). All masks are returned at once:
        for many objects on big frames, iterate `iter_decode` instead (SegEvery does)."""
        out: list[Optional[Prediction]] = [None] * len(prompts)
        for idxs, batch in self.iter_decode(frame, prompts, select_best, return_masks, stability_offset,
                                            check=check):
            for k, i in enumerate(idxs):
                out[i] = batch.prediction(k)
        return out  # type: ignore[return-value]
