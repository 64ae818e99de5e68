"""Prompts sampled from reference masks, as the MobileSAM paper scores a student: for each
reference object one point, three points, and its box, then the student's mask is compared with
the teacher's for the same prompt.

Points are pixels drawn uniformly from the mask (x = column, y = row, original-image px), with a
numpy Generator the caller seeds, so a run is repeatable. One point is ambiguous: it is decoded
with SAM's three candidates and the best kept (multimask, as SAM's interactive protocol); three
points and a box are decoded with the single-mask token. The box is the mask's tight box
(ops.postprocess.masks_to_boxes: x2, y2 = last column / row inside the mask).
"""
from __future__ import annotations

import numpy as np

from mobilesam_ros.core.ops.postprocess import masks_to_boxes
from mobilesam_ros.core.structures.prompts import ObjectPrompt

#: The prompt kinds of `mobilesam eval segany`, in report order.
PROMPT_KINDS: tuple[str, ...] = ("1pt", "3pt", "box")


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n pixels of a non-empty (H, W) bool mask -> (n, 2) float32 xy; distinct unless the mask
    has fewer than n pixels."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("cannot sample points from an empty mask")
    pick = rng.choice(xs.size, size=n, replace=xs.size < n)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)


def prompts_from_masks(masks: np.ndarray, rng: np.random.Generator
                       ) -> dict[str, list[ObjectPrompt]]:
    """(N, H, W) bool reference masks -> {kind: N prompts} for each of PROMPT_KINDS, in mask
    order. Empty masks must be removed first (they have no point and no box)."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got {masks.shape}")
    if len(masks) and not masks.reshape(len(masks), -1).any(1).all():
        raise ValueError("empty reference mask: drop it before sampling prompts")
    out: dict[str, list[ObjectPrompt]] = {k: [] for k in PROMPT_KINDS}
    boxes = masks_to_boxes(masks) if len(masks) else np.zeros((0, 4), np.float32)
    one = np.ones(1, np.int64)
    for m, box in zip(masks, boxes):
        out["1pt"].append(ObjectPrompt(sample_points(m, 1, rng), one, multimask=True))
        out["3pt"].append(ObjectPrompt(sample_points(m, 3, rng), np.ones(3, np.int64)))
        out["box"].append(ObjectPrompt(box=np.asarray(box, np.float32)))
    return out
