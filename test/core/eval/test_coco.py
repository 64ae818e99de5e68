"""COCO RLE, YOLO-seg ground truth and mask AR/AP against values computed by hand."""
import json

import numpy as np
import pytest
from conftest import shared_path
from pycocotools import mask as mask_utils

from mobilesam_ros.core.eval.coco import (GroundTruthError, decode_rle, encode_rle, load_ground_truth,
                                          mask_ar_ap, parse_yolo_seg_line, rasterize_polygons,
                                          yolo_seg_to_coco)


# ----------------------------------------------------------------------------- RLE and rasters
def test_rle_of_a_tiny_mask_by_hand():
    m = np.zeros((3, 3), bool)
    m[1, 1] = True
    # column-major runs: 4 zeros, 1 one, 4 zeros
    np.testing.assert_array_equal(decode_rle({"size": [3, 3], "counts": [4, 1, 4]}), m)
    rle = encode_rle(m)
    assert rle["size"] == [3, 3] and isinstance(rle["counts"], str)
    json.dumps(rle)
    np.testing.assert_array_equal(decode_rle(rle), m)


def test_square_polygon_rasterised_by_hand():
    # COCO's raster takes the pixels whose centres lie inside: x, y in [1, 4) -> pixels 1..3
    want = np.zeros((6, 6), bool)
    want[1:4, 1:4] = True
    np.testing.assert_array_equal(rasterize_polygons([[1, 1, 4, 1, 4, 4, 1, 4]], 6, 6), want)


def _hand_raster(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Even-odd ray casting at pixel centres (x + 0.5, y + 0.5): an independent rasteriser."""
    ys, xs = np.mgrid[0:h, 0:w]
    px, py = xs.ravel() + 0.5, ys.ravel() + 0.5
    inside = np.zeros(px.shape, bool)
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        crosses = (b > py) != (d > py)
        xc = a + (py - b) * (c - a) / np.where(d == b, 1, d - b)
        inside ^= crosses & (px < xc)
    return inside.reshape(h, w)


def test_coco128_polygons_match_a_hand_raster():
    import cv2

    lab = shared_path("data", "coco128-seg", "labels", "train2017", "000000000009.txt")
    img = cv2.imread(str(shared_path("data", "coco128-seg", "images", "train2017", "000000000009.jpg")))
    h, w = img.shape[:2]
    lines = lab.read_text().splitlines()
    assert len(lines) >= 5
    for ln in lines[:5]:
        cls, poly = parse_yolo_seg_line(ln, h, w, "x")
        raw = np.array([float(v) for v in ln.split()[1:]]).reshape(-1, 2)
        np.testing.assert_allclose(np.array(poly).reshape(-1, 2), raw * [w, h])  # px = norm * size
        ours = rasterize_polygons([poly], h, w)
        hand = _hand_raster(np.array(poly).reshape(-1, 2), h, w)
        # Only pixels on the outline may differ (COCO snaps vertices to a 1/5 px lattice first).
        inter, union = (ours & hand).sum(), (ours | hand).sum()
        assert inter / union > 0.99, (cls, inter, union)
        k = np.ones((3, 3), np.uint8)
        h8 = hand.astype(np.uint8)
        outline = cv2.dilate(h8, k).astype(bool) & ~cv2.erode(h8, k).astype(bool)
        assert not ((ours ^ hand) & ~outline).any()


def _coco8_val():
    return yolo_seg_to_coco(shared_path("data", "coco8-seg", "labels", "val"),
                            shared_path("data", "coco8-seg", "images", "val"))


def test_coco8_seg_labels_become_coco_instances():
    gt = _coco8_val()
    assert [i["file_name"] for i in gt["images"]] == ["000000000036.jpg", "000000000042.jpg",
                                                     "000000000049.jpg", "000000000061.jpg"]
    n_lines = sum(len(p.read_text().split("\n")) - (p.read_text().endswith("\n"))
                  for p in shared_path("data", "coco8-seg", "labels", "val").glob("*.txt"))
    assert len(gt["annotations"]) == n_lines
    a = gt["annotations"][0]
    assert a["image_id"] == 1 and a["iscrowd"] == 0 and a["area"] > 0


def test_json_ground_truth_is_matched_to_the_image_folder(tmp_path):
    gt = _coco8_val()
    p = tmp_path / "gt.json"
    p.write_text(json.dumps({**gt, "images": [{**i, "file_name": "val2017/" + i["file_name"]}
                                              for i in gt["images"]]}))
    back = load_ground_truth(p, shared_path("data", "coco8-seg", "images", "val"))
    assert [i["file_name"] for i in back["images"]] == [i["file_name"] for i in gt["images"]]
    assert len(back["annotations"]) == len(gt["annotations"])
    with pytest.raises(GroundTruthError):
        load_ground_truth(tmp_path / "missing.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(GroundTruthError):
        load_ground_truth(bad, shared_path("data", "coco8-seg", "images", "val"))


# ----------------------------------------------------------------------------- AR / AP
def _gt(masks_per_image):
    images, anns = [], []
    for i, masks in enumerate(masks_per_image, 1):
        h, w = masks[0].shape
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for m in masks:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "segmentation": encode_rle(m), "area": float(m.sum()),
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "o"}]}


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _res(image_id, m, score):
    return {"image_id": image_id, "segmentation": encode_rle(m), "score": score}


def test_ground_truth_as_its_own_prediction_scores_one():
    ms = [[_box(40, 40, 0, 10, 0, 10), _box(40, 40, 20, 35, 5, 30)], [_box(40, 40, 5, 25, 5, 25)]]
    res = [_res(i, m, 0.9) for i, group in enumerate(ms, 1) for m in group]
    s = mask_ar_ap(_gt(ms), res)
    assert s.ar == {10: 1.0, 100: 1.0, 1000: 1.0} and s.ap == pytest.approx(1.0)


def test_half_the_objects_found_by_hand():
    ms = [[_box(40, 40, 0, 10, 0, 10), _box(40, 40, 20, 35, 5, 30)]]
    s = mask_ar_ap(_gt(ms), [_res(1, ms[0][0], 0.9)])
    # recall 1/2 at every IoU threshold; precision 1 up to recall 0.5: 51 of COCO's 101 points
    assert s.ar[100] == pytest.approx(0.5) and s.ap == pytest.approx(51 / 101)


def test_a_mask_of_iou_072_by_hand():
    gt = _box(40, 40, 0, 10, 0, 10)            # 100 px
    pred = _box(40, 40, 0, 9, 0, 8)            # 72 px inside it: IoU 0.72
    s = mask_ar_ap(_gt([[gt]]), [_res(1, pred, 0.9)])
    # matched at thresholds 0.50 .. 0.70 (5 of 10), missed at 0.75 .. 0.95
    assert s.ar[10] == pytest.approx(0.5) and s.ap == pytest.approx(0.5)


def test_ar_at_k_counts_only_the_k_best_by_hand():
    objs = [_box(60, 60, r * 12, r * 12 + 10, c * 12, c * 12 + 10) for r in range(3) for c in range(4)]
    res = [_res(1, m, 1.0 - 0.01 * k) for k, m in enumerate(objs)]     # 12 exact masks
    res.append(_res(1, _box(60, 60, 50, 60, 50, 60), 0.995))            # one miss ranked 2nd
    s = mask_ar_ap(_gt([objs]), res, max_dets=(1, 10, 100))
    assert s.ar[1] == pytest.approx(1 / 12)       # the best mask is a hit
    assert s.ar[10] == pytest.approx(9 / 12)      # top 10 = 9 hits + the miss
    assert s.ar[100] == pytest.approx(1.0)


def test_no_predictions_and_no_ground_truth():
    ms = [[_box(10, 10, 0, 5, 0, 5)]]
    assert mask_ar_ap(_gt(ms), []).ar[100] == 0.0
    empty = {"images": [{"id": 1, "file_name": "a", "height": 4, "width": 4}], "annotations": [],
             "categories": []}
    assert np.isnan(mask_ar_ap(empty, []).ap)
