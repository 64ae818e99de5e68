"""The one decode path (SamPredictor.decode_tokens) against the official goldens, the one chunking
policy by hand, and frame metadata travelling with the frame into results."""
import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.engine.segany import decode_prompts
from mobilesam_ros.core.engine.predictor import CHUNK_LOGIT_BYTES, SamPredictor
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.engine.goldens import unpack_masks as unpack
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.structures.prompts import make_prompt


@pytest.fixture(scope="module")
def predictor(golden):
    p = SamPredictor(TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))),
                     cache_size=1, keep_images=True)
    p.set_embedding(golden["embedding"], tuple(golden["original_size"]), stamp_ns=5, meta="header-5")
    return p


def test_decode_tokens_in_original_px_matches_official(predictor, golden):
    frame = predictor.frame(5)
    assert frame.meta == "header-5" and frame.input_size == tuple(golden["input_size"])
    # one positive point + SAM's padding token, given in ORIGINAL px: the path maps them to 1024
    pts = np.asarray(golden["p1_multi_point_coords"], np.float64).reshape(1, -1, 2)
    coords = np.concatenate([pts, np.zeros((1, 1, 2))], axis=1)
    labels = np.concatenate([golden["p1_multi_point_labels"].reshape(1, -1), [[-1]]], axis=1)
    out = predictor.decode_tokens(frame, coords, labels, None, multimask=True)
    assert out.low_res.shape == (1, 3, 256, 256) and out.iou.shape == (1, 3)
    np.testing.assert_allclose(out.low_res[0], golden["p1_multi_low_res_logits"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(out.iou[0], golden["p1_multi_iou"], atol=1e-3, rtol=0)
    ref = unpack(golden, "p1_multi")
    assert out.masks.shape == (1,) + ref.shape
    assert min((a == b).mean() for a, b in zip(out.masks[0], ref)) >= 0.999
    # stability, by its definition on the full-resolution logits: 1 where the masks at offsets
    # +-1 agree; bounded by [0, 1] and finite for these non-empty masks
    assert out.stability.shape == (1, 3) and np.all((out.stability >= 0) & (out.stability <= 1))
    best = predictor.decode_tokens(frame, coords, labels, None, multimask=True, select_best=True,
                                   return_masks=False)
    k = int(golden["refine_best_index_from_p1_multi"])
    assert best.masks is None and best.low_res.shape == (1, 1, 256, 256)
    np.testing.assert_array_equal(best.low_res[0, 0], out.low_res[0, k])


def test_chunk_size_by_hand(predictor):
    frame = predictor.frame(5)  # 770 x 769
    h, w = frame.original_size
    assert CHUNK_LOGIT_BYTES // (h * w * 4) == 113
    assert predictor.chunk_size(frame, 1) == 32            # decode_chunk
    assert predictor.chunk_size(frame, 3) == 32            # 268435456 // (770 * 769 * 12) = 37
    assert predictor.chunk_size(frame, 3, chunk=40) == 37  # the logit budget, not the request
    assert predictor.chunk_size(frame, 1, chunk=5) == 5


def test_iter_decode_chunks_and_check(predictor, golden):
    frame = predictor.frame(5)
    prompts = [make_prompt(box=b) for b in golden["boxes8"]]
    seen, checks = [], []
    for idxs, batch in predictor.iter_decode(frame, prompts, chunk=3, return_masks=False,
                                             check=lambda done, total: checks.append((done, total))):
        seen.append(list(idxs))
        np.testing.assert_allclose(batch.low_res, golden["boxes8_low_res_logits"][idxs], atol=5e-3, rtol=0)
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7]] and checks == [(0, 8), (3, 8), (6, 8)]


def test_results_carry_their_frame_after_eviction(golden):
    p = SamPredictor(TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))),
                     cache_size=1, keep_images=True)
    img_a = np.zeros((48, 64, 3), np.uint8)
    img_b = np.full((40, 30, 3), 200, np.uint8)
    frame_a = p.set_image(img_a, 100, meta={"frame_id": "cam_a"})
    inst = decode_prompts(p, [make_prompt(box=[4, 4, 40, 30])], frame_a).instances
    assert len(p.cache) == 1
    p.set_image(img_b, 200, meta={"frame_id": "cam_b"})  # evicts frame 100 (cache_size 1)
    assert p.cache.stamps() == [200] and len(p.cache) == 1
    # the answer still knows its own frame: stamp, image and meta (no side table to rotate out)
    assert inst.frame is frame_a and inst.frame.stamp_ns == 100
    assert inst.frame.meta == {"frame_id": "cam_a"} and inst.frame.image is img_a
    assert inst.image_hw == (48, 64) and inst.frame.original_size == (48, 64)
    # selection (the post-filter) keeps it
    assert inst.select([0]).frame is frame_a and inst.pack_bits().frame is frame_a
