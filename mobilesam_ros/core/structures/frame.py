"""`CachedFrame`: one encoded camera frame, the single object every decode runs against.

It is what the predictor's EmbeddingCache holds per stamp, and what results point back to
(`Instances.frame`), so whatever came with the frame (its image, the caller's metadata such as a
ROS header) travels with it instead of living in side tables keyed by stamp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["CachedFrame"]


@dataclass(frozen=True, eq=False)
class CachedFrame:
    """One encoded frame.

    stamp_ns: the cache key (int ns; automatic counter values for stamp-less frames).
    original_size: (H, W) px of the image the masks come out in.
    input_size: (h, w) px of the resized image inside the 1024 x 1024 encoder input.
    handle: the backend's frame handle (embedding + per-frame precomputation; runtime/base.py).
    image: the (H, W, 3) uint8 RGB source image, when the predictor keeps images (else None).
    meta: opaque caller metadata given with the image (the node's std_msgs/Header), else None.
    """

    stamp_ns: int
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    handle: Any = field(repr=False)
    image: Optional[np.ndarray] = field(default=None, repr=False)
    meta: Any = None
