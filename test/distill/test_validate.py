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
