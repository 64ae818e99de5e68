"""SAM's ViT image encoder (ViT-B / ViT-L / ViT-H), the teachers of decoupled distillation.

Module and parameter names follow the official `segment_anything/modeling/image_encoder.py`, so
the `image_encoder.*` tensors of the official `sam_vit_{b,l,h}_*.pth` files load with
`strict=True`: `patch_embed.proj`, `pos_embed` (1, 64, 64, C), `blocks.N.{norm1, attn.qkv,
attn.proj, attn.rel_pos_h, attn.rel_pos_w, norm2, mlp.lin1, mlp.lin2}`, `neck.{0,1,2,3}`.

Input is a normalised, zero-padded image (B, 3, 1024, 1024) float32 (as `Sam.preprocess` makes
it); output the image embedding (B, 256, 64, 64). Tokens are kept as (B, H, W, C) grids between
blocks. Most blocks attend inside 14x14 windows of the 64x64 token grid (padded to 70x70, padding
tokens are zeros after norm1 and take part as keys, as in the official model); the blocks in
`global_attn_indexes` attend over the whole grid. Attention logits get SAM's decomposed relative
position terms, computed from the *unscaled* query: q.Rh[dy] + q.Rw[dx].
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_ros.core.modeling.common import LayerNorm2d, MLPBlock

# Official builder hyperparameters (segment_anything/build_sam.py); everything else is shared:
# img 1024, patch 16, mlp_ratio 4, qkv bias, LayerNorm eps 1e-6, rel pos, window 14, out 256.
VIT_CONFIGS: dict[str, dict] = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> tokens (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def relative_position_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(size, size, D) table R[i, j] = rel_pos[i - j + size - 1] for one axis of a size-long grid.

    `rel_pos` is (L, D) with L = 2 * size - 1 for the grid it was trained on; another length is
    resampled linearly along L first (what the official code does for a different grid size).
    """
    length = 2 * size - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.t()[None], size=length, mode="linear")[0].t()
    idx = torch.arange(size, device=rel_pos.device)
    return rel_pos[idx[:, None] - idx[None, :] + (size - 1)]


class Attention(nn.Module):
    """Multi-head self-attention over a token grid (B, H, W, C) with decomposed rel-pos terms."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = True,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative positions need the attention grid size (input_size)")
            # Zero init as in the official model; real values come from checkpoints.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n, heads, d = h * w, self.num_heads, self.head_dim
        # Channel layout of qkv's output is (3, heads, head_dim): official checkpoints rely on it.
        q, k, v = self.qkv(x).view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.use_rel_pos:
            rh = relative_position_table(h, self.rel_pos_h).to(q.dtype)  # (h, h, d)
            rw = relative_position_table(w, self.rel_pos_w).to(q.dtype)  # (w, w, d)
            qg = q.reshape(b, heads, h, w, d)
            # Query at (y, x), key at (ky, kx): + q . Rh[y, ky] + q . Rw[x, kx]
            rel_h = torch.einsum("bnyxd,ykd->bnyxk", qg, rh)
            rel_w = torch.einsum("bnyxd,xkd->bnyxk", qg, rw)
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, n, n)
        # scaled_dot_product_attention scales q.k by 1/sqrt(d) and adds the float mask unscaled,
        # which is exactly softmax(q.k * scale + rel) of the official code.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def window_partition(x: torch.Tensor, window: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, H, W, C) -> (B * nWindows, window, window, C), zero-padding H, W up to multiples of
    `window` at the bottom/right; also returns the padded (Hp, Wp)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded_hw: Tuple[int, int],
                       hw: Tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: -> (B, H, W, C) with the padding cropped away."""
    hp, wp = padded_hw
    h, w = hw
    nh, nw = hp // window, wp // window
    b = windows.shape[0] // (nh * nw)
    x = windows.view(b, nh, nw, window, window, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x


class Block(nn.Module):
    """Pre-norm transformer block on (B, H, W, C): windowed (window > 0) or global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 use_rel_pos: bool, window_size: int, input_size: Tuple[int, int],
                 norm_eps: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        attn_grid = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_grid)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            h, w = y.shape[1:3]
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, (h, w))
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM ViT + neck: (B, 3, img_size, img_size) -> (B, out_chans, img_size/p, img_size/p)."""

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, out_chans: int = 256, qkv_bias: bool = True,
                 use_abs_pos: bool = True, use_rel_pos: bool = True, window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (), norm_eps: float = 1e-6) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        globals_ = set(int(i) for i in global_attn_indexes)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, use_rel_pos,
                  0 if i in globals_ else window_size, (grid, grid), norm_eps)
            for i in range(depth)])
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


def build_image_encoder_vit(name: str, img_size: int = 1024) -> ImageEncoderViT:
    """SAM's `vit_b` / `vit_l` / `vit_h` image encoder, randomly initialised, in eval mode.

    Build under `with torch.device("meta"):` to get the structure (e.g. parameter names and
    shapes) without allocating ViT-H's 2.5 GB.
    """
    if name not in VIT_CONFIGS:
        raise ValueError(f"unknown SAM ViT {name!r}; one of {sorted(VIT_CONFIGS)}")
    return ImageEncoderViT(img_size=img_size, patch_size=16, mlp_ratio=4.0, out_chans=256,
                           qkv_bias=True, use_rel_pos=True, window_size=14, norm_eps=1e-6,
                           **VIT_CONFIGS[name]).eval()


def build_sam_vit_b_encoder(img_size: int = 1024) -> ImageEncoderViT:
    """SAM ViT-B encoder (embed 768, depth 12, heads 12, global blocks 2, 5, 8, 11)."""
    return build_image_encoder_vit("vit_b", img_size)


def build_sam_vit_l_encoder(img_size: int = 1024) -> ImageEncoderViT:
    """SAM ViT-L encoder (embed 1024, depth 24, heads 16, global blocks 5, 11, 17, 23)."""
    return build_image_encoder_vit("vit_l", img_size)


def build_sam_vit_h_encoder(img_size: int = 1024) -> ImageEncoderViT:
    """SAM ViT-H encoder (embed 1280, depth 32, heads 16, global blocks 7, 15, 23, 31)."""
    return build_image_encoder_vit("vit_h", img_size)
