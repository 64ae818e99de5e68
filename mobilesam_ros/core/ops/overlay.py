"""Overlay rendering: coloured instance masks, boxes and ids over the RGB image.

Shared by the CLI (PNG output) and the node (rgb8 overlay topic). Colours are a fixed function of
the instance id, so one object keeps its colour across frames when ids are stable.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from mobilesam_ros.core.config import OverlayConfig


def id_color(instance_id: int) -> tuple[int, int, int]:
    """A saturated RGB colour for an id (golden-ratio hue steps: neighbours differ strongly)."""
    hue = int((instance_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_overlay(image: np.ndarray, label_image: np.ndarray, boxes: Optional[np.ndarray] = None,
                 ids: Optional[Sequence[int]] = None, scores: Optional[Sequence[float]] = None,
                 alpha: float = OverlayConfig.alpha) -> np.ndarray:
    """Blend instances over `image`.

    image: (H, W, 3) uint8 RGB. label_image: (H, W) int, pixel value = instance id, 0 = background.
    boxes: (N, 4) xyxy original px, drawn with `ids[i]` (and `scores[i]` when given) as text.
    Returns a new (H, W, 3) uint8 RGB array.
    """
    out = image.copy()
    fg = label_image > 0
    if fg.any():
        # a table over the ids present, not over 0..max id: ids may be any uint32
        present, inverse = np.unique(label_image[fg], return_inverse=True)
        colored = np.array([id_color(int(i)) for i in present], np.uint8)[inverse]
        out[fg] = (out[fg].astype(np.float32) * (1 - alpha) + colored * alpha).astype(np.uint8)
    if boxes is not None and ids is not None:
        thick = max(1, round(max(image.shape[:2]) / 500))
        for k, (box, i) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), ids)):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            color = id_color(int(i))
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
            text = f"{i}" if scores is None else f"{i}:{scores[k]:.2f}"
            cv2.putText(out, text, (x1 + 2, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thick, color, thick, cv2.LINE_AA)
    return out
