"""The `Sam` container (image encoder + prompt encoder + mask decoder) and its pre/post-processing.

Attribute names match the official `mobile_sam.modeling.Sam`, so the official flat checkpoint
(`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`) loads into it with `strict=True`.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from mobilesam_ros.core.ops.transforms import PIXEL_MEAN, PIXEL_STD, normalize_and_pad, postprocess_masks
from mobilesam_ros.core.modeling.tiny_vit import build_tiny_vit_5m


class Sam(nn.Module):
    """Holds the three networks; `preprocess` / `postprocess_masks` map between image and model frames."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module,
                 pixel_mean: Sequence[float] = PIXEL_MEAN, pixel_std: Sequence[float] = PIXEL_STD) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Constants, not weights: official checkpoints do not store them (persistent=False).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024)."""
        return int(self.image_encoder.img_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resized image(s) (B, 3, h, w), RGB 0..255, h, w <= img_size -> (B, 3, img_size, img_size)
        float32: normalised per channel, zero-padded bottom/right."""
        return normalize_and_pad(x, self.img_size, self.pixel_mean, self.pixel_std)

    def postprocess_masks(self, masks: torch.Tensor, input_size: Tuple[int, int],
                          original_size: Tuple[int, int]) -> torch.Tensor:
        """Low-res mask logits (B, C, 256, 256) -> logits (B, C, H, W) in the original frame.

        Bilinear (align_corners=False) up to img_size x img_size, crop the padding away to
        input_size (h, w), then bilinear to original_size (H, W) — the official two-step order.
        """
        return postprocess_masks(masks, input_size, original_size, self.img_size)


def build_sam_decoder() -> Tuple[nn.Module, nn.Module]:
    """(PromptEncoder, MaskDecoder) with SAM's hyperparameters and random weights: 256-d
    embeddings on a 64x64 grid of a 1024x1024 input. The same in SAM ViT-B/L/H, MobileSAM and
    MobileSAMv2, so every checkpoint's `prompt_encoder.*` / `mask_decoder.*` loads into it."""
    # Imported here so the encoder and this module are usable on their own.
    from mobilesam_ros.core.modeling.mask_decoder import MaskDecoder
    from mobilesam_ros.core.modeling.prompt_encoder import PromptEncoder
    from mobilesam_ros.core.modeling.transformer import TwoWayTransformer

    embed_dim, img_size = 256, 1024
    prompt_encoder = PromptEncoder(embed_dim=embed_dim, image_embedding_size=(img_size // 16, img_size // 16),
                                   input_image_size=(img_size, img_size), mask_in_chans=16)
    mask_decoder = MaskDecoder(
        transformer_dim=embed_dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)
    return prompt_encoder, mask_decoder


def build_mobile_sam(image_encoder: Optional[nn.Module] = None) -> Sam:
    """MobileSAM `vit_t` in eval mode: TinyViT-5M encoder (or `image_encoder`, e.g. one already
    loaded), SAM prompt encoder and mask decoder with random weights. To load weights use
    `mobilesam_ros.core.io.checkpoints.load_mobile_sam` / `load_v2`."""
    prompt_encoder, mask_decoder = build_sam_decoder()
    return Sam(image_encoder=build_tiny_vit_5m(1024) if image_encoder is None else image_encoder,
               prompt_encoder=prompt_encoder, mask_decoder=mask_decoder).eval()
