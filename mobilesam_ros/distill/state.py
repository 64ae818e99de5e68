"""Files a distillation run writes: the resumable training state and the exported student.

* Training state (`TRAIN_STATE`, in the work directory): student, optimizer, LR scheduler, AMP
  scaler, completed step count, data position in global samples, the writing world size, torch
  RNG states, the run's config (JSON) and its history (JSON).
  Only tensors and plain containers, so it is read back with `torch.load(weights_only=True)`.
* Student export: the official flat `mobile_sam.pt` layout, `image_encoder.*` (the student) +
  `prompt_encoder.*` + `mask_decoder.*` (the decoder the student was validated with), float32, so
  `core.io.checkpoints.load_mobile_sam`, the node and the export tool load it unchanged.

Both are written to a temporary file and renamed, so a crash never leaves a half-written file
under the real name.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilesam_ros.core.io.atomic import atomic_save
from mobilesam_ros.core.io.checkpoints import load_mobile_sam

TRAIN_STATE = "train_state.pt"
STATE_FORMAT = "mobilesam_ros.distill.train_state/1"


def save_train_state(path: str | os.PathLike[str], *, student: nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, step: int,
                     config: Mapping[str, Any], history: Mapping[str, Any], samples: int,
                     world_size: int = 1) -> None:
    """Write everything needed to continue training after `step` completed optimizer steps.

    `samples` is the data position in global training samples (world-size independent);
    `world_size` the number of processes that wrote it (informative: any number may resume).
    The student, optimizer and scheduler are full replicas under DDP, so rank 0's are the run's."""
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    atomic_save({
        "format": STATE_FORMAT,
        "step": int(step),
        "samples": int(samples),
        "world_size": int(world_size),
        "student": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": list(cuda_rng),
        "config": json.dumps(dict(config), sort_keys=True),
        "history": json.dumps(dict(history)),
    }, Path(path))


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state (weights only, CPU); `config` and `history` come back parsed."""
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a distillation training state ({STATE_FORMAT})")
    state["config"] = json.loads(state["config"])
    state["history"] = json.loads(state["history"])
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put the torch RNGs back where `save_train_state` found them (CUDA only if present)."""
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"][:torch.cuda.device_count()])


def mobile_sam_state(student: nn.Module, decoder_state: Mapping[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
    """Flat official-layout state dict: `image_encoder.*` + the decoder's tensors, CPU float32
    (integer buffers such as BatchNorm's `num_batches_tracked` keep their dtype)."""
    def cpu(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        return t.float() if t.is_floating_point() else t.clone()

    out = {"image_encoder." + k: cpu(v) for k, v in student.state_dict().items()}
    for k, v in decoder_state.items():
        if not k.startswith(("prompt_encoder.", "mask_decoder.")):
            raise ValueError(f"decoder tensor {k!r} is neither prompt_encoder.* nor mask_decoder.*")
        out[k] = cpu(v)
    return out


def export_student(path: str | os.PathLike[str], student: nn.Module,
                   decoder_state: Mapping[str, torch.Tensor], verify: bool = True) -> Path:
    """Write the student as an official `mobile_sam.pt`; with `verify`, load it back strictly
    with `core.io.checkpoints.load_mobile_sam` (raises CheckpointError if it would not load)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(mobile_sam_state(student, decoder_state), p)
    if verify:
        load_mobile_sam(p)
    return p
