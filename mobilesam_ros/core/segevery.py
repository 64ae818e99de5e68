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
import torch

from .instances import Instances
from .postprocess import masks_to_boxes, pack_masks, stability_score
from .predictor import SamPredictor
from .transforms import postprocess_masks
from .prompts import LABEL_BOX_BR, LABEL_BOX_TL


def decode_boxes(predictor: SamPredictor, boxes: np.ndarray, stamp_ns: Optional[int] = None,
                 class_ids: Optional[np.ndarray] = None, det_scores: Optional[np.ndarray] = None,
                 chunk: int = 32, stability_offset: float = 1.0) -> Instances:
    """Masks for (N, 4) float32 xyxy boxes in ORIGINAL-image px of the cached frame `stamp_ns`.

    Returns Instances in box order (packed masks, tight mask boxes, predicted IoU, stability
    score at logit offset `stability_offset`, areas, the boxes' class ids and detector scores).
    """
    frame = predictor.frame(stamp_ns)
    entry, (h, w) = frame.embedding, frame.original_size
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return Instances.empty((h, w)).pack_bits()
    packed = np.empty((n, h, (w + 7) // 8), np.uint8)
    scores = np.empty(n, np.float32)
    stab = np.empty(n, np.float32)
    areas = np.empty(n, np.int64)
    tight = np.empty((n, 4), np.float32)
    labels = np.array([LABEL_BOX_TL, LABEL_BOX_BR], np.float32)
    for s in range(0, n, chunk):
        part = boxes[s:s + chunk]
        coords = predictor.transform.apply_coords(part.reshape(-1, 2, 2), (h, w)).astype(np.float32)
        low, iou = predictor.backend.decode(entry.handle, coords, np.tile(labels, (len(part), 1)), None, False)
        logits = postprocess_masks(torch.from_numpy(low), entry.input_size, (h, w))[:, 0]
        masks = logits > predictor.mask_threshold
        stab[s:s + len(part)] = stability_score(logits, predictor.mask_threshold, stability_offset).numpy()
        del logits
        m = masks.numpy()
        packed[s:s + len(part)] = pack_masks(m)
        areas[s:s + len(part)] = m.sum(axis=(1, 2))
        tight[s:s + len(part)] = masks_to_boxes(m)
        scores[s:s + len(part)] = iou[:, 0]
    return Instances(masks=packed, boxes=tight, scores=scores, stability=stab, areas=areas,
                     class_ids=(np.full(n, -1, np.int32) if class_ids is None
                                else np.asarray(class_ids, np.int32).reshape(-1)),
                     det_scores=(np.full(n, np.nan, np.float32) if det_scores is None
                                 else np.asarray(det_scores, np.float32).reshape(-1)),
                     image_hw=(h, w), packed=True)
