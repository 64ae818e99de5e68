"""FastMaskDecoder (exact rewrites of the mask decoder) against the official goldens.

Same goldens and tolerances as test_decoder_golden.py (logits atol 5e-3, IoU atol 1e-3); the
upscaling golden is held to 1e-5 because it is the only check of the ConvTranspose2d tap order.
Every decode test runs with the low-rank first upsampling conv (rewrite 5) on and off.
"""
import numpy as np
import pytest
import torch

from mobilesam_ros.core.io.checkpoints import load_v2
from mobilesam_ros.core.runtime.fast_decoder import FastMaskDecoder
from mobilesam_ros.core.modeling.prompt_encoder import PromptEncoder
from conftest import shared_path
from test_decoder_golden import CASES, IOU_ATOL, LOGIT_ATOL, case_prompts, upscaling_golden


@pytest.fixture(scope="module", params=[True, False], ids=["lowrank", "plain"])
def fast(sam, request):
    return FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder, lowrank_upscale=request.param)


@pytest.fixture(scope="module")
def ctx(fast, golden):
    return fast.prepare(torch.from_numpy(golden["embedding"]))


@pytest.mark.parametrize("case", CASES)
def test_predict_cases(fast, ctx, golden, case):
    points, box, mask = case_prompts(golden, case)
    low, iou = fast.decode_prompts(ctx, points, box, mask, multimask=bool(golden[f"{case}_multimask_output"]))
    want = golden[f"{case}_low_res_logits"]
    assert low.shape == (1,) + want.shape and iou.shape == (1, want.shape[0])
    np.testing.assert_allclose(low[0].numpy(), want, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou[0].numpy(), golden[f"{case}_iou"], rtol=0, atol=IOU_ATOL)


def test_all_mask_tokens(fast, ctx, golden):
    """multimask=None returns tokens 0..3: token 0 is p1_single's mask, 1..3 are p1_multi's."""
    points, _, _ = case_prompts(golden, "p1_multi")
    low, iou = fast.decode_prompts(ctx, points, multimask=None)
    assert low.shape == (1, 4, 256, 256) and iou.shape == (1, 4)
    np.testing.assert_allclose(low[0, :1].numpy(), golden["p1_single_low_res_logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(low[0, 1:].numpy(), golden["p1_multi_low_res_logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou[0, :1].numpy(), golden["p1_single_iou"], rtol=0, atol=IOU_ATOL)
    np.testing.assert_allclose(iou[0, 1:].numpy(), golden["p1_multi_iou"], rtol=0, atol=IOU_ATOL)


def test_boxes8_batched_chunked_and_single(fast, ctx, golden):
    """8 boxes in one call, in uneven chunks, and one at a time: all equal the batched golden."""
    boxes = torch.from_numpy(golden["boxes8_transformed"])
    want_low, want_iou = golden["boxes8_low_res_logits"], golden["boxes8_iou"]
    sparse, _ = fast.pe(None, boxes, None)
    for splits in ([8], [3, 5], [1] * 8):
        parts = [fast.decode(ctx, s, None, multimask=False) for s in torch.split(sparse, splits)]
        low, iou = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        np.testing.assert_allclose(low.numpy(), want_low, rtol=0, atol=LOGIT_ATOL, err_msg=f"chunks {splits}")
        np.testing.assert_allclose(iou.numpy(), want_iou, rtol=0, atol=IOU_ATOL, err_msg=f"chunks {splits}")


def test_batched_mask_inputs(fast, ctx, golden):
    """Per-prompt dense embeddings (mask input) take the unshared path; batch of 2 = golden twice."""
    points, _, mask = case_prompts(golden, "refine")
    points = (points[0].repeat(2, 1, 1), points[1].repeat(2, 1))
    low, iou = fast.decode_prompts(ctx, points, None, mask.repeat(2, 1, 1, 1), multimask=False)
    for i in range(2):
        np.testing.assert_allclose(low[i].numpy(), golden["refine_low_res_logits"], rtol=0, atol=LOGIT_ATOL)
        np.testing.assert_allclose(iou[i].numpy(), golden["refine_iou"], rtol=0, atol=IOU_ATOL)


def test_context_is_not_modified(fast, ctx, golden):
    before = {k: v.clone() for k, v in vars(ctx).items() if isinstance(v, torch.Tensor)}
    points, box, mask = case_prompts(golden, "boxpt")
    fast.decode_prompts(ctx, points, box, mask, multimask=False)
    fast.decode_prompts(ctx, *case_prompts(golden, "refine"), multimask=False)
    for k, v in before.items():
        assert torch.equal(v, getattr(ctx, k)), k


@pytest.fixture(scope="module")
def v2():
    return load_v2(shared_path("fixtures", "mobilesamv2_tiny_vit_from_seed1.pt"),
                   shared_path("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt"))


@pytest.mark.parametrize("lowrank", [True, False], ids=["lowrank", "plain"])
def test_v2_prompt_guided_decoder_boxes(v2, lowrank):
    g = np.load(shared_path("fixtures", "golden_v2_boxes.npz"))
    fast = FastMaskDecoder(v2.prompt_encoder, v2.mask_decoder, lowrank_upscale=lowrank)
    ctx = fast.prepare(torch.from_numpy(g["embedding"]))
    low, iou = fast.decode_prompts(ctx, boxes=torch.from_numpy(g["boxes_transformed"]), multimask=False)
    np.testing.assert_allclose(low.numpy(), g["low_res_logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou.numpy(), g["iou_predictions"], rtol=0, atol=IOU_ATOL)


def test_output_upscaling_tap_order():
    """Per-pixel matmul + pixel shuffle must place every ConvTranspose2d tap where torch does."""
    md, u = upscaling_golden()
    out = FastMaskDecoder(PromptEncoder().eval(), md).upscale_nchw(torch.from_numpy(u["input"]))
    assert out.shape == u["output"].shape
    assert float((out - torch.from_numpy(u["output"])).abs().max()) <= 1e-5
