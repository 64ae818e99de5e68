"""The one SegEvery post-filter (core/ops/filters.py), against hand-computed expectations."""
from dataclasses import dataclass

import numpy as np

from mobilesam_ros.core.ops.filters import filter_instances, keep_indices
from mobilesam_ros.core.structures.instances import Instances


@dataclass
class Limits:
    pred_iou_thresh: float = 0.0
    stability_thresh: float = 0.0
    min_area: int = 0
    mask_nms_thresh: float = 1.0
    max_instances: int = 100


def squares(n: int, side: int = 4) -> np.ndarray:
    """n disjoint side x side squares on one row of a (side, n * (side + 1)) image."""
    m = np.zeros((n, side, n * (side + 1)), bool)
    for i in range(n):
        m[i, :, i * (side + 1):i * (side + 1) + side] = True
    return m


def test_thresholds_keep_values_at_the_boundary():
    # binary fractions, so float32 storage cannot move a value across its threshold
    inst = Instances.from_masks(squares(4), [0.75, 0.5, 0.875, 0.74609375],
                                stability=[0.9375, 0.9375, 0.9375, 0.9375])
    assert keep_indices(inst, Limits(pred_iou_thresh=0.75)).tolist() == [2, 0]   # 0.75 >= 0.75 kept
    inst = Instances.from_masks(squares(3), [0.5, 0.5, 0.5], stability=[0.9375, 0.93359375, 1.0])
    assert keep_indices(inst, Limits(stability_thresh=0.9375)).tolist() == [0, 2]
    # min_area: an area equal to the limit stays; 16 px squares against 16 and 17
    assert keep_indices(inst, Limits(min_area=16)).tolist() == [0, 1, 2]
    assert keep_indices(inst, Limits(min_area=17)).tolist() == []


def test_nan_stability_counts_as_zero():
    inst = Instances.from_masks(squares(3), [0.5, 0.75, 0.625], stability=[0.96875, np.nan, 0.5])
    # default (disabled) threshold: unknown stability passes; sorted by predicted IoU
    assert keep_indices(inst, Limits()).tolist() == [1, 2, 0]
    # any positive threshold: NaN fails like a stability of 0
    assert keep_indices(inst, Limits(stability_thresh=0.25)).tolist() == [2, 0]
    assert keep_indices(inst, Limits(stability_thresh=1e-6)).tolist() == [2, 0]


def test_nan_score_and_empty_mask_never_survive():
    m = squares(3)
    m[2] = False  # empty mask: area 0
    inst = Instances.from_masks(m, [np.nan, 0.5, 0.875])
    assert keep_indices(inst, Limits()).tolist() == [1]


def test_order_ties_nms_and_max_instances():
    m = squares(3)
    m = np.concatenate([m, m[1:2]])                     # instance 3 duplicates instance 1
    inst = Instances.from_masks(m, [0.5, 0.75, 0.5, 0.625])
    assert keep_indices(inst, Limits()).tolist() == [1, 3, 0, 2]          # ties keep input order
    assert keep_indices(inst, Limits(mask_nms_thresh=0.7)).tolist() == [1, 0, 2]  # IoU 1 > 0.7
    assert keep_indices(inst, Limits(mask_nms_thresh=0.7, max_instances=2)).tolist() == [1, 0]
    out = filter_instances(inst.pack_bits(), Limits(mask_nms_thresh=0.7))
    assert out.packed and out.scores.tolist() == [0.75, 0.5, 0.5] and out.areas.tolist() == [16] * 3
    np.testing.assert_array_equal(out.dense_masks(), m[[1, 0, 2]])
