"""SegEvery, MobileSAMv2 style: box prompts (from a detector or anywhere) decoded in batches
against one encoded frame.

As in MobileSAMv2: multimask off (mask token 0), one box per object. Unlike its reference code,
the embedding is never copied per box (the backend broadcasts it) and boxes go through the
predictor's one decode path in its chunks, so memory stays bounded whatever the box count.
Full-resolution masks exist for one chunk at a time; each mask is kept bit-packed.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from mobilesam_ros.core.engine.collect import collect_instances
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.structures.prompts import box_tokens

__all__ = ["decode_boxes"]


def decode_boxes(predictor: SamPredictor, boxes: np.ndarray, frame: CachedFrame,
                 class_ids: Optional[np.ndarray] = None, det_scores: Optional[np.ndarray] = None,
                 chunk: Optional[int] = None, stability_offset: float = 1.0) -> Instances:
    """Masks for (N, 4) float32 xyxy boxes in ORIGINAL-image px of `frame` (multimask off, mask
    token 0, as MobileSAMv2), in box order. The boxes become decoder tokens directly
    (prompts.box_tokens), no prompt object per box; at most `chunk` boxes per decoder call
    (`SamPredictor.chunk_size`).

    Returns Instances (packed masks, tight mask boxes, predicted IoU, stability score at logit
    offset `stability_offset`, areas, class ids and detector scores when given, and the frame).
    """
    coords, labels = box_tokens(boxes)
    chunks = predictor.iter_decode_tokens(frame, coords, labels, None, False, stability_offset=stability_offset,
                                          chunk=chunk)
    return collect_instances(frame, len(coords), chunks, class_ids, det_scores)
