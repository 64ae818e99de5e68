"""`Trainer`: one distillation run over explicit state (see `train.py` for the method)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_ros.core.runtime.fast_decoder import FastMaskDecoder
from mobilesam_ros.distill.config import (RUN_IDENTITY, DistillConfig, DistillInputError,
                                          DistillResult)
from mobilesam_ros.distill.data import split_keys
from mobilesam_ros.distill.distributed import DistEnv, all_mean, check_global_batch, local_rows
from mobilesam_ros.distill.inputs import HFLIP_SUFFIX, base_key, model_input
from mobilesam_ros.distill.prepare import prepare_cache
from mobilesam_ros.distill.report import PLOT, plot_history, write_logs
from mobilesam_ros.distill.schedule import BatchPlan, lr_factor
from mobilesam_ros.distill.state import (TRAIN_STATE, export_student, load_train_state,
                                         restore_rng, save_train_state)
from mobilesam_ros.distill.student import (build_student, calibrate_batchnorm, param_groups,
                                           set_train_mode, wrap_ddp)
from mobilesam_ros.distill.teacher_cache import TeacherCache
from mobilesam_ros.distill.teachers import build_decoder
from mobilesam_ros.distill.validate import evaluate

log = logging.getLogger(__name__)


def _subset(rows: list[int], n: int) -> list[int]:
    """At most n rows, evenly spaced (deterministic)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[int(i)] for i in np.linspace(0, len(rows) - 1, n).round()]


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


@dataclasses.dataclass
class TrainPlan:
    """What a run trains on and how long: the split (by source frame, so a frame and its mirror
    never sit on both sides), the data order, the schedule's lengths (optimizer steps)."""

    train_frames: list[str]  # source-frame keys
    val_frames: list[str]
    train_rows: list[int]  # cache rows (mirrors included)
    val_rows: list[int]  # unmirrored held-out rows
    batches: BatchPlan
    total: int
    warmup: int
    val_every: int
    checkpoint_every: int
    train_eval: list[int]  # rows re-measured in eval mode at each validation
    val_eval: list[int]
    identity: dict[str, Any]  # what a resumed run must share with the saved one


class Trainer:
    """One distillation run over explicit state: `plan()` (teacher pass, split, model,
    optimizer), `resume()` (from the work directory's saved state, if any), then `step()`
    repeatedly, `validate()` and `save()` as scheduled; `run()` does all of it with the schedule,
    Ctrl-C handling and the final export. Rank 0 alone validates and writes.

    `plan()` sets `cache` (TeacherCache), `decoder_state`, `spec` (the TrainPlan), `student`,
    `optimizer`, `scheduler`, `scaler`, `decoder` and `model` (`student`, or its DDP wrapper once
    `start()` ran); progress is `completed` (optimizer steps), `steps_log` and `validations`."""

    def __init__(self, cfg: DistillConfig, env: DistEnv = DistEnv(),
                 device: torch.device = torch.device("cpu")) -> None:
        self.cfg, self.env, self.device = cfg, env, device
        self.out = Path(cfg.out)
        self.work = (Path(cfg.work_dir) if cfg.work_dir
                     else self.out.with_name(self.out.stem + "_distill"))
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.work / "teacher_cache"
        self.state_path = self.work / TRAIN_STATE
        self.use_amp = cfg.amp and device.type == "cuda"
        self.bn_frozen = cfg.bn == "frozen" or (cfg.bn == "auto" and cfg.init is not None)
        # Progress: optimizer steps done, their records, the validations so far.
        self.completed = 0
        self.steps_log: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------ plan
    def plan(self) -> TrainPlan:
        """Fill the teacher cache, split its rows, build student, optimizer, schedule, decoder."""
        cfg, env = self.cfg, self.env
        if self.state_path.exists() and not cfg.resume:
            raise DistillInputError(f"{self.work} already holds a training run ({TRAIN_STATE}); "
                                    "resume it (--resume) or use another work directory")
        check_global_batch(cfg.batch_size, env)
        prepared = prepare_cache(cfg, self.cache_dir, self.device, env=env)
        self.cache, self.decoder_state = prepared.cache, prepared.decoder_state
        self.work.mkdir(parents=True, exist_ok=True)
        self.spec = spec = self._split(self.cache)
        if env.is_main:
            bs = cfg.batch_size
            log.info("%d training rows (%d frames), %d held-out frames, %d steps of batch %d "
                     "on %s%s", len(spec.train_rows), len(spec.train_frames), len(spec.val_rows),
                     spec.total, bs, f"{env.world_size} processes ({self.device.type}, "
                     f"{bs // env.world_size} each)" if env.distributed else self.device,
                     " (fp16 autocast)" if self.use_amp else "")
        self.student = build_student(cfg, self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.student, cfg.weight_decay),
                                           lr=cfg.lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, spec.total, spec.warmup, cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        prompt_encoder, mask_decoder = (m.to(self.device) for m in
                                        build_decoder(self.decoder_state, cfg.decoder or cfg.teacher))
        self.decoder = FastMaskDecoder(prompt_encoder, mask_decoder)  # after .to(): it keeps views
        self.model: nn.Module = self.student  # the DDP wrapper once training starts
        return spec

    def _split(self, cache: TeacherCache) -> TrainPlan:
        cfg = self.cfg
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
            log.warning("val_fraction %.3g held out no frame of %d; validating on training "
                        "frames only", cfg.val_fraction, len(bases))
        batches = BatchPlan(train_rows, cfg.batch_size, cfg.seed)
        total = cfg.steps if cfg.steps is not None else cfg.epochs * batches.per_epoch
        identity = {k: (str(Path(v).resolve()) if k in ("teacher", "data", "init") and v else v)
                    for k, v in dataclasses.asdict(cfg).items() if k in RUN_IDENTITY}
        # The frames themselves (a rebuilt cache of a changed folder would move the split).
        identity["frames_sha256"] = hashlib.sha256("\0".join(keys[i] for i in filled).encode()
                                                   ).hexdigest()
        return TrainPlan(
            train_b, val_b, train_rows, val_rows, batches, total,
            warmup=cfg.warmup_steps if cfg.warmup_steps is not None else min(500, total // 20),
            val_every=cfg.val_every or batches.per_epoch,
            checkpoint_every=cfg.checkpoint_every or batches.per_epoch,
            train_eval=_subset([r for r in train_rows if not keys[r].endswith(HFLIP_SUFFIX)],
                               cfg.train_eval_frames),
            val_eval=_subset(val_rows, cfg.val_frames), identity=identity)

    # ---------------------------------------------------------------------------- resume
    def resume(self) -> bool:
        """Continue from the saved training state, if the work directory holds one (same run
        identity required; any world size); False when there is none."""
        if not self.state_path.exists():
            return False
        spec, path = self.spec, self.state_path
        st = load_train_state(path)
        changed = {k: (st["config"].get(k), v) for k, v in spec.identity.items()
                   if st["config"].get(k) != v}
        if changed:
            raise DistillInputError(f"cannot resume {path}: options changed "
                                    + ", ".join(f"{k}: {a!r} -> {b!r}"
                                                for k, (a, b) in changed.items()))
        self.student.load_state_dict(st["student"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if st["scaler"]:  # empty when saved without AMP (e.g. a CPU run resumed on a GPU)
            self.scaler.load_state_dict(st["scaler"])
        restore_rng(st)
        # The position is kept in global samples (states before it existed: the step count).
        samples = int(st.get("samples", spec.batches.samples_before(int(st["step"]))))
        step = spec.batches.step_at(samples)
        if step != int(st["step"]):
            raise DistillInputError(f"{path}: step {st['step']} but data position "
                                    f"{samples} (step {step}); the file is inconsistent")
        self.completed = step
        self.steps_log = st["history"]["steps"]
        self.validations = st["history"]["validations"]
        if self.env.is_main:
            log.info("resuming %s at step %d of %d (sample %d; saved by %d process(es), now %d)",
                     self.work, step, spec.total, samples, int(st.get("world_size", 1)),
                     self.env.world_size)
        return True

    # ------------------------------------------------------------------------------ step
    def _model_input(self, rows: Sequence[int]) -> torch.Tensor:
        return model_input(self.cache.inputs[rows], self.cache.sizes[rows], self.device)

    def start(self) -> None:
        """Before the first step of this process: calibrate a fresh student's BatchNorm, take
        the step-0 validation, wrap the student for DDP, set train mode."""
        spec, main = self.spec, self.env.is_main
        if self.completed == 0 and self.cfg.init is None and main:
            # DDP's constructor broadcasts rank 0's result.
            self.student.eval()
            calibrate_batchnorm(self.student, (self._model_input([r]) for r in
                                               spec.train_eval or spec.train_rows[:8]))
        if not self.validations and main:
            self.validate()
        if self.env.distributed:
            self.model = wrap_ddp(self.student, self.device)
        set_train_mode(self.student, self.bn_frozen)

    def step(self, stop_requested: bool = False) -> tuple[float, bool]:
        """One optimizer step on the next global batch; returns (the global batch's loss,
        whether any rank asked to stop). `self.completed` counts it once it is whole."""
        cfg, env, device = self.cfg, self.env, self.device
        rows, weight = local_rows(self.spec.batches.batch(self.completed), env)
        x = self._model_input(rows)
        tgt = torch.from_numpy(np.asarray(self.cache.embeddings[rows], np.float32)).to(device)
        with torch.autocast(device.type, torch.float16, enabled=self.use_amp):
            pred = self.model(x)
        loss = F.mse_loss(pred.float(), tgt)
        if weight != 1.0:  # this rank's share of the global batch mean (distributed.py)
            loss = loss * weight
        # The global batch's loss, and whether any rank was interrupted (so all ranks stop
        # after the same step): one small all-reduce.
        value, stop_votes = all_mean([loss.detach().item(), float(stop_requested)], env)
        if not math.isfinite(value) and not self.use_amp:
            raise FloatingPointError(f"non-finite loss at step {self.completed}; lower the lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.completed += 1
        self.steps_log.append({"step": self.completed,
                               "epoch": (self.completed - 1) // self.spec.batches.per_epoch,
                               "lr": lr, "loss": value})
        return value, (stop_votes > 0 if env.distributed else stop_requested)

    # -------------------------------------------------------------------------- validate
    def validate(self) -> dict[str, Any]:
        """Eval-mode embedding MSE on training frames, and on held-out frames also the mask IoU
        vs the teacher's masks; appended to the history (rank 0 only), train mode restored."""
        spec, cache, at = self.spec, self.cache, self.completed
        args = (self.device, self.cfg.batch_size, self.use_amp)
        tr = evaluate(self.student, cache.inputs, cache.embeddings, spec.train_eval,
                      cache.sizes[spec.train_eval], *args)
        rec: dict[str, Any] = {"step": at, "train_mse": tr.mse, "train_frames": tr.n_frames}
        if spec.val_eval:
            va = evaluate(self.student, cache.inputs, cache.embeddings, spec.val_eval,
                          cache.sizes[spec.val_eval], *args, self.decoder,
                          self.cfg.points_per_side)
            rec.update(val_mse=va.mse, val_mask_iou=va.mask_iou, val_frames=va.n_frames,
                       val_masks=va.n_masks)
        self.validations.append(rec)
        log.info("validation at step %d: %s", at, ", ".join(
            f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
        set_train_mode(self.student, self.bn_frozen)
        return rec

    # ------------------------------------------------------------------------------ save
    def save(self) -> None:
        """Write the training state, the logs and the plot (rank 0; a no-op on other ranks)."""
        if not self.env.is_main:
            return
        at = self.completed
        save_train_state(self.state_path, student=self.student, optimizer=self.optimizer,
                         scheduler=self.scheduler, scaler=self.scaler, step=at,
                         config=self.spec.identity,
                         history={"steps": self.steps_log, "validations": self.validations},
                         samples=self.spec.batches.samples_before(at),
                         world_size=self.env.world_size)
        write_logs(self.work, self.steps_log, self.validations)
        plot_history(self.work / PLOT, self.steps_log, self.validations, self.spec.total)

    # ------------------------------------------------------------------------------- run
    def run(self, on_step: Callable[[int, float], None] | None = None) -> DistillResult:
        """Train to the planned step count (see `distill`), validating and saving on schedule;
        rank 0 then exports the student to `cfg.out`."""
        from tqdm import tqdm

        spec, main = self.spec, self.env.is_main
        self.start()
        bar = tqdm(total=spec.total, initial=self.completed, unit="step", desc="distill",
                   disable=not (self.cfg.progress and main))
        t0 = time.monotonic()
        consistent = True  # False while an optimizer step is half done
        try:
            with _deferred_sigint() as sigint:
                while self.completed < spec.total:
                    consistent = False
                    value, stop = self.step(sigint["stop"])
                    consistent = True
                    step = self.completed
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4g}", lr=f"{self.steps_log[-1]['lr']:.2g}")
                    if (step % spec.val_every == 0 or step == spec.total) and main:
                        self.validate()
                    if step % spec.checkpoint_every == 0 and step < spec.total:
                        self.save()  # the end is saved below
                    if on_step is not None:
                        on_step(step, value)
                    if stop:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if consistent:  # between steps (on_step, first Ctrl-C): save where we are
                self.save()
                if main:
                    log.warning("stopped at step %d of %d; saved %s (resume to continue)",
                                self.completed, spec.total, self.state_path)
            elif main:
                log.warning("aborted inside step %d; %s holds the last saved step",
                            self.completed + 1, self.state_path)
            raise
        finally:
            bar.close()
        if main:
            if self.validations[-1]["step"] != self.completed:
                self.validate()
            self.save()
            export_student(self.out, self.student, self.decoder_state)
            log.info("wrote %s after %d steps (%.0f s this run); logs and %s in %s", self.out,
                     self.completed, time.monotonic() - t0, PLOT, self.work)
        return DistillResult(self.out, self.work, self.cache_dir, self.completed,
                             spec.train_frames, spec.val_frames, self.validations,
                             self.steps_log, rank=self.env.rank)
