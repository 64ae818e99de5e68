"""SAM ViT image encoder (layout of the official checkpoints, attention numerics) and the teacher
loader (format detection, strict loading, clear errors)."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from mobilesam_ros.core.io.checkpoints import CheckpointError, load_image_encoder, load_state_dict
from mobilesam_ros.core.modeling.image_encoder_vit import (
    Attention, ImageEncoderViT, build_image_encoder_vit, window_partition, window_unpartition)
from mobilesam_ros.distill.teachers import (
    TeacherError, build_decoder, decoder_state_from_file, identify_vit, load_teacher,
    load_teacher_encoder)

# Hyperparameters as published in segment_anything/build_sam.py (written out again here).
OFFICIAL = {"vit_b": (768, 12, 12, (2, 5, 8, 11)), "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
            "vit_h": (1280, 32, 16, (7, 15, 23, 31))}


def official_encoder_shapes(name):
    """Parameter names/shapes the official ImageEncoderViT registers, derived from its source:
    PatchEmbed.proj conv 16x16, pos_embed (1, 64, 64, C), per block norm1, attn.qkv (bias),
    attn.proj, attn.rel_pos_h/w (2 * size - 1, head_dim) with size 14 (window) or 64 (global),
    norm2, mlp.lin1/lin2 (ratio 4); neck conv1x1 (no bias), LayerNorm2d, conv3x3 (no bias),
    LayerNorm2d."""
    c, depth, heads, glob = OFFICIAL[name]
    d = c // heads
    out = {"patch_embed.proj.weight": (c, 3, 16, 16), "patch_embed.proj.bias": (c,),
           "pos_embed": (1, 64, 64, c)}
    for i in range(depth):
        size = 64 if i in glob else 14
        b = f"blocks.{i}."
        out.update({
            b + "norm1.weight": (c,), b + "norm1.bias": (c,),
            b + "attn.qkv.weight": (3 * c, c), b + "attn.qkv.bias": (3 * c,),
            b + "attn.proj.weight": (c, c), b + "attn.proj.bias": (c,),
            b + "attn.rel_pos_h": (2 * size - 1, d), b + "attn.rel_pos_w": (2 * size - 1, d),
            b + "norm2.weight": (c,), b + "norm2.bias": (c,),
            b + "mlp.lin1.weight": (4 * c, c), b + "mlp.lin1.bias": (4 * c,),
            b + "mlp.lin2.weight": (c, 4 * c), b + "mlp.lin2.bias": (c,)})
    out.update({"neck.0.weight": (256, c, 1, 1), "neck.1.weight": (256,), "neck.1.bias": (256,),
                "neck.2.weight": (256, 256, 3, 3), "neck.3.weight": (256,),
                "neck.3.bias": (256,)})
    return out


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_vit_state_dict_layout_matches_official(name):
    with torch.device("meta"):  # ViT-H is 2.5 GB: list names and shapes without allocating
        enc = build_image_encoder_vit(name)
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert got == official_encoder_shapes(name)
    n = sum(math.prod(s) for s in got.values())
    # SAM image-encoder sizes (whole-model figures minus the 4,064,560-parameter decoder)
    assert n == {"vit_b": 89_670_912, "vit_l": 308_278_272, "vit_h": 637_026_048}[name]
    assert identify_vit(enc.state_dict()) == name


def small_vit(window=3, glob=(1,), seed=0, img=64, patch=8):
    torch.manual_seed(seed)
    enc = ImageEncoderViT(img_size=img, patch_size=patch, embed_dim=32, depth=2, num_heads=4,
                          out_chans=16, window_size=window, global_attn_indexes=glob).eval()
    with torch.no_grad():  # non-zero position terms, or they would test nothing
        for name, p in enc.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                p.normal_(0, 0.5)
    return enc


def test_small_vit_shapes_and_window_partition():
    enc = small_vit()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = enc(x)
    assert y.shape == (2, 16, 8, 8) and torch.isfinite(y).all()
    # 8x8 grid in windows of 3: padded to 9x9, 9 windows per image, exact round trip
    t = torch.randn(2, 8, 8, 5)
    w, padded = window_partition(t, 3)
    assert w.shape == (18, 3, 3, 5) and padded == (9, 9)
    assert torch.equal(window_unpartition(w, 3, padded, (8, 8)), t)
    assert torch.equal(w[1], t[0, 0:3, 3:6])  # row-major window order
    assert (w[2, :, 2] == 0).all()  # right padding of the last window column


def reference_attention(attn, x):
    """The official Attention.forward, written out: scaled q.k, plus q (unscaled) . Rh / Rw
    gathered with relative_coords = (q - k) + (size - 1), softmax, per-head output layout."""
    b, h, w, c = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, h * w, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).reshape(3, b * heads, h * w, -1).unbind(0)
    d = q.shape[-1]
    logits = (q * d ** -0.5) @ k.transpose(-2, -1)
    coords_h = torch.arange(h)[:, None] - torch.arange(h)[None, :] + (h - 1)
    coords_w = torch.arange(w)[:, None] - torch.arange(w)[None, :] + (w - 1)
    rh, rw = attn.rel_pos_h[coords_h], attn.rel_pos_w[coords_w]
    rq = q.reshape(b * heads, h, w, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rw)
    logits = (logits.view(-1, h, w, h, w) + rel_h[:, :, :, :, None]
              + rel_w[:, :, :, None, :]).view(-1, h * w, h * w)
    out = (logits.softmax(-1) @ v).view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4)
    return F.linear(out.reshape(b, h, w, -1), attn.proj.weight, attn.proj.bias)


def test_attention_matches_official_formula():
    torch.manual_seed(3)
    attn = Attention(32, 4, use_rel_pos=True, input_size=(5, 7)).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 1.0)
        attn.rel_pos_w.normal_(0, 1.0)
        x = torch.randn(2, 5, 7, 32)
        torch.testing.assert_close(attn(x), reference_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_window_covering_the_grid_equals_global_attention():
    # 8x8 token grid: a window of 8 is one window over everything, so windowed == global.
    windowed = small_vit(window=8, glob=())
    global_ = small_vit(window=8, glob=(0, 1), seed=1)
    global_.load_state_dict(windowed.state_dict())  # same shapes: rel pos of 2*8-1 either way
    assert [b.window_size for b in windowed.blocks] == [8, 8]
    assert [b.window_size for b in global_.blocks] == [0, 0]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x), global_(x), atol=1e-5, rtol=1e-5)
        # a real window split (4x4) sees less context and must give something else
        split = small_vit(window=4, glob=(), seed=2)
        split.load_state_dict({k: (v[:7] if "rel_pos" in k else v)
                               for k, v in windowed.state_dict().items()})
        assert (split(x) - windowed(x)).abs().max() > 1e-3


# ------------------------------------------------------------------------------------- loader


def test_load_mobile_sam_and_v2_teachers():
    path = shared_path("fixtures", "mobile_sam_seed1.pt")
    t = load_teacher(path)
    assert t.kind == "tiny_vit_5m" and not t.encoder.training
    assert not any(p.requires_grad for p in t.encoder.parameters())
    assert len(t.decoder_state) == 137 and all(
        k.startswith(("prompt_encoder.", "mask_decoder.")) for k in t.decoder_state)
    ref = load_image_encoder(path).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in t.encoder.state_dict().items())
    v2 = load_teacher_encoder(shared_path("fixtures", "mobilesamv2_tiny_vit_from_seed1.pt"))
    assert type(v2).__name__ == "TinyViT"
    assert all(torch.equal(v, ref[k]) for k, v in v2.state_dict().items())


def test_decoder_sources():
    flat = decoder_state_from_file(shared_path("fixtures", "mobile_sam_seed1.pt"))
    v2 = decoder_state_from_file(shared_path("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt"))
    assert set(flat) == set(v2) and len(flat) == 137
    pe, md = build_decoder(v2)
    assert not pe.training and not md.training
    with pytest.raises(TeacherError, match="missing keys"):
        build_decoder({k: v for k, v in flat.items() if "iou_prediction_head" not in k})


def test_loader_errors(tmp_path):
    with pytest.raises(TeacherError, match="no image encoder; pass it as the decoder"):
        load_teacher(shared_path("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt"))
    bogus = tmp_path / "bogus.pt"
    torch.save({"foo.weight": torch.zeros(3)}, bogus)
    with pytest.raises(TeacherError, match="no SAM ViT or TinyViT image encoder found.*foo"):
        load_teacher(bogus)
    with pytest.raises(TeacherError, match="holds no prompt_encoder"):
        decoder_state_from_file(bogus)
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "nope.pt")
    # a ViT that is none of B/L/H (checked on meta tensors: no allocation)
    with torch.device("meta"):
        vit = ImageEncoderViT(embed_dim=768, depth=6, num_heads=12)
    with pytest.raises(TeacherError, match="embed dim 768 and depth 6 is not a SAM ViT"):
        identify_vit(vit.state_dict())


@pytest.mark.slow
def test_official_format_vit_b_file_roundtrip(tmp_path):
    """A ViT-B checkpoint in the official flat layout (fp16 to halve the file) with the fixture's
    decoder: detected as sam_vit_b, loaded strictly into float32, decoder tensors kept."""
    torch.manual_seed(0)
    enc = build_image_encoder_vit("vit_b")
    dec = decoder_state_from_file(shared_path("fixtures", "mobile_sam_seed1.pt"))
    state = {"image_encoder." + k: v.half() for k, v in enc.state_dict().items()}
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save({**state, **dec}, path)
    del state
    t = load_teacher(path)
    assert t.kind == "sam_vit_b" and set(t.decoder_state) == set(dec)
    got = t.encoder.state_dict()
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in got.values())
    for k, v in enc.state_dict().items():
        assert torch.equal(got[k], v.half().float()), k
    # a truncated block list is refused with the key names, not a torch traceback
    bad = {k: v for k, v in load_state_dict(path).items() if not k.startswith(
        "image_encoder.blocks.11.")}
    torch.save(bad, path)
    with pytest.raises(TeacherError, match="depth 11 is not a SAM ViT"):
        load_teacher(path)
