"""SegEvery, MobileSAMv2 style: box prompts (from a detector or anywhere) decoded in batches
against one cached image embedding.

As in MobileSAMv2: multimask off (mask token 0), one box per object. Unlike its reference code,
the embedding is never copied per box (the backend broadcasts it) and boxes go through the
predictor's one decode path in its chunks, so memory stays bounded whatever the box count.
Full-resolution masks exist for one chunk at a time; each mask is kept bit-packed.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.ops.postprocess import masks_to_boxes, pack_masks
from mobilesam_ros.core.engine.predictor import DecodedBatch, SamPredictor
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.prompts import ObjectPrompt, box_tokens


def decode_prompts(predictor: SamPredictor, prompts: Sequence[ObjectPrompt], stamp_ns: Optional[int] = None,
                   class_ids: Optional[np.ndarray] = None, det_scores: Optional[np.ndarray] = None,
                   chunk: Optional[int] = None, stability_offset: float = 1.0,
                   check: Optional[Callable[[int, int], None]] = None) -> Instances:
    """One instance per prompt object, in order, against the cached frame `stamp_ns` (a multimask
    object keeps its best candidate). The predictor decodes one chunk at a time (at most `chunk`
    objects, default its decode_chunk: `SamPredictor.chunk_size`); each chunk's masks are
    bit-packed before the next, so N objects cost N*H*W/8 bytes. check(done, total) runs between
    chunks and may raise to abandon the batch.

    Returns Instances (packed masks, tight mask boxes, predicted IoU, stability score at logit
    offset `stability_offset`, areas, class ids and detector scores when given, and the frame).
    """
    frame = predictor.frame(stamp_ns)
    chunks = predictor.iter_decode(frame, prompts, select_best=True, stability_offset=stability_offset,
                                   chunk=chunk, check=check)
    return _collect(frame, len(prompts), chunks, class_ids, det_scores)


def decode_boxes(predictor: SamPredictor, boxes: np.ndarray, stamp_ns: Optional[int] = None,
                 class_ids: Optional[np.ndarray] = None, det_scores: Optional[np.ndarray] = None,
                 chunk: Optional[int] = None, stability_offset: float = 1.0) -> Instances:
    """Masks for (N, 4) float32 xyxy boxes in ORIGINAL-image px of the cached frame `stamp_ns`
    (multimask off, mask token 0, as MobileSAMv2), in box order: see `decode_prompts`. The boxes
    become decoder tokens directly (prompts.box_tokens), no prompt object per box."""
    frame = predictor.frame(stamp_ns)
    coords, labels = box_tokens(boxes)
    chunks = predictor.iter_decode_tokens(frame, coords, labels, None, False, stability_offset=stability_offset,
                                          chunk=chunk)
    return _collect(frame, len(coords), chunks, class_ids, det_scores)


def _collect(frame: CachedFrame, n: int, chunks: Iterable[tuple[np.ndarray, DecodedBatch]],
             class_ids: Optional[np.ndarray], det_scores: Optional[np.ndarray]) -> Instances:
    """Instances of n objects from decoded chunks (C = 1 each), each chunk's masks packed at once."""
    h, w = frame.original_size
    if n == 0:
        return replace(Instances.empty((h, w)).pack_bits(), frame=frame)
    packed = np.empty((n, h, (w + 7) // 8), np.uint8)
    scores = np.empty(n, np.float32)
    stab = np.empty(n, np.float32)
    areas = np.empty(n, np.int64)
    tight = np.empty((n, 4), np.float32)
    for idxs, batch in chunks:
        m = batch.masks[:, 0]
        packed[idxs] = pack_masks(m)
        areas[idxs] = m.sum(axis=(1, 2))
        tight[idxs] = masks_to_boxes(m)
        scores[idxs] = batch.iou[:, 0]
        stab[idxs] = batch.stability[:, 0]
    return Instances(masks=packed, boxes=tight, scores=scores, stability=stab, areas=areas,
                     class_ids=(np.full(n, -1, np.int32) if class_ids is None
                                else np.asarray(class_ids, np.int32).reshape(-1)),
                     det_scores=(np.full(n, np.nan, np.float32) if det_scores is None
                                 else np.asarray(det_scores, np.float32).reshape(-1)),
                     image_hw=(h, w), packed=True, frame=frame)
