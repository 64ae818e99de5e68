"""Mask post-processing: NMS semantics, stability, mask boxes, label image, bit packing."""
import numpy as np
import pytest
import torch

from conftest import shared_path
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.ops.postprocess import (box_nms, mask_nms, masks_to_boxes, pack_masks,
                                            stability_score, unpack_masks)


# ----------------------------------------------------------------------------- references
def _ref_nms(boxes, scores, thr):
    """Brute force, one pair at a time, float32 scalars: torchvision's documented rule."""
    b = [[np.float32(v) for v in row] for row in np.asarray(boxes, np.float32)]
    order = sorted(range(len(b)), key=lambda i: -float(scores[i]))  # sorted() is stable
    keep, dead = [], set()
    for a, i in enumerate(order):
        if i in dead:
            continue
        keep.append(i)
        for j in order[a + 1:]:
            if j in dead:
                continue
            iw = max(np.float32(0), min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            ih = max(np.float32(0), min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = iw * ih
            ai = (b[i][2] - b[i][0]) * (b[i][3] - b[i][1])
            aj = (b[j][2] - b[j][0]) * (b[j][3] - b[j][1])
            if float(inter / (ai + aj - inter)) > thr:
                dead.add(j)
    return keep


def _random_boxes(rng, n, span=100.0):
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def _ref_mask_nms(masks, scores, thr):
    order = sorted(range(len(masks)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        ok = True
        for k in keep:
            inter = np.logical_and(masks[i], masks[k]).sum()
            union = np.logical_or(masks[i], masks[k]).sum()
            if union and inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


# ----------------------------------------------------------------------------- box_nms
def test_box_nms_hand_cases():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)  # IoU(0, 1) = 90 / 110 = 0.818
    assert box_nms(boxes, scores, 0.8).tolist() == [0, 2]
    assert box_nms(boxes, scores, 0.85).tolist() == [0, 1, 2]
    # IoU exactly 0.5 is not > 0.5: kept.
    half = np.array([[0, 0, 4, 1], [0, 0, 2, 1]], np.float32)
    assert box_nms(half, np.array([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert box_nms(half, np.array([1.0, 0.5]), 0.49).tolist() == [0]
    # Equal scores: the earlier box wins (stable sort).
    assert box_nms(boxes[:2], np.array([0.5, 0.5]), 0.5).tolist() == [0]
    assert box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 0.95])
def test_box_nms_matches_brute_force(thr):
    rng = np.random.default_rng(int(thr * 100))
    boxes = _random_boxes(rng, 150)
    scores = rng.choice(np.linspace(0, 1, 20), 150).astype(np.float32)  # many ties
    assert box_nms(boxes, scores, thr).tolist() == _ref_nms(boxes, scores, thr)


def test_box_nms_torch_in_torch_out():
    rng = np.random.default_rng(3)
    boxes, scores = _random_boxes(rng, 40), rng.random(40).astype(np.float32)
    keep = box_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.int64
    assert keep.tolist() == box_nms(boxes, scores, 0.5).tolist()


def test_batched_box_nms_both_paths():
    rng = np.random.default_rng(7)
    for n in (200, 1500):  # 800 coords -> offset trick; 6000 coords -> per-class path
        boxes = _random_boxes(rng, n)
        scores = rng.random(n).astype(np.float32)
        idxs = rng.integers(0, 4, n)
        keep = box_nms(boxes, scores, 0.5, idxs=idxs)
        if n == 200:
            off = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
            ref = _ref_nms(boxes + off[:, None], scores, 0.5)
        else:
            ref = []
            for c in range(4):
                cur = np.flatnonzero(idxs == c)
                ref += cur[_ref_nms(boxes[cur], scores[cur], 0.5)].tolist()
            ref.sort(key=lambda i: -scores[i])
        assert keep.tolist() == ref
        # No two kept boxes of one class overlap by more than the threshold.
        kept_by_class = {c: set(keep[idxs[keep] == c].tolist()) for c in range(4)}
        for c, ks in kept_by_class.items():
            sub = np.flatnonzero(idxs == c)
            assert set(sub[_ref_nms(boxes[sub], scores[sub], 0.5)].tolist()) == ks


def test_box_nms_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        box_nms(np.zeros((3, 4)), np.zeros(2), 0.5)


# ----------------------------------------------------------------------------- stability
def test_stability_score_hand_example():
    logits = np.array([[[2.0, 1.0, 0.5], [-0.5, -1.0, -2.0]],      # >1: 1 px, >-1: 4 px
                       [[-3.0, -3.0, -3.0], [-3.0, -1.0, -2.0]],   # 0 / 0
                       [[5.0, 5.0, 0.0], [0.0, 0.0, 0.0]]]).astype(np.float32)  # 2 / 6
    s = stability_score(logits, 0.0, 1.0)
    assert s.dtype == np.float32 and s.shape == (3,)
    assert s[0] == pytest.approx(0.25) and np.isnan(s[1]) and s[2] == pytest.approx(1 / 3)
    # threshold shifts both cut-offs: > 1.5 -> 1 px ({2}); > -0.5 -> 3 px ({2, 1, 0.5})
    assert stability_score(logits[:1], threshold=0.5, offset=1.0)[0] == pytest.approx(1 / 3)
    t = stability_score(torch.from_numpy(logits), 0.0, 1.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), s)


# ----------------------------------------------------------------------------- mask boxes
def test_masks_to_boxes_known_shapes():
    m = np.zeros((4, 6, 8), bool)
    m[0, 1:4, 2:7] = True               # rectangle rows 1..3, cols 2..6
    m[1, 5, 7] = True                   # single pixel in the last corner
    m[3, 0, 3] = m[3, 4, 0] = True      # two separate pixels
    b = masks_to_boxes(m)
    assert b.dtype == np.int64
    assert b.tolist() == [[2, 1, 6, 3], [7, 5, 7, 5], [0, 0, 0, 0], [0, 0, 3, 4]]
    assert masks_to_boxes(m.reshape(2, 2, 6, 8)).shape == (2, 2, 4)
    t = masks_to_boxes(torch.from_numpy(m))
    assert isinstance(t, torch.Tensor) and t.tolist() == b.tolist()
    assert masks_to_boxes(np.zeros((0, 6, 8), bool)).shape == (0, 4)


# ----------------------------------------------------------------------------- mask NMS
def test_mask_nms_matches_brute_force():
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:60, :80]
    masks = []
    for _ in range(40):
        cx, cy, r = rng.uniform(0, 80), rng.uniform(0, 60), rng.uniform(3, 20)
        masks.append((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)
    masks.append(masks[0].copy())           # exact duplicate
    masks.append(np.zeros((60, 80), bool))  # empty
    masks = np.stack(masks)
    scores = rng.random(len(masks))
    for thr in (0.1, 0.5, 0.8):
        assert mask_nms(masks, scores, thr).tolist() == _ref_mask_nms(masks, scores, thr)
    keep = mask_nms(torch.from_numpy(masks), torch.from_numpy(scores), 0.9)
    assert not ({0, 40} <= set(keep.tolist()))  # the duplicate pair never survives together


# ----------------------------------------------------------------------------- Instances
def _three_squares():
    m = np.zeros((3, 10, 12), bool)
    m[0, 0:6, 0:6] = True
    m[1, 3:9, 3:9] = True
    m[2, 2:4, 8:12] = True
    return m


def test_label_image_higher_score_wins():
    m = _three_squares()
    inst = Instances.from_masks(m, np.array([0.5, 0.9, 0.7]))
    lab = inst.to_label_image()
    assert lab.dtype == np.uint16 and lab.shape == (10, 12)
    assert lab[4, 4] == 2          # overlap of 0 and 1: instance 1 (score 0.9)
    assert lab[3, 8] == 2          # overlap of 1 and 2: instance 1 again
    assert lab[2, 10] == 3 and lab[0, 0] == 1 and lab[9, 0] == 0
    # Equal scores: the lower index wins.
    tie = Instances.from_masks(m, np.array([0.8, 0.8, 0.8])).to_label_image(np.uint8)
    assert tie[4, 4] == 1 and tie[3, 8] == 2
    with pytest.raises(ValueError, match="fit"):
        Instances.from_masks(np.zeros((300, 2, 2), bool), np.zeros(300)).to_label_image(np.uint8)


def test_instances_fields_select_crops():
    m = _three_squares()
    inst = Instances.from_masks(m, [0.5, 0.9, 0.7], stability=[0.96, np.nan, 0.99],
                                class_ids=[0, 5, 0], det_scores=[0.8, 0.7, 0.6])
    assert inst.areas.tolist() == [36, 36, 8]
    assert inst.boxes.tolist() == [[0, 0, 5, 5], [3, 3, 8, 8], [8, 2, 11, 3]]
    assert inst.select([1, 2, 0]).scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert inst.select(inst.areas >= 10).class_ids.tolist() == [0, 5]
    crops = list(inst.crops())
    assert [(x, y, c.shape) for x, y, c in crops] == [(0, 0, (6, 6)), (3, 3, (6, 6)),
                                                       (8, 2, (2, 4))]
    assert all(c.all() for _, _, c in crops)
    both = Instances.concatenate([inst, inst.select([2])])
    assert len(both) == 4 and both.det_scores[-1] == pytest.approx(0.6)
    empty = Instances.empty((10, 12))
    assert len(empty) == 0 and empty.to_label_image().max() == 0
    with pytest.raises(ValueError, match="scores"):
        Instances(m, inst.boxes, inst.scores[:2], inst.stability, inst.areas, inst.class_ids,
                  inst.det_scores, (10, 12))


def test_box_and_mask_nms_drop_the_duplicate():
    m = _three_squares()
    m = np.concatenate([m, m[:1]])  # duplicate of instance 0, lower score
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert box_nms(masks_to_boxes(m).astype(np.float32), scores, 0.7).tolist() == [0, 1, 2]
    assert mask_nms(m, scores, 0.7).tolist() == [0, 1, 2]


def test_pack_unpack_round_trip_against_golden():
    z = np.load(shared_path("fixtures", "golden_seed1.npz"))
    packed, shape = z["boxes8_masks_packed"], tuple(z["boxes8_masks_shape"])
    dense = np.unpackbits(packed, axis=-1, count=shape[-1]).astype(bool).reshape(shape)[:, 0]
    assert dense.any()
    inst = Instances.from_masks(dense, z["boxes8_iou"][:, 0])
    p = inst.pack_bits()
    assert p.packed and p.masks.dtype == np.uint8 and p.masks.shape == (8, 770, 97)
    np.testing.assert_array_equal(p.masks, packed[:, 0])            # same bits as the golden
    np.testing.assert_array_equal(p.unpack_bits().masks, dense)
    np.testing.assert_array_equal(unpack_masks(pack_masks(dense), 769), dense)
    np.testing.assert_array_equal(p.mask(3), dense[3])
    # Packed and dense storage give the same derived outputs.
    np.testing.assert_array_equal(p.to_label_image(), inst.to_label_image())
    for (xa, ya, ca), (xb, yb, cb) in zip(p.crops(), inst.crops()):
        assert (xa, ya) == (xb, yb) and np.array_equal(ca, cb)
    with pytest.raises(ValueError, match="width"):
        unpack_masks(packed[:, 0], 700)


def test_packed_crops_equal_dense_crops_random_and_empty():
    """crops() of packed masks (box found on the packed bytes, only the box unpacked) equals the
    dense path, for boxes at every bit offset, touching both image edges, and for empty masks."""
    rng = np.random.default_rng(3)
    masks = np.zeros((12, 37, 53), bool)
    for k in range(10):
        x0, y0 = rng.integers(0, 50), rng.integers(0, 34)
        masks[k, y0:y0 + rng.integers(1, 20), x0:x0 + rng.integers(1, 30)] = rng.random() > 0.0
        masks[k] &= rng.random(masks[k].shape) > 0.3
    masks[10, :, 0] = masks[10, 0, :] = masks[10, -1, -1] = True    # image edges; masks[11] empty
    inst = Instances.from_masks(masks, np.ones(12, np.float32))
    for (xa, ya, ca), (xb, yb, cb) in zip(inst.pack_bits().crops(), inst.crops()):
        assert (xa, ya) == (xb, yb) and ca.dtype == cb.dtype == bool and np.array_equal(ca, cb)
