"""SegEvery box decoding against the official MobileSAMv2 decode (golden_v2_boxes.npz)."""
import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_v2
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.engine.segevery import decode_boxes


@pytest.fixture(scope="module")
def v2():
    g = dict(np.load(shared_path("fixtures", "golden_v2_boxes.npz")))
    sam = load_v2(shared_path("fixtures", "mobilesamv2_tiny_vit_from_seed1.pt"),
                  shared_path("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt"))
    p = SamPredictor(TorchBackend(sam))
    p.set_embedding(g["embedding"], tuple(g["original_size"]))
    return g, p


def golden_masks(g):
    shape = tuple(g["masks_shape"])
    return np.unpackbits(g["masks_packed"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


@pytest.mark.parametrize("chunk", [5, 32])
def test_v2_box_decode_matches_official(v2, chunk):
    g, p = v2
    inst = decode_boxes(p, g["boxes_xyxy"], p.frame(), chunk=chunk)
    ref = golden_masks(g)
    ours = inst.dense_masks()
    assert ours.shape == ref.shape
    for a, b in zip(ours, ref):
        assert (a == b).mean() >= 0.999
    np.testing.assert_allclose(inst.areas, g["areas"], rtol=5e-3)
    np.testing.assert_allclose(inst.scores, g["iou_predictions"][:, 0], atol=1e-3)
    # the official sorts by area (descending); ties (areas 3 and 5) may come in either order
    order = np.argsort(-inst.areas, kind="stable")
    assert sorted(g["areas"][order].tolist(), reverse=True) == g["areas"][order].tolist()
    np.testing.assert_array_equal(np.sort(g["areas"])[::-1], g["areas"][g["sorted_indices"]])


def test_v2_low_res_logits_via_backend(v2):
    g, p = v2
    frame = p.frame()
    coords = p.transform.apply_coords(g["boxes_xyxy"].reshape(-1, 2, 2), tuple(g["original_size"]))
    labels = np.tile(np.array([2, 3], np.float32), (len(coords), 1))
    low, iou = p.backend.decode(frame.handle, coords.astype(np.float32), labels, None, False)
    np.testing.assert_allclose(low, g["low_res_logits"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(iou, g["iou_predictions"], atol=1e-3, rtol=0)


def test_no_boxes_gives_empty_instances(v2):
    _, p = v2
    inst = decode_boxes(p, np.zeros((0, 4), np.float32), p.frame())
    assert len(inst) == 0 and inst.image_hw == (770, 769)
