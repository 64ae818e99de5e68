"""Options, result and input errors of a distillation run (`train.distill`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mobilesam_ros.core.errors import ConfigError

# Changing any of these changes what a resumed run would compute, so resume refuses.
RUN_IDENTITY = ("teacher", "data", "topic", "every_n", "max_frames", "init", "epochs", "steps",
                "batch_size", "lr", "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip",
                "bn", "val_fraction", "split_seed", "hflip", "seed", "cache_dtype")


class DistillInputError(ConfigError):
    """A bad request (paths, options, a work directory in the way): the CLI exits with 2."""


@dataclass
class DistillConfig:
    """Options of one run; paths may be str or Path. See `mobilesam_ros distill --help`."""

    teacher: str                       # teacher checkpoint (SAM ViT-B/L/H, MobileSAM, a student)
    data: str                          # image folder, video file, or ROS 2 bag
    out: str                           # student checkpoint to write (mobile_sam.pt format)
    work_dir: str | None = None        # default: <out without suffix>_distill/
    cache_dir: str | None = None       # default: <work_dir>/teacher_cache
    topic: str | None = None           # bag image topic (needed when the bag has several)
    every_n: int = 1                   # video/bag: every n-th frame
    max_frames: int | None = None      # video/bag: at most this many frames
    decoder: str | None = None         # prompt encoder + mask decoder; default: the teacher's
    init: str | None = None            # initialise the student from this TinyViT checkpoint
    epochs: int = 8
    steps: int | None = None           # total optimizer steps; overrides epochs
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int | None = None    # default: 5% of the steps, at most 500
    min_lr_ratio: float = 0.01         # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    bn: str = "auto"                   # BatchNorm: 'train', 'frozen', 'auto' (frozen with init)
    val_fraction: float = 0.1
    split_seed: int = 0
    val_every: int | None = None       # steps between validations; default once per epoch
    val_frames: int = 16               # held-out frames per validation (evenly spaced subset)
    train_eval_frames: int = 8         # training frames re-measured in eval mode per validation
    points_per_side: int = 4           # validation point grid (plus 4 boxes) per frame
    checkpoint_every: int | None = None  # steps between training-state saves; default per epoch
    hflip: bool = False                # add mirrored frames (the teacher encodes them too)
    teacher_batch_size: int = 1
    cache_dtype: str = "float32"
    device: str = "auto"               # 'auto', 'cpu', 'cuda', 'cuda:1', ...
    amp: bool = True                   # fp16 autocast + GradScaler (CUDA only)
    seed: int = 0
    resume: bool = False
    progress: bool = True


@dataclass
class DistillResult:
    """What a run produced. `validations` holds every validation record ({step, train_mse,
    val_mse, val_mask_iou, ...}); `initial` / `final` are the first and last of them (rank 0;
    the other ranks of a torchrun run return an empty list)."""

    out: Path
    work_dir: Path
    cache_dir: Path
    steps: int
    train_keys: list[str]
    val_keys: list[str]
    validations: list[dict[str, Any]]
    step_log: list[dict[str, Any]] = field(repr=False, default_factory=list)
    rank: int = 0                      # under torchrun only rank 0 validates: others have none

    @property
    def initial(self) -> dict[str, Any]:
        return self.validations[0]

    @property
    def final(self) -> dict[str, Any]:
        return self.validations[-1]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a cuda device without a GPU is a bad request."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DistillInputError(f"bad device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DistillInputError(f"device {name!r} requested but torch sees no CUDA GPU")
    return dev


def check_config(cfg: DistillConfig) -> None:
    """Raise DistillInputError for options that cannot work and input paths that do not exist."""
    checks = [(cfg.batch_size >= 1, "batch_size must be >= 1"),
              (cfg.epochs >= 1, "epochs must be >= 1"),
              (cfg.steps is None or cfg.steps >= 1, "steps must be >= 1"),
              (cfg.lr > 0, "lr must be > 0"),
              (0.0 <= cfg.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
              (cfg.bn in ("auto", "train", "frozen"), "bn must be auto, train or frozen"),
              (cfg.teacher_batch_size >= 1, "teacher_batch_size must be >= 1"),
              (cfg.cache_dtype in ("float32", "float16"), "cache_dtype: float32 or float16")]
    for ok, msg in checks:
        if not ok:
            raise DistillInputError(msg)
    for name in ("teacher", "data") + (("decoder",) if cfg.decoder else ()) + (
            ("init",) if cfg.init else ()):
        if not Path(getattr(cfg, name)).exists():
            raise DistillInputError(f"{name} {getattr(cfg, name)} does not exist")
