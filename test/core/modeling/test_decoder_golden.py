"""Faithful prompt encoder + two-way transformer + mask decoder against the official goldens.

No image encoder runs: the stored golden `embedding` is decoded directly. Prompts are mapped from
original-image pixels to the 1024 input frame here, independently of the package's transforms.
Tolerances from shared/fixtures/README.md: low-res logits atol 5e-3, IoU atol 1e-3.
"""
import numpy as np
import pytest
import torch

from mobilesam_ros.core.io.checkpoints import load_v2
from mobilesam_ros.core.modeling.mask_decoder import MaskDecoder
from mobilesam_ros.core.modeling.transformer import TwoWayTransformer
from conftest import shared_path

LOGIT_ATOL, IOU_ATOL = 5e-3, 1e-3
CASES = ["p1_multi", "p1_single", "p3", "box", "boxpt", "refine"]


def preprocess_shape(old_h: int, old_w: int, long_side: int = 1024) -> tuple:
    """Official ResizeLongestSide.get_preprocess_shape: int(x * scale + 0.5)."""
    scale = long_side * 1.0 / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


def to_input_frame(xy: np.ndarray, original_size, input_size) -> np.ndarray:
    """(..., 2) original-pixel xy -> 1024-frame xy; float64 arithmetic as the official apply_coords,
    float32 result as SamPredictor.predict's torch.as_tensor(..., dtype=float)."""
    out = np.array(xy, dtype=np.float64)
    out[..., 0] = out[..., 0] * (input_size[1] / original_size[1])
    out[..., 1] = out[..., 1] * (input_size[0] / original_size[0])
    return out.astype(np.float32)


def case_prompts(g, case: str):
    """The golden case's prompts as PromptEncoder.forward arguments (batch 1, 1024 frame)."""
    orig = tuple(int(v) for v in g["original_size"])
    inp = preprocess_shape(*orig)
    points = box = mask = None
    if f"{case}_point_coords" in g:
        coords = to_input_frame(g[f"{case}_point_coords"], orig, inp)
        points = (torch.from_numpy(coords)[None], torch.from_numpy(g[f"{case}_point_labels"])[None])
    if f"{case}_box" in g:
        box = torch.from_numpy(to_input_frame(g[f"{case}_box"].reshape(2, 2), orig, inp).reshape(1, 4))
    if f"{case}_mask_input" in g:
        mask = torch.from_numpy(g[f"{case}_mask_input"])[None]
    return points, box, mask


def test_input_size_matches_golden(golden):
    assert preprocess_shape(*golden["original_size"]) == tuple(golden["input_size"])


@pytest.mark.parametrize("case", CASES)
def test_predict_cases(sam, golden, case):
    points, box, mask = case_prompts(golden, case)
    emb = torch.from_numpy(golden["embedding"])
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points, box, mask)
        low, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense,
                                    multimask_output=bool(golden[f"{case}_multimask_output"]))
    want = golden[f"{case}_low_res_logits"]
    assert low.shape == (1,) + want.shape
    np.testing.assert_allclose(low[0].numpy(), want, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou[0].numpy(), golden[f"{case}_iou"], rtol=0, atol=IOU_ATOL)


def test_sparse_token_counts(sam, golden):
    """SAM's layout: a padding point only when there is no box; two tokens per box."""
    want = {"p1_multi": 2, "p3": 4, "box": 2, "boxpt": 3, "refine": 3}
    for case, n in want.items():
        points, box, mask = case_prompts(golden, case)
        sparse, dense = sam.prompt_encoder(points, box, mask)
        assert sparse.shape == (1, n, 256) and dense.shape == (1, 256, 64, 64)


@pytest.mark.parametrize("case", ["p3", "boxpt"])
def test_unified_token_layout(sam, golden, case):
    """embed_tokens (points, then box corners labelled 2/3, padding -1) decodes to the golden."""
    points, box, _ = case_prompts(golden, case)
    coords, labels = points
    labels = labels.float()
    if box is None:
        coords = torch.cat([coords, torch.zeros(1, 1, 2)], 1)
        labels = torch.cat([labels, -torch.ones(1, 1)], 1)
    else:
        coords = torch.cat([coords, box.view(1, 2, 2)], 1)
        labels = torch.cat([labels, torch.tensor([[2.0, 3.0]])], 1)
    emb = torch.from_numpy(golden["embedding"])
    with torch.inference_mode():
        sparse = sam.prompt_encoder.embed_tokens(coords, labels)
        low, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse,
                                    sam.prompt_encoder.no_mask_dense(1), multimask_output=False)
    np.testing.assert_allclose(low[0].numpy(), golden[f"{case}_low_res_logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou[0].numpy(), golden[f"{case}_iou"], rtol=0, atol=IOU_ATOL)


def test_boxes8_batched_and_single(sam, golden):
    """One call with 8 boxes, and 8 calls with one box each, both reproduce the batched golden."""
    boxes = torch.from_numpy(golden["boxes8_transformed"])
    np.testing.assert_allclose(boxes.numpy(), to_input_frame(golden["boxes8"].reshape(8, 2, 2), golden["original_size"],
                                                             golden["input_size"]).reshape(8, 4), atol=1e-4)
    emb = torch.from_numpy(golden["embedding"])
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(None, boxes, None)
        low, iou = sam.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
        singles = [sam.mask_decoder(emb, pe, *sam.prompt_encoder(None, boxes[i:i + 1], None), multimask_output=False)
                   for i in range(8)]
    np.testing.assert_allclose(low.numpy(), golden["boxes8_low_res_logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou.numpy(), golden["boxes8_iou"], rtol=0, atol=IOU_ATOL)
    np.testing.assert_allclose(torch.cat([s[0] for s in singles]).numpy(), golden["boxes8_low_res_logits"],
                               rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(torch.cat([s[1] for s in singles]).numpy(), golden["boxes8_iou"], rtol=0, atol=IOU_ATOL)


def test_v2_prompt_guided_decoder_boxes():
    """MobileSAMv2 decode (float64 transformed boxes, simple_type, multimask off) vs golden_v2_boxes."""
    g = np.load(shared_path("fixtures", "golden_v2_boxes.npz"))
    v2 = load_v2(shared_path("fixtures", "mobilesamv2_tiny_vit_from_seed1.pt"),
                 shared_path("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt"))
    boxes = torch.from_numpy(g["boxes_transformed"])
    assert boxes.dtype == torch.float64
    with torch.inference_mode():
        sparse, dense = v2.prompt_encoder(points=None, boxes=boxes, masks=None)
        low, iou = v2.mask_decoder(torch.from_numpy(g["embedding"]), v2.prompt_encoder.get_dense_pe(), sparse, dense,
                                   multimask_output=False, simple_type=True)
    np.testing.assert_allclose(low.numpy(), g["low_res_logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(iou.numpy(), g["iou_predictions"], rtol=0, atol=IOU_ATOL)


def upscaling_golden():
    """(MaskDecoder whose output_upscaling holds the golden's all-different taps, the golden npz)."""
    u = np.load(shared_path("fixtures", "golden_upscaling.npz"))
    md = MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(2, 256, 8, 2048)).eval()
    prefix = "output_upscaling."
    md.output_upscaling.load_state_dict(
        {k[len(prefix):]: torch.from_numpy(u[k]) for k in u.files if k.startswith(prefix)}, strict=True)
    return md, u


def test_output_upscaling_tap_order():
    """ConvTranspose2d taps all differ here: catches flipped/reordered taps (seeded checkpoints cannot)."""
    md, u = upscaling_golden()
    with torch.inference_mode():
        out = md.output_upscaling(torch.from_numpy(u["input"]))
    assert out.shape == u["output"].shape
    assert float((out - torch.from_numpy(u["output"])).abs().max()) <= 1e-5
