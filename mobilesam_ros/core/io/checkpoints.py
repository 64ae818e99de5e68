"""Safe loading of the official MobileSAM / MobileSAMv2 checkpoint formats, with clear errors.

Every file is read with `torch.load(..., weights_only=True)`: a checkpoint can only hold tensors
and plain containers, never objects whose unpickling runs code. Formats (see `sniff_format`):

* ``mobile_sam``: official `mobile_sam.pt`, flat `{image_encoder.*, prompt_encoder.*, mask_decoder.*}`;
* ``v2_encoder``: MobileSAMv2 encoder file `{'model': {<TinyViT keys, no prefix>}}`;
* ``v2_decoder``: MobileSAMv2 prompt-guided decoder `{'PromtEncoder': ..., 'MaskDecoder': ...}`
  (the official spelling "Promt"; "PromptEncoder" is accepted too);
* ``encoder``: a bare TinyViT state dict (`patch_embed.*`, `layers.*`, `neck.*`).

Loaded models are float32, on the CPU, in eval mode.
"""
import os
import pickle
import re
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

from mobilesam_ros.core.modeling.sam import Sam, build_mobile_sam
from mobilesam_ros.core.modeling.tiny_vit import TinyViT, build_tiny_vit_5m

PathLike = Union[str, "os.PathLike[str]"]
_SHOWN = 5  # how many offending keys an error message lists per kind
V2_PROMPT_KEYS = ("PromtEncoder", "PromptEncoder")  # the official v2 file spells it "Promt"
_FORMATS = {
    "mobile_sam": "official flat mobile_sam.pt layout",
    "v2_encoder": "MobileSAMv2 encoder file {'model': ...}",
    "v2_decoder": "MobileSAMv2 decoder file {'PromtEncoder': ..., 'MaskDecoder': ...}",
    "encoder": "bare TinyViT state dict",
    "unknown": "unrecognised layout",
}


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, unsafe, or holds another architecture."""


def check_file(path: PathLike) -> str:
    """`path` as a str if it names a non-empty file; CheckpointError saying what is wrong otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    return path


def load_state_dict(path: PathLike) -> Dict[str, Any]:
    """The top-level dict of a checkpoint file, read safely (tensors and containers only, on CPU)."""
    path = check_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_unpickling_message(path, e)) from e
    except Exception as e:  # zip/EOF/storage errors all mean the bytes are not a whole checkpoint
        raise CheckpointError(
            f"checkpoint file is corrupt or truncated: {path} ({type(e).__name__}: {_first_line(e)})") from e
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return dict(state)


def sniff_format(state: Mapping[str, Any]) -> str:
    """Which checkpoint layout `state` (a loaded top-level dict) has: 'mobile_sam', 'v2_encoder',
    'v2_decoder', 'encoder' or 'unknown'. Looks at key names only; shapes are checked on load."""
    keys = [k for k in state if isinstance(k, str)]
    if any(k in state for k in V2_PROMPT_KEYS) and "MaskDecoder" in state:
        return "v2_decoder"
    if isinstance(state.get("model"), Mapping):
        return "v2_encoder"
    if any(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in keys):
        return "mobile_sam"
    if any(k.startswith(("patch_embed.", "layers.", "neck.")) for k in keys):
        return "encoder"
    return "unknown"


def load_image_encoder(path: PathLike) -> TinyViT:
    """TinyViT-5M encoder from a `mobile_sam`, `v2_encoder` or bare `encoder` file."""
    state = load_state_dict(path)
    fmt = sniff_format(state)
    if fmt == "mobile_sam":
        state = strip_prefix(state, "image_encoder.")
    elif fmt == "v2_encoder":
        state = dict(state["model"])
    encoder = build_tiny_vit_5m()
    load_strict(encoder, state, "TinyViT-5M image encoder", path, fmt)
    return encoder


def load_mobile_sam(path: PathLike) -> Sam:
    """Full MobileSAM from the official flat `mobile_sam.pt` (all three parts, strict)."""
    state = load_state_dict(path)
    sam = build_mobile_sam()
    load_strict(sam, state, "MobileSAM (vit_t)", path, sniff_format(state))
    return sam


def load_v2(encoder_path: PathLike, decoder_path: PathLike) -> Sam:
    """MobileSAMv2: TinyViT encoder file (any format `load_image_encoder` takes) + prompt-guided
    decoder file `{'PromtEncoder': ..., 'MaskDecoder': ...}`."""
    state = load_state_dict(decoder_path)
    fmt = sniff_format(state)
    if fmt != "v2_decoder":
        raise CheckpointError(
            f"{os.fspath(decoder_path)}: not a MobileSAMv2 prompt-guided decoder file: expected top-level "
            f"keys 'PromtEncoder' and 'MaskDecoder', found {_few(list(state))} ({_FORMATS[fmt]})")
    sam = build_mobile_sam(load_image_encoder(encoder_path))
    prompt_key = next(k for k in V2_PROMPT_KEYS if k in state)
    load_strict(sam.prompt_encoder, _as_state(state[prompt_key], decoder_path, prompt_key),
               "prompt encoder", decoder_path, fmt)
    load_strict(sam.mask_decoder, _as_state(state["MaskDecoder"], decoder_path, "MaskDecoder"),
               "mask decoder", decoder_path, fmt)
    return sam.eval()


def load_strict(module: nn.Module, state: Mapping[str, Any], what: str, path: PathLike,
                fmt: str = "", assign: bool = False) -> None:
    """Strict load into `module` (then eval) with a CheckpointError that names missing/unexpected
    keys and shape mismatches. `what` names the expected model, `fmt` the file's layout
    (`sniff_format`) for the message; `assign=True` adopts the file's tensors (for a module built
    on the meta device: no second copy of a large encoder)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    not_tensor = [k for k in expected if k in state and not isinstance(state[k], torch.Tensor)]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
                  if isinstance(state.get(k), torch.Tensor) and state[k].shape != v.shape]
    problems = [f"{len(lst)} {name} (e.g. {_few(lst)})" for name, lst in (
        ("missing keys", missing), ("unexpected keys", unexpected),
        ("shape mismatches", mismatched), ("non-tensor values", not_tensor)) if lst]
    if problems:
        looks = f" (file looks like: {_FORMATS[fmt]})" if fmt else ""
        raise CheckpointError(f"{os.fspath(path)} does not hold a {what}{looks}: " + "; ".join(problems))
    # copy_ into the float32 parameters also converts half-precision files.
    module.load_state_dict(state, strict=True, assign=assign)
    module.eval()


def strip_prefix(state: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    """The entries of `state` whose (str) key starts with `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def _as_state(value: Any, path: PathLike, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{os.fspath(path)}: '{key}' should be a state dict, got {type(value).__name__}")
    return value


def _unpickling_message(path: str, e: Exception) -> str:
    detail = str(e)
    blocked = re.search(r"GLOBAL ([\w.]+)", detail)
    if blocked:
        return (f"refused to load {path}: it is a pickle that would import and call "
                f"'{blocked.group(1)}' while loading, i.e. run code. Only plain tensor checkpoints are "
                f"accepted (torch.load weights_only=True); nothing from the file was executed.")
    reason = (detail.strip().splitlines() or ["?"])[-1]
    for line in detail.splitlines():
        if "Unsupported" in line or "unsupported" in line:
            reason = line.strip()
    return (f"refused to load {path}: the safe (weights-only) unpickler cannot read it ({reason}). "
            f"The file is corrupt, not a PyTorch checkpoint, or a pickle holding more than tensors; "
            f"nothing from it was executed.")


def _first_line(e: Exception) -> str:
    """First sentence of an exception message (torch appends long generic advice)."""
    return (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]


def _few(items: List[str]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOWN])
    return shown + (f", ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
