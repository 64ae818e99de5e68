"""SegEvery, MobileSAMv2 style: box prompts (from a detector or anywhere) decoded in batches
against one cached image embedding.

As in MobileSAMv2: multimask off (mask token 0), one box per object. Unlike its reference code,
the embedding is never copied per box (the backend broadcasts it) and boxes go through the decoder
in chunks of `chunk` so memory stays bounded whatever the box count. Full-resolution logits exist
for one chunk at a time; each mask is kept bit-packed.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from .instances import Instances
from .postprocess import masks_to_boxes, pack_masks
from .predictor import SamPredictor
from .prompts import make_prompt


def decode_boxes(predictor: SamPredictor, boxes: np.ndarray, stamp_ns: Optional[int] = None,
                 class_ids: Optional[np.ndarray] = None, det_scores: Optional[np.ndarray] = None,
                 chunk: int = 32, stability_offset: float = 1.0) -> Instances:
    """Masks for (N, 4) float32 xyxy boxes in ORIGINAL-image px of the cached frame `stamp_ns`.

    Returns Instances in box order (packed masks, tight mask boxes, predicted IoU, stability
    score at logit offset `stability_offset`, areas, the boxes' class ids and detector scores).
    """
    frame = predictor.frame(stamp_ns)
    h, w = frame.original_size
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return Instances.empty((h, w)).pack_bits()
    packed = np.empty((n, h, (w + 7) // 8), np.uint8)
    scores = np.empty(n, np.float32)
    stab = np.empty(n, np.float32)
    areas = np.empty(n, np.int64)
    tight = np.empty((n, 4), np.float32)
    for s in range(0, n, chunk):
        # one chunk of full-resolution masks at a time; the predictor batches it in one decode
        preds = predictor.predict_batch([make_prompt(box=b) for b in boxes[s:s + chunk]], frame.stamp_ns,
                                        stability_offset=stability_offset)
        m = np.stack([p.masks[0] for p in preds])
        sl = slice(s, s + len(preds))
        packed[sl] = pack_masks(m)
        areas[sl] = m.sum(axis=(1, 2))
        tight[sl] = masks_to_boxes(m)
        scores[sl] = [p.iou[0] for p in preds]
        stab[sl] = [p.stability[0] for p in preds]
    return Instances(masks=packed, boxes=tight, scores=scores, stability=stab, areas=areas,
                     class_ids=(np.full(n, -1, np.int32) if class_ids is None
                                else np.asarray(class_ids, np.int32).reshape(-1)),
                     det_scores=(np.full(n, np.nan, np.float32) if det_scores is None
                                 else np.asarray(det_scores, np.float32).reshape(-1)),
                     image_hw=(h, w), packed=True)
