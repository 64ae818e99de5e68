"""Geometry helpers of SAM's automatic mask generator: point grids, crop boxes, crop-edge test,
small-region clean-up. Same definitions as the official ``segment_anything/utils/amg.py``
(MobileSAM ships an identical copy), restated in numpy.

Frames: a *crop box* is ``[x0, y0, x1, y1]`` in original-image pixels with exclusive x1/y1 (the
slice ``image[y0:y1, x0:x1]``); mask boxes are xyxy with *inclusive* x2/y2 (SAM's
``batched_mask_to_box``). Grids are normalised to [0, 1] x [0, 1] as (x, y).
"""
from __future__ import annotations

import math
from itertools import product

import numpy as np

__all__ = ["build_point_grid", "build_all_layer_point_grids", "generate_crop_boxes",
           "box_near_crop_edge", "remove_small_regions", "xyxy_to_xywh"]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) float64 (x, y) in [0, 1]: cell centres of an n x n grid, x varying fastest."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One normalised grid per crop layer 0..n_layers; layer i has int(n / scale**i) points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes of all layers for an image of im_size (H, W), and each box's layer index.

    Layer 0 is the whole image [0, 0, W, H]; layer i >= 1 tiles it with (2**i)² overlapping crops,
    listed column-major (x0 outer, y0 inner) as the official ``itertools.product`` order.
    The overlap is ``int(overlap_ratio * short_side * 2 / n_crops_per_side)`` pixels.
    """
    im_h, im_w = int(im_size[0]), int(im_size[1])
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_side))
        crop_w, crop_h = crop_len(im_w, n_side, overlap), crop_len(im_h, n_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def box_near_crop_edge(boxes: np.ndarray, crop_box: list[int], orig_box: list[int],
                       atol: float = 20.0) -> np.ndarray:
    """(N,) bool: a mask box lies within `atol` px of a crop edge that is not an image edge.

    boxes: (N, 4) xyxy in the CROP frame (as the masks of that crop give them); crop_box and
    orig_box ([0, 0, W, H]) in original px. Such masks are likely cut by the crop, so SAM drops
    them. Compared in float32 like ``torch.isclose(..., rtol=0)``.
    """
    b = np.asarray(boxes).reshape(-1, 4)
    offset = np.asarray([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], np.int64)
    b = (b.astype(np.int64) + offset).astype(np.float32)
    crop = np.asarray(crop_box, np.float32)[None]
    orig = np.asarray(orig_box, np.float32)[None]
    near_crop = np.abs(b - crop) <= np.float32(atol)
    near_image = np.abs(b - orig) <= np.float32(atol)
    return np.any(near_crop & ~near_image, axis=1)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """SAM's ``remove_small_regions``: (H, W) bool -> (cleaned (H, W) bool, changed).

    mode "holes": 8-connected components of the background smaller than area_thresh are filled
    (the outer background too, if it is that small). mode "islands": foreground components smaller
    than area_thresh are removed; if every one is that small the largest is kept.
    """
    import cv2  # only this optional post-processing needs OpenCV

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    # For holes, label the background: its label 0 is then the mask itself.
    work = (np.asarray(mask, bool) ^ holes).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # row 0 is label 0 (pixels where work == 0)
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return np.asarray(mask, bool), False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) [x0, y0, x1, y1] -> [x0, y0, x1 - x0, y1 - y0] (SAM's ``box_xyxy_to_xywh``).

    For mask boxes (inclusive x1) this is the official `bbox`, one less than the pixel width.
    """
    b = np.array(boxes, copy=True)
    b[..., 2] = b[..., 2] - b[..., 0]
    b[..., 3] = b[..., 3] - b[..., 1]
    return b
