"""SamPredictor (torch backend) against the official SamPredictor goldens: every predict() case,
refinement, the 8 batched boxes, from the stored embedding (fast) and end to end (slow)."""
import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.engine.goldens import case_kwargs
from mobilesam_ros.core.engine.goldens import unpack_masks as unpack
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.structures.prompts import make_prompt

CASES = ["p1_multi", "p1_single", "p3", "box", "boxpt", "refine"]


@pytest.fixture(scope="module")
def predictor(golden):
    p = SamPredictor(TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))))
    p.set_embedding(golden["embedding"], tuple(golden["original_size"]))
    return p


def assert_masks_match(ours, ref):
    assert ours.shape == ref.shape
    for a, b in zip(ours.reshape(len(ours), -1), ref.reshape(len(ref), -1)):
        agree = (a == b).mean()
        assert agree >= 0.999, f"mask pixel agreement {agree:.5f}"


@pytest.mark.parametrize("case", CASES)
def test_predict_cases_match_official(predictor, golden, case):
    pred = predictor.predict(**case_kwargs(golden, case))
    np.testing.assert_allclose(pred.low_res_logits, golden[f"{case}_low_res_logits"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(pred.iou, golden[f"{case}_iou"], atol=1e-3, rtol=0)
    assert_masks_match(pred.masks, unpack(golden, case))


def test_refine_uses_best_of_p1_multi(golden):
    best = int(np.argmax(golden["p1_multi_iou"]))
    assert best == int(golden["refine_best_index_from_p1_multi"])
    np.testing.assert_array_equal(golden["refine_mask_input"][0], golden["p1_multi_low_res_logits"][best])


def test_batched_boxes_match_official_and_single_calls(predictor, golden):
    prompts = [make_prompt(box=b) for b in golden["boxes8"]]
    preds = predictor.predict_batch(prompts)
    low = np.stack([p.low_res_logits for p in preds])
    np.testing.assert_allclose(low, golden["boxes8_low_res_logits"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(np.stack([p.iou for p in preds]), golden["boxes8_iou"], atol=1e-3, rtol=0)
    assert_masks_match(np.stack([p.masks[0] for p in preds]), unpack(golden, "boxes8")[:, 0])
    for k, b in enumerate(golden["boxes8"]):  # batch of N == N single calls
        single = predictor.predict(box=b, multimask_output=False)
        np.testing.assert_allclose(single.low_res_logits, preds[k].low_res_logits, atol=1e-4, rtol=0)
        # same masks up to fp32 summation order (BLAS blocks a batch of 8 differently than 1): a
        # pixel can flip only where the logit is ~0
        assert (single.masks == preds[k].masks).mean() >= 0.99999


def test_mixed_layouts_in_one_batch_equal_single_calls(predictor, golden):
    objs = [make_prompt(box=golden["box_box"]),
            make_prompt(points=golden["p3_point_coords"], labels=golden["p3_point_labels"]),
            make_prompt(points=golden["p1_multi_point_coords"], labels=golden["p1_multi_point_labels"],
                        multimask=True),
            make_prompt(box=golden["boxes8"][3])]
    preds = predictor.predict_batch(objs)
    np.testing.assert_allclose(preds[0].low_res_logits, golden["box_low_res_logits"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(preds[1].low_res_logits, golden["p3_low_res_logits"], atol=5e-3, rtol=0)
    best = int(np.argmax(golden["p1_multi_iou"]))
    np.testing.assert_allclose(preds[2].low_res_logits[0], golden["p1_multi_low_res_logits"][best], atol=5e-3, rtol=0)
    np.testing.assert_allclose(preds[3].low_res_logits[0], golden["boxes8_low_res_logits"][3, 0], atol=5e-3, rtol=0)


def test_unknown_frame_is_a_clear_error(predictor):
    from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError

    with pytest.raises(FrameNotCachedError, match="no cached frame within"):
        predictor.predict(box=np.array([1, 2, 30, 40.0]), stamp_ns=10**18)


@pytest.mark.slow
def test_end_to_end_from_image(golden):
    p = SamPredictor(TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))))
    p.set_image(golden["image"])
    emb = p.embedding()
    assert np.abs(emb - golden["embedding"]).max() <= 1e-3
    for case in ("p1_multi", "boxpt"):
        pred = p.predict(**case_kwargs(golden, case))
        np.testing.assert_allclose(pred.low_res_logits, golden[f"{case}_low_res_logits"], atol=5e-3, rtol=0)
        assert_masks_match(pred.masks, unpack(golden, case))
