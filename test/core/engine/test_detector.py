"""YOLOv8 ONNX detector: the real int8 YOLOv8n on real images, plus tiny synthetic ONNX heads
that pin down letterbox geometry, decoding, NMS, border snap and the error messages."""
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import shared_path
from mobilesam_ros.core.engine.detector import Detections, YoloV8OnnxDetector, letterbox

MODEL = shared_path("data", "models", "yolov8n_int8.onnx")
EXPECTED = json.loads(shared_path("data", "models", "expected_detections.json").read_text())


def _rgb(*parts: str) -> np.ndarray:
    bgr = cv2.imread(str(shared_path(*parts)), cv2.IMREAD_COLOR)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def reference_detector():
    # The settings expected_detections.json was made with: conf 0.25, per-class NMS at 0.45.
    return YoloV8OnnxDetector(MODEL, conf=0.25, iou=0.45, class_agnostic=False)


# ----------------------------------------------------------------------------- real model
@pytest.mark.parametrize("image", sorted(EXPECTED["results"]))
def test_real_model_matches_expected_detections(reference_detector, image):
    img = _rgb("data", *image.split("/"))
    exp = EXPECTED["results"][image]
    assert list(img.shape[:2]) == exp["image_hw"]
    det = reference_detector.detect(img)
    assert det.boxes.dtype == np.float32 and det.class_ids.dtype == np.int32
    assert len(det) == len(exp["detections"]), det
    assert np.all(np.diff(det.scores) <= 0)  # best first
    h, w = img.shape[:2]
    assert det.boxes[:, :2].min() >= 0
    assert det.boxes[:, 2].max() <= w and det.boxes[:, 3].max() <= h
    unmatched = list(range(len(det)))
    for e in exp["detections"]:
        best = max(unmatched, key=lambda i: _iou(det.boxes[i], e["xyxy"]))
        assert _iou(det.boxes[best], e["xyxy"]) >= 0.9, (e, det.boxes[best])
        assert det.class_ids[best] == e["cls"]
        assert abs(float(det.scores[best]) - e["score"]) <= 0.02
        unmatched.remove(best)


def test_bus_and_zidane_content(reference_detector):
    names = reference_detector.names
    bus = reference_detector.detect(_rgb("data", "images", "bus.jpg"))
    assert sorted(names[c] for c in bus.class_ids) == ["bus"] + ["person"] * 4
    zid = reference_detector.detect(_rgb("data", "images", "zidane.jpg"))
    assert sorted(names[c] for c in zid.class_ids) == ["person", "person", "tie"]


def test_class_agnostic_nms_merges_car_and_truck():
    # cars.jpg: the same vehicle is a truck (0.549) and a car (0.419), IoU ~0.99.
    img = _rgb("data", "images", "cars.jpg")
    agnostic = YoloV8OnnxDetector(MODEL, conf=0.25, iou=0.45).detect(img)  # class_agnostic default
    assert len(agnostic) == 2 and agnostic.class_ids.tolist() == [7, 7]


def test_border_snap_on_bus():
    img = _rgb("data", "images", "bus.jpg")
    # the reference settings (conf 0.25, per-class NMS at 0.45), with and without the snap
    ref = dict(conf=0.25, iou=0.45, class_agnostic=False)
    plain = YoloV8OnnxDetector(MODEL, border_snap_px=0, **ref).detect(img)
    snap = YoloV8OnnxDetector(MODEL, border_snap_px=20, **ref).detect(img)
    assert len(plain) == len(snap)
    # person at x1 = 0.1 -> 0; bus x2 = 800 (8.6 input px from the right) -> 810.
    i_person = int(np.argmin(plain.boxes[:, 0]))
    assert snap.boxes[i_person, 0] == 0.0 and plain.boxes[i_person, 0] > 0
    i_bus = int(np.flatnonzero(plain.class_ids == 5)[0])
    assert snap.boxes[i_bus, 2] == 810.0 and plain.boxes[i_bus, 2] < 810
    # The rule for every coordinate: 810 x 1080 -> 480 x 640 (ratio 640 / 1080); the stride-32
    # frame is exactly the resized image, so each test is x * ratio against 20 / 460 / 620.
    r = 640 / 1080
    near = np.stack([plain.boxes[:, 0] * r < 20, plain.boxes[:, 1] * r < 20,
                     plain.boxes[:, 2] * r > 460, plain.boxes[:, 3] * r > 620], axis=1)
    target = np.broadcast_to(np.array([0, 0, 810, 1080], np.float32), plain.boxes.shape)
    np.testing.assert_allclose(snap.boxes, np.where(near, target, plain.boxes), atol=1e-3)


def test_defaults_are_mobilesam_v2s_from_the_one_owner():
    # MobileSAMv2's Inference.py: conf 0.4, iou 0.9, max_det 300, and its 20 px border snap; the
    # node, the CLI and this constructor all take them from core.config.DetectorConfig
    from mobilesam_ros.core.config import V2_DETECTOR_SETTINGS, DetectorConfig

    d = YoloV8OnnxDetector(MODEL)
    assert (d.conf, d.iou, d.max_det, d.border_snap_px) == (0.4, 0.9, 300, 20.0)
    cfg = DetectorConfig()
    assert (cfg.conf, cfg.iou, cfg.max_det, cfg.border_snap_px) == (0.4, 0.9, 300, 20.0)
    assert dict(V2_DETECTOR_SETTINGS) == {"imgsz": 1024, "conf": 0.4, "iou": 0.9, "max_det": 300,
                                          "border_snap_px": 20.0}


def _polygon_boxes(label: Path, w: int, h: int) -> np.ndarray:
    rows = []
    for line in label.read_text().splitlines():
        v = line.split()
        if len(v) < 7:
            continue
        pts = np.asarray(v[1:], np.float64).reshape(-1, 2) * (w, h)
        rows.append([*pts.min(0), *pts.max(0)])
    return np.asarray(rows, np.float64).reshape(-1, 4)


def test_recall_on_coco8_seg(reference_detector):
    # models/README.md: 19/30 = 0.633 class-agnostic recall at IoU >= 0.5 (conf 0.25, iou 0.45).
    root = shared_path("data", "coco8-seg")
    matched = total = 0
    for img_path in sorted(root.glob("images/*/*.jpg")):
        img = _rgb(*img_path.relative_to(shared_path()).parts)
        h, w = img.shape[:2]
        label = root / "labels" / img_path.parent.name / (img_path.stem + ".txt")
        gt = _polygon_boxes(label, w, h)
        det = reference_detector.detect(img)
        used = np.zeros(len(gt), bool)
        for box in det.boxes:  # greedy one-to-one in score order
            ious = np.array([_iou(box, g) if not used[k] else -1 for k, g in enumerate(gt)])
            if ious.size and ious.max() >= 0.5:
                used[ious.argmax()] = True
        matched += int(used.sum())
        total += len(gt)
    assert total == 30
    assert abs(matched - 19) <= 1, f"recall {matched}/{total}, reference 19/30"


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors(tmp_path, reference_detector):
    with pytest.raises(FileNotFoundError, match="not found"):
        YoloV8OnnxDetector(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ValueError, match="could not load detector ONNX model .*junk.onnx"):
        YoloV8OnnxDetector(junk)
    with pytest.raises(ValueError, match="fixed input size 640x640"):
        YoloV8OnnxDetector(MODEL, imgsz=1024)
    with pytest.raises(ValueError, match="dynamic"):
        YoloV8OnnxDetector(MODEL, auto_letterbox_stride=32)
    with pytest.raises(ValueError, match="conf"):
        YoloV8OnnxDetector(MODEL, conf=1.5)
    img = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        reference_detector.detect(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        reference_detector.detect(img[..., 0])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        reference_detector.detect(np.zeros((48, 64, 4), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        reference_detector.detect(img.tolist())
    with pytest.raises(ValueError, match="empty"):
        reference_detector.detect(np.zeros((0, 64, 3), np.uint8))
    assert len(reference_detector.detect(img)) == 0  # a black frame: nothing, no error


def test_detections_from_arrays_validation():
    d = Detections.from_arrays([10, 20, 30, 40])
    assert d.boxes.shape == (1, 4) and d.scores.tolist() == [1.0] and d.class_ids.tolist() == [-1]
    d = Detections.from_arrays(np.array([[0, 0, 5, 5], [1, 1, 2, 3]]), [0.5, 0.25], [3, 1])
    assert d.class_ids.dtype == np.int32 and len(d.select([1])) == 1
    assert len(Detections.from_arrays(np.zeros((0, 4)))) == 0
    for bad, msg in (([[0, 0, 0, 5]], "x2 > x1"), ([[0, 5, 5, 5]], "y2 > y1"),
                     ([[0, 0, np.nan, 5]], "NaN"), ([[0, 0, 5]], r"\(N, 4\)")):
        with pytest.raises(ValueError, match=msg):
            Detections.from_arrays(bad)
    with pytest.raises(ValueError, match="scores"):
        Detections.from_arrays([[0, 0, 5, 5]], scores=[0.1, 0.2])
    with pytest.raises(ValueError, match="integers"):
        Detections.from_arrays([[0, 0, 5, 5]], class_ids=[1.5])


# ----------------------------------------------------------------------------- letterbox
def test_letterbox_geometry():
    img = np.full((1080, 810, 3), 7, np.uint8)
    out, info = letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3) and info.resized_wh == (480, 640) and info.pad_left == 80
    assert out[0, 0, 0] == 114 and out[320, 320, 0] == 7
    out, info = letterbox(np.zeros((333, 500, 3), np.uint8), (1024, 1024), stride=32)
    # ratio 2.048 -> 1024 x 682; 342 % 32 = 22 rows of padding, 11 top / 11 bottom
    assert out.shape == (704, 1024, 3) and (info.pad_top, info.pad_left) == (11, 0)
    out, info = letterbox(np.zeros((427, 640, 3), np.uint8), (640, 640))
    assert (info.pad_top, out.shape[0] - 427 - info.pad_top) == (106, 107)  # odd pixel at bottom


# ----------------------------------------------------------------------------- synthetic heads
def _fake_yolo(path: Path, head: np.ndarray, input_shape=(1, 3, 640, 640), fp16=False,
               protos=None, metadata=None) -> Path:
    """ONNX model whose output0 is the constant `head` (the image is read, times 0)."""
    in_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    images = helper.make_tensor_value_info("images", in_type, list(input_shape))
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["mf", "zero"], ["z"]),
             helper.make_node("Add", ["head", "z"], ["output0"])]
    inits = [numpy_helper.from_array(head.astype(np.float32), "head"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))]
    if protos is not None:
        nodes.append(helper.make_node("Add", ["protos", "z"], ["output1"]))
        inits.append(numpy_helper.from_array(protos.astype(np.float32), "protos"))
        outputs.append(helper.make_tensor_value_info("output1", TensorProto.FLOAT,
                                                     list(protos.shape)))
    graph = helper.make_graph(nodes, "fake_yolo", [images], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def _head(rows, nc, n_anchors=10, extra=0):
    """rows: (cx, cy, w, h, class, score) in input px -> (1, 4 + nc + extra, n_anchors)."""
    head = np.zeros((1, 4 + nc + extra, n_anchors), np.float32)
    for a, (cx, cy, w, h, c, s) in enumerate(rows):
        head[0, :4, a] = cx, cy, w, h
        head[0, 4 + c, a] = s
    return head


# Image 480 x 320 (W x H) in a 640 x 640 frame: ratio 4/3, resized 640 x 427, pad top 106.
def _to_input(x1, y1, x2, y2):
    r, top = 4 / 3, 106
    X1, Y1, X2, Y2 = x1 * r, y1 * r + top, x2 * r, y2 * r + top
    return ((X1 + X2) / 2, (Y1 + Y2) / 2, X2 - X1, Y2 - Y1)


ROWS = [(*_to_input(100, 50, 200, 150), 0, 0.9),     # a
        (*_to_input(102, 52, 200, 150), 1, 0.8),     # near-duplicate of a, other class
        (*_to_input(300, 50, 350, 100), 0, 0.25),    # exactly at conf: dropped (strict >)
        (*_to_input(5, 100, 60, 200), 0, 0.7),       # 6.7 input px from the left edge
        (*_to_input(300, 200, 400, 315), 0, 0.6),    # 18 input px from the (stride-padded) bottom
        (*_to_input(300, 150, 400, 300), 0, 0.5)]    # 38 input px from it


def test_synthetic_decode_nms_and_scaling(tmp_path):
    path = _fake_yolo(tmp_path / "m.onnx", _head(ROWS, nc=2),
                      metadata={"names": "{0: 'a', 1: 'b'}"})
    img = np.zeros((320, 480, 3), np.uint8)
    det = YoloV8OnnxDetector(path, conf=0.25, iou=0.7, class_agnostic=False).detect(img)
    assert det.class_ids.tolist() == [0, 1, 0, 0, 0]
    np.testing.assert_allclose(det.boxes[0], [100, 50, 200, 150], atol=1e-3)
    np.testing.assert_allclose(det.boxes[1], [102, 52, 200, 150], atol=1e-3)
    np.testing.assert_allclose(det.boxes[4], [300, 150, 400, 300], atol=1e-3)
    agn = YoloV8OnnxDetector(path, conf=0.25, iou=0.7).detect(img)
    assert agn.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5])
    assert len(YoloV8OnnxDetector(path, max_det=2).detect(img)) == 2


def test_synthetic_border_snap_rule(tmp_path):
    # Official rule in the stride-32 letterbox frame: for this image that frame is 640 x 448 with
    # 10 px of gray on top and 11 below, i.e. rows 96..544 of the square 640 input.
    path = _fake_yolo(tmp_path / "m.onnx", _head(ROWS, nc=2))
    img = np.zeros((320, 480, 3), np.uint8)
    det = YoloV8OnnxDetector(path, conf=0.25, iou=0.7, border_snap_px=20).detect(img)
    by_score = {round(float(s), 2): b.tolist() for s, b in zip(det.scores, det.boxes)}
    assert by_score[0.7][0] == 0.0                                             # x1 6.7 < 20
    np.testing.assert_allclose(by_score[0.7][1:], [100, 60, 200], atol=1e-3)
    assert by_score[0.6][3] == 320.0                                           # y2 526 > 524
    np.testing.assert_allclose(by_score[0.5], [300, 150, 400, 300], atol=1e-3)  # y2 506: kept
    np.testing.assert_allclose(by_score[0.9], [100, 50, 200, 150], atol=1e-3)


def test_synthetic_dynamic_fp16_segment_and_transposed(tmp_path):
    # A segment model (nc=1 + 32 mask coefficients, protos as 2nd output), dynamic fp16 input.
    rows = [(200.0, 150.0, 100.0, 80.0, 0, 0.8)]
    head = _head(rows, nc=1, n_anchors=64, extra=32)
    head[0, 5:, 0] = 5.0  # large mask coefficients must not be read as class scores
    path = _fake_yolo(tmp_path / "seg.onnx", head, input_shape=("batch", 3, "height", "width"),
                      fp16=True, protos=np.zeros((1, 32, 8, 8)),
                      metadata={"imgsz": "[1024, 1024]", "stride": "32", "names": "{0: 'object'}"})
    d = YoloV8OnnxDetector(path, conf=0.4, iou=0.9)
    assert d.dynamic and d.input_hw == (1024, 1024)
    blob, info = d._preprocess(np.zeros((1080, 810, 3), np.uint8))
    assert blob.shape == (1, 3, 1024, 768) and blob.dtype == np.float16 and info.pad_left == 0
    det = d.detect(np.zeros((1080, 810, 3), np.uint8))  # ratio 1024 / 1080, no padding
    assert det.class_ids.tolist() == [0] and det.scores.tolist() == pytest.approx([0.8], abs=1e-3)
    np.testing.assert_allclose(det.boxes[0], np.array([150, 110, 250, 190]) * 1080 / 1024,
                               rtol=1e-4)
    with pytest.raises(ValueError, match="multiple of the model stride"):
        YoloV8OnnxDetector(path, imgsz=1000)
    # (1, A, 4 + nc) layout, as some exporters write it.
    t = np.ascontiguousarray(_head(rows, nc=3, n_anchors=8400).transpose(0, 2, 1))
    d = YoloV8OnnxDetector(_fake_yolo(tmp_path / "t.onnx", t))
    det = d.detect(np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(det.boxes[0], [150, 110, 250, 190], atol=1e-3)


def test_synthetic_unexpected_output_shapes(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    cases = {"rank2": np.zeros((1, 84)), "yolov5": np.zeros((1, 25200, 85)),
             "end2end": np.zeros((1, 300, 6))}
    for name, head in cases.items():
        d = YoloV8OnnxDetector(_fake_yolo(tmp_path / f"{name}.onnx", head))
        with pytest.raises(ValueError, match=r"expected \(1, 4 \+ nc, A\)"):
            d.detect(img)
    d = YoloV8OnnxDetector(_fake_yolo(tmp_path / "nc.onnx", np.zeros((1, 10, 8400)),
                                      metadata={"names": "{0: 'a', 1: 'b'}"}))
    with pytest.raises(ValueError, match="lists 2 classes"):
        d.detect(img)


@pytest.mark.parametrize("hw", [(2, 4000), (4000, 2), (1, 3000), (3, 19475)])
def test_letterbox_extreme_aspect(hw):
    """A side that rounds to 0 px at the detector's scale stays 1 px (cv2.resize asserts on 0)."""
    from mobilesam_ros.core.engine.detector import letterbox

    img = np.full((*hw, 3), 200, np.uint8)
    out, info = letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3) and min(info.resized_wh) >= 1
