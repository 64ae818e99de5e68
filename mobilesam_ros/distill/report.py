"""Training log files and the loss plot of a distillation run (cv2 drawing, no matplotlib).

Files written into the run's work directory, rewritten whole from the in-memory history (so a
resumed run never carries rows of steps it rolled back):

* `train_log.csv`  step, epoch, lr, loss (training MSE of that step's batch);
* `val_log.json`   list of validations {step, train_mse, val_mse, val_mask_iou, ...};
* `loss.png`       top: training loss (light: per step, dark: running mean) and eval-mode MSE on
                   training / held-out frames, log scale; bottom: held-out mask IoU vs teacher.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mobilesam_ros.core.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.json"
PLOT = "loss.png"

_W, _H = 960, 640
_MARGIN_L, _MARGIN_R, _MARGIN_T, _GAP = 80, 24, 36, 56
_BLACK, _GREY, _LIGHT = (0, 0, 0), (160, 160, 160), (225, 225, 225)
# BGR
_LOSS, _LOSS_AVG, _TRAIN_EVAL, _VAL = (235, 190, 150), (180, 90, 20), (40, 150, 40), (30, 30, 210)


def write_logs(work_dir: str | os.PathLike[str], steps: Sequence[dict[str, Any]],
               validations: Sequence[dict[str, Any]]) -> None:
    """Write `train_log.csv` (rows of step records) and `val_log.json` into `work_dir`."""
    root = Path(work_dir)
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["step", "epoch", "lr", "loss"])
    for r in steps:
        w.writerow([r["step"], r["epoch"], f"{r['lr']:.6g}", f"{r['loss']:.6g}"])
    atomic_write_text(root / TRAIN_LOG, rows.getvalue())
    atomic_write_json(root / VAL_LOG, list(validations))


def _running_mean(v: np.ndarray, k: int) -> np.ndarray:
    if len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    lo = np.maximum(np.arange(1, len(v) + 1) - k, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(v) + 1) - lo)


def _step_ticks(x_max: float) -> list[int]:
    """Integer ticks 0, d, 2d, ... <= x_max with d in {1, 2, 5} x 10^k, at most ~6 of them."""
    d = 1
    while x_max / d > 6:
        d = next(m * 10 ** e for e in range(12) for m in (1, 2, 5) if m * 10 ** e > d)
    return list(range(0, int(x_max) + 1, d))


class _Panel:
    """One plot area: maps (step, value) to pixels; log or linear y."""

    def __init__(self, img: np.ndarray, top: int, bottom: int, x_max: float, y_lo: float,
                 y_hi: float, log: bool) -> None:
        self.img, self.top, self.bottom, self.log = img, top, bottom, log
        self.left, self.right = _MARGIN_L, _W - _MARGIN_R
        self.x_max = max(x_max, 1.0)
        f = (lambda v: math.log10(v)) if log else (lambda v: v)
        self.f = f
        self.y_lo, self.y_hi = f(y_lo), f(y_hi)
        if self.y_hi - self.y_lo < 1e-9:
            self.y_lo, self.y_hi = self.y_lo - 0.5, self.y_hi + 0.5

    def xy(self, step: float, value: float) -> tuple[int, int]:
        x = self.left + (self.right - self.left) * step / self.x_max
        t = (self.f(value) - self.y_lo) / (self.y_hi - self.y_lo)
        return int(round(x)), int(round(self.bottom - (self.bottom - self.top) * t))

    def frame(self, title: str, ticks: Sequence[float], fmt: str) -> None:
        cv2.rectangle(self.img, (self.left, self.top), (self.right, self.bottom), _GREY, 1)
        for v in ticks:
            _, y = self.xy(0, v)
            cv2.line(self.img, (self.left, y), (self.right, y), _LIGHT, 1)
            cv2.putText(self.img, fmt.format(v), (6, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        _BLACK, 1, cv2.LINE_AA)
        cv2.putText(self.img, title, (self.left, self.top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    _BLACK, 1, cv2.LINE_AA)
        for s in _step_ticks(self.x_max):
            x = int(round(self.left + (self.right - self.left) * s / self.x_max))
            cv2.putText(self.img, f"{s:d}", (x - 4 * len(str(s)), self.bottom + 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, _BLACK, 1, cv2.LINE_AA)

    def line(self, steps: Sequence[float], values: Sequence[float], color: tuple[int, int, int],
             thickness: int = 1, dots: bool = False) -> None:
        pts = [self.xy(s, v) for s, v in zip(steps, values)
               if v is not None and np.isfinite(v) and (v > 0 or not self.log)]
        if len(pts) > 1:
            cv2.polylines(self.img, [np.array(pts, np.int32)], False, color, thickness,
                          cv2.LINE_AA)
        if dots:
            for p in pts:
                cv2.circle(self.img, p, 3, color, -1, cv2.LINE_AA)


def _legend(img: np.ndarray, x: int, y: int, items: Sequence[tuple[str, tuple[int, int, int]]]
            ) -> None:
    for label, color in items:
        cv2.line(img, (x, y - 4), (x + 22, y - 4), color, 2)
        cv2.putText(img, label, (x + 28, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, _BLACK, 1,
                    cv2.LINE_AA)
        x += 40 + 8 * len(label)


def plot_history(path: str | os.PathLike[str], steps: Sequence[dict[str, Any]],
                 validations: Sequence[dict[str, Any]], total_steps: int) -> None:
    """Draw the loss/validation plot (PNG, 960x640) to `path`."""
    img = np.full((_H, _W, 3), 255, np.uint8)
    st = np.array([r["step"] for r in steps], float)
    loss = np.array([r["loss"] for r in steps], float)
    v_st = [v["step"] for v in validations]
    tr = [v.get("train_mse") for v in validations]
    va = [v.get("val_mse") for v in validations]
    iou = [v.get("val_mask_iou") for v in validations]
    vals = [x for x in [*loss.tolist(), *tr, *va] if x is not None and np.isfinite(x) and x > 0]
    lo, hi = (min(vals), max(vals)) if vals else (1e-3, 1.0)
    lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    split = _MARGIN_T + int((_H - _MARGIN_T - 2 * _GAP) * 0.68)
    top = _Panel(img, _MARGIN_T, split, total_steps, lo, hi, log=True)
    decades = range(int(round(math.log10(lo))), int(round(math.log10(hi))) + 1)
    top.frame("embedding MSE vs teacher (log)", [10.0 ** d for d in decades], "{:.0e}")
    top.line(st, loss, _LOSS)
    top.line(st, _running_mean(loss, max(1, len(loss) // 20)), _LOSS_AVG, 2)
    top.line(v_st, va, _VAL, 3, dots=True)
    top.line(v_st, tr, _TRAIN_EVAL, 1, dots=True)  # thin, on top: the two often coincide
    bottom = _Panel(img, split + _GAP, _H - _GAP + 16, total_steps, 0.0, 1.0, log=False)
    bottom.frame("held-out mask IoU vs teacher masks (same decoder, same prompts)",
                 [0.0, 0.25, 0.5, 0.75, 1.0], "{:.2f}")
    bottom.line(v_st, iou, _VAL, 2, dots=True)
    _legend(img, _MARGIN_L + 300, _MARGIN_T - 10, [("train loss", _LOSS_AVG),
                                                   ("train frames (eval)", _TRAIN_EVAL),
                                                   ("held-out", _VAL)])
    cv2.putText(img, "step", (_W // 2, _H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _BLACK, 1,
                cv2.LINE_AA)
    p = Path(path)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - PNG encoding of a plain uint8 image does not fail
        raise RuntimeError("cv2 could not encode the plot")
    atomic_write_bytes(p, buf.tobytes())
