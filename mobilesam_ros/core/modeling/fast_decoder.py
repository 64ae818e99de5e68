"""Fast path for decoding MANY prompts against ONE image embedding: exact algebraic rewrites of
SAM's mask decoder (prompt_encoder + two-way transformer + upscaling), same numbers up to fp32
rounding. The faithful `MaskDecoder` stays the reference; see shared/notes/performance.md.

Rewrites (N = 4096 image tokens, T ~ 7 prompt tokens, H = 8 heads of c = 16 channels, C = 256):
1. Layer 1's image side (embedding + no-mask dense embedding) is shared by every mask-less prompt:
   its token->image keys/values and image->token queries are projected once per frame (`prepare`).
2. Token->image attention: the key projection is folded into the T queries per head
   (q_h W_k,h: H*T x C), scored against the raw image tokens; the key bias only shifts a softmax row,
   so it drops out. The value projection is applied after the attention-weighted sum (rows sum to 1,
   so the value bias passes through unchanged). No N x 128 key/value tensor per prompt.
   The same fold runs the other way for image->token attention: the query projection is folded into
   the T token keys (plus a per-token bias term, which does NOT cancel there: softmax runs over tokens).
3. Image->token attention: out_proj is applied to the T token values per head, then one
   (N x H*T) @ (H*T x C) product gives the projected update; no N x 128 intermediate.
4. ConvTranspose2d with kernel = stride = 2 is a per-pixel matmul (C_in -> 2*2*C_out) followed by a
   pixel shuffle; everything stays channels-last so LayerNorm2d is a plain last-dim LayerNorm, and the
   pixel shuffle is done once, on the final (few-channel) masks.
Only the mask tokens that are returned go through their hypernetwork MLP and the final product.

Frames: as the faithful decoder (embedding grid 64x64, low-res logits 256x256 over the padded
1024 input square). Memory: roughly 40 MB per prompt in flight; the caller chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import Attention


@dataclass
class FrameContext:
    """Per-frame tensors shared by every prompt decoded against one image embedding.

    src: (N, C) image embedding, channels-last (used when a prompt brings its own mask input).
    x0: (N, C) embedding + no-mask dense embedding = layer 1's image tokens for mask-less prompts.
    k0: (H, c, N) layer 1 token->image keys of x0 + PE (bias included), per head, transposed.
    v0: (H, N, c) layer 1 token->image values of x0.
    q0: (H, c, N) layer 1 image->token queries of x0 + PE, scaled by 1/sqrt(c), transposed.
    grid: (h, w) of the embedding (64, 64).
    """

    src: Tensor
    x0: Tensor
    k0: Tensor
    v0: Tensor
    q0: Tensor
    grid: Tuple[int, int]


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, H*c) -> (H, B*L, c): heads as the matmul batch, so per-frame (H, ...) tensors
    multiply without being broadcast (torch.matmul would copy them once per prompt)."""
    b, n, d = x.shape
    return x.reshape(b * n, num_heads, d // num_heads).transpose(0, 1)


def _merge_heads(x: Tensor, bsz: int) -> Tensor:
    """(H, B*L, c) -> (B, L, H*c)."""
    h, bn, c = x.shape
    return x.transpose(0, 1).reshape(bsz, bn // bsz, h * c)


def _to_prompt_major(x: Tensor, bsz: int) -> Tensor:
    """(H, B*T, ...) -> (B, H*T, ...)."""
    h, bt = x.shape[:2]
    return x.view(h, bsz, bt // bsz, *x.shape[2:]).transpose(0, 1).reshape(bsz, h * (bt // bsz), *x.shape[2:])


def _token_to_image_shared(attn: Attention, q_in: Tensor, k_t: Tensor, v: Tensor) -> Tensor:
    """Tokens attend to the frame's pre-projected image keys/values (rewrite 1).

    q_in (B, T, C) tokens + PE; k_t (H, c, N); v (H, N, c) -> update (B, T, C).
    """
    q = _heads(attn.q_proj(q_in), attn.num_heads)  # (H, B*T, c)
    s = torch.softmax((q @ k_t) / math.sqrt(q.shape[-1]), dim=-1)  # (H, B*T, N)
    return attn.out_proj(_merge_heads(s @ v, q_in.shape[0]))


def _token_to_image_folded(attn: Attention, q_in: Tensor, kp: Tensor, keys: Tensor) -> Tensor:
    """Tokens attend to per-prompt image tokens without projecting them (rewrite 2).

    q_in (B, T, C) tokens + PE; kp (B, N, C) image tokens + PE; keys (B, N, C) -> update (B, T, C).
    """
    h = attn.num_heads
    bsz, t, cdim = q_in.shape
    c = attn.internal_dim // h
    q = _heads(attn.q_proj(q_in), h)  # (H, B*T, c)
    q_fold = (q @ attn.k_proj.weight.view(h, c, cdim)).mul_(1.0 / math.sqrt(c))  # (H, B*T, C)
    # the key bias adds one constant per softmax row (a token): it cancels
    s = torch.softmax(_to_prompt_major(q_fold, bsz) @ kp.transpose(1, 2), dim=-1)  # (B, H*T, N)
    pooled = (s @ keys).view(bsz, h, t, cdim).transpose(0, 1).reshape(h, bsz * t, cdim)  # before v_proj
    out = torch.baddbmm(attn.v_proj.bias.view(h, 1, c), pooled, attn.v_proj.weight.view(h, c, cdim).transpose(1, 2))
    return attn.out_proj(_merge_heads(out, bsz))


def _token_values_projected(attn: Attention, v_in: Tensor) -> Tensor:
    """Token values pushed through out_proj per head (rewrite 3): (B, T, C) -> (B, H*T, C).

    Each row also carries out_proj.bias / H: every image row's attention weights sum to 1 per head,
    i.e. to H over all H*T rows, so the product adds the bias exactly once (no separate pass).
    """
    h = attn.num_heads
    bsz, _, cdim = v_in.shape
    v = _heads(attn.v_proj(v_in), h)  # (H, B*T, c)
    w_o = attn.out_proj.weight.t().view(h, attn.internal_dim // h, cdim)
    return _to_prompt_major(torch.baddbmm(attn.out_proj.bias / h, v, w_o), bsz)


def _image_to_token_shared(attn: Attention, q0_t: Tensor, k_in: Tensor, v_in: Tensor, residual: Tensor) -> Tensor:
    """Frame's pre-projected image queries attend to the tokens (rewrites 1 + 3).

    q0_t (H, c, N) scaled queries; k_in (B, T, C) tokens + PE; v_in (B, T, C) tokens;
    residual (N, C) -> residual + attention update (B, N, C), before norm4.
    """
    h = q0_t.shape[0]
    bsz, t, cdim = k_in.shape
    k = _heads(attn.k_proj(k_in), h)  # (H, B*T, c)
    s = k @ q0_t  # (H, B*T, N): tokens on the middle axis, so the softmax over them is not innermost
    s = s.view(h, bsz, t, -1).softmax(dim=2)
    s = _to_prompt_major(s.view(h, bsz * t, -1), bsz)  # (B, H*T, N)
    return torch.baddbmm(residual.unsqueeze(0), s.transpose(1, 2), _token_values_projected(attn, v_in))


def _image_to_token_folded(attn: Attention, kp: Tensor, k_in: Tensor, v_in: Tensor, residual: Tensor) -> Tensor:
    """Per-prompt image tokens attend to the tokens without projecting them (rewrites 2 + 3).

    kp (B, N, C) image tokens + PE; k_in (B, T, C) tokens + PE; v_in (B, T, C) tokens;
    residual (B, N, C) -> residual + attention update (B, N, C), before norm4.
    """
    h = attn.num_heads
    bsz, t, cdim = k_in.shape
    c = attn.internal_dim // h
    scale = 1.0 / math.sqrt(c)
    k = _heads(attn.k_proj(k_in), h)  # (H, B*T, c)
    k_fold = _to_prompt_major((k @ attn.q_proj.weight.view(h, c, cdim)).mul_(scale), bsz)  # (B, H*T, C)
    # the query bias gives one score offset per token; the softmax runs over tokens, so it stays
    k_bias = _to_prompt_major((k @ attn.q_proj.bias.view(h, c, 1)).mul_(scale), bsz)  # (B, H*T, 1)
    s = torch.baddbmm(k_bias, k_fold, kp.transpose(1, 2))  # (B, H*T, N)
    s = s.view(bsz, h, t, -1).softmax(dim=2).view(bsz, h * t, -1)
    return torch.baddbmm(residual, s.transpose(1, 2), _token_values_projected(attn, v_in))


class FastMaskDecoder:
    """Exact fast decoder built on a loaded (PromptEncoder, MaskDecoder) pair.

    Holds references to their parameters (no weight copies) plus the two ConvTranspose2d weights
    re-laid-out as per-pixel matrices (0.3 MB), taken at construction: build it after loading.
    """

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        self.pe = prompt_encoder
        self.md = mask_decoder
        self.tf = mask_decoder.transformer
        up = mask_decoder.output_upscaling
        conv1, self.ln_up, conv2 = up[0], up[1], up[3]
        with torch.no_grad():
            # ConvTranspose2d weight (C_in, C_out, 2, 2) -> (C_in, [dy, dx, C_out]): taps outer, channel inner
            self.w_up1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1).contiguous()
            self.b_up1 = conv1.bias.repeat(4)
            self.w_up2 = conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1).contiguous()
            self.b_up2 = conv2.bias.repeat(4)
            self.image_pe = prompt_encoder.get_dense_pe()[0].flatten(1).t().contiguous()  # (N, C)
            self.out_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], 0)

    @torch.inference_mode()
    def prepare(self, image_embedding: Tensor) -> FrameContext:
        """(1, C, h, w) image embedding -> the per-frame context (about 10 MB)."""
        _, cdim, gh, gw = image_embedding.shape
        src = image_embedding[0].flatten(1).t().contiguous()  # (N, C)
        x0 = src + self.pe.no_mask_embed.weight
        attn_t2i = self.tf.layers[0].cross_attn_token_to_image
        attn_i2t = self.tf.layers[0].cross_attn_image_to_token
        h = attn_t2i.num_heads
        xp = x0 + self.image_pe
        k0 = attn_t2i.k_proj(xp).view(-1, h, attn_t2i.internal_dim // h).permute(1, 2, 0).contiguous()
        v0 = attn_t2i.v_proj(x0).view(-1, h, attn_t2i.internal_dim // h).transpose(0, 1).contiguous()
        c = attn_i2t.internal_dim // attn_i2t.num_heads
        q0 = attn_i2t.q_proj(xp).mul_(1.0 / math.sqrt(c)).view(-1, attn_i2t.num_heads, c).permute(1, 2, 0).contiguous()
        return FrameContext(src=src, x0=x0, k0=k0, v0=v0, q0=q0, grid=(gh, gw))

    def upscale(self, keys: Tensor) -> Tensor:
        """Channels-last output_upscaling (rewrite 4): (B, h*w, C) -> (B, h*w*16, C/8).

        Output rows are ordered (y, x, dy, dx, ey, ex): pixel (4y + 2dy + ey, 4x + 2dx + ex).
        """
        bsz, n, cdim = keys.shape
        y = torch.addmm(self.b_up1, keys.reshape(bsz * n, cdim), self.w_up1)
        y = y.view(-1, self.w_up1.shape[1] // 4)
        y = F.gelu(F.layer_norm(y, y.shape[-1:], self.ln_up.weight, self.ln_up.bias, self.ln_up.eps))
        z = F.gelu(torch.addmm(self.b_up2, y, self.w_up2))
        del y
        return z.view(bsz, n * 16, -1)

    @staticmethod
    def unshuffle(rows: Tensor, grid: Tuple[int, int]) -> Tensor:
        """(B, h*w*16, K) in `upscale` row order -> (B, K, 4h, 4w)."""
        bsz, _, k = rows.shape
        gh, gw = grid
        x = rows.view(bsz, gh, gw, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return x.reshape(bsz, k, 4 * gh, 4 * gw)

    @torch.inference_mode()
    def upscale_nchw(self, x: Tensor) -> Tensor:
        """output_upscaling through the fast path, NCHW in and out: (B, C, h, w) -> (B, C/8, 4h, 4w)."""
        rows = self.upscale(x.flatten(2).transpose(1, 2).contiguous())
        return self.unshuffle(rows, tuple(x.shape[-2:]))

    @torch.inference_mode()
    def decode(self, ctx: FrameContext, sparse: Tensor, dense_mask: Optional[Tensor] = None,
               multimask: bool = False) -> Tuple[Tensor, Tensor]:
        """Prompt tokens -> (low_res (B, K, 256, 256), iou (B, K)); K = 3 if multimask else 1.

        sparse: (B, T, C) prompt-encoder tokens (all prompts of one token layout).
        dense_mask: (B, C, h, w) prompt-encoder dense embedding of a MASK INPUT, or None for no mask
        (the frame's shared no-mask path). Passing the expanded no-mask embedding also works but
        takes the slow per-prompt path.
        """
        bsz = sparse.shape[0]
        tokens = torch.cat([self.out_tokens.unsqueeze(0).expand(bsz, -1, -1), sparse], dim=1)
        pe = self.image_pe
        if dense_mask is None:
            keys = None
        else:
            keys = (ctx.src + dense_mask.flatten(2).transpose(1, 2)).contiguous()
        queries = tokens
        for i, layer in enumerate(self.tf.layers):
            if layer.skip_first_layer_pe:
                queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
            else:
                q = queries + tokens
                queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            shared = keys is None
            if shared:
                upd = _token_to_image_shared(layer.cross_attn_token_to_image, queries + tokens, ctx.k0, ctx.v0)
            else:
                kp = keys + pe
                upd = _token_to_image_folded(layer.cross_attn_token_to_image, queries + tokens, kp, keys)
            queries = layer.norm2(queries + upd)
            queries = layer.norm3(queries + layer.mlp(queries))
            if shared:
                upd = _image_to_token_shared(layer.cross_attn_image_to_token, ctx.q0, queries + tokens, queries, ctx.x0)
            else:
                upd = _image_to_token_folded(layer.cross_attn_image_to_token, kp, queries + tokens, queries, keys)
                del kp
            keys = layer.norm4(upd)
            del upd
        kp = keys + pe
        upd = _token_to_image_folded(self.tf.final_attn_token_to_image, queries + tokens, kp, keys)
        del kp
        queries = self.tf.norm_final_attn(queries + upd)

        picked = range(1, self.md.num_mask_tokens) if multimask else range(0, 1)
        iou = self.md.iou_prediction_head(queries[:, 0, :])[:, picked.start:picked.stop]
        hyper = torch.stack([self.md.output_hypernetworks_mlps[j](queries[:, 1 + j, :]) for j in picked], dim=2)
        rows = self.upscale(keys)  # (B, N*16, C/8)
        del keys
        low_res = self.unshuffle(rows @ hyper, ctx.grid)
        return low_res, iou

    @torch.inference_mode()
    def decode_prompts(
        self,
        ctx: FrameContext,
        points: Optional[Tuple[Tensor, Tensor]] = None,
        boxes: Optional[Tensor] = None,
        masks: Optional[Tensor] = None,
        multimask: bool = False,
    ) -> Tuple[Tensor, Tensor]:
        """Official prompt layout (see PromptEncoder.forward; 1024-frame coordinates) -> `decode`."""
        sparse, dense = self.pe(points, boxes, masks)
        return self.decode(ctx, sparse, dense if masks is not None else None, multimask)
