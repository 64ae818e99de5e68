"""Teacher encoders and the prompt decoder for distillation, from checkpoint files (weights only).

A teacher is any image encoder mapping a normalised, zero-padded (B, 3, 1024, 1024) image to a
(B, 256, 64, 64) embedding that SAM's mask decoder understands. Recognised files (by key names
and shapes, never by file name):

* official SAM `sam_vit_{b,l,h}_*.pth`: flat `image_encoder.*` (ViT: `pos_embed`, `blocks.N.*`)
  + `prompt_encoder.*` + `mask_decoder.*`; ViT-B/L/H told apart by embed dim and depth;
* official MobileSAM `mobile_sam.pt` and students written by `mobilesam_ros distill` (the same
  flat format, TinyViT-5M encoder);
* MobileSAMv2's TinyViT file `{'model': {...}}` and a bare TinyViT or ViT state dict (no decoder).

Every file is read with `torch.load(weights_only=True)` through `core.io.checkpoints`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from mobilesam_ros.core.io.checkpoints import (V2_PROMPT_KEYS, CheckpointError, load_image_encoder,
                                               load_state_dict, load_strict, sniff_format,
                                               strip_prefix)
from mobilesam_ros.core.modeling.image_encoder_vit import VIT_CONFIGS, build_image_encoder_vit
from mobilesam_ros.core.modeling.sam import build_sam_decoder

PathLike = str | os.PathLike
DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


class TeacherError(CheckpointError):
    """A checkpoint holds no usable teacher encoder or prompt decoder."""


@dataclass
class Teacher:
    """A loaded teacher: `encoder` (float32, CPU, eval, frozen), `kind` ('sam_vit_b', 'sam_vit_l',
    'sam_vit_h' or 'tiny_vit_5m') and the file's `prompt_encoder.*`/`mask_decoder.*` tensors
    (`decoder_state`, empty when the file has none)."""

    encoder: nn.Module
    kind: str
    decoder_state: dict[str, torch.Tensor] = field(default_factory=dict)


def _is_vit(enc: Mapping[str, Any]) -> bool:
    return "pos_embed" in enc or "patch_embed.proj.weight" in enc or any(
        _BLOCK_RE.match(k) for k in enc)


def identify_vit(enc: Mapping[str, Any]) -> str:
    """'vit_b' / 'vit_l' / 'vit_h' for a SAM ViT encoder state dict (no prefix), by embed dim
    (patch projection width) and depth (number of blocks); TeacherError for anything else."""
    w = enc.get("patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise TeacherError("ViT-like encoder without a patch_embed.proj.weight (C, 3, 16, 16)")
    dim = int(w.shape[0])
    depth = len({int(m.group(1)) for k in enc if (m := _BLOCK_RE.match(k))})
    for name, cfg in VIT_CONFIGS.items():
        if cfg["embed_dim"] == dim and cfg["depth"] == depth:
            return name
    known = ", ".join(f"{n} ({c['embed_dim']}/{c['depth']})" for n, c in VIT_CONFIGS.items())
    raise TeacherError(f"ViT encoder with embed dim {dim} and depth {depth} is not a SAM ViT "
                       f"(embed dim/depth: {known})")


def _load_strict(module: nn.Module, state: Mapping[str, Any], what: str, path: PathLike,
                 assign: bool = False) -> None:
    """`checkpoints.load_strict`, its error raised as a TeacherError."""
    try:
        load_strict(module, state, what, path, assign=assign)
    except CheckpointError as e:
        raise TeacherError(str(e)) from None


def _load_vit(enc: Mapping[str, Any], path: PathLike) -> tuple[nn.Module, str]:
    name = identify_vit(enc)
    pos = enc.get("pos_embed")
    if isinstance(pos, torch.Tensor) and tuple(pos.shape[1:3]) != (64, 64):
        raise TeacherError(f"{os.fspath(path)}: ViT pos_embed grid {tuple(pos.shape[1:3])}; the "
                           "SAM decoder needs 64x64 embeddings (img_size 1024)")
    # Built on the meta device and filled by assignment: ViT-H is 2.5 GB, so no second copy.
    with torch.device("meta"):
        encoder = build_image_encoder_vit(name)
    _load_strict(encoder, enc, f"SAM {name} image encoder", path, assign=True)
    return encoder.float(), name


def load_teacher(path: PathLike) -> Teacher:
    """Load the image encoder (and decoder tensors, if any) of a teacher checkpoint file.

    Raises CheckpointError (missing/corrupt/unsafe file) or TeacherError (no known encoder).
    """
    state = load_state_dict(path)
    fmt = sniff_format(state)
    decoder_state = {k: v for k, v in state.items()
                     if isinstance(k, str) and k.startswith(DECODER_PREFIXES)}
    if fmt == "v2_encoder":
        enc = dict(state["model"])
    elif any(isinstance(k, str) and k.startswith("image_encoder.") for k in state):
        enc = strip_prefix(state, "image_encoder.")
    elif fmt in ("mobile_sam", "v2_decoder"):
        raise TeacherError(f"{os.fspath(path)} holds a prompt encoder / mask decoder but no image "
                           "encoder; pass it as the decoder, and an encoder file as the teacher")
    else:
        enc = state
    if _is_vit(enc):
        encoder, name = _load_vit(enc, path)
        kind = "sam_" + name
    elif any(isinstance(k, str) and k.startswith(("layers.", "patch_embed.seq.")) for k in enc):
        del state, enc  # load_image_encoder reads the (small) file again in its own format
        encoder, kind = load_image_encoder(path), "tiny_vit_5m"
    else:
        few = ", ".join(str(k) for k in list(state)[:5])
        raise TeacherError(f"{os.fspath(path)}: no SAM ViT or TinyViT image encoder found "
                           f"(keys: {few}{', ...' if len(state) > 5 else ''})")
    encoder.eval().requires_grad_(False)
    return Teacher(encoder, kind, decoder_state)


def load_teacher_encoder(path: PathLike) -> nn.Module:
    """The teacher's image encoder: (B, 3, 1024, 1024) normalised -> (B, 256, 64, 64), eval."""
    return load_teacher(path).encoder


def decoder_state_from_file(path: PathLike) -> dict[str, torch.Tensor]:
    """`prompt_encoder.*` + `mask_decoder.*` tensors from a SAM / MobileSAM flat checkpoint or a
    MobileSAMv2 prompt-guided decoder file (`{'PromtEncoder': ..., 'MaskDecoder': ...}`)."""
    state = load_state_dict(path)
    prompt_key = next((k for k in V2_PROMPT_KEYS if k in state), None)
    if prompt_key is not None and isinstance(state.get("MaskDecoder"), Mapping):
        out = {"prompt_encoder." + k: v for k, v in state[prompt_key].items()}
        out.update({"mask_decoder." + k: v for k, v in state["MaskDecoder"].items()})
        return out
    out = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith(DECODER_PREFIXES)}
    if not out:
        raise TeacherError(f"{os.fspath(path)} holds no prompt_encoder.*/mask_decoder.* tensors "
                           "(nor a MobileSAMv2 decoder file)")
    return out


def build_decoder(decoder_state: Mapping[str, torch.Tensor], source: PathLike = "<decoder>"
                  ) -> tuple[nn.Module, nn.Module]:
    """(PromptEncoder, MaskDecoder) in eval mode, strictly loaded from `decoder_state`
    (`prompt_encoder.*` + `mask_decoder.*`, SAM's architecture shared by all SAM variants)."""
    pe, md = build_sam_decoder()
    _load_strict(pe, strip_prefix(decoder_state, "prompt_encoder."), "SAM prompt encoder", source)
    _load_strict(md, strip_prefix(decoder_state, "mask_decoder."), "SAM mask decoder", source)
    return pe.eval().requires_grad_(False), md.eval().requires_grad_(False)
