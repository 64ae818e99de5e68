"""SAM's prompt encoder: points, boxes and low-res masks -> sparse tokens + dense embedding.

Faithful to the official `segment_anything` / `mobile_sam` PromptEncoder (same parameter names, same
op order, so `prompt_encoder.*` checkpoint keys load strictly and results match the goldens).
All coordinates are in the padded 1024x1024 input frame (x = column, y = row), i.e. AFTER
ResizeLongestSide; this module never sees original-image pixels.

Label convention (SAM's): 1 positive point, 0 negative point, -1 padding ("not a point"),
2 / 3 box top-left / bottom-right corner (the last two only in the unified layout of `embed_tokens`).
"""
import math
from typing import Optional, Tuple, Type

import torch
from torch import nn

from mobilesam_ros.core.modeling.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding: xy in [0,1]^2 -> (sin, cos) of 2*pi*(2xy-1) @ G."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) normalised xy -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        # fp32 even under autocast: |coords @ G| reaches ~4 (x 2*pi: ~25 rad), where rounding the
        # product to fp16 moves the phase by up to ~0.01 rad and to bf16 by ~0.1 rad
        with torch.autocast(coords.device.type, enabled=False):
            coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (h, w) grid -> (C, h, w)."""
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        # cumsum - 0.5 (not arange + 0.5) to keep the official float rounding
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        xy = torch.stack([x_embed, y_embed], dim=-1).to(self.positional_encoding_gaussian_matrix.dtype)
        pe = self._pe_encoding(xy)
        return pe.permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) xy pixels of an (H, W) frame -> (B, N, C).

        Division happens in the input dtype (float64 boxes stay float64 until here, as officially).
        """
        x = coords_input[..., 0] / image_size[1]
        y = coords_input[..., 1] / image_size[0]
        # official: .to(torch.float); the matrix's dtype is the same in fp32 and also serves fp16
        return self._pe_encoding(torch.stack([x, y], dim=-1).to(self.positional_encoding_gaussian_matrix.dtype))


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder (SAM's PromptEncoder)."""

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: Tuple[int, int] = (64, 64),
        input_image_size: Tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        self.num_point_embeddings: int = 4  # negative, positive, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)])
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the embedding grid -> (1, C, 64, 64)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_embed(self, pe: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adds the learned per-label embedding; label -1 replaces the positional part entirely.

        Written with where/multiply instead of boolean-index assignment so it traces to ONNX; adding
        an exact 0 leaves every value bit-identical to the official in-place version.
        """
        lab = labels[..., None]
        out = torch.where(lab == -1, self.not_a_point_embed.weight.to(pe.dtype), pe)
        for i in range(self.num_point_embeddings):
            out = out + (lab == i).to(pe.dtype) * self.point_embeddings[i].weight
        return out

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) xy + (B, N) labels -> (B, N [+1 padding point], C)."""
        points = points + 0.5  # pixel centre
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            pad_label = -torch.ones((labels.shape[0], 1), dtype=labels.dtype, device=labels.device)
            labels = torch.cat([labels, pad_label], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        # labels 2/3 are box corners only through _embed_boxes; a point never carries them here
        return self._label_embed(pe, torch.where(labels > 1, torch.full_like(labels, -2), labels))

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) xyxy -> (B, 2, C) corner tokens."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corners = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        return corners + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Dense embedding of a mask input: (B, 1, 256, 256) low-res logits -> (B, C, 64, 64)
        (the mask_downscaling convolutions; public for backends and the ONNX decoder graph)."""
        return self.mask_downscaling(masks)

    def _get_batch_size(self, points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def no_mask_dense(self, batch: int) -> torch.Tensor:
        """The dense embedding used when there is no mask input -> (B, C, 64, 64), an expanded view."""
        h, w = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Official prompt layout -> (sparse (B, T, C), dense (B, C, 64, 64)).

        points: (coords (B, N, 2) xy in the 1024 frame, labels (B, N) with 1/0); a padding point is
        appended when there is no box. boxes: (B, 4) xyxy in the 1024 frame (any float dtype).
        masks: (B, 1, 256, 256) low-res logits. T = N (+1 pad) (+2 box corners).
        """
        bs = self._get_batch_size(points, boxes, masks)
        weight = self.point_embeddings[0].weight
        sparse = torch.empty((bs, 0, self.embed_dim), device=weight.device, dtype=weight.dtype)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        dense = self.embed_masks(masks) if masks is not None else self.no_mask_dense(bs)
        return sparse, dense

    def embed_tokens(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Unified (SAM ONNX) layout -> sparse (B, N, C).

        coords (B, N, 2) xy in the 1024 frame; labels (B, N): 1/0 points, 2/3 box corners, -1 padding.
        The caller has already appended SAM's padding point (see core/structures/prompts.py), so this equals
        `forward(points, boxes, None)[0]` for the same prompt.
        """
        pe = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        return self._label_embed(pe, labels)
