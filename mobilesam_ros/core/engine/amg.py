"""SegEvery grid mode: SAM's automatic mask generator over a `SamPredictor`.

Computes what the official ``SamAutomaticMaskGenerator.generate`` (segment-anything / MobileSAM,
output_mode "binary_mask") computes, with the same parameters, filters, comparisons and output
order:

1. crop boxes (layer 0 = the whole image, layer i = (2**i)² overlapping crops) and one point grid
   per layer; every crop is encoded (the whole image reuses the predictor's cached frame);
2. per crop, points go through the decoder `points_per_batch` at a time, 3 masks per point
   (multimask); candidates with predicted IoU <= pred_iou_thresh are dropped; the rest are brought
   to full crop resolution (SAM's two-step bilinear postprocess), given a stability score (NaN for
   0/0, which the ``>=`` filter drops), thresholded, boxed, and dropped when near an inner crop edge;
3. box NMS per crop (torchvision semantics, best predicted IoU first), uncrop;
4. with several crops, NMS across crops scored by 1 / crop area (masks of smaller crops win);
5. with min_mask_region_area > 0, small holes and islands are removed and NMS runs again.

Differences that do not change the result: the IoU filter runs on the decoder's output before
upsampling (the official upsamples all 3 * points_per_batch masks first), and masks are stored
bit-packed inside their boxes instead of as RLE. Memory: full-resolution logits exist for at most
`postprocess_chunk` masks at a time.

Decoding goes through the predictor's one path (`SamPredictor.decode_tokens`, then
`full_res_masks` per postprocess chunk), as the official generator uses ``predict_torch``; crops
other than the whole image are frames from `SamPredictor.encode_frame` that never enter the cache.
Its thresholds are SAM's own (``>`` predicted IoU, ``>=`` stability): they reproduce the official
generator and are not the SegEvery post-filter (core/ops/filters.py), which runs after it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from mobilesam_ros.core.ops.amg_grid import (box_near_crop_edge, build_all_layer_point_grids, generate_crop_boxes,
                       remove_small_regions, xyxy_to_xywh)
from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.ops.postprocess import box_nms, masks_to_boxes
from mobilesam_ros.core.engine.predictor import SamPredictor, check_image
from mobilesam_ros.core.structures.prompts import LABEL_PAD, LABEL_POSITIVE

__all__ = ["AutomaticMaskGenerator", "AmgResult"]


@dataclass(frozen=True)
class AmgResult:
    """Output of :meth:`AutomaticMaskGenerator.generate`, one row per mask, official order.

    instances: masks bit-packed (N, H, ceil(W/8)) over the original image; boxes (N, 4) float32
        xyxy with inclusive x2/y2 (SAM's mask boxes); scores = predicted IoU; stability; areas.
    point_coords: (N, 2) float64 (x, y) original px, the grid point that produced each mask.
    crop_boxes: (N, 4) int64 [x0, y0, x1, y1] original px (exclusive x1/y1) of the mask's crop.
    timings: seconds spent per stage (encode, decode, postprocess, nms) of this call.
    """

    instances: Instances
    point_coords: np.ndarray
    crop_boxes: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.instances)

    def records(self) -> list[dict[str, Any]]:
        """The official list of dicts: segmentation (H, W) bool, area, bbox / crop_box XYWH,
        predicted_iou, point_coords [[x, y]], stability_score."""
        inst = self.instances
        bbox = xyxy_to_xywh(inst.boxes.astype(np.int64))
        crop = xyxy_to_xywh(self.crop_boxes)
        return [{"segmentation": inst.mask(i), "area": int(inst.areas[i]), "bbox": bbox[i].tolist(),
                 "predicted_iou": float(inst.scores[i]),
                 "point_coords": [self.point_coords[i].tolist()],
                 "stability_score": float(inst.stability[i]), "crop_box": crop[i].tolist()}
                for i in range(len(inst))]


@dataclass
class _MaskSet:
    """Surviving candidates. boxes (n, 4) int64 xyxy inclusive, in the crop frame until uncropped;
    crops: n packed (h, ceil(w/8)) uint8 masks of the box interiors; points (n, 2) float64."""

    boxes: np.ndarray
    iou: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    areas: np.ndarray
    crops: list
    crop_boxes: np.ndarray

    @classmethod
    def empty(cls) -> "_MaskSet":
        return cls(np.zeros((0, 4), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 2), np.float64), np.zeros(0, np.int64), [], np.zeros((0, 4), np.int64))

    def __len__(self) -> int:
        return len(self.crops)

    def select(self, idx: np.ndarray) -> "_MaskSet":
        idx = np.asarray(idx, np.int64).reshape(-1)
        return _MaskSet(self.boxes[idx], self.iou[idx], self.stability[idx], self.points[idx],
                        self.areas[idx], [self.crops[i] for i in idx], self.crop_boxes[idx])

    @classmethod
    def cat(cls, parts: list["_MaskSet"]) -> "_MaskSet":
        parts = [cls.empty()] + list(parts)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("boxes", "iou", "stability", "points", "areas")),
                   [c for p in parts for c in p.crops],
                   np.concatenate([p.crop_boxes for p in parts]))


def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """SAM's ``batched_nms(boxes.float(), scores, zeros, thresh)``: one category, torchvision CPU."""
    return box_nms(boxes.astype(np.float32), scores, thresh, idxs=np.zeros(len(boxes), np.int64))


class AutomaticMaskGenerator:
    """SAM's automatic mask generator (grid of single-point prompts) over any backend.

    Parameters are the official ones with the official defaults (``point_grids`` replaces
    ``points_per_side`` when given: a list of (n_i, 2) grids normalised to [0, 1], one per crop
    layer). `postprocess_chunk` bounds how many full-resolution logit maps exist at once.
    """

    def __init__(self, predictor: SamPredictor, points_per_side: Optional[int] = 32,
                 points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
                 box_nms_thresh: float = 0.7, crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                 min_mask_region_area: int = 0, point_grids: Optional[list[np.ndarray]] = None,
                 postprocess_chunk: int = 16) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            grids = build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                crop_n_points_downscale_factor)
        else:
            grids = [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids]
            if len(grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids has {len(grids)} grids, crop_n_layers={crop_n_layers} "
                                 f"needs {crop_n_layers + 1}")
        if points_per_batch < 1 or postprocess_chunk < 1:
            raise ValueError("points_per_batch and postprocess_chunk must be >= 1")
        if min_mask_region_area > 0:
            import cv2  # noqa: F401  (fail at construction, as the official does)
        self.predictor = predictor
        self.point_grids = grids
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = int(min_mask_region_area)
        self.postprocess_chunk = int(postprocess_chunk)

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def generate(self, image: Optional[np.ndarray] = None, stamp_ns: Optional[int] = None,
                 frame: Optional[CachedFrame] = None) -> AmgResult:
        """All masks of an (H, W, 3) uint8 RGB image, official order, original-image px.

        The whole-image crop reuses the predictor's cached frame with stamp `stamp_ns` when there
        is one of the image's size (so a frame encoded or `set_embedding`-ed before costs no
        encoder pass); otherwise the image is encoded and cached under `stamp_ns` (None: a new
        automatic stamp). `image` may be None when that frame is cached and crop_n_layers == 0.
        `frame`: the whole image already encoded (a camera stream's frame): used as it is, no lookup.
        Other crops are encoded directly through the backend and never enter the cache.
        """
        t: dict[str, float] = {"encode": 0.0, "decode": 0.0, "postprocess": 0.0, "nms": 0.0}
        if image is not None:
            check_image(image)
        t0 = time.perf_counter()
        frame = self._whole_image_frame(image, stamp_ns) if frame is None else frame
        t["encode"] += time.perf_counter() - t0
        orig_hw = frame.original_size
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
        if len(crop_boxes) > 1 and image is None:
            raise ValueError("crop_n_layers > 0 needs the image itself (crops are re-encoded)")
        parts = []
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            x0, y0, x1, y1 = crop_box
            if layer == 0:
                crop_frame = frame
            else:
                t0 = time.perf_counter()
                crop_frame = self.predictor.encode_frame(np.ascontiguousarray(image[y0:y1, x0:x1]))
                t["encode"] += time.perf_counter() - t0
            parts.append(self._process_crop(crop_frame, crop_box, layer, orig_hw, t))
            del crop_frame
        data = _MaskSet.cat(parts)

        t0 = time.perf_counter()
        if len(crop_boxes) > 1 and len(data):
            cb = data.crop_boxes
            # Prefer masks from smaller crops (torch: 1 / int64 area -> float32).
            scores = np.float32(1.0) / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            data = data.select(_nms(data.boxes, scores, self.crop_nms_thresh))
        t["nms"] += time.perf_counter() - t0

        masks = self._paste(data, orig_hw)
        if self.min_mask_region_area > 0 and len(data):
            t0 = time.perf_counter()
            masks, data = self._postprocess_small_regions(masks, data, orig_hw)
            t["postprocess"] += time.perf_counter() - t0
        n = len(data)
        inst = Instances(masks=masks, boxes=data.boxes.astype(np.float32),
                         scores=data.iou.astype(np.float32), stability=data.stability.astype(np.float32),
                         areas=data.areas.astype(np.int64), class_ids=np.full(n, -1, np.int32),
                         det_scores=np.full(n, np.nan, np.float32), image_hw=orig_hw, packed=True,
                         frame=frame)
        return AmgResult(inst, data.points.astype(np.float64), data.crop_boxes.astype(np.int64), t)

    # ------------------------------------------------------------------ stages
    def _whole_image_frame(self, image: Optional[np.ndarray],
                           stamp_ns: Optional[int]) -> CachedFrame:
        if stamp_ns is not None:
            try:
                frame = self.predictor.frame(stamp_ns)
            except FrameNotCachedError:
                frame = None
            if frame is not None and (image is None or tuple(frame.original_size) == image.shape[:2]):
                return frame
        if image is None:
            raise ValueError(f"no cached frame with stamp {stamp_ns} and no image to encode")
        return self.predictor.set_image(image, stamp_ns)

    def _process_crop(self, frame: CachedFrame, crop_box: list[int], layer: int,
                      orig_hw: tuple[int, int], t: dict[str, float]) -> _MaskSet:
        """Candidates of one crop (`frame`: the crop encoded, original_size = the crop's size)
        after the filters and per-crop NMS, uncropped to original px."""
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        points = self.point_grids[layer] * np.array(crop_hw, np.float64)[None, ::-1]  # crop px (x, y)
        batches = [self._process_batch(frame, points[s:s + self.points_per_batch], crop_box, orig_hw, t)
                   for s in range(0, len(points), self.points_per_batch)]
        data = _MaskSet.cat(batches)
        t0 = time.perf_counter()
        data = data.select(_nms(data.boxes, data.iou, self.box_nms_thresh))
        t["nms"] += time.perf_counter() - t0
        data.boxes = data.boxes + np.array([x0, y0, x0, y0], np.int64)
        data.points = data.points + np.array([x0, y0], np.float64)
        data.crop_boxes = np.tile(np.asarray(crop_box, np.int64), (len(data), 1))
        return data

    def _process_batch(self, frame: CachedFrame, points: np.ndarray, crop_box: list[int],
                       orig_hw: tuple[int, int], t: dict[str, float]) -> _MaskSet:
        """points (b, 2) float64 crop px -> surviving masks, boxes in the crop frame."""
        t0 = time.perf_counter()
        b = len(points)
        coords = np.zeros((b, 2, 2), np.float64)  # one positive point + SAM's padding point (0, 0)
        coords[:, 0] = points
        labels = np.tile(np.array([[LABEL_POSITIVE, LABEL_PAD]], np.float32), (b, 1))
        decoded = self.predictor.decode_tokens(frame, coords, labels, None, True, return_masks=False)
        low, iou = decoded.low_res, decoded.iou
        c = low.shape[1]
        low, iou = low.reshape(b * c, *low.shape[2:]), iou.reshape(b * c).astype(np.float32)
        pts = np.repeat(points, c, axis=0)  # mask k of point p is row p * c + k, as flatten(0, 1)
        idx = np.arange(b * c)
        if self.pred_iou_thresh > 0.0:
            idx = idx[iou > self.pred_iou_thresh]
        t1 = time.perf_counter()
        t["decode"] += t1 - t0

        parts = []
        for s in range(0, len(idx), self.postprocess_chunk):
            sel = idx[s:s + self.postprocess_chunk]
            masks, stab = self.predictor.full_res_masks(frame, low[sel][:, None], self.stability_score_offset)
            masks, stab = masks[:, 0], stab[:, 0]
            keep = np.ones(len(sel), bool)
            if self.stability_score_thresh > 0.0:
                keep = stab >= self.stability_score_thresh  # NaN (0/0) fails
            masks, sel, stab = masks[keep], sel[keep], stab[keep]
            boxes = masks_to_boxes(masks)
            ok = ~box_near_crop_edge(boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
            masks, boxes, sel, stab = masks[ok], boxes[ok], sel[ok], stab[ok]
            crops = [np.packbits(m[by0:by1 + 1, bx0:bx1 + 1], axis=-1)
                     for m, (bx0, by0, bx1, by1) in zip(masks, boxes)]
            parts.append(_MaskSet(boxes, iou[sel], stab.astype(np.float32), pts[sel],
                                  np.count_nonzero(masks, axis=(1, 2)).astype(np.int64), crops,
                                  np.zeros((len(sel), 4), np.int64)))
        t["postprocess"] += time.perf_counter() - t1
        return _MaskSet.cat(parts)

    @staticmethod
    def _paste_one(crop: np.ndarray, box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """A packed box-interior mask -> (H, W) bool over the original image (box in original px)."""
        x0, y0, x1, y1 = (int(v) for v in box)
        m = np.zeros(hw, bool)
        m[y0:y1 + 1, x0:x1 + 1] = np.unpackbits(crop, axis=-1, count=x1 - x0 + 1).astype(bool)
        return m

    def _paste(self, data: _MaskSet, hw: tuple[int, int]) -> np.ndarray:
        """(N, H, ceil(W/8)) uint8 packed full-image masks of the final set, one dense mask at a time."""
        out = np.zeros((len(data), hw[0], (hw[1] + 7) // 8), np.uint8)
        for i, (crop, box) in enumerate(zip(data.crops, data.boxes)):
            out[i] = np.packbits(self._paste_one(crop, box, hw), axis=-1)
        return out

    def _postprocess_small_regions(self, masks: np.ndarray, data: _MaskSet,
                                   hw: tuple[int, int]) -> tuple[np.ndarray, _MaskSet]:
        """Official ``postprocess_small_regions``: fill small holes, drop small islands, then box
        NMS scored 1 (unchanged) / 0 (changed) so untouched masks win; a kept changed mask gets its
        new mask, box and area (predicted IoU and stability stay those of the original)."""
        n = len(data)
        new_boxes = np.zeros((n, 4), np.int64)
        scores = np.zeros(n, np.float32)
        changed: dict[int, tuple[np.ndarray, int]] = {}  # packed new mask, area
        for i in range(n):
            m = np.unpackbits(masks[i], axis=-1, count=hw[1]).astype(bool)
            m, ch_holes = remove_small_regions(m, self.min_mask_region_area, "holes")
            m, ch_islands = remove_small_regions(m, self.min_mask_region_area, "islands")
            new_boxes[i] = masks_to_boxes(m)
            scores[i] = float(not (ch_holes or ch_islands))
            if ch_holes or ch_islands:
                changed[i] = (np.packbits(m, axis=-1), int(np.count_nonzero(m)))
        keep = _nms(new_boxes, scores, max(self.box_nms_thresh, self.crop_nms_thresh))
        masks, boxes, areas = masks.copy(), data.boxes.copy(), data.areas.copy()
        for i in keep:
            if i in changed:
                masks[i], areas[i] = changed[i]
                boxes[i] = new_boxes[i]
        # `crops` are stale for changed masks from here on; they were only needed for pasting.
        data = _MaskSet(boxes, data.iou, data.stability, data.points, areas, data.crops, data.crop_boxes)
        return masks[keep], data.select(keep)
