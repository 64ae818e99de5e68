"""SegAny agreement of two models (MobileSAM's metric): the same prompts decoded by a teacher and
a student predictor, masks compared by IoU (metrics.mask_iou)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.eval.metrics import mask_iou
from mobilesam_ros.core.eval.prompts import prompts_from_masks
from mobilesam_ros.core.structures.prompts import ObjectPrompt


def decode_masks(predictor: SamPredictor, prompts: Sequence[ObjectPrompt]) -> np.ndarray:
    """Masks of `prompts` against the predictor's latest frame -> (N, H, W) bool, original px
    (a multimask prompt keeps its highest predicted-IoU candidate)."""
    frame = predictor.frame()
    h, w = frame.original_size
    out = np.zeros((len(prompts), h, w), bool)
    for idxs, batch in predictor.iter_decode(frame, prompts, select_best=True):
        out[idxs] = batch.masks[:, 0]
    return out


def agreement(teacher: SamPredictor, student: SamPredictor, reference: np.ndarray,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Both predictors hold the same image as their latest frame (`set_image`); sample prompts
    from the non-empty `reference` masks ((N, H, W) bool over that image: the teacher's SegEvery
    masks or ground truth) and return {kind: (n,) float64 IoU of the student's mask against the
    teacher's, one per prompt}. The caller encodes, so the teacher's frame also serves its SegEvery."""
    ref = np.asarray(reference, bool)
    if len(ref):
        ref = ref[ref.reshape(len(ref), -1).any(1)]
    out: dict[str, np.ndarray] = {}
    for kind, group in prompts_from_masks(ref, rng).items():
        if not group:
            out[kind] = np.zeros(0, np.float64)
            continue
        out[kind] = np.asarray(mask_iou(decode_masks(teacher, group), decode_masks(student, group)),
                               np.float64)
    return out
