"""TinyViT-5M image encoder with the SAM neck (MobileSAM's `image_encoder`).

Module and parameter names follow the official `mobile_sam/modeling/tiny_vit_sam.py`, so the
`image_encoder.*` tensors of an official checkpoint load with `strict=True`. Input is a normalised,
padded image (B, 3, 1024, 1024) float32; output the image embedding (B, 256, 64, 64).

Inference-only simplifications (no effect on the weights or the eval-mode numbers): no dropout,
no stochastic depth, no gradient checkpointing, no per-layer learning-rate tags.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_ros.core.modeling.common import LayerNorm, LayerNorm2d, softmax_fp32


class Conv2d_BN(nn.Sequential):  # noqa: N801  (official name, part of the checkpoint layout)
    """Bias-free Conv2d (`c`) followed by BatchNorm2d (`bn`)."""

    def __init__(self, in_chans: int, out_chans: int, ks: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, ks, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs: (B, 3, H, W) -> (B, embed_dim, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int, resolution: int) -> None:
        super().__init__()
        self.patches_resolution = (resolution // 4, resolution // 4)
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project) on (B, C, H, W)."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = Conv2d_BN(chans, hidden, ks=1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, ks=3, stride=1, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        # Zero-initialised last BN makes a fresh block start as the identity.
        self.conv3 = Conv2d_BN(hidden, chans, ks=1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsampling between stages: (B, C, H, W) or tokens (B, H*W, C) -> tokens (B, H'*W', C').

    `stride` is 2 except before MobileSAM's last stage, which keeps 64x64 (the official code picks
    stride 1 from the output width; here the encoder passes it explicitly).
    """

    def __init__(self, input_resolution: Tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """Stage 1: MBConv blocks on (B, C, H, W), then PatchMerging to tokens."""

    def __init__(self, dim: int, depth: int, expand_ratio: float,
                 downsample: Optional[PatchMerging]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand_ratio) for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm MLP on tokens (B, L, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def relative_offset_index(window: int) -> torch.Tensor:
    """(N, N) int64, N = window**2: index of the |dy|, |dx| offset between two window positions.

    The official code numbers offsets in first-seen order over row-major position pairs; the first
    row (position (0, 0)) already meets every offset in the order |dy| * window + |dx|.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over one window's tokens (B, N, C), with a learned
    per-head bias for each relative offset (`attention_biases` (heads, window**2))."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.dh = key_dim * num_heads  # TinyViT uses attn_ratio 1: value width == key width
        self.norm = LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * self.dh)
        self.proj = nn.Linear(self.dh, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        # Derived from the window size, so not stored in checkpoints (official: persistent=False).
        self.register_buffer("attention_bias_idxs", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)
        # Gathered every call (cheap) rather than cached, so loaded or trained biases are always used.
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        x = (softmax_fp32(attn, dim=-1) @ v).transpose(1, 2).reshape(b, n, self.dh)
        return self.proj(x)


class TinyViTBlock(nn.Module):
    """Windowed attention + depthwise 3x3 conv + MLP on tokens (B, H*W, C), all residual."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int,
                 mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=local_conv_size // 2,
                                    groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            return self.attn(x)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        # Zero padding goes in before the attention's LayerNorm and is not masked out: padded
        # tokens act as keys, exactly as in the official model.
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
        x = x.view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 2-4: TinyViT blocks on tokens, then an optional PatchMerging."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], depth: int, num_heads: int,
                 window_size: int, mlp_ratio: float, local_conv_size: int,
                 downsample: Optional[PatchMerging]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT backbone + SAM neck: (B, 3, img_size, img_size) -> (B, 256, img_size/16, img_size/16).

    `norm_head` and `head` (the ImageNet classifier) are never run; they exist because official
    checkpoints carry their tensors and must load strictly.
    """

    def __init__(self, img_size: int = 1024, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], img_size)
        res = self.patch_embed.patches_resolution[0]
        n = len(depths)
        self.layers = nn.ModuleList()
        for i in range(n):
            downsample = None
            if i < n - 1:
                # SAM's variant keeps the resolution into the last stage (64x64 for 1024 input).
                stride = 1 if i == n - 2 else 2
                downsample = PatchMerging((res, res), embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                layer: nn.Module = ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, downsample)
            else:
                layer = BasicLayer(embed_dims[i], (res, res), depths[i], num_heads[i], window_sizes[i],
                                   mlp_ratio, local_conv_size, downsample)
            self.layers.append(layer)
            if i < n - 2:
                res //= 2
        self.embedding_resolution = res
        self.norm_head = LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        r = self.embedding_resolution
        return self.neck(x.view(b, r, r, c).permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    """Official training init; irrelevant when weights are loaded, useful when training from scratch."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_tiny_vit_5m(img_size: int = 1024) -> TinyViT:
    """MobileSAM's `vit_t` encoder (TinyViT-5M + neck), randomly initialised, in eval mode."""
    return TinyViT(img_size=img_size, num_classes=1000, embed_dims=[64, 128, 160, 320],
                   depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                   mlp_ratio=4.0, mbconv_expand_ratio=4.0, local_conv_size=3).eval()
