"""SegAny prompts: validation, and the one token layout every backend decodes.

A prompt object is any mix of points (with positive/negative labels), one box and one previous
low-res mask, in ORIGINAL-image pixels (x = column, y = row). Backends take SAM's ONNX-style
unified layout in the 1024 input frame: `coords (B, N, 2)`, `labels (B, N)` where labels are
1 positive, 0 negative, 2/3 box top-left/bottom-right corner, -1 padding point. SAM appends one
padding point when there are points but no box (a mask-only prompt has no tokens at all); that is reproduced here so results equal the official
`SamPredictor.predict` exactly. Objects with a different token layout are never padded into one
batch (extra padding tokens would change their masks): `group_by_layout` groups them instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TL, LABEL_BOX_BR, LABEL_PAD = 0, 1, 2, 3, -1
LOW_RES = 256  # side of SAM's low-res mask logits


class PromptError(ValueError):
    """A prompt that cannot be decoded (NaN, outside the image, mismatched labels, bad shape)."""


@dataclass(frozen=True)
class ObjectPrompt:
    """One object to segment. All coordinates in original-image pixels.

    points: (N, 2) float32 xy or None; labels: (N,) int (1 positive, 0 negative) or None;
    box: (4,) float32 xyxy or None; mask_input: (1, 256, 256) float32 low-res logits or None.
    multimask: decode SAM's 3 candidates and keep the best (for a single ambiguous point).
    """

    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None
    mask_input: Optional[np.ndarray] = None
    multimask: bool = False

    @property
    def layout(self) -> tuple[int, bool, bool, bool]:
        """(points, has box, has mask, multimask): objects with equal layouts batch exactly."""
        n = 0 if self.points is None else len(self.points)
        return n, self.box is not None, self.mask_input is not None, self.multimask


def make_prompt(points=None, labels=None, box=None, mask_input=None, multimask: bool = False,
                image_size: Optional[tuple[int, int]] = None) -> ObjectPrompt:
    """Validate and normalise one object's prompt; raises PromptError with the reason.

    image_size (H, W): when given, points must lie inside the image and the box must overlap it
    (a box partly outside is clipped to the image, as detector boxes often are).
    """
    pts = lbl = bx = msk = None
    if points is not None and len(points):
        pts = np.asarray(points, np.float32).reshape(-1, 2) if np.size(points) % 2 == 0 else None
        if pts is None:
            raise PromptError(f"points must be (N, 2) x,y pairs, got {np.shape(points)}")
        if labels is None:
            raise PromptError("points given without labels (1 positive, 0 negative)")
        lbl = np.asarray(labels).reshape(-1)
        if len(lbl) != len(pts):
            raise PromptError(f"{len(pts)} points but {len(lbl)} labels")
        if not np.isin(lbl, (LABEL_NEGATIVE, LABEL_POSITIVE)).all():
            raise PromptError(f"point labels must be 0 (negative) or 1 (positive), got {np.unique(lbl).tolist()}")
        lbl = lbl.astype(np.int64)
        if not np.isfinite(pts).all():
            raise PromptError("point coordinates contain NaN or inf")
        if image_size is not None:
            h, w = image_size
            bad = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
            if bad.any():
                raise PromptError(f"point {pts[bad][0].tolist()} lies outside the {w}x{h} image")
    elif labels is not None and len(labels):
        raise PromptError(f"{len(labels)} labels but no points")
    if box is not None:
        bx = np.asarray(box, np.float32).reshape(-1)
        if bx.shape != (4,):
            raise PromptError(f"box must be 4 numbers x1,y1,x2,y2, got shape {np.shape(box)}")
        bx = check_boxes(bx[None])[0]
        if image_size is not None:
            h, w = image_size
            if bx[0] >= w or bx[1] >= h or bx[2] <= 0 or bx[3] <= 0:
                raise PromptError(f"box {bx.tolist()} lies outside the {w}x{h} image")
            bx = np.clip(bx, 0, [w, h, w, h]).astype(np.float32)
    if mask_input is not None:
        msk = np.asarray(mask_input, np.float32)
        if msk.size != LOW_RES * LOW_RES:
            raise PromptError(f"mask_input must be {LOW_RES}x{LOW_RES} low-res logits, got {msk.shape}")
        msk = msk.reshape(1, LOW_RES, LOW_RES)
        if not np.isfinite(msk).all():
            raise PromptError("mask_input contains NaN or inf")
    if pts is None and bx is None and msk is None:
        raise PromptError("empty prompt: give points, a box or a mask input")
    return ObjectPrompt(pts, lbl, bx, msk, bool(multimask))


def check_boxes(boxes) -> np.ndarray:
    """(N, 4) xyxy original px -> (N, 4) float32; PromptError for the first box that is not
    finite or is empty / inverted (x2 <= x1 or y2 <= y1)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    finite = np.isfinite(b).all(axis=1)
    bad = ~finite | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bad.any():
        k = int(np.argmax(bad))
        where = f"box {k} of {len(b)}: " if len(b) > 1 else ""
        if not finite[k]:
            raise PromptError(f"{where}box contains NaN or inf")
        raise PromptError(f"{where}box {b[k].tolist()} is empty or inverted (need x2 > x1, y2 > y1)")
    return b


def box_tokens(boxes) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) xyxy original px (checked by `check_boxes`) -> the box-only token layout:
    (coords (N, 2, 2) float32 original px, labels (N, 2) float32 = [2, 3]); what `to_tokens`
    gives for box-only prompts, without building one prompt object per box."""
    b = check_boxes(boxes)
    labels = np.tile(np.array([[LABEL_BOX_TL, LABEL_BOX_BR]], np.float32), (len(b), 1))
    return b.reshape(-1, 2, 2), labels


def to_tokens(prompts: Sequence[ObjectPrompt], apply_coords=None) -> tuple[np.ndarray, np.ndarray]:
    """Objects of ONE layout -> (coords (B, N', 2) float32, labels (B, N') float32).

    coords stay in original px (what SamPredictor.decode_tokens takes) unless apply_coords, a map
    of (K, 2) original-px xy (e.g. to the 1024 input frame), is given; padding tokens are (0, 0).
    """
    coords, labels = [], []
    for p in prompts:
        c = np.zeros((0, 2), np.float32) if p.points is None else p.points
        lab = np.zeros((0,), np.float32) if p.labels is None else p.labels.astype(np.float32)
        if p.box is not None:
            c = np.concatenate([c, p.box.reshape(2, 2)])
            lab = np.concatenate([lab, [LABEL_BOX_TL, LABEL_BOX_BR]]).astype(np.float32)
        c = (c if apply_coords is None else apply_coords(c)).astype(np.float32)
        if p.box is None and p.points is not None:  # SAM pads point-only prompts with one "not a point" token
            c = np.concatenate([c, np.zeros((1, 2), np.float32)])
            lab = np.concatenate([lab, [LABEL_PAD]]).astype(np.float32)
        coords.append(c)
        labels.append(lab)
    return np.stack(coords), np.stack(labels)


def group_by_layout(prompts: Sequence[ObjectPrompt]) -> dict[tuple, list[int]]:
    """Indices of `prompts` grouped by token layout, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.layout, []).append(i)
    return groups
