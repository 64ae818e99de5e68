"""Small building blocks shared by the encoder, the prompt encoder and the mask decoder.

Reduced precision (fp16/bf16, see runtime/torch_backend.py) is safe by design here: every
normalisation and softmax computes in float32 whatever its input dtype, and hands back the input
dtype. CUDA autocast would upcast nn.LayerNorm/softmax by itself, but CPU autocast does not
(torch 2.13: layer_norm and softmax stay bf16/fp16 there), and no autocast covers a hand-written
mean/variance. In fp32 these helpers are the plain ops (no cast is traced into ONNX graphs).
"""
from typing import Optional, Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm_fp32(x: torch.Tensor, normalized_shape: Sequence[int], weight: Optional[torch.Tensor],
                    bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """F.layer_norm over the last dims, computed in float32, returned in x's dtype.

    A 16-bit mean/variance over 256 channels loses the small differences that LayerNorm divides
    by the (small) standard deviation: the known cause of MobileSAM's wrong fp16 embeddings.
    """
    if x.dtype == torch.float32:
        return F.layer_norm(x, normalized_shape, weight, bias, eps)
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    return F.layer_norm(x.float(), normalized_shape, w, b, eps).to(x.dtype)


def softmax_fp32(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` computed in float32 (exp and the row sum), returned in x's dtype."""
    if x.dtype == torch.float32:
        return x.softmax(dim)
    return x.float().softmax(dim).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and checkpoint names) that normalises in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_fp32(x, self.normalized_shape, self.weight, self.bias, self.eps)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (SAM's, eps 1e-6), in float32.

    Computed channels-last with F.layer_norm rather than SAM's hand-written mean/variance: the same
    numbers up to fp32 rounding (biased variance, eps inside the square root), and it exports as
    one opset-17 LayerNormalization node (TensorRT fuses it) instead of ReduceMean/Sub/Pow/Sqrt/Div.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.num_channels = num_channels  # a plain int: static in traced graphs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = layer_norm_fp32(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear (the transformer MLP; names lin1/lin2 as in SAM)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))
