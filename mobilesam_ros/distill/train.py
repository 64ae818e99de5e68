"""Decoupled distillation (MobileSAM): train a TinyViT-5M encoder on a teacher's embeddings.

1. The teacher encodes every frame once into a TeacherCache (memory-mapped (N, 256, 64, 64)
   embeddings + the (N, 1024, 1024, 3) uint8 inputs, resized and padded exactly as at inference).
2. The student (TinyViT-5M, fresh and seeded, or initialised from a checkpoint) learns to
   reproduce the embeddings with a plain MSE: AdamW, linear warm-up + cosine decay, mixed
   precision (fp16 autocast + GradScaler) on CUDA. SAM's prompt encoder and mask decoder are not
   trained.
3. Held-out frames (`split_keys`) are validated periodically: embedding MSE, and mask IoU between
   masks decoded by the same decoder from teacher vs student embeddings (`validate.py`).
4. The student is written as an official `mobile_sam.pt` (`state.py`).

Everything lives in a work directory (cache, `train_state.pt`, logs, `loss.png`); `resume=True`
continues an interrupted run from its last saved step (model, optimizer, schedule, AMP scaler,
RNG) with the same data order, so it computes what an uninterrupted run computes (up to float
round-off: TinyViT's attention-bias gradient is accumulated in a nondeterministic order on CPU).
Ctrl-C finishes the current step, saves, and stops.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_ros.core.checkpoints import load_image_encoder
from mobilesam_ros.core.modeling.tiny_vit import build_tiny_vit_5m
from mobilesam_ros.distill.config import (RUN_IDENTITY, DistillConfig, DistillInputError,
                                          DistillResult, check_config, resolve_device)
from mobilesam_ros.distill.data import split_keys
from mobilesam_ros.distill.inputs import HFLIP_SUFFIX, base_key, model_input
from mobilesam_ros.distill.prepare import prepare_cache
from mobilesam_ros.distill.report import PLOT, plot_history, write_logs
from mobilesam_ros.distill.state import (TRAIN_STATE, export_student, load_train_state,
                                         restore_rng, save_train_state)
from mobilesam_ros.distill.teachers import build_decoder
from mobilesam_ros.distill.validate import evaluate

__all__ = ["DistillConfig", "DistillInputError", "DistillResult", "calibrate_batchnorm",
           "distill", "lr_factor"]

log = logging.getLogger(__name__)

def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier for 0-based optimizer step `step`: linear warm-up, then cosine to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def _subset(rows: list[int], n: int) -> list[int]:
    """At most n rows, evenly spaced (deterministic)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[int(i)] for i in np.linspace(0, len(rows) - 1, n).round()]


def _build_student(cfg: DistillConfig, device: torch.device) -> nn.Module:
    torch.manual_seed(cfg.seed)  # a fresh student's init is part of the run's identity
    student = load_image_encoder(cfg.init) if cfg.init else build_tiny_vit_5m()
    return student.to(device)


def _set_train_mode(student: nn.Module, bn_frozen: bool) -> None:
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


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on norms, biases and TinyViT's attention biases (1-D or bias-like tensors).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith("attention_biases") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[dict[str, bool]]:
    """Ctrl-C sets a flag checked between steps (a second Ctrl-C interrupts at once)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):  # noqa: ARG001
        flag["stop"] = True
        signal.signal(signal.SIGINT, previous)
        log.warning("interrupt: finishing this step, saving, then stopping (again to abort)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def distill(cfg: DistillConfig, on_step: Callable[[int, float], None] | None = None
            ) -> DistillResult:
    """Run (or resume) a distillation as configured; returns the written files and metrics.

    `on_step(completed_steps, loss)` is called after every optimizer step (raising
    KeyboardInterrupt there stops the run after saving, as Ctrl-C does).
    Raises DistillInputError for bad requests, CheckpointError / SourceError / CacheError for
    unreadable inputs.
    """
    check_config(cfg)
    out = Path(cfg.out)
    work = Path(cfg.work_dir) if cfg.work_dir else out.with_name(out.stem + "_distill")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else work / "teacher_cache"
    state_path = work / TRAIN_STATE
    if state_path.exists() and not cfg.resume:
        raise DistillInputError(f"{work} already holds a training run ({TRAIN_STATE}); resume it "
                                "(--resume) or use another work directory")
    device = resolve_device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"
    prepared = prepare_cache(cfg, cache_dir, device)
    cache, sizes, decoder_state = prepared.cache, prepared.sizes, prepared.decoder_state
    work.mkdir(parents=True, exist_ok=True)

    # ---- split: by source frame, so a frame and its mirror never sit on both sides
    keys = cache.keys
    filled = [int(i) for i in cache.indices]
    bases = list(dict.fromkeys(base_key(keys[i]) for i in filled))
    train_b, val_b = split_keys(bases, cfg.val_fraction, cfg.split_seed)
    train_set, val_set = set(train_b), set(val_b)
    train_rows = [i for i in filled if base_key(keys[i]) in train_set]
    val_rows = [i for i in filled if keys[i] in val_set]  # unmirrored held-out frames
    if not train_rows:
        raise DistillInputError(f"no training frames left after holding out {len(val_b)} "
                                f"(val_fraction {cfg.val_fraction}); add frames")
    if cfg.val_fraction > 0 and not val_rows:
        log.warning("val_fraction %.3g held out no frame of %d; validating on training frames "
                    "only", cfg.val_fraction, len(bases))
    bs = cfg.batch_size
    per_epoch = math.ceil(len(train_rows) / bs)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(500, total // 20)
    val_every = cfg.val_every or per_epoch
    ckpt_every = cfg.checkpoint_every or per_epoch
    log.info("%d training rows (%d frames), %d held-out frames, %d steps of batch %d on %s%s",
             len(train_rows), len(train_b), len(val_rows), total, bs, device,
             " (fp16 autocast)" if use_amp else "")

    # ---- student, optimizer, schedule
    student = _build_student(cfg, device)
    bn_frozen = cfg.bn == "frozen" or (cfg.bn == "auto" and cfg.init is not None)
    optimizer = torch.optim.AdamW(_param_groups(student, cfg.weight_decay), lr=cfg.lr,
                                  betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    identity = {k: (str(Path(v).resolve()) if k in ("teacher", "data", "init") and v else v)
                for k, v in dataclasses.asdict(cfg).items() if k in RUN_IDENTITY}
    # The frames themselves (a rebuilt cache of a changed folder would move the split).
    identity["frames_sha256"] = hashlib.sha256("\0".join(keys[i] for i in filled).encode()
                                               ).hexdigest()
    step, steps_log, validations = 0, [], []
    if state_path.exists():
        st = load_train_state(state_path)
        changed = {k: (st["config"].get(k), v) for k, v in identity.items()
                   if st["config"].get(k) != v}
        if changed:
            raise DistillInputError(f"cannot resume {state_path}: options changed "
                                    + ", ".join(f"{k}: {a!r} -> {b!r}"
                                                for k, (a, b) in changed.items()))
        student.load_state_dict(st["student"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if st["scaler"]:  # empty when saved without AMP (e.g. a CPU run resumed on a GPU)
            scaler.load_state_dict(st["scaler"])
        restore_rng(st)
        step = int(st["step"])
        steps_log = st["history"]["steps"]
        validations = st["history"]["validations"]
        log.info("resuming %s at step %d of %d", work, step, total)

    inputs, targets = cache.inputs, cache.embeddings
    size_of = [sizes.get(k) for k in keys]
    train_eval = _subset([r for r in train_rows if not keys[r].endswith(HFLIP_SUFFIX)],
                         cfg.train_eval_frames)
    val_eval = _subset(val_rows, cfg.val_frames)
    decoder = tuple(m.to(device) for m in build_decoder(decoder_state, cfg.decoder or cfg.teacher))

    def validate(at: int) -> None:
        tr = evaluate(student, inputs, targets, train_eval, [size_of[r] for r in train_eval],
                      device, bs, use_amp)
        rec: dict[str, Any] = {"step": at, "train_mse": tr.mse, "train_frames": tr.n_frames}
        if val_eval:
            va = evaluate(student, inputs, targets, val_eval, [size_of[r] for r in val_eval],
                          device, bs, use_amp, decoder, cfg.points_per_side)
            rec.update(val_mse=va.mse, val_mask_iou=va.mask_iou, val_frames=va.n_frames,
                       val_masks=va.n_masks)
        validations.append(rec)
        log.info("validation at step %d: %s", at, ", ".join(
            f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
        _set_train_mode(student, bn_frozen)

    def history() -> dict[str, Any]:
        return {"steps": steps_log, "validations": validations}

    def save(at: int) -> None:
        save_train_state(state_path, student=student, optimizer=optimizer, scheduler=scheduler,
                         scaler=scaler, step=at, config=identity, history=history())
        write_logs(work, steps_log, validations)
        plot_history(work / PLOT, steps_log, validations, total)

    perms: dict[int, list[int]] = {}

    def batch_rows(s: int) -> list[int]:
        epoch, pos = divmod(s, per_epoch)
        if epoch not in perms:  # the order depends on (seed, epoch) only: resumable as is
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            perms.clear()
            perms[epoch] = [train_rows[i] for i in torch.randperm(len(train_rows), generator=g)]
        return perms[epoch][pos * bs:(pos + 1) * bs]

    from tqdm import tqdm

    if step == 0 and cfg.init is None:
        calib = train_eval or train_rows[:8]
        student.eval()
        calibrate_batchnorm(student, (model_input(inputs[[r]], [size_of[r]], device)
                                      for r in calib))
    if not validations:
        validate(0)
    _set_train_mode(student, bn_frozen)
    bar = tqdm(total=total, initial=step, unit="step", desc="distill", disable=not cfg.progress)
    t0 = time.monotonic()
    consistent = True  # False while an optimizer step is half done
    try:
        with _deferred_sigint() as sigint:
            while step < total:
                consistent = False
                rows = batch_rows(step)
                x = model_input(inputs[rows], [size_of[r] for r in rows], device)
                tgt = torch.from_numpy(np.asarray(targets[rows], np.float32)).to(device)
                with torch.autocast(device.type, torch.float16, enabled=use_amp):
                    pred = student(x)
                loss = F.mse_loss(pred.float(), tgt)
                if not torch.isfinite(loss) and not use_amp:
                    raise FloatingPointError(f"non-finite loss at step {step}; lower the lr")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                step += 1
                consistent = True
                value = loss.detach().item()
                steps_log.append({"step": step, "epoch": (step - 1) // per_epoch, "lr": lr,
                                  "loss": value})
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}", lr=f"{lr:.2g}")
                if step % val_every == 0 or step == total:
                    validate(step)
                if step % ckpt_every == 0 and step < total:  # the end is saved below
                    save(step)
                if on_step is not None:
                    on_step(step, value)
                if sigint["stop"]:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if consistent:  # between steps (on_step, first Ctrl-C): save where we are
            save(step)
            log.warning("stopped at step %d of %d; saved %s (resume to continue)", step, total,
                        state_path)
        else:
            log.warning("aborted inside step %d; %s holds the last saved step", step + 1,
                        state_path)
        raise
    finally:
        bar.close()
    if validations[-1]["step"] != step:
        validate(step)
    save(step)
    export_student(out, student, decoder_state)
    log.info("wrote %s after %d steps (%.0f s this run); logs and %s in %s", out, step,
             time.monotonic() - t0, PLOT, work)
    return DistillResult(out, work, cache_dir, step, train_b, val_b, validations, steps_log)
