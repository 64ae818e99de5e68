"""The one post-filter rule for segmented instances (SegEvery in the pipeline, the CLI, anything else).

An instance survives when all of:
  * predicted IoU ``score >= pred_iou_thresh`` (a NaN score fails);
  * stability ``>= stability_thresh``, where a NaN stability (unknown: not computed, or SAM's 0/0
    of a mask empty at both logit offsets) counts as 0, so it passes the default, disabled
    threshold 0 and fails any positive one;
  * ``area >= max(min_area, 1)`` (an empty mask never survives);
then best predicted IoU first (stable: ties keep their order), greedy mask NMS at
``mask_nms_thresh`` (1.0 = off) and at most ``max_instances``.

Every comparison is ``>=``: a value exactly at its threshold is kept.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from mobilesam_ros.core.ops.postprocess import mask_nms
from mobilesam_ros.core.structures.instances import Instances

__all__ = ["FilterLimits", "keep_indices", "filter_instances"]


class FilterLimits(Protocol):
    """The filter's limits (FilterConfig is the owner of their defaults)."""

    pred_iou_thresh: float
    stability_thresh: float
    min_area: int
    mask_nms_thresh: float
    max_instances: int


def keep_indices(inst: Instances, limits: FilterLimits) -> np.ndarray:
    """(K,) int64 indices of `inst` that survive the filter, best predicted IoU first."""
    stability = np.nan_to_num(inst.stability, nan=0.0)  # unknown stability counts as 0
    idx = np.flatnonzero((inst.scores >= limits.pred_iou_thresh)
                         & (stability >= limits.stability_thresh)
                         & (inst.areas >= max(limits.min_area, 1)))
    idx = idx[np.argsort(-inst.scores[idx], kind="stable")]
    if limits.mask_nms_thresh < 1.0 and len(idx) > 1:
        idx = idx[mask_nms(inst.select(idx).dense_masks(), inst.scores[idx], limits.mask_nms_thresh)]
    return idx[: max(int(limits.max_instances), 0)].astype(np.int64)


def filter_instances(inst: Instances, limits: FilterLimits) -> Instances:
    """The surviving instances of `inst`, in the order of :func:`keep_indices`."""
    return inst.select(keep_indices(inst, limits))
