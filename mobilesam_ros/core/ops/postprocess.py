"""Mask post-processing shared by SegAny, SegEvery and the ROS node (no ROS, no torchvision).

Functions take numpy arrays or torch tensors; results come back as the same kind where noted.
Coordinates are original-image pixels; masks are (N, H, W) bool over the original image.

* :func:`stability_score` -- SAM's ``calculate_stability_score``.
* :func:`masks_to_boxes` -- SAM's ``batched_mask_to_box`` (inclusive max coordinates).
* :func:`box_nms` -- torchvision ``nms`` / ``batched_nms`` CPU semantics, bit for bit.
* :func:`mask_nms` -- greedy NMS on mask IoU (drops duplicate masks from overlapping prompts).
* :func:`pack_masks` / :func:`unpack_masks` -- ``np.packbits`` along the last axis, as the goldens.

The :class:`~mobilesam_ros.core.structures.instances.Instances` container (structures/) is built on these.
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["stability_score", "masks_to_boxes", "box_nms", "mask_nms", "pack_masks",
           "unpack_masks"]


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask
    return torch is not None and isinstance(x, torch.Tensor)


# numpy >= 2.0 has a popcount ufunc; older numpy (requirements allow 1.26) uses a lookup table.
_POPCOUNT_LUT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(
    axis=1, dtype=np.uint8)
_popcount = getattr(np, "bitwise_count", None) or _POPCOUNT_LUT.__getitem__


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


def _like(out: np.ndarray, ref):
    """Return `out` as a torch tensor on ref's device when `ref` is one."""
    if _is_torch(ref):
        import torch
        return torch.from_numpy(out).to(ref.device)
    return out


# --------------------------------------------------------------------------- stability
def stability_score(logits, threshold: float = 0.0, offset: float = 1.0):
    """SAM's stability score: IoU of the masks thresholded at ``threshold +- offset``.

    logits: (..., h, w) mask logits, torch or numpy. Returns (...,) float32 of the same kind:
    ``count(logits > threshold + offset) / count(logits > threshold - offset)``. A mask with no
    pixel above ``threshold - offset`` gives 0/0 = NaN, kept as SAM keeps it (its ``>=`` filter
    then drops the mask).
    """
    hi, lo = threshold + offset, threshold - offset
    if _is_torch(logits):
        import torch
        # SAM sums rows in int16 first (memory), then int32; the counts are the same.
        inter = (logits > hi).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
        union = (logits > lo).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
        return inter / union
    a = np.asarray(logits)
    inter = np.count_nonzero(a > hi, axis=(-2, -1))
    union = np.count_nonzero(a > lo, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.asarray(inter, np.float64) / union).astype(np.float32)


# --------------------------------------------------------------------------- boxes
def masks_to_boxes(masks):
    """Tight boxes of (..., H, W) bool masks -> (..., 4) int64 xyxy, original-image px.

    SAM's ``batched_mask_to_box``: x2/y2 are the *inclusive* last column/row (a single pixel at
    (x, y) gives [x, y, x, y]); an empty mask gives [0, 0, 0, 0]. torch in -> torch out.
    """
    m = _to_numpy(masks).astype(bool, copy=False)
    if m.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {m.shape}")
    lead, (h, w) = m.shape[:-2], m.shape[-2:]
    if m.size == 0:  # no masks, or a zero-size image: SAM returns zeros
        out = np.zeros((*lead, 4), np.int64)
        return _like(out, masks)
    m = m.reshape(-1, h, w)
    rows, cols = m.any(axis=2), m.any(axis=1)  # (N, H), (N, W)
    nonempty = rows.any(axis=1)
    out = np.zeros((m.shape[0], 4), np.int64)
    out[:, 0] = cols.argmax(axis=1)
    out[:, 1] = rows.argmax(axis=1)
    out[:, 2] = w - 1 - cols[:, ::-1].argmax(axis=1)
    out[:, 3] = h - 1 - rows[:, ::-1].argmax(axis=1)
    out[~nonempty] = 0
    return _like(out.reshape(*lead, 4), masks)


def _greedy_nms(scores: np.ndarray, suppress) -> np.ndarray:
    """The greedy loop both NMS flavours share: visit by score (descending, stable), keep a
    candidate unless already suppressed, then mark `suppress(i, rest)` -> bool (len(rest),) of the
    remaining unsuppressed candidates. Returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")  # torchvision: sort(stable=True, descending=True)
    suppressed = np.zeros(scores.shape[0], bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        if rest.size:
            suppressed[rest[suppress(i, rest)]] = True
    return np.asarray(keep, np.int64)


def _nms_single(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """torchvision's CPU nms_kernel, vectorised over the candidates of each kept box.

    Same arithmetic, same dtype (float32 for float32 boxes), same order of operations, so the
    same IoU bits; the threshold compare is done in double as the C++ kernel promotes it.
    """
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    zero = boxes.dtype.type(0)

    def suppress(i, rest):
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            ovr = inter / (areas[i] + areas[rest] - inter)  # 0/0 -> NaN -> never suppresses
        return ovr.astype(np.float64) > iou_thresh
    return _greedy_nms(scores, suppress)


def box_nms(boxes, scores, iou_thresh: float, idxs=None):
    """Greedy box NMS with torchvision's CPU semantics; returns kept indices, best score first.

    boxes: (N, 4) xyxy (any frame; computed in float32 unless given float64), scores: (N,).
    iou_thresh: a box is suppressed when its IoU with a kept box is > iou_thresh.
    IoU = inter / (area_i + area_j - inter), area = (x2 - x1) * (y2 - y1) (no +1).
    idxs: optional (N,) category per box -> ``batched_nms``: NMS only within a category, via the
    coordinate-offset trick, or per category when boxes.numel() > 4000 (torchvision's CPU switch;
    the final order there is a stable score sort where torch's sort may order ties differently).
    Returns (K,) int64 (a torch tensor if `boxes` is one).
    """
    b = _to_numpy(boxes)
    s = _to_numpy(scores)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got shape {b.shape}")
    if s.shape != (b.shape[0],):
        raise ValueError(f"scores must be ({b.shape[0]},), got shape {s.shape}")
    if b.dtype != np.float64:
        b = b.astype(np.float32)
    s = s.astype(np.float64 if s.dtype == np.float64 else np.float32)
    if b.shape[0] == 0:
        keep = np.zeros(0, np.int64)
    elif idxs is None:
        keep = _nms_single(b, s, iou_thresh)
    else:
        c = _to_numpy(idxs).reshape(-1)
        if c.shape != (b.shape[0],):
            raise ValueError(f"idxs must be ({b.shape[0]},), got shape {c.shape}")
        if b.size > 4000:
            mask = np.zeros(b.shape[0], bool)
            for cls in np.unique(c):
                cur = np.flatnonzero(c == cls)
                mask[cur[_nms_single(b[cur], s[cur], iou_thresh)]] = True
            kept = np.flatnonzero(mask)
            keep = kept[np.argsort(-s[kept], kind="stable")]
        else:
            # torchvision: offsets = idxs.to(boxes) * (boxes.max() + 1), all in the box dtype.
            one = b.dtype.type(1)
            offsets = c.astype(b.dtype) * (b.max() + one)
            keep = _nms_single(b + offsets[:, None], s, iou_thresh)
    return _like(keep, boxes)


# --------------------------------------------------------------------------- masks
def mask_nms(masks, scores, iou_thresh: float) -> np.ndarray:
    """Greedy NMS on mask IoU; returns kept indices (K,) int64, best score first.

    masks: (N, H, W) bool (numpy or torch), scores: (N,). Scores are sorted stably (ties keep
    input order); a mask is dropped when IoU(mask, kept mask) > iou_thresh. IoU of two empty
    masks is 0/0 and never suppresses. Only pairs whose boxes overlap are compared, only inside
    the kept mask's box, on bit-packed rows (popcount), so the cost follows the object sizes and
    is 8x below a pixel-wise N^2 * H * W.
    """
    m = _to_numpy(masks).astype(bool, copy=False)
    s = _to_numpy(scores).astype(np.float64).reshape(-1)
    if m.ndim != 3 or s.shape != (m.shape[0],):
        raise ValueError(f"masks must be (N, H, W) and scores (N,), got {m.shape} and {s.shape}")
    areas = np.count_nonzero(m, axis=(1, 2))
    bx = masks_to_boxes(m)
    packed = np.packbits(m, axis=-1)  # bits outside mask i's box are 0, so byte-aligned crops

    def suppress(i, rest):
        out = np.zeros(rest.size, bool)
        if areas[i] == 0:
            return out
        x0, y0, x1, y1 = bx[i]
        overlap = ((bx[rest, 0] <= x1) & (bx[rest, 2] >= x0) & (bx[rest, 1] <= y1)
                   & (bx[rest, 3] >= y0) & (areas[rest] > 0))
        # IoU <= min(area)/max(area): pairs of very different size cannot exceed the threshold.
        lo, hi = np.minimum(areas[rest], areas[i]), np.maximum(areas[rest], areas[i])
        pick = np.flatnonzero(overlap & (lo > iou_thresh * hi))
        if pick.size == 0:
            return out
        cand = rest[pick]
        rows, cols = slice(y0, y1 + 1), slice(x0 // 8, x1 // 8 + 1)
        inter = _popcount(packed[cand, rows, cols] & packed[i, rows, cols])
        inter = inter.sum(axis=(1, 2), dtype=np.int64)
        out[pick] = inter / (areas[i] + areas[cand] - inter) > iou_thresh
        return out
    return _greedy_nms(s, suppress)


def pack_masks(masks) -> np.ndarray:
    """(..., H, W) bool -> (..., H, ceil(W / 8)) uint8: ``np.packbits(axis=-1)``, MSB first."""
    return np.packbits(_to_numpy(masks).astype(bool, copy=False), axis=-1)


def unpack_masks(packed: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: (..., H, ceil(W / 8)) uint8 -> (..., H, W) bool."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed masks must be uint8, got {packed.dtype}")
    if packed.shape[-1] != (width + 7) // 8:
        raise ValueError(f"packed last axis {packed.shape[-1]} does not fit width {width}")
    return np.unpackbits(packed, axis=-1, count=width).astype(bool)
