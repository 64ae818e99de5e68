"""Fast path for decoding MANY prompts against ONE image embedding: exact algebraic rewrites of
SAM's mask decoder (prompt_encoder + two-way transformer + upscaling), same numbers up to fp32
rounding. The faithful `MaskDecoder` (modeling/mask_decoder.py) stays the reference, and
test/core/runtime/test_fast_decoder.py holds the two to each other; benchmarks/bench_decoder.py times them.

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
5. (mask-less prompts) The first ConvTranspose2d needs no per-prompt 256x256 product: the image
   tokens entering it are the shared layer-1 tokens x0 plus rank-(H*T) attention updates, each
   followed by a per-row LayerNorm (an affine map per row given its mean and rstd). So
   conv1(keys) = P0 * (x0 @ M0) + [low-rank terms] @ [their images under M] + const, where x0 @ M0
   is per frame and the low-rank part is one (N x ~115) @ (~115 x 256) product (see `_conv1_lowrank`).
Only the mask tokens that are returned go through their hypernetwork MLP and the final product.

Frames: as the faithful decoder (embedding grid 64x64, low-res logits 256x256 over the padded
1024 input square). Memory: about 20 MB per prompt in flight, `micro_batch` prompts at a time,
plus the (B, K, 256, 256) results; the caller chunks.
"""
from __future__ import annotations

import ctypes
import math
import platform
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from mobilesam_ros.core.modeling.common import layer_norm_fp32, softmax_fp32
from mobilesam_ros.core.modeling.mask_decoder import MaskDecoder
from mobilesam_ros.core.modeling.prompt_encoder import PromptEncoder
from mobilesam_ros.core.modeling.transformer import Attention


@dataclass
class FrameContext:
    """Per-frame tensors shared by every prompt decoded against one image embedding.

    src: (N, C) image embedding, channels-last (used when a prompt brings its own mask input).
    x0: (N, C) embedding + no-mask dense embedding = layer 1's image tokens for mask-less prompts.
    k0: (H, c, N) layer 1 token->image keys of x0 + PE (bias included), scaled by 1/sqrt(c), transposed.
    v0: (H, N, c) layer 1 token->image values of x0.
    q0: (H, c, N) layer 1 image->token queries of x0 + PE, scaled by 1/sqrt(c), transposed.
    z: (N, 4*C/4) x0 through the first ConvTranspose2d's per-pixel matrix with every norm4 gain
       folded in (rewrite 5), or None when that rewrite is off (or the dtype is 16-bit).
    grid: (h, w) of the embedding (64, 64).
    """

    src: Tensor
    x0: Tensor
    k0: Tensor
    v0: Tensor
    q0: Tensor
    z: Optional[Tensor]
    grid: Tuple[int, int]


_MALLOC_TUNED = False


def keep_freed_memory_mapped(trim_threshold_mb: int = 256, mmap_threshold_mb: int = 32) -> bool:
    """Process-wide glibc malloc tuning: keep freed blocks of up to `trim_threshold_mb` for reuse.

    Decoding allocates and frees tens of 1-8 MB tensors per prompt. By default glibc hands such
    blocks back to the kernel, so each new tensor page-faults all its pages again: measured here,
    ~6000 faults per 1-point decode with 2 threads, 31 ms -> 22 ms once they are kept. Costs no
    peak memory; the process just keeps up to `trim_threshold_mb` of freed heap mapped. Returns
    False (and does nothing) where the C library is not glibc. Idempotent.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc <malloc.h>
    ok = libc.mallopt(m_mmap_threshold, mmap_threshold_mb << 20) == 1
    ok = libc.mallopt(m_trim_threshold, trim_threshold_mb << 20) == 1 and ok
    _MALLOC_TUNED = ok
    return ok


# Shapes in exported graphs: channel, head and image-token counts are fixed by the weights and
# the 64x64 embedding, so they are read as Python ints (`int(...)` freezes them when tracing), and
# the one dynamic size of a reshape (prompts B or tokens T) is left to -1. The decoder graph then
# carries no Shape/Gather/Div arithmetic on them (fewer int64 shape ops for TensorRT); eager
# numbers are unchanged (pure reshapes).


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, H*c) -> (H, B*L, c): heads as the matmul batch, so per-frame (H, ...) tensors
    multiply without being broadcast (torch.matmul would copy them once per prompt)."""
    d = int(x.shape[-1])
    return x.reshape(-1, num_heads, d // num_heads).transpose(0, 1)


def _merge_heads(x: Tensor, bsz: int) -> Tensor:
    """(H, B*L, c) -> (B, L, H*c)."""
    h, c = int(x.shape[0]), int(x.shape[2])
    return x.transpose(0, 1).reshape(bsz, -1, h * c)


def _to_prompt_major(x: Tensor, bsz: int) -> Tensor:
    """(H, B*T, ...) -> (B, H*T, ...); the trailing dims are static."""
    h, rest = int(x.shape[0]), [int(v) for v in x.shape[2:]]
    return x.view(h, bsz, -1, *rest).transpose(0, 1).reshape(bsz, -1, *rest)


def _scaled_heads_t(x: Tensor, num_heads: int) -> Tensor:
    """Per-frame projected image tokens (N, H*c) -> (H, c, N), times the attention scale 1/sqrt(c)."""
    c = int(x.shape[1]) // num_heads
    return x.mul(1.0 / math.sqrt(c)).view(-1, num_heads, c).permute(1, 2, 0).contiguous()


def _token_to_image_shared(attn: Attention, q_in: Tensor, k_t: Tensor, v: Tensor) -> Tensor:
    """Tokens attend to the frame's pre-projected image keys/values (rewrite 1).

    q_in (B, T, C) tokens + PE; k_t (H, c, N) scaled keys; v (H, N, c) -> update (B, T, C).
    """
    q = _heads(attn.q_proj(q_in), attn.num_heads)  # (H, B*T, c)
    s = softmax_fp32(q @ k_t, dim=-1)  # (H, B*T, N)
    return attn.out_proj(_merge_heads(s @ v, q_in.shape[0]))


def _token_to_image_folded(attn: Attention, q_in: Tensor, kp: Tensor, keys: Tensor) -> Tensor:
    """Tokens attend to per-prompt image tokens without projecting them (rewrite 2).

    q_in (B, T, C) tokens + PE; kp (B, N, C) image tokens + PE; keys (B, N, C) -> update (B, T, C).
    """
    h = attn.num_heads
    bsz, cdim = q_in.shape[0], int(q_in.shape[2])
    c = attn.internal_dim // h
    q = _heads(attn.q_proj(q_in), h)  # (H, B*T, c)
    q_fold = (q @ attn.k_proj.weight.view(h, c, cdim)).mul_(1.0 / math.sqrt(c))  # (H, B*T, C)
    # the key bias adds one constant per softmax row (a token): it cancels
    s = softmax_fp32(_to_prompt_major(q_fold, bsz) @ kp.transpose(1, 2), dim=-1)  # (B, H*T, N)
    pooled = (s @ keys).view(bsz, h, -1, cdim).transpose(0, 1).reshape(h, -1, cdim)  # before v_proj
    out = torch.baddbmm(attn.v_proj.bias.view(h, 1, c), pooled, attn.v_proj.weight.view(h, c, cdim).transpose(1, 2))
    return attn.out_proj(_merge_heads(out, bsz))


def _token_values_projected(attn: Attention, v_in: Tensor) -> Tensor:
    """Token values pushed through out_proj per head (rewrite 3): (B, T, C) -> (B, H*T, C).

    Each row also carries out_proj.bias / H: every image row's attention weights sum to 1 per head,
    i.e. to H over all H*T rows, so the product adds the bias exactly once (no separate pass).
    """
    h = attn.num_heads
    bsz, cdim = v_in.shape[0], int(v_in.shape[2])
    v = _heads(attn.v_proj(v_in), h)  # (H, B*T, c)
    w_o = attn.out_proj.weight.t().view(h, attn.internal_dim // h, cdim)
    return _to_prompt_major(torch.baddbmm(attn.out_proj.bias / h, v, w_o), bsz)


def _image_to_token_shared(attn: Attention, q0_t: Tensor, k_in: Tensor, v_in: Tensor) -> Tuple[Tensor, Tensor]:
    """Frame's pre-projected image queries attend to the tokens (rewrites 1 + 3).

    q0_t (H, c, N) scaled queries; k_in (B, T, C) tokens + PE; v_in (B, T, C) tokens
    -> (attention (B, H*T, N), projected token values (B, H*T, C)); update = attention^T @ values.
    """
    h, n = int(q0_t.shape[0]), int(q0_t.shape[2])
    bsz = k_in.shape[0]
    k = _heads(attn.k_proj(k_in), h)  # (H, B*T, c)
    s = k @ q0_t  # (H, B*T, N): tokens on the middle axis, so the softmax over them is not innermost
    s = softmax_fp32(s.view(h, bsz, -1, n), dim=2)
    s = _to_prompt_major(s.view(h, -1, n), bsz)  # (B, H*T, N)
    return s, _token_values_projected(attn, v_in)


def _image_to_token_folded(attn: Attention, kp: Tensor, k_in: Tensor, v_in: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-prompt image tokens attend to the tokens without projecting them (rewrites 2 + 3).

    kp (B, N, C) image tokens + PE; k_in (B, T, C) tokens + PE; v_in (B, T, C) tokens
    -> (attention (B, H*T, N), projected token values (B, H*T, C)); update = attention^T @ values.
    """
    h = attn.num_heads
    bsz, cdim, n = k_in.shape[0], int(k_in.shape[2]), int(kp.shape[1])
    c = attn.internal_dim // h
    scale = 1.0 / math.sqrt(c)
    k = _heads(attn.k_proj(k_in), h)  # (H, B*T, c)
    k_fold = _to_prompt_major((k @ attn.q_proj.weight.view(h, c, cdim)).mul_(scale), bsz)  # (B, H*T, C)
    # the query bias gives one score offset per token; the softmax runs over tokens, so it stays
    k_bias = _to_prompt_major((k @ attn.q_proj.bias.view(h, c, 1)).mul_(scale), bsz)  # (B, H*T, 1)
    s = torch.baddbmm(k_bias, k_fold, kp.transpose(1, 2))  # (B, H*T, N)
    s = softmax_fp32(s.view(bsz, h, -1, n), dim=2).view(bsz, -1, n)
    return s, _token_values_projected(attn, v_in)


class FastMaskDecoder:
    """Exact fast decoder built on a loaded (PromptEncoder, MaskDecoder) pair.

    Holds references to their parameters (no weight copies) plus small derived matrices taken at
    construction (the ConvTranspose2d weights as per-pixel matrices and, for rewrite 5, their
    products with the norm4 gains: under 1 MB): build it after loading / moving the modules.
    lowrank_upscale: use rewrite 5 for mask-less prompts in fp32 (about 0.3 GFLOP less per prompt).
    micro_batch: prompts per pass through the image-side work, a CPU cache optimisation inside the
    runtime (not a chunking policy: SamPredictor.chunk_size owns that). A prompt's intermediates are ~20 MB, so
    small groups stay in the CPU caches: on the shared 2-core CPU, groups of 1-2 ran ~1.5x faster per
    prompt than groups of 12-24 (1 thread, busy machine); larger groups only save per-op overhead.
    tail_rows: embedding pixels per block of the upsampling tail (each becomes 16 mask pixels).
    tune_malloc: call `keep_freed_memory_mapped()` (process-wide glibc setting, see there): on the
    2-core CPU the largest single speed-up of the 1-prompt decode. Off by default: a library object
    must not change the process; entry points apply it through core.runtime.cpu_policy.
    """

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, lowrank_upscale: bool = True,
                 micro_batch: int = 2, tail_rows: int = 1024, tune_malloc: bool = False) -> None:
        self.pe = prompt_encoder
        self.md = mask_decoder
        self.tf = mask_decoder.transformer
        self.lowrank_upscale = lowrank_upscale
        self.micro_batch = max(1, int(micro_batch))
        self.tail_rows = max(1, int(tail_rows))
        if tune_malloc:
            keep_freed_memory_mapped()
        up = mask_decoder.output_upscaling
        conv1, self.ln_up, conv2 = up[0], up[1], up[3]
        self.up_channels = (int(conv1.out_channels), int(conv2.out_channels))  # plain ints: static in ONNX
        with torch.no_grad():
            # ConvTranspose2d weight (C_in, C_out, 2, 2) -> (C_in, [dy, dx, C_out]): taps outer, channel inner
            self.w_up1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1).contiguous()
            self.b_up1 = conv1.bias.repeat(4)
            self.w_up2 = conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1).contiguous()
            self.b_up2 = conv2.bias.repeat(4)
            self.image_pe = prompt_encoder.get_dense_pe()[0].flatten(1).t().contiguous()  # (N, C)
            self.out_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], 0)
            # rewrite 5: M_l = diag(gamma_l ... gamma_last) W for each layer's norm4, then
            # g_l = 1 @ M_l (mean terms), e_l = beta_l @ M_{l+1} (bias terms); see _conv1_lowrank
            norms = [layer.norm4 for layer in self.tf.layers]
            m_next, ms, gs, es = self.w_up1, [], [], []
            for norm in reversed(norms):
                es.insert(0, norm.bias @ m_next)
                m_next = norm.weight[:, None] * m_next
                ms.insert(0, m_next)
                gs.insert(0, m_next.sum(0))
            self.up_m = ms
            self.up_rows = torch.cat([-torch.stack(gs)] + [torch.stack(es[:-1])] * (len(es) > 1))  # (2L-1, 4*C/4)
            self.up_const = es[-1] + self.b_up1

    @torch.inference_mode()
    def prepare(self, image_embedding: Tensor) -> FrameContext:
        """(1, C, h, w) image embedding -> the per-frame context (about 18 MB in fp32)."""
        gh, gw = int(image_embedding.shape[2]), int(image_embedding.shape[3])
        src = image_embedding[0].flatten(1).t().contiguous()  # (N, C)
        x0 = src + self.pe.no_mask_embed.weight
        t2i = self.tf.layers[0].cross_attn_token_to_image
        i2t = self.tf.layers[0].cross_attn_image_to_token
        xp = x0 + self.image_pe
        k0 = _scaled_heads_t(t2i.k_proj(xp), t2i.num_heads)
        q0 = _scaled_heads_t(i2t.q_proj(xp), i2t.num_heads)
        v0 = t2i.v_proj(x0).view(-1, t2i.num_heads, t2i.internal_dim // t2i.num_heads).transpose(0, 1).contiguous()
        # fp16/bf16 (weights or autocast) would lose the cancelling mean terms of rewrite 5: those
        # take the direct path
        low_precision = x0.element_size() < 4 or torch.is_autocast_enabled(x0.device.type)
        z = x0 @ self.up_m[0] if self.lowrank_upscale and not low_precision else None
        return FrameContext(src=src, x0=x0, k0=k0, v0=v0, q0=q0, z=z, grid=(gh, gw))

    def _conv1_lowrank(self, ctx: FrameContext, terms: list) -> Tensor:
        """First ConvTranspose2d (pre-LayerNorm) of the final image tokens, rewrite 5 -> (B, N, 4*C/4).

        terms[l] = (attention (B, H*T, N), values (B, H*T, C), mean (B, N, 1), rstd (B, N, 1)) of
        layer l's image update and norm4. With P_l = rstd_l * ... * rstd_last, unrolling
        keys_{l+1} = (keys_l + S_l V_l - mean_l) * rstd_l * gamma_l + beta_l from keys_0 = x0 gives
        keys_L @ W + b = P_0 (x0 @ M_0) + sum_l P_l S_l (V_l M_l) - sum_l P_l mean_l g_l
                         + sum_{l<last} P_{l+1} e_l + e_last + b.
        """
        bsz, _, n = terms[0][0].shape
        prods = []
        for _, _, _, rstd in reversed(terms):
            prods.insert(0, rstd if not prods else prods[0] * rstd)
        left = torch.cat([s.transpose(1, 2) * p for (s, _, _, _), p in zip(terms, prods)]
                         + [p * mean for (_, _, mean, _), p in zip(terms, prods)] + prods[1:], dim=2)
        right = torch.cat([vo @ m for (_, vo, _, _), m in zip(terms, self.up_m)]
                          + [self.up_rows.expand(bsz, -1, -1)], dim=1)
        y = torch.addcmul(self.up_const, prods[0], ctx.z)  # (B, N, 4*C/4)
        return y.baddbmm_(left, right)

    def _upscale_tail(self, y: Tensor) -> Tensor:
        """First ConvTranspose2d output rows (M, 4*C/4) -> LayerNorm2d, GELU, second ConvTranspose2d,
        GELU -> (M*16, C/8), rows ordered (pixel, dy, dx, ey, ex): (4y+2dy+ey, 4x+2dx+ex) for pixel (y, x)."""
        c1, c2 = self.up_channels
        y = y.reshape(-1, c1)
        y = F.gelu(layer_norm_fp32(y, (c1,), self.ln_up.weight, self.ln_up.bias, self.ln_up.eps))
        z = F.gelu(torch.addmm(self.b_up2, y, self.w_up2))
        return z.view(-1, c2)

    def _masks(self, y: Tensor, hyper: Tensor) -> Tensor:
        """First ConvTranspose2d output (B, N, 4*C/4) + hypernetwork outputs (B, C/8, K) -> mask rows
        (B, N*16, K). Runs in blocks of `tail_rows` pixels so the ~10x larger upscaled features of a
        block stay in cache between the LayerNorm, GELUs, matmul and the mask product."""
        bsz, n, _ = y.shape
        if torch.jit.is_tracing():  # no Python loop over the (dynamic) batch in an exported graph
            return self._upscale_tail(y).view(bsz, -1, self.up_channels[1]) @ hyper
        out = y.new_empty((bsz, n * 16, hyper.shape[-1]))
        step = self.tail_rows
        for b in range(bsz):
            for i in range(0, n, step):
                torch.mm(self._upscale_tail(y[b, i:i + step]), hyper[b], out=out[b, 16 * i:16 * (i + step)])
        return out

    def upscale(self, keys: Tensor) -> Tensor:
        """Channels-last output_upscaling (rewrite 4): (B, h*w, C) -> (B, h*w*16, C/8), `_upscale_tail` order."""
        bsz, cdim = keys.shape[0], int(keys.shape[2])
        y = torch.addmm(self.b_up1, keys.reshape(-1, cdim), self.w_up1)
        return self._upscale_tail(y).view(bsz, -1, self.up_channels[1])

    @staticmethod
    def unshuffle(rows: Tensor, grid: Tuple[int, int]) -> Tensor:
        """(B, h*w*16, K) in `upscale` row order -> (B, K, 4h, 4w)."""
        k = int(rows.shape[2])
        gh, gw = grid
        x = rows.view(-1, gh, gw, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return x.reshape(-1, k, 4 * gh, 4 * gw)

    @torch.inference_mode()
    def upscale_nchw(self, x: Tensor) -> Tensor:
        """output_upscaling through the fast path, NCHW in and out: (B, C, h, w) -> (B, C/8, 4h, 4w)."""
        rows = self.upscale(x.flatten(2).transpose(1, 2).contiguous())
        return self.unshuffle(rows, tuple(x.shape[-2:]))

    @torch.inference_mode()
    def decode(self, ctx: FrameContext, sparse: Tensor, dense_mask: Optional[Tensor] = None,
               multimask: Optional[bool] = False) -> Tuple[Tensor, Tensor]:
        """Prompt tokens -> (low_res (B, K, 256, 256), iou (B, K)).

        multimask: True -> mask tokens 1..3 (K = 3), False -> token 0 (K = 1), as SAM selects;
        None -> all 4 tokens in order (the ONNX decoder graph's output, sliced by its caller).

        sparse: (B, T, C) prompt-encoder tokens (all prompts of one token layout).
        dense_mask: (B, C, h, w) prompt-encoder dense embedding of a MASK INPUT, or None for no mask
        (the frame's shared no-mask path). Passing the expanded no-mask embedding also works but
        takes the slower per-prompt path. Runs `micro_batch` prompts at a time.
        """
        bsz, mb = sparse.shape[0], self.micro_batch
        if bsz == 0 and not torch.jit.is_tracing():
            k = {True: self.md.num_mask_tokens - 1, False: 1, None: self.md.num_mask_tokens}[multimask]
            gh, gw = ctx.grid
            return sparse.new_zeros((0, k, 4 * gh, 4 * gw)), sparse.new_zeros((0, k))
        if bsz <= mb or torch.jit.is_tracing():  # a traced graph must not depend on the batch size
            return self._decode_group(ctx, sparse, dense_mask, multimask)
        parts = [self._decode_group(ctx, sparse[i:i + mb], None if dense_mask is None else dense_mask[i:i + mb],
                                    multimask) for i in range(0, bsz, mb)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _decode_group(self, ctx: FrameContext, sparse: Tensor, dense_mask: Optional[Tensor],
                      multimask: Optional[bool]) -> Tuple[Tensor, Tensor]:
        """`decode` for one group of prompts, all at once."""
        bsz = sparse.shape[0]
        tokens = torch.cat([self.out_tokens.unsqueeze(0).expand(bsz, -1, -1), sparse], dim=1)
        pe = self.image_pe
        keys = None if dense_mask is None else (ctx.src + dense_mask.flatten(2).transpose(1, 2)).contiguous()
        lowrank = keys is None and ctx.z is not None
        terms = []
        queries = tokens
        for layer in self.tf.layers:
            if layer.skip_first_layer_pe:  # the tokens are their own PE here, and there is no residual
                queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
            else:
                q = queries + tokens
                queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            shared = keys is None  # first layer of a mask-less prompt: the frame's projections
            if shared:
                upd = _token_to_image_shared(layer.cross_attn_token_to_image, queries + tokens, ctx.k0, ctx.v0)
            else:
                kp = keys + pe
                upd = _token_to_image_folded(layer.cross_attn_token_to_image, queries + tokens, kp, keys)
            queries = layer.norm2(queries + upd)
            queries = layer.norm3(queries + layer.mlp(queries))
            if shared:
                s, vo = _image_to_token_shared(layer.cross_attn_image_to_token, ctx.q0, queries + tokens, queries)
                residual = ctx.x0.unsqueeze(0)
            else:
                s, vo = _image_to_token_folded(layer.cross_attn_image_to_token, kp, queries + tokens, queries)
                residual = keys
                del kp
            r = torch.baddbmm(residual, s.transpose(1, 2), vo)
            norm = layer.norm4
            if lowrank:
                keys, mean, rstd = torch.native_layer_norm(r, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                terms.append((s, vo, mean.to(r.dtype), rstd.to(r.dtype)))
            else:
                keys = norm(r)
            del r, s, vo
        # the final attention updates each token independently: only the IoU token and the returned
        # mask tokens are used afterwards, so only they attend (2 of ~7 rows for a box)
        picked = {True: list(range(1, self.md.num_mask_tokens)), False: [0],
                  None: list(range(self.md.num_mask_tokens))}[multimask]
        rows_used = [0] + [1 + j for j in picked]
        kp = keys + pe
        upd = _token_to_image_folded(self.tf.final_attn_token_to_image, (queries + tokens)[:, rows_used], kp, keys)
        del kp
        queries = self.tf.norm_final_attn(queries[:, rows_used] + upd)  # (B, 1 + K, C)

        iou = self.md.iou_prediction_head(queries[:, 0, :])[:, picked]
        hyper = torch.stack([self.md.output_hypernetworks_mlps[j](queries[:, 1 + i, :]) for i, j in enumerate(picked)],
                            dim=2)
        if lowrank:
            del keys
            y = self._conv1_lowrank(ctx, terms)
        else:
            y = torch.addmm(self.b_up1, keys.reshape(-1, int(keys.shape[-1])), self.w_up1).view(
                bsz, -1, int(self.w_up1.shape[1]))
            del keys
        del terms
        low_res = self.unshuffle(self._masks(y, hyper), ctx.grid)
        return low_res, iou

    @torch.inference_mode()
    def decode_prompts(
        self,
        ctx: FrameContext,
        points: Optional[Tuple[Tensor, Tensor]] = None,
        boxes: Optional[Tensor] = None,
        masks: Optional[Tensor] = None,
        multimask: Optional[bool] = False,
    ) -> Tuple[Tensor, Tensor]:
        """Official prompt layout (see PromptEncoder.forward; 1024-frame coordinates) -> `decode`."""
        sparse, dense = self.pe(points, boxes, masks)
        return self.decode(ctx, sparse, dense if masks is not None else None, multimask)
