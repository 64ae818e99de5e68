"""YOLOv8-style ONNX box detector: the box-prompt source of SegEvery (MobileSAMv2).

MobileSAMv2 replaces SAM's point grid with boxes from an "object-aware" YOLOv8 model. This module
runs any Ultralytics YOLOv8 detect/segment ONNX export with onnxruntime (fixed or dynamic input,
fp32/fp16 I/O, int8 inside) and reproduces Ultralytics' pre- and post-processing:

* letterbox: keep aspect, ``INTER_LINEAR``, pad with gray 114, centred; to the full input size for
  fixed-shape models (Ultralytics ``LetterBox(auto=False)``), to the next multiple of the stride
  for dynamic models (``auto=True``, what the official PyTorch predictor does);
* head output ``(1, 4 + nc [+ nm], A)``: ``cx, cy, w, h`` in input-frame px, then ``nc`` sigmoid
  class scores (no objectness), then ``nm`` mask coefficients for segment models (ignored here);
* best class per anchor, keep ``score > conf``, greedy NMS (suppress IoU > ``iou``) via
  ``cv2.dnn.NMSBoxes``, class-agnostic or per class (coordinate-offset trick), ``max_det`` best;
* optional MobileSAMv2 border snap, then back to original-image px and clipped to the image.

Nothing here imports torch or ROS.
"""
from __future__ import annotations

import ast
import os
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from mobilesam_ros.core.config import V2_DETECTOR_SETTINGS, CpuPolicy, DetectorConfig
from mobilesam_ros.core.runtime.cpu_policy import ort_session_options
from mobilesam_ros.core.structures.detections import Detections

__all__ = ["Detections", "LetterboxInfo", "YoloV8OnnxDetector", "letterbox",
           "V2_DETECTOR_SETTINGS"]

_PAD_VALUE = 114  # Ultralytics' letterbox gray


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was placed in the network-input frame: ``x_in = x_orig * ratio + pad_left``.

    ratio: resize factor; pad_left/pad_top: gray pixels before the image; resized_wh: size of the
    resized image; frame_hw: size of the padded frame fed to the network.
    """

    ratio: float
    pad_left: int
    pad_top: int
    resized_wh: tuple[int, int]
    frame_hw: tuple[int, int]


def letterbox(image: np.ndarray, new_hw: tuple[int, int], stride: int = 0
              ) -> tuple[np.ndarray, LetterboxInfo]:
    """Ultralytics-equivalent letterbox of an (H, W, C) image into a `new_hw` target.

    stride == 0: pad to exactly `new_hw` (``LetterBox(auto=False)``). stride > 0: pad only up to
    the next multiple of `stride` (``auto=True``), so the frame is at most `new_hw`.
    Returns the padded (h, w, C) image (same dtype) and the placement.
    """
    h, w = image.shape[:2]
    r = min(new_hw[0] / h, new_hw[1] / w)
    # Python's round() (half to even) as Ultralytics does, so sizes match theirs exactly.
    # At least 1 px: a side that rounds to 0 (e.g. 4000x2 into 640) would make cv2.resize assert.
    new_w, new_h = max(1, int(round(w * r))), max(1, int(round(h * r)))
    dw, dh = new_hw[1] - new_w, new_hw[0] - new_h
    if stride:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    # The -0.1/+0.1 puts an odd leftover pixel at the bottom/right, exactly like Ultralytics.
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                               value=(_PAD_VALUE,) * 3)
    frame_hw = (new_h + top + bottom, new_w + left + right)
    info = LetterboxInfo(r, left, top, (new_w, new_h), frame_hw)
    return image, info


def _validate_image(image) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError("image must be a numpy array (H, W, 3) uint8 RGB, got "
                        f"{type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")


def _parse_metadata(meta: Mapping[str, str], key: str):
    """Ultralytics stores dicts/lists as Python literals in the ONNX metadata."""
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _as_hw(imgsz) -> tuple[int, int]:
    if isinstance(imgsz, (int, np.integer)):
        hw = (int(imgsz), int(imgsz))
    else:
        seq = tuple(int(v) for v in imgsz)
        if len(seq) != 2:
            raise ValueError(f"imgsz must be an int or (h, w), got {imgsz!r}")
        hw = seq
    if min(hw) < 1:
        raise ValueError(f"imgsz must be positive, got {imgsz!r}")
    return hw


class YoloV8OnnxDetector:
    """Ultralytics YOLOv8 detect/segment ONNX model -> :class:`Detections` in original-image px.

    model_path: .onnx file (``YOLO(...).export(format='onnx')``, see
        tools/export_object_aware_model.py).
    imgsz: network input size, int or (h, w). None = the model's fixed input size, or for a
        dynamic model the ``imgsz`` in its metadata (640 if absent). A fixed-shape model only
        accepts its own size.
    conf: keep anchors whose best class score is > conf. iou: NMS suppresses boxes with IoU > iou.
    max_det: at most this many boxes (best first). conf, iou, max_det and border_snap_px default
        to core.config.DetectorConfig's (MobileSAMv2's settings).
    providers: onnxruntime execution providers, names or (name, options) pairs (default: CPU;
        pipelines pass runtime/ort_providers.detector_providers). TensorRT is dropped: the detector
        is an int8 graph that TensorRT would turn into an unchecked engine (see detector_providers).
    class_agnostic: one NMS over all classes (True) or per class (False, Ultralytics' default).
    border_snap_px: MobileSAMv2's rule (0 = off; 20 in the official code): after NMS, in the
        network input frame, x1 < t -> 0, y1 < t -> 0, x2 > W_in - t -> W_in, y2 > H_in - t ->
        H_in; after undoing the letterbox and clipping this lands exactly on the image border.
        For a fixed-shape model the rule is applied in the frame the official stride-padded
        letterbox would have used (so the gray bars of a square input do not disable it); for a
        dynamic model that is the input frame itself.
    auto_letterbox_stride: letterbox padding. None = the model stride (metadata, else 32) for
        dynamic models, 0 (pad to the full imgsz) for fixed-shape models; > 0 needs a dynamic
        model.
    cpu: threading of the ONNX Runtime session (core.runtime.cpu_policy; default CpuPolicy()).
    """

    def __init__(self, model_path: str | os.PathLike, imgsz: int | Sequence[int] | None = None,
                 conf: float = DetectorConfig.conf, iou: float = DetectorConfig.iou,
                 max_det: int = DetectorConfig.max_det, providers: Sequence[str] | None = None,
                 class_agnostic: bool = True, border_snap_px: float = DetectorConfig.border_snap_px,
                 auto_letterbox_stride: int | None = None,
                 cpu: "CpuPolicy | None" = None, sessions: int = 1) -> None:
        import onnxruntime as ort  # heavy import kept out of module import time

        from mobilesam_ros.core.runtime.session_pool import SessionPool

        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {conf}")
        if not 0.0 <= iou <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {iou}")
        if int(max_det) < 1:
            raise ValueError(f"max_det must be >= 1, got {max_det}")
        if border_snap_px < 0:
            raise ValueError(f"border_snap_px must be >= 0, got {border_snap_px}")
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.class_agnostic = bool(class_agnostic)
        self.border_snap_px = float(border_snap_px)

        path = os.fspath(model_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"detector ONNX file not found: {path}")
        opts = ort_session_options(cpu or CpuPolicy())
        providers = [p for p in (providers or ["CPUExecutionProvider"])
                     if (p if isinstance(p, str) else p[0]) != "TensorrtExecutionProvider"]
        self.providers = providers or ["CPUExecutionProvider"]
        def make():
            try:
                return ort.InferenceSession(path, sess_options=opts, providers=self.providers)
            except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
                raise ValueError(f"could not load detector ONNX model {path}: "
                                 f"{type(e).__name__}: {e}") from e

        # one session per concurrent caller (threads sharing one run no faster: runtime/session_pool.py)
        self._sessions = SessionPool(make, sessions)
        self._session = self._sessions.first
        self.model_path = path

        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{path}: expected one image input of shape (1, 3, H, W), got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        inp = inputs[0]
        if inp.type not in ("tensor(float)", "tensor(float16)"):
            raise ValueError(f"{path}: input {inp.name!r} must be float32/float16, got {inp.type}")
        self._input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        in_h, in_w = inp.shape[2], inp.shape[3]
        self.dynamic = not (isinstance(in_h, int) and isinstance(in_w, int))
        if inp.shape[1] not in (3, None) and isinstance(inp.shape[1], int):
            raise ValueError(f"{path}: input {inp.name!r} must have 3 channels, shape {inp.shape}")

        meta = self._session.get_modelmeta().custom_metadata_map
        names = _parse_metadata(meta, "names")
        self.names: dict[int, str] = ({int(k): str(v) for k, v in names.items()}
                                      if isinstance(names, dict) else {})
        stride = _parse_metadata(meta, "stride")
        stride = int(max(stride) if isinstance(stride, (list, tuple)) else stride or 32)
        self.stride = stride

        if self.dynamic:
            meta_sz = _parse_metadata(meta, "imgsz")
            self.imgsz = _as_hw(imgsz if imgsz is not None else (meta_sz or 640))
            if self.imgsz[0] % stride or self.imgsz[1] % stride:
                raise ValueError(f"imgsz {self.imgsz} must be a multiple of the model stride "
                                 f"{stride}")
            self.auto_stride = (stride if auto_letterbox_stride is None
                                else int(auto_letterbox_stride))
        else:
            fixed = (int(in_h), int(in_w))
            if imgsz is not None and _as_hw(imgsz) != fixed:
                raise ValueError(f"{path} has a fixed input size {fixed[0]}x{fixed[1]}; "
                                 f"imgsz={imgsz} is not possible (re-export with that imgsz or "
                                 "with dynamic=True)")
            if auto_letterbox_stride:
                raise ValueError(f"auto_letterbox_stride={auto_letterbox_stride} needs a "
                                 f"dynamic-shape model; {path} has a fixed input size "
                                 f"{fixed[0]}x{fixed[1]}")
            self.imgsz = fixed
            self.auto_stride = 0
        if self.auto_stride < 0:
            raise ValueError(f"auto_letterbox_stride must be >= 0, got {auto_letterbox_stride}")

        outputs = self._session.get_outputs()
        self._output_name = outputs[0].name
        # A segment model's second output is the (1, nm, mh, mw) prototype tensor: nm mask
        # coefficients follow the class scores in output0 and must not be read as classes.
        self._num_mask_coeffs = 0
        if len(outputs) > 1 and len(outputs[1].shape) == 4:
            nm = outputs[1].shape[1]
            self._num_mask_coeffs = int(nm) if isinstance(nm, int) else 32  # YOLOv8-seg: 32
        self._output_names = [self._output_name]
        self.last_timings: dict[str, float] = {}

    # ------------------------------------------------------------------ public API
    @property
    def input_hw(self) -> tuple[int, int]:
        """Target size of the letterbox (h, w) in network-input px."""
        return self.imgsz

    def detect(self, image: np.ndarray, conf: Optional[float] = None, iou: Optional[float] = None) -> Detections:
        """Detect objects in one (H, W, 3) uint8 RGB image, at confidence `conf` and NMS IoU `iou`
        (None: the detector's own `conf` / `iou`; given per call, so threads that share one
        detector never change each other's settings).

        Returns :class:`Detections` with boxes (N, 4) float32 xyxy in original-image px (clipped to
        [0, W] x [0, H]), best score first, at most `max_det`. Timings of the three stages are kept
        in ``self.last_timings`` (dict, ms; the last call's, from whichever thread).
        """
        _validate_image(image)
        t0 = time.perf_counter()
        blob, info = self._preprocess(image)
        t1 = time.perf_counter()
        with self._sessions.lend() as sess:
            raw = sess.run(self._output_names, {self._input_name: blob})[0]
        t2 = time.perf_counter()
        dets = self._postprocess(raw, info, image.shape[:2], self.conf if conf is None else float(conf),
                                 self.iou if iou is None else float(iou))
        t3 = time.perf_counter()
        self.last_timings = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                             "postprocess_ms": (t3 - t2) * 1e3}
        return dets

    __call__ = detect

    # ------------------------------------------------------------------ stages
    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, LetterboxInfo]:
        padded, info = letterbox(image, self.imgsz, self.auto_stride)
        # HWC uint8 RGB -> NCHW float in [0, 1]; no mean/std (Ultralytics).
        blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=self._input_dtype)
        blob /= self._input_dtype(255.0)  # divide, as Ultralytics does (bit-identical input)
        return blob, info

    def _split_head(self, raw: np.ndarray, info: LetterboxInfo) -> tuple[np.ndarray, np.ndarray]:
        """(1, 4+nc[+nm], A) -> boxes (A, 4) cxcywh, class scores (A, nc)."""
        fh, fw = info.frame_hw
        n_anchors = sum((fh // s) * (fw // s) for s in (8, 16, 32))
        chans = str(4 + len(self.names)) if self.names else "4 + nc"
        if self._num_mask_coeffs:
            chans += f" + {self._num_mask_coeffs} mask coefficients"
        expected = (f"expected (1, 4 + nc, A) = (1, {chans}, {n_anchors}) for a {fh}x{fw} input "
                    "(YOLOv8 head, strides 8/16/32)")
        if raw.ndim != 3 or raw.shape[0] != 1:
            raise ValueError(f"unexpected detector output shape {raw.shape}: {expected}")
        pred = raw[0]
        # Some exporters emit (1, A, C); the anchor count tells the two layouts apart.
        if pred.shape[0] == n_anchors and pred.shape[1] != n_anchors:
            pred = pred.T
        if pred.shape[0] > pred.shape[1]:  # more channels than anchors: not a YOLOv8 head
            raise ValueError(f"unexpected detector output shape {raw.shape}: {expected}")
        nc = pred.shape[0] - 4 - self._num_mask_coeffs
        if self.names and nc != len(self.names):
            raise ValueError(f"unexpected detector output shape {raw.shape}: the model metadata "
                             f"lists {len(self.names)} classes; {expected}")
        if nc < 1:
            raise ValueError(f"unexpected detector output shape {raw.shape}: {expected}")
        pred = pred.astype(np.float32, copy=False)
        return pred[:4].T, pred[4:4 + nc].T

    def _postprocess(self, raw: np.ndarray, info: LetterboxInfo, image_hw: tuple[int, int],
                     conf: float, iou: float) -> Detections:
        cxcywh, cls_scores = self._split_head(raw, info)
        class_ids = cls_scores.argmax(axis=1)
        scores = cls_scores[np.arange(cls_scores.shape[0]), class_ids]
        keep = np.flatnonzero(scores > conf)
        if keep.size == 0:
            return Detections.empty()
        cxcywh, scores, class_ids = cxcywh[keep], scores[keep], class_ids[keep].astype(np.int32)
        half = cxcywh[:, 2:] / 2
        xyxy = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)

        keep = self._nms(xyxy, scores, class_ids, iou)
        xyxy, scores, class_ids = xyxy[keep], scores[keep], class_ids[keep]
        if self.border_snap_px > 0:
            xyxy = self._snap_to_border(xyxy, info)

        boxes = (xyxy.astype(np.float64) - [info.pad_left, info.pad_top] * 2) / info.ratio
        h, w = image_hw
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        # A box lying entirely in the gray padding collapses to zero size: useless as a prompt.
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(boxes[ok].astype(np.float32), scores[ok].astype(np.float32),
                          class_ids[ok])

    def _nms(self, xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float) -> np.ndarray:
        """Greedy NMS, best first; indices into the inputs, at most max_det."""
        boxes = xyxy.astype(np.float64)  # cv2 takes doubles (Rect2d): offsets lose no precision
        if not self.class_agnostic:
            # Shift each class into its own disjoint region so one NMS call never mixes classes
            # (the span, not max + 1: raw YOLO boxes can have negative coordinates).
            offset = class_ids.astype(np.float64) * (boxes.max() - boxes.min() + 1.0)
            boxes = boxes + offset[:, None]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        # score_threshold 0: scores were already filtered (strictly > conf >= 0); top_k must stay 0
        # because OpenCV applies it to the candidates before NMS, not to the kept boxes.
        keep = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, iou)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        return keep[: self.max_det]

    def _snap_to_border(self, xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
        """MobileSAMv2's adjust_bboxes_to_image_border, in the stride-padded letterbox frame."""
        t = self.border_snap_px
        s = self.auto_stride or self.stride
        new_w, new_h = info.resized_wh
        # Padding the official (stride-padded) letterbox would have added on each side.
        dw, dh = ((self.imgsz[1] - new_w) % s) / 2, ((self.imgsz[0] - new_h) % s) / 2
        left = info.pad_left - int(round(dw - 0.1))
        top = info.pad_top - int(round(dh - 0.1))
        right = info.pad_left + new_w + int(round(dw + 0.1))
        bottom = info.pad_top + new_h + int(round(dh + 0.1))
        out = xyxy.copy()
        out[:, 0] = np.where(out[:, 0] < left + t, left, out[:, 0])
        out[:, 1] = np.where(out[:, 1] < top + t, top, out[:, 1])
        out[:, 2] = np.where(out[:, 2] > right - t, right, out[:, 2])
        out[:, 3] = np.where(out[:, 3] > bottom - t, bottom, out[:, 3])
        return out
