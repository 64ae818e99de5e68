"""The per-frame pipeline the node (and the demo) drive: encode -> cache -> SegEvery / SegAny.

ROS-free. One object owns the backend, the embedding cache (via SamPredictor), the optional box
detector and the grid generator; the node only converts messages to arrays and back.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from mobilesam_ros.core.config import FilterConfig, PipelineConfig
from mobilesam_ros.core.runtime.factory import build_backend
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.ops.filters import filter_instances
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.structures.prompts import ObjectPrompt
from mobilesam_ros.core.engine.segevery import decode_boxes, decode_prompts


class SegmentationPipeline:
    def __init__(self, predictor: SamPredictor, detector=None,
                 grid_points_per_side: int = PipelineConfig.grid_points_per_side) -> None:
        self.predictor = predictor
        self.detector = detector
        self.grid_points_per_side = grid_points_per_side
        self._amg = None

    def describe(self) -> str:
        boxes = "grid %dx%d" % ((self.grid_points_per_side,) * 2) if self.detector is None else "detector"
        return f"{self.predictor.backend.describe()}, SegEvery boxes: {boxes}"

    def set_detector_thresholds(self, conf: float, iou: float) -> None:
        """Change the box proposer's confidence and NMS IoU from the next frame on."""
        if self.detector is not None:
            self.detector.conf, self.detector.iou = float(conf), float(iou)

    @property
    def cached_frames(self) -> int:
        """How many encoded frames the cache holds now."""
        return len(self.predictor.cache)

    def encode(self, image: np.ndarray, stamp_ns: int, meta: Any = None) -> CachedFrame:
        """Encode an (H, W, 3) uint8 RGB frame into the embedding cache under stamp_ns; `meta`
        (opaque, e.g. the node's Header) travels with the frame into every result decoded on it."""
        return self.predictor.set_image(image, stamp_ns, meta)

    def segment_every(self, image: np.ndarray, stamp_ns: int, filters: FilterConfig,
                      meta: Any = None) -> Instances:
        """All instances of the frame (encoded and cached on the way, with `meta`), filtered and
        sorted; `Instances.frame` is that frame."""
        self.encode(image, stamp_ns, meta)
        if self.detector is not None:
            det = self.detector.detect(image)
            inst = decode_boxes(self.predictor, det.boxes, stamp_ns, det.class_ids, det.scores)
        else:
            inst = self._grid().generate(image, stamp_ns).instances
        return filter_instances(inst, filters)

    def _grid(self):
        if self._amg is None:
            from mobilesam_ros.core.engine.amg import AutomaticMaskGenerator

            self._amg = AutomaticMaskGenerator(self.predictor, points_per_side=self.grid_points_per_side)
        return self._amg

    def nearest_stamp(self, stamp_ns: Optional[int], tolerance_ns: int) -> int:
        """The stamp of the cached frame a prompt at stamp_ns refers to (None: the latest)."""
        return self.predictor.frame(stamp_ns, tolerance_ns).stamp_ns

    def frame_size(self, stamp_ns: int) -> tuple[int, int]:
        return self.predictor.frame(stamp_ns).original_size

    def segment_prompts(self, prompts: Sequence[ObjectPrompt], stamp_ns: int,
                        check: Optional[Callable[[int, int], None]] = None) -> Instances:
        """One instance per prompt object, in order, decoded against the cached frame stamp_ns
        (`Instances.frame`: its stamp, image and meta). check(done, total) runs between decoder
        chunks and may raise to abandon the batch."""
        return decode_prompts(self.predictor, list(prompts), stamp_ns, check=check)

    def close(self) -> None:
        """Drop the model and cached frames (the node's cleanup)."""
        self.predictor.cache.clear()
        self.predictor = None  # type: ignore[assignment]
        self.detector = None
        self._amg = None


def build_pipeline(cfg: PipelineConfig) -> SegmentationPipeline:
    """Load cfg's model (and detector) into a ready pipeline (core/config.PipelineConfig)."""
    backend = build_backend(cfg.model)
    detector = None
    if cfg.detector.model:
        from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector
        from mobilesam_ros.core.runtime.ort_providers import detector_providers

        d = cfg.detector
        detector = YoloV8OnnxDetector(d.model, conf=d.conf, iou=d.iou, max_det=d.max_det,
                                      providers=detector_providers(cfg.model.providers, cfg.model.device, cfg.model.tf32),
                                      border_snap_px=d.border_snap_px,
                                      cpu=cfg.model.cpu)
    predictor = SamPredictor(backend, cache_size=cfg.cache_size, keep_images=True)
    return SegmentationPipeline(predictor, detector, cfg.grid_points_per_side)
