"""`Detections`: boxes that prompt SegEvery, from the detector or from anywhere else.

Kept apart from the ONNX detector so that a tracker, a user or another detector can hand boxes
to SegEvery through the same validated type (:meth:`Detections.from_arrays`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detections"]


@dataclass(frozen=True)
class Detections:
    """Boxes in original-image pixels, best score first when they come from a detector.

    boxes: (N, 4) float32 xyxy, original-image px (continuous coordinates: a box covering the
        whole W x H image is [0, 0, W, H]).
    scores: (N,) float32 detector confidence (1.0 when the boxes came from elsewhere).
    class_ids: (N,) int32 class index of the detector, -1 when unknown.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4 or self.boxes.dtype != np.float32:
            raise ValueError(f"boxes must be (N, 4) float32, got {self.boxes.shape} "
                             f"{self.boxes.dtype}")
        if self.scores.shape != (n,) or self.scores.dtype != np.float32:
            raise ValueError(f"scores must be ({n},) float32, got {self.scores.shape} "
                             f"{self.scores.dtype}")
        if self.class_ids.shape != (n,) or self.class_ids.dtype != np.int32:
            raise ValueError(f"class_ids must be ({n},) int32, got {self.class_ids.shape} "
                             f"{self.class_ids.dtype}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def from_arrays(cls, boxes, scores=None, class_ids=None) -> "Detections":
        """Validated construction from outside boxes (a tracker, a user, another detector).

        boxes: (N, 4) or (4,) xyxy original-image px; must be finite with x2 > x1 and y2 > y1.
        scores: (N,) finite, default 1.0. class_ids: (N,) integers, default -1 (unknown).
        """
        b = np.asarray(boxes, dtype=np.float64)
        if b.ndim == 1 and b.shape[0] == 4:
            b = b[None]
        elif b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4) xyxy, got shape {np.shape(boxes)}")
        n = b.shape[0]
        if not np.isfinite(b).all():
            raise ValueError("boxes contain NaN or inf")
        bad = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
        if bad.size:
            raise ValueError(f"boxes must be xyxy with x2 > x1 and y2 > y1; box {bad[0]} is "
                             f"{b[bad[0]].tolist()} ({bad.size} bad box(es))")
        s = (np.ones(n, np.float32) if scores is None
             else np.asarray(scores, np.float32).reshape(-1))
        if s.shape != (n,):
            raise ValueError(f"scores must have {n} entries, got {s.shape[0]}")
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or inf")
        if class_ids is None:
            c = np.full(n, -1, np.int32)
        else:
            c_raw = np.asarray(class_ids).reshape(-1)
            if c_raw.shape != (n,):
                raise ValueError(f"class_ids must have {n} entries, got {c_raw.shape[0]}")
            if not np.issubdtype(c_raw.dtype, np.integer):
                as_f = np.asarray(c_raw, np.float64)
                if not np.all(as_f == np.round(as_f)):
                    raise ValueError("class_ids must be integers")
            c = c_raw.astype(np.int32)
        return cls(b.astype(np.float32), s, c)

    def select(self, index) -> "Detections":
        """Subset by an integer index array or boolean mask (order follows `index`)."""
        idx = np.asarray(index)
        return Detections(self.boxes[idx].reshape(-1, 4), self.scores[idx].reshape(-1),
                          self.class_ids[idx].reshape(-1))
