"""`Instances`: the result of SegAny / SegEvery, one row per mask, ready for the ROS layer.

Masks are over the original image, (N, H, W) bool, or bit-packed along the last axis
((N, H, ceil(W / 8)) uint8, ``np.packbits`` as in the goldens) to cut memory by 8x. All other
fields are per-instance vectors. Methods return new objects; nothing is modified in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Optional, Sequence

import numpy as np

from mobilesam_ros.core.ops.postprocess import _to_numpy, masks_to_boxes, pack_masks, unpack_masks
from mobilesam_ros.core.structures.frame import CachedFrame

__all__ = ["Instances"]


@dataclass(frozen=True)
class Instances:
    """N segmented instances of one image of size `image_hw` = (H, W).

    masks: (N, H, W) bool, or (N, H, ceil(W/8)) uint8 when `packed`.
    boxes: (N, 4) float32 xyxy, original-image px. :meth:`from_masks` fills in the masks' tight
        boxes with SAM's convention (x2, y2 = last column/row *inside* the mask); a caller may
        store the prompt boxes instead.
    scores: (N,) float32 predicted IoU of the mask decoder.
    stability: (N,) float32 stability score (NaN = not computed or 0/0).
    areas: (N,) int64 mask pixel counts.
    class_ids: (N,) int32 detector class of the prompt box, -1 = none.
    det_scores: (N,) float32 detector score of the prompt box, NaN = none.
    frame: the CachedFrame the masks were decoded on (stamp, source image, caller metadata), or
        None for instances not decoded against a cached frame. Kept by select / pack_bits.
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    areas: np.ndarray
    class_ids: np.ndarray
    det_scores: np.ndarray
    image_hw: tuple[int, int]
    packed: bool = False
    frame: Optional[CachedFrame] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        h, w = self.image_hw
        n = self.masks.shape[0] if self.masks.ndim == 3 else -1
        want = (n, h, (w + 7) // 8) if self.packed else (n, h, w)
        dtype = np.uint8 if self.packed else np.bool_
        if self.masks.shape != want or self.masks.dtype != dtype:
            raise ValueError(f"masks must be {want} {np.dtype(dtype)}"
                             f"{' (packed)' if self.packed else ''}, got {self.masks.shape} "
                             f"{self.masks.dtype}")
        for name, shape, dt in (("boxes", (n, 4), np.float32), ("scores", (n,), np.float32),
                                ("stability", (n,), np.float32), ("areas", (n,), np.int64),
                                ("class_ids", (n,), np.int32), ("det_scores", (n,), np.float32)):
            a = getattr(self, name)
            if a.shape != shape or a.dtype != dt:
                raise ValueError(f"{name} must be {shape} {np.dtype(dt)}, got {a.shape} {a.dtype}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, image_hw: tuple[int, int]) -> "Instances":
        h, w = image_hw
        return cls.from_masks(np.zeros((0, h, w), bool), np.zeros(0, np.float32))

    @classmethod
    def from_masks(cls, masks, scores, stability=None, boxes=None, class_ids=None,
                   det_scores=None) -> "Instances":
        """Build from (N, H, W) bool masks (numpy or torch) and (N,) predicted IoUs.

        Areas are counted here; boxes default to the masks' tight boxes; stability defaults to
        NaN, class_ids to -1, det_scores to NaN.
        """
        m = _to_numpy(masks).astype(bool, copy=False)
        if m.ndim != 3:
            raise ValueError(f"masks must be (N, H, W) bool, got shape {m.shape}")
        n = m.shape[0]

        def vec(x, dtype, fill):
            return np.full(n, fill, dtype) if x is None else _to_numpy(x).astype(dtype).reshape(-1)

        b = (masks_to_boxes(m).astype(np.float32) if boxes is None
             else _to_numpy(boxes).astype(np.float32).reshape(-1, 4))
        return cls(masks=np.ascontiguousarray(m), boxes=b, scores=vec(scores, np.float32, np.nan),
                   stability=vec(stability, np.float32, np.nan),
                   areas=np.count_nonzero(m, axis=(1, 2)).astype(np.int64),
                   class_ids=vec(class_ids, np.int32, -1),
                   det_scores=vec(det_scores, np.float32, np.nan),
                   image_hw=(int(m.shape[1]), int(m.shape[2])))

    @classmethod
    def concatenate(cls, parts: Sequence["Instances"]) -> "Instances":
        """Join results of one image (e.g. decoded in chunks); all must share size and packing.
        The result keeps the first part's frame."""
        if not parts:
            raise ValueError("nothing to concatenate")
        hw, packed = parts[0].image_hw, parts[0].packed
        if any(p.image_hw != hw or p.packed != packed for p in parts):
            raise ValueError("Instances to concatenate must share image_hw and packing")
        cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in
               ("masks", "boxes", "scores", "stability", "areas", "class_ids", "det_scores")}
        return cls(**cat, image_hw=hw, packed=packed, frame=parts[0].frame)

    # ------------------------------------------------------------------ selection
    def select(self, index) -> "Instances":
        """Subset / reorder by an integer index array or a boolean mask."""
        idx = np.asarray(index)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.int64).reshape(-1)
        return replace(self, masks=self.masks[idx], boxes=self.boxes[idx], scores=self.scores[idx],
                       stability=self.stability[idx], areas=self.areas[idx],
                       class_ids=self.class_ids[idx], det_scores=self.det_scores[idx])

    # ------------------------------------------------------------------ mask views
    def dense_masks(self) -> np.ndarray:
        """(N, H, W) bool whatever the storage."""
        return unpack_masks(self.masks, self.image_hw[1]) if self.packed else self.masks

    def mask(self, i: int) -> np.ndarray:
        """(H, W) bool mask of instance i (unpacks only that one)."""
        return unpack_masks(self.masks[i], self.image_hw[1]) if self.packed else self.masks[i]

    def pack_bits(self) -> "Instances":
        """Same instances with masks bit-packed along the last axis (no-op if already packed)."""
        return self if self.packed else replace(self, masks=pack_masks(self.masks), packed=True)

    def unpack_bits(self) -> "Instances":
        """Same instances with (N, H, W) bool masks (no-op if not packed)."""
        return replace(self, masks=self.dense_masks(), packed=False) if self.packed else self

    def crops(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Per instance, in order: (x0, y0, crop) with crop the (h, w) bool mask inside its tight
        box, whose top-left pixel is (x0, y0) in original-image px (the ROI of a mono8 crop
        message). An empty mask yields (0, 0, a (0, 0) array)."""
        for i in range(len(self)):
            if self.packed:
                yield self._packed_crop(i)
                continue
            m = self.mask(i)
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if rows.size == 0:
                yield 0, 0, np.zeros((0, 0), bool)
                continue
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            yield int(x0), int(y0), m[y0:y1, x0:x1]

    def _packed_crop(self, i: int) -> tuple[int, int, np.ndarray]:
        """crops() of a packed mask without unpacking the whole image: rows from the packed bytes,
        columns from the OR of the box's rows, then only the box is unpacked (8x less work)."""
        p = self.masks[i]
        rows = np.flatnonzero(p.any(axis=1))
        if rows.size == 0:
            return 0, 0, np.zeros((0, 0), bool)
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        cols = np.flatnonzero(np.unpackbits(np.bitwise_or.reduce(p[y0:y1], axis=0), count=self.image_hw[1]))
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        b0 = x0 // 8
        crop = np.unpackbits(p[y0:y1, b0:(x1 + 7) // 8], axis=1)[:, x0 - 8 * b0:x1 - 8 * b0]
        return x0, y0, crop.astype(bool)

    def to_label_image(self, dtype=np.uint16) -> np.ndarray:
        """(H, W) label image: 0 = background, i + 1 = instance i in the current order.

        Where masks overlap the pixel goes to the higher score (predicted IoU); equal scores go to
        the lower index. Raises if N does not fit `dtype`.
        """
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.integer) or len(self) > np.iinfo(dtype).max:
            raise ValueError(f"{len(self)} instances do not fit a {dtype} label image")
        h, w = self.image_hw
        label = np.zeros((h, w), dtype)
        crops = list(self.crops())
        # Paint worst first so the best ends on top: ascending score, ties by descending index.
        order = np.argsort(-self.scores, kind="stable")[::-1]
        for i in order:
            x0, y0, crop = crops[i]
            if crop.size:
                label[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]][crop] = i + 1
        return label
