"""Decoded chunks -> one `Instances` (bit-packed masks), shared by SegEvery's box decoding and
SegAny's prompt decoding. Each chunk's full-resolution masks are packed before the next chunk is
decoded, so N objects cost N*H*W/8 bytes whatever N is."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional

import numpy as np

from mobilesam_ros.core.engine.predictor import DecodedBatch
from mobilesam_ros.core.ops.postprocess import masks_to_boxes, pack_masks
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances

__all__ = ["collect_instances"]


def collect_instances(frame: CachedFrame, n: int, chunks: Iterable[tuple[np.ndarray, DecodedBatch]],
                      class_ids: Optional[np.ndarray] = None, det_scores: Optional[np.ndarray] = None,
                      keep_logits: frozenset = frozenset(),
                      logits_out: Optional[dict] = None) -> Instances:
    """Instances of n objects of `frame` from decoded chunks ((idx,) indices, batch with C = 1).

    keep_logits: object indices whose (1, 256, 256) float32 low-res logits are copied into
    `logits_out` (click-to-track re-prompts from them: no second decode of a followed object).
    """
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
        if logits_out is not None:
            for k, i in enumerate(idxs):
                if int(i) in keep_logits:
                    logits_out[int(i)] = np.array(batch.low_res[k, :1], np.float32)
    return Instances(masks=packed, boxes=tight, scores=scores, stability=stab, areas=areas,
                     class_ids=(np.full(n, -1, np.int32) if class_ids is None
                                else np.asarray(class_ids, np.int32).reshape(-1)),
                     det_scores=(np.full(n, np.nan, np.float32) if det_scores is None
                                 else np.asarray(det_scores, np.float32).reshape(-1)),
                     image_hw=(h, w), packed=True, frame=frame)
