"""The `Sam` container: image encoder + prompt encoder + mask decoder.

Attribute names match the official `mobile_sam.modeling.Sam`, so the official flat checkpoint
(`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`) loads into it with `strict=True`.
"""
from typing import Optional

import torch
from torch import nn

from mobilesam_ros.core.modeling.tiny_vit import build_tiny_vit_5m


class Sam(nn.Module):
    """Holds the three networks. Mapping images into the model frame and masks back out is not a
    network's job: see ops/transforms.py (normalize_and_pad, postprocess_masks)."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024)."""
        return int(self.image_encoder.img_size)


def build_sam_decoder() -> tuple[nn.Module, nn.Module]:
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
