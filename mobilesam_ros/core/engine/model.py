"""The loaded model, shared by every camera stream of a process: the encoder + decoder backend and
the optional SegEvery box detector. ROS-free.

Loading is the expensive part (weights, ONNX sessions, their thread pools and arenas); a camera
stream (core/engine/camera_stream.py) holds only per-camera state over it, so N cameras cost one
model in memory. Several threads may call it at once (the node's workers, one camera each): ONNX
Runtime sessions and torch modules in inference allow concurrent runs, and nothing here keeps
per-call state (each call binds its own inputs and outputs; the detector takes its thresholds per
call).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from mobilesam_ros.core.config import PipelineConfig
from mobilesam_ros.core.engine.class_names import ClassNames
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.runtime.base import Backend
from mobilesam_ros.core.runtime.factory import build_backend
from mobilesam_ros.core.structures.detections import Detections

__all__ = ["SegmentationModel", "load_model"]


class SegmentationModel:
    """backend: image encoder + prompt encoder / mask decoder; detector: SegEvery's box proposer
    (None: SAM's point grid of grid_points_per_side^2 points)."""

    def __init__(self, backend: Backend, detector=None,
                 grid_points_per_side: int = PipelineConfig.grid_points_per_side,
                 class_names: Optional[ClassNames] = None) -> None:
        self.backend = backend
        self.detector = detector
        self.grid_points_per_side = grid_points_per_side
        # the detector's class names (its ONNX metadata, or DetectorConfig.class_names' file)
        self.class_names = class_names if class_names is not None else ClassNames(getattr(detector, "names", {}))

    def describe(self) -> str:
        boxes = "grid %dx%d" % ((self.grid_points_per_side,) * 2) if self.detector is None else "detector"
        return f"{self.backend.describe()}, SegEvery boxes: {boxes}"

    def new_predictor(self, cache_size: int) -> SamPredictor:
        """A predictor over the shared backend with its own cache of `cache_size` encoded frames
        (their source images kept: overlays draw on them)."""
        return SamPredictor(self.backend, cache_size=cache_size, keep_images=True)

    def detect(self, image: np.ndarray, conf: float, iou: float) -> Optional[Detections]:
        """Boxes of an (H, W, 3) uint8 RGB image at confidence `conf` and NMS IoU `iou`
        (original px), or None without a detector."""
        if self.detector is None:
            return None
        return self.detector.detect(image, conf, iou)

    def close(self) -> None:
        """Drop the networks (the node's cleanup); streams built on this model are unusable after."""
        self.backend = None  # type: ignore[assignment]
        self.detector = None


def load_model(cfg: PipelineConfig) -> SegmentationModel:
    """Load cfg's model and detector (core/config.PipelineConfig)."""
    backend = build_backend(cfg.model)
    detector = None
    if cfg.detector.model:
        from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector
        from mobilesam_ros.core.runtime.ort_providers import detector_providers

        d, m = cfg.detector, cfg.model
        detector = YoloV8OnnxDetector(d.model, conf=d.conf, iou=d.iou, max_det=d.max_det,
                                      providers=detector_providers(m.providers, m.device, m.tf32),
                                      border_snap_px=d.border_snap_px, cpu=m.cpu, sessions=m.sessions)
    names = None
    if cfg.detector.class_names:
        from mobilesam_ros.core.engine.class_names import load_class_names

        names = ClassNames(load_class_names(cfg.detector.class_names))
    return SegmentationModel(backend, detector, cfg.grid_points_per_side, names)
