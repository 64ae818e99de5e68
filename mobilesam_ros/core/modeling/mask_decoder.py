"""SAM's mask decoder (used by MobileSAM v1 and, with `simple_type`, MobileSAMv2), faithful.

Reference implementation: the ground truth for `fast_decoder.FastMaskDecoder` and the module that
is exported to ONNX. Parameter names are the official ones (`mask_decoder.*` keys load strictly).
Frames: the image embedding grid is 64x64 (16 px of the 1024 input frame per cell); the low-res
mask logits are 256x256 over the same padded 1024 square (4 px per logit).
"""
from typing import List, Tuple, Type

import torch
from torch import nn
from torch.nn import functional as F

from mobilesam_ros.core.modeling.common import LayerNorm2d


class MLP(nn.Module):
    """`num_layers` Linear layers with ReLU between them (MaskFormer's MLP, as in SAM)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 sigmoid_output: bool = False) -> None:
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nn.Module):
    """Predicts low-res mask logits and IoU estimates from an image embedding and prompt tokens."""

    def __init__(
        self,
        *,
        transformer_dim: int = 256,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        # indices 0, 1, 3 carry weights: keep this exact Sequential layout for the checkpoint keys
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        simple_type: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (low_res_masks (B, C, 256, 256), iou_pred (B, C)); C = 3 if multimask_output else 1.

        image_embeddings (1 or B, 256, 64, 64); image_pe (1 or B, 256, 64, 64);
        sparse_prompt_embeddings (B, T, 256); dense_prompt_embeddings (B, 256, 64, 64).
        simple_type is MobileSAMv2's flag: there the embeddings arrive already per prompt and are
        not repeated. Here a batch-1 embedding is always broadcast (never copied) over the B
        prompts, so both values compute the same thing; the flag is kept for call compatibility.
        Multimask off returns mask token 0, on returns tokens 1..3 (SAM's and v2's selection).
        """
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice, :, :], iou_pred[:, mask_slice]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens -> (masks (B, 4, 256, 256), iou_pred (B, 4)). See `forward`."""
        bsz = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(bsz, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        # broadcasting replaces the official repeat_interleave: same values, no B copies of the embedding
        src = image_embeddings + dense_prompt_embeddings
        if src.shape[0] != bsz:
            src = src.expand(bsz, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1:(1 + self.num_mask_tokens), :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.output_upscaling(src)
        hyper_in_list: List[torch.Tensor] = [
            mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)
        ]
        hyper_in = torch.stack(hyper_in_list, dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
