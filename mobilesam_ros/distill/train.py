"""Decoupled distillation (MobileSAM): train a TinyViT-5M encoder on a teacher's embeddings.

1. The teacher encodes every frame once into a TeacherCache (memory-mapped (N, 256, 64, 64)
   embeddings + the (N, 1024, 1024, 3) uint8 inputs, resized and padded exactly as at inference,
   + the (N, 2) resized (h, w) of each input).
2. The student (TinyViT-5M, fresh and seeded, or initialised from a checkpoint) learns to
   reproduce the embeddings with a plain MSE: AdamW, linear warm-up + cosine decay, mixed
   precision (fp16 autocast + GradScaler) on CUDA. SAM's prompt encoder and mask decoder are not
   trained.
3. Held-out frames (`split_keys`) are validated periodically: embedding MSE, and mask IoU between
   masks decoded by the same decoder from teacher vs student embeddings (`validate.py`).
4. The student is written as an official `mobile_sam.pt` (`state.py`).

`Trainer` holds the run's state explicitly (plan, model, optimizer, progress); `distill` is
plan -> resume -> run. Everything lives in a work directory (cache, `train_state.pt`, logs,
`loss.png`); `resume=True` continues an interrupted run from its last saved step (model,
optimizer, schedule, AMP scaler, RNG) with the same data order, so it computes what an
uninterrupted run computes (up to float round-off: TinyViT's attention-bias gradient is
accumulated in a nondeterministic order on CPU).
Ctrl-C finishes the current step, saves, and stops.
"""
from __future__ import annotations

from collections.abc import Callable

from mobilesam_ros.distill.config import (DistillConfig, DistillInputError, DistillResult,
                                          check_config)
from mobilesam_ros.distill.distributed import init_distributed, shutdown_distributed
from mobilesam_ros.distill.schedule import BatchPlan, lr_factor
from mobilesam_ros.distill.student import calibrate_batchnorm
from mobilesam_ros.distill.trainer import Trainer, TrainPlan

__all__ = ["BatchPlan", "DistillConfig", "DistillInputError", "DistillResult", "TrainPlan",
           "Trainer", "calibrate_batchnorm", "distill", "lr_factor"]


def distill(cfg: DistillConfig, on_step: Callable[[int, float], None] | None = None
            ) -> DistillResult:
    """Run (or resume) a distillation as configured; returns the written files and metrics.

    Under torchrun (RANK/WORLD_SIZE set) this process is one rank of a DistributedDataParallel
    run: `cfg.batch_size` is the global batch, each rank trains on batch_size / world_size of it,
    and rank 0 alone validates and writes; other ranks return a result without validations
    (`DistillResult.rank`). See `distributed.py` for why N ranks compute what one process does.
    `on_step(completed_steps, loss)` is called after every optimizer step, on every rank, with
    the global batch's loss (raising KeyboardInterrupt there stops the run after saving, as
    Ctrl-C does; under torchrun it must then be raised on every rank at the same step).
    Raises DistillInputError for bad requests, CheckpointError / SourceError / CacheError for
    unreadable inputs.
    """
    check_config(cfg)
    env, device, created = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, env, device)
        trainer.plan()
        trainer.resume()
        return trainer.run(on_step)
    finally:
        shutdown_distributed(created)
