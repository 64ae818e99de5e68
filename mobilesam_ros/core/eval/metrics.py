"""Mask IoU and bootstrap confidence intervals: the one implementation every front end uses
(`mobilesam eval segany`, the distillation trainer's validation in distill/validate.py)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def mask_iou(a: Any, b: Any) -> Any:
    """Per-mask IoU of two stacks of bool masks (M, H, W) (numpy arrays or torch tensors; the
    result is of the same kind, (M,) float). Two empty masks agree: IoU 1."""
    if a.shape != b.shape:
        raise ValueError(f"mask stacks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    m = a.shape[0]
    inter = (a & b).reshape(m, -1).sum(1)
    union = (a | b).reshape(m, -1).sum(1)
    # Written with operators numpy and torch share, so the trainer's GPU tensors stay on the GPU.
    iou = inter / union.clip(min=1)
    return iou * (union > 0) + (union == 0)


def pooled_mean(groups: Sequence[Sequence[float]]) -> float:
    """Mean of all values of all groups (each value counts once); nan when there are none."""
    n = sum(len(g) for g in groups)
    return float(sum(float(np.sum(g)) for g in groups) / n) if n else float("nan")


def bootstrap_ci(groups: Sequence[Sequence[float]], seed: int = 0, resamples: int = 1000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `pooled_mean(groups)` -> (low, high).

    Whole groups are resampled with replacement (a group = one image's per-prompt IoUs: prompts of
    one image are not independent, images are), `resamples` times with a numpy Generator seeded
    with `seed`. No values: (nan, nan); one group: the interval of a single mean, (m, m).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    sums = np.array([float(np.sum(g)) for g in groups], np.float64)
    counts = np.array([len(g) for g in groups], np.float64)
    if counts.sum() == 0:
        return float("nan"), float("nan")
    pick = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    tot = counts[pick].sum(axis=1)
    # A resample of only prompt-less images has no mean; it is left out (nan-aware percentiles).
    means = np.where(tot > 0, sums[pick].sum(axis=1) / np.maximum(tot, 1), np.nan)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)
