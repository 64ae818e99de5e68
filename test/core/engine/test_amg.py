"""SegEvery grid mode (SAM's automatic mask generator) against the official goldens amgnonms_ /
amg_ (16x16, from the stored embedding) and amgall_ (32x32, slow); crops, the crop-edge filter,
cross-crop NMS and small-region removal on a synthetic backend (no golden exists for those)."""
import json
import time

import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.engine.amg import AutomaticMaskGenerator
from mobilesam_ros.core.ops.amg_grid import (box_near_crop_edge, build_all_layer_point_grids,
                                         build_point_grid, generate_crop_boxes,
                                         remove_small_regions, xyxy_to_xywh)
from mobilesam_ros.core.runtime.base import Backend
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.engine.predictor import SamPredictor

STAMP = 17


class MemoBackend(Backend):
    """Test-only: memoises decode() so the two 16x16 goldens (same grid, same batches) share
    one set of decoder passes."""

    name = "memo"

    def __init__(self, inner: Backend) -> None:
        self.inner, self.memo, self.calls = inner, {}, 0

    def encode(self, x):
        return self.inner.encode(x)

    def handle_from_embedding(self, embedding):
        return self.inner.handle_from_embedding(embedding)

    def embedding(self, handle):
        return self.inner.embedding(handle)

    def decode(self, handle, coords, labels, mask_input, multimask):
        key = (id(handle), coords.tobytes(), labels.tobytes(), mask_input is None, multimask)
        if key not in self.memo:
            self.calls += 1
            self.memo[key] = self.inner.decode(handle, coords, labels, mask_input, multimask)
        return self.memo[key]


@pytest.fixture(scope="module")
def predictor(golden):
    sam = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))
    p = SamPredictor(MemoBackend(TorchBackend(sam)))
    p.set_embedding(golden["embedding"], tuple(golden["original_size"]), stamp_ns=STAMP)
    return p


def params(g, prefix):
    prm = json.loads(str(g[f"{prefix}params_json"]))
    assert prm.pop("output_mode") == "binary_mask"
    return prm


def compare_to_golden(res, g, prefix):
    """Assert the README tolerances; return the max deviation per field."""
    shape = tuple(g[f"{prefix}segmentations_shape"])
    n = shape[0]
    inst = res.instances
    assert len(res) == n, f"{len(res)} masks, official {n}"
    dev = {}
    bbox = xyxy_to_xywh(inst.boxes.astype(np.float64))
    dev["bbox_px"] = float(np.abs(bbox - g[f"{prefix}bbox"]).max(initial=0))
    dev["area_rel"] = float(np.abs(inst.areas / g[f"{prefix}area"] - 1).max(initial=0))
    dev["predicted_iou"] = float(np.abs(inst.scores - g[f"{prefix}predicted_iou"]).max(initial=0))
    dev["stability"] = float(np.abs(inst.stability - g[f"{prefix}stability_score"]).max(initial=0))
    dev["point_coords"] = float(np.abs(res.point_coords - g[f"{prefix}point_coords"][:, 0]).max(initial=0))
    dev["crop_box"] = float(np.abs(xyxy_to_xywh(res.crop_boxes) - g[f"{prefix}crop_box"]).max(initial=0))
    ref = np.unpackbits(g[f"{prefix}segmentations_packed"], axis=-1, count=shape[-1]).astype(bool)
    agree = [float((inst.mask(i) == ref[i]).mean()) for i in range(n)]
    dev["mask_disagree"] = 1 - min(agree, default=1.0)
    print(f"\n{prefix} deviations: {dev}")
    assert dev["bbox_px"] <= 1
    assert dev["area_rel"] <= 5e-3
    assert dev["predicted_iou"] <= 1e-3
    assert dev["stability"] <= 1e-3
    assert dev["point_coords"] <= 1e-6
    assert dev["crop_box"] == 0
    assert dev["mask_disagree"] <= 1e-3
    return dev


def run_golden(predictor, golden, prefix):
    gen = AutomaticMaskGenerator(predictor, **params(golden, prefix))
    t0 = time.perf_counter()
    res = gen.generate(golden["image"], stamp_ns=STAMP)
    dt = time.perf_counter() - t0
    print(f"\n{prefix} generate(): {dt:.1f} s (official {float(golden[f'{prefix}time_s']):.1f} s), "
          f"stages {({k: round(v, 2) for k, v in res.timings.items()})}")
    assert res.timings["encode"] < 0.5  # the cached embedding was used, no encoder pass
    return res


def test_amgnonms_75_masks_match_official(predictor, golden):
    res = run_golden(predictor, golden, "amgnonms_")
    compare_to_golden(res, golden, "amgnonms_")
    assert np.all(np.diff(res.instances.scores) <= 0)  # NMS order: predicted IoU descending


def test_amg_16_matches_official(predictor, golden):
    res = run_golden(predictor, golden, "amg_")
    compare_to_golden(res, golden, "amg_")
    rec = res.records()[0]
    assert rec["bbox"] == golden["amg_bbox"][0].tolist() and rec["crop_box"] == [0, 0, 769, 770]


@pytest.mark.slow
def test_amgall_32_matches_official(predictor, golden):
    res = run_golden(predictor, golden, "amgall_")
    compare_to_golden(res, golden, "amgall_")


# ---------------------------------------------------------------------------------- geometry
def test_point_grid_layout():
    np.testing.assert_allclose(build_point_grid(2), [[.25, .25], [.75, .25], [.25, .75], [.75, .75]])
    grids = build_all_layer_point_grids(32, 2, 2)
    assert [len(g) for g in grids] == [1024, 256, 64]


def test_crop_boxes_picture1_layer1():
    boxes, layers = generate_crop_boxes((770, 769), 1, 512 / 1500)
    # overlap int(0.3413 * 769) = 262, crop sides ceil((262 + 769|770) / 2) = 516, x0/y0 in {0, 254}
    assert boxes == [[0, 0, 769, 770], [0, 0, 516, 516], [0, 254, 516, 770], [254, 0, 769, 516],
                     [254, 254, 769, 770]]
    assert layers == [0, 1, 1, 1, 1]
    assert len(generate_crop_boxes((100, 200), 2, 0.3)[0]) == 1 + 4 + 16


def test_box_near_crop_edge():
    crop, orig = [100, 0, 300, 200], [0, 0, 400, 200]
    boxes = np.array([[0, 50, 50, 150],     # x0 at the inner edge x=100 -> near
                      [30, 50, 150, 150],   # inside, > 20 px from inner edges
                      [50, 0, 150, 199],    # touches top/bottom: image edges, fine
                      [50, 50, 185, 150]])  # x1 = 285, 15 px from the inner edge x=300 -> near
    np.testing.assert_array_equal(box_near_crop_edge(boxes, crop, orig), [True, False, False, True])
    whole = [0, 0, 400, 200]
    assert not box_near_crop_edge(boxes, whole, whole).any()


def test_remove_small_regions_synthetic():
    m = np.zeros((60, 80), bool)
    m[10:50, 10:50] = True
    m[20:23, 20:23] = False      # 9 px hole
    m[5:7, 70:72] = True         # 4 px island
    filled, changed = remove_small_regions(m, 20, "holes")
    assert changed and filled[20:23, 20:23].all() and filled[5:7, 70:72].all()
    assert np.count_nonzero(filled) == np.count_nonzero(m) + 9
    cleaned, changed = remove_small_regions(filled, 20, "islands")
    assert changed and not cleaned[5:7, 70:72].any() and np.count_nonzero(cleaned) == 1600
    same, changed = remove_small_regions(cleaned, 20, "islands")
    assert not changed and np.array_equal(same, cleaned)
    # every island small: the largest one survives
    two = np.zeros((20, 20), bool)
    two[1:3, 1:3] = True
    two[10:13, 10:13] = True
    kept, changed = remove_small_regions(two, 50, "islands")
    assert changed and np.array_equal(kept, np.pad(np.ones((3, 3), bool), ((10, 7), (10, 7))))
    # 8-connectivity: diagonal pixels are one region
    diag = np.eye(6, dtype=bool)
    assert not remove_small_regions(diag, 6, "islands")[1]
    assert remove_small_regions(diag, 7, "islands")[0].sum() == 6


# ---------------------------------------------------------------------------------- synthetic
class DiscBackend(Backend):
    """Decoder stand-in: for a point P (1024 frame) mask k is a disc of radius R[k] around P, as
    logits (R - d) / 4 on the 256² low-res grid. With `holes`, mask 1 gets a small hole and a small
    island. predicted IoU depends on k and on P so there are no ties."""

    name = "disc"
    R = (40.0, 90.0, 200.0)

    def __init__(self, holes: bool = False) -> None:
        self.holes, self.encodes = holes, 0

    def encode(self, x):
        self.encodes += 1
        return object()

    def handle_from_embedding(self, embedding):
        return object()

    def embedding(self, handle):
        return np.zeros((1, 256, 64, 64), np.float32)

    def decode(self, handle, coords, labels, mask_input, multimask):
        assert multimask and mask_input is None and np.all(labels == [1, -1])
        c = (np.arange(256, dtype=np.float32) + 0.5) * 4
        px, py = coords[:, 0, 0, None, None], coords[:, 0, 1, None, None]
        d = np.hypot(c[None, None, :] - px, c[None, :, None] - py)  # (B, 256, 256)
        low = np.stack([(r - d) / 4 for r in self.R], 1)
        if self.holes:
            hole = np.hypot(c[None, None, :] - px - 45, c[None, :, None] - py) - 12
            island = 12 - np.hypot(c[None, None, :] - px, c[None, :, None] - py - 150)
            low[:, 1] = np.maximum(np.minimum(low[:, 1], hole / 4), island / 4)
        iou = 0.9 + 0.03 * np.arange(3)[None] + 1e-5 * (px[:, 0] + 2 * py[:, 0])
        return low.astype(np.float32), iou.astype(np.float32)


def box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_crop_layer_masks_lie_in_their_crops():
    backend = DiscBackend()
    p = SamPredictor(backend)
    img = np.zeros((300, 400, 3), np.uint8)
    gen = AutomaticMaskGenerator(p, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.5,
                                 crop_n_layers=1, crop_n_points_downscale_factor=2)
    res = gen.generate(img, stamp_ns=5)
    crops, _ = generate_crop_boxes((300, 400), 1, 512 / 1500)
    assert backend.encodes == 5 and p.cache.stamps() == [5]  # crops never enter the cache
    assert len(res) > 0
    assert {tuple(c) for c in res.crop_boxes.tolist()} <= {tuple(c) for c in crops}
    assert any(tuple(c) != (0, 0, 400, 300) for c in res.crop_boxes.tolist())
    inst = res.instances
    for i in range(len(res)):
        m = inst.mask(i)
        x0, y0, x1, y1 = res.crop_boxes[i]
        outside = m.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any(), "mask pixels outside its crop"
        px, py = res.point_coords[i]
        assert x0 <= px < x1 and y0 <= py < y1 and m[int(py), int(px)]  # uncropped consistently
        bx0, by0, bx1, by1 = inst.boxes[i]
        assert np.array_equal([bx0, by0, bx1, by1], np.r_[np.nonzero(m.any(0))[0][[0, -1]],
                                                          np.nonzero(m.any(1))[0][[0, -1]]][[0, 2, 1, 3]])
        assert inst.areas[i] == m.sum()
        crop_local = inst.boxes[i:i + 1] - np.array([x0, y0, x0, y0])
        assert not box_near_crop_edge(crop_local, [int(v) for v in res.crop_boxes[i]], [0, 0, 400, 300]).any()
    for i in range(len(res)):  # cross-crop NMS left no pair above its threshold
        for j in range(i + 1, len(res)):
            assert box_iou(inst.boxes[i], inst.boxes[j]) <= 0.7
    # with several crops, smaller crops come first (score 1 / crop area)
    areas = (res.crop_boxes[:, 2] - res.crop_boxes[:, 0]) * (res.crop_boxes[:, 3] - res.crop_boxes[:, 1])
    assert np.all(np.diff(areas) >= 0)


def test_cached_frame_reused_and_image_optional():
    backend = DiscBackend()
    p = SamPredictor(backend)
    img = np.zeros((120, 160, 3), np.uint8)
    p.set_image(img, stamp_ns=9)
    gen = AutomaticMaskGenerator(p, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                 box_nms_thresh=1.0, points_per_batch=5)
    a = gen.generate(img, stamp_ns=9)
    b = gen.generate(None, stamp_ns=9)
    assert backend.encodes == 1 and len(a) == 48  # 16 points x 3 masks, nothing filtered
    np.testing.assert_array_equal(a.instances.masks, b.instances.masks)
    np.testing.assert_array_equal(a.point_coords, b.point_coords)
    assert np.all(np.diff(a.instances.scores) <= 0)
    gen.generate(img)  # no stamp: encodes under a new automatic stamp
    assert backend.encodes == 2
    with pytest.raises(ValueError):
        gen.generate(None, stamp_ns=12345)


def test_min_mask_region_area_removes_holes_and_islands():
    p = SamPredictor(DiscBackend(holes=True))
    img = np.zeros((200, 240, 3), np.uint8)
    kw = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    raw = AutomaticMaskGenerator(p, **kw).generate(img, stamp_ns=1)
    res = AutomaticMaskGenerator(p, min_mask_region_area=60, **kw).generate(img, stamp_ns=1)
    changed = []
    for i in range(len(raw)):
        filled, holes = remove_small_regions(raw.instances.mask(i), 60, "holes")
        changed.append(holes or remove_small_regions(filled, 60, "islands")[1])
    assert any(changed) and not all(changed)
    inst = res.instances
    for i in range(len(res)):
        m = inst.mask(i)
        assert not remove_small_regions(m, 60, "holes")[1] and not remove_small_regions(m, 60, "islands")[1]
        assert inst.areas[i] == m.sum()
        ys, xs = np.nonzero(m)
        np.testing.assert_array_equal(inst.boxes[i], [xs.min(), ys.min(), xs.max(), ys.max()])
    # NMS after clean-up scores unchanged masks 1 and changed 0: unchanged ones come first
    n_unchanged = len(changed) - sum(changed)
    assert len(res) == len(raw)  # NMS at max(1.0, 0.7) suppresses nothing
    unchanged_iou = raw.instances.scores[~np.array(changed)]
    np.testing.assert_array_equal(inst.scores[:n_unchanged], unchanged_iou)
