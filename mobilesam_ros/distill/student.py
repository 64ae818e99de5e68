"""The student encoder: how it is built, initialised, put in train mode, optimised and wrapped
for DistributedDataParallel."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mobilesam_ros.core.io.checkpoints import load_image_encoder
from mobilesam_ros.core.modeling.tiny_vit import build_tiny_vit_5m
from mobilesam_ros.distill.config import DistillConfig
from mobilesam_ros.distill.distributed import convert_sync_batchnorm


def build_student(cfg: DistillConfig, device: torch.device) -> nn.Module:
    """TinyViT-5M on `device`: from `cfg.init`, or fresh with weights seeded by `cfg.seed`."""
    torch.manual_seed(cfg.seed)  # a fresh student's init is part of the run's identity
    student = load_image_encoder(cfg.init) if cfg.init else build_tiny_vit_5m()
    return student.to(device)


def set_train_mode(student: nn.Module, bn_frozen: bool) -> None:
    """Train mode, except BatchNorm layers when `bn_frozen` (they keep their statistics)."""
    student.train()
    if bn_frozen:  # small batches: keep the running statistics the checkpoint came with
        for m in student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterator[torch.Tensor]) -> None:
    """Set every BatchNorm's running mean/var to the plain average over `batches` (model inputs).

    A fresh TinyViT's running statistics are (0, 1) while its activations are far from that, so in
    eval mode it starts nearly blind to the image, and the slow running average hides progress
    for the first hundreds of steps; measured statistics remove both effects.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, (momentum, training) in zip(bns, saved):
            m.momentum = momentum
            m.train(training)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: `weight_decay` on weights, none on norms and biases."""
    # No decay on norms, biases and TinyViT's attention biases (1-D or bias-like tensors).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith("attention_biases") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def wrap_ddp(student: nn.Module, device: torch.device) -> nn.Module:
    """`student` (its optimizer already built) as a DistributedDataParallel module whose
    BatchNorm statistics span the global batch; `student` stays the module that is validated
    and saved (same parameters, same state-dict keys)."""
    from torch.nn.parallel import DistributedDataParallel

    # TinyViT's ImageNet head is never run; DDP would wait forever for its gradients. AdamW
    # skipped it anyway (no gradient), so the optimizer state keeps the same layout.
    for p in (*student.norm_head.parameters(), *student.head.parameters()):
        p.requires_grad_(False)
    convert_sync_batchnorm(student)
    # Depthwise conv weights (C, 1, k, k): their gradients' stride along the size-1 dimension
    # differs from the bucket's, which changes no memory layout; DDP warns on every rank anyway.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # Buffers (BatchNorm running statistics, calibrated on rank 0) are broadcast once here; not
    # before every forward: every rank updates them identically from the synchronised (or
    # frozen) statistics, so re-broadcasting would only cost time.
    return DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda"
                                   else None, forward_sync_buffers=False)
