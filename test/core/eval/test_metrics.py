"""mask IoU and the bootstrap interval against values computed by hand."""
import numpy as np
import pytest
import torch

from mobilesam_ros.core.eval.metrics import bootstrap_ci, mask_iou, pooled_mean


def _tiny_masks():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2, :2] = True          # 4 px
    b[0, 1:3, 1:3] = True        # 4 px, 1 in common -> 1 / 7
    a[1, :, :2] = True           # 8 px
    b[1, :, :] = True            # 16 px, 8 in common -> 8 / 16
    return a, b                  # mask 2: both empty -> 1


def test_mask_iou_by_hand_numpy_and_torch():
    a, b = _tiny_masks()
    want = [1 / 7, 0.5, 1.0]
    np.testing.assert_allclose(mask_iou(a, b), want, rtol=1e-6)
    got = mask_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.float().numpy(), want, rtol=1e-6)


def test_mask_iou_refuses_different_shapes():
    with pytest.raises(ValueError):
        mask_iou(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 3), bool))


def test_pooled_mean_counts_each_value_once():
    assert pooled_mean([[1.0, 1.0, 1.0], [0.0]]) == pytest.approx(0.75)
    assert np.isnan(pooled_mean([[], []]))


def test_bootstrap_interval_by_hand():
    # Two images, IoU 0 and 1: a resample's mean is 0 (p 1/4), 0.5 (p 1/2) or 1 (p 1/4), so the
    # 2.5th percentile is 0 and the 97.5th is 1.
    assert bootstrap_ci([[0.0], [1.0]], seed=3, resamples=2000) == (0.0, 1.0)
    # All images agree perfectly: the interval collapses.
    assert bootstrap_ci([[1.0, 1.0], [1.0]], seed=0) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_ci([])))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(7)
    groups = [rng.uniform(0.4, 0.9, size=rng.integers(1, 6)) for _ in range(30)]
    lo, hi = bootstrap_ci(groups, seed=1)
    assert (lo, hi) == bootstrap_ci(groups, seed=1)
    assert lo < pooled_mean(groups) < hi and hi - lo < 0.2
