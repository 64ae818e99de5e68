"""The trainer's validation and `mobilesam eval segany` share one mask IoU (core/eval/metrics.py)."""
import torch

from mobilesam_ros.core.eval import metrics
from mobilesam_ros.distill import validate


def test_validation_uses_the_core_mask_iou():
    assert validate.mask_iou is metrics.mask_iou


def test_validation_iou_on_torch_masks_by_hand():
    a = torch.zeros((2, 3, 3), dtype=torch.bool)
    b = torch.zeros((2, 3, 3), dtype=torch.bool)
    a[0, 0, :] = True         # 3 px
    b[0, :, 0] = True         # 3 px, 1 shared -> 1 / 5
    got = validate.mask_iou(a, b).float()   # mask 1: both empty -> 1
    torch.testing.assert_close(got, torch.tensor([0.2, 1.0]))


def _faithful_masks(sam, embedding, size_hw, points_per_side):
    """The validation prompts through the faithful modules (modeling/, held to the official
    goldens), upsampled and thresholded as validate.py documents: the reference for decode_masks."""
    import torch.nn.functional as F

    pe, md = sam.prompt_encoder, sam.mask_decoder
    dense_pe = pe.get_dense_pe()
    pts = torch.from_numpy(validate.grid_points(size_hw, points_per_side))[:, None]
    with torch.no_grad():
        sparse, dense = pe((pts, torch.ones(pts.shape[:2])), None, None)
        low_p, _ = md(embedding, dense_pe, sparse, dense, multimask_output=True)
        sparse, dense = pe(None, torch.from_numpy(validate.prompt_boxes(size_hw)), None)
        low_b, _ = md(embedding, dense_pe, sparse, dense, multimask_output=False)
        low = torch.cat([low_p.flatten(0, 1), low_b.flatten(0, 1)])[:, None]
        up = F.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
    h, w = size_hw
    return up[:, 0, :h, :w] > 0


def test_decode_masks_equal_the_faithful_decoder_on_a_real_embedding():
    """decode_masks runs the fast decoder; on seed2's embedding of a real photo its masks are
    the faithful decoder's (sign flips only where a logit rounds across 0)."""
    import numpy as np
    from conftest import shared_path

    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.runtime.fast_decoder import FastMaskDecoder

    sam = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed2.pt"))
    emb = torch.from_numpy(np.load(shared_path("fixtures", "golden_seed2.npz"))["embedding"])
    size = (1024, 1023)
    got = validate.decode_masks(FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder), emb, size, 2)
    want = _faithful_masks(sam, emb, size, 2)
    assert got.shape == want.shape == (3 * 4 + len(validate.BOX_FRACTIONS), 1024, 1023)
    area = want.flatten(1).sum(1)
    assert (area > 1000).sum() >= len(want) // 2  # real masks, not empty ones that agree trivially
    differ = (got != want).flatten(1).sum(1)
    assert int(differ.max()) <= 20, differ.tolist()  # measured: 2 px of ~1M
