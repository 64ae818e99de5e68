"""Distillation on several processes: torchrun's environment, the process group, batch sharding
and a BatchNorm whose statistics span the global batch.

`torchrun --nproc_per_node N [--nnodes M ...] -m mobilesam_ros distill ...` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_distributed` reads them (env:// rendezvous) and
joins the group with gloo on CPU or nccl on CUDA (one GPU per process, `cuda:LOCAL_RANK`). Without
those variables everything here is the single-process identity.

Equivalence with one process. Every rank builds the same global batch (the seeded per-epoch
permutation of `train.py`) and trains on its contiguous share (`local_rows`). The rank's loss is
weighted so that DistributedDataParallel's gradient average equals the gradient of the global
batch's mean MSE, also for an epoch's last, smaller batch. BatchNorm is the one layer whose forward
couples the samples of a batch: `SyncBatchNorm2d` all-reduces its batch statistics (sums and
counts) and torch.distributed.nn's differentiable all-reduce carries the gradient back across
ranks, so a training-mode forward/backward on N ranks computes what one process computes on the
whole batch (up to float summation order). torch's own nn.SyncBatchNorm refuses CPU tensors, hence
this ~30-line version that works with gloo and nccl alike. With frozen BatchNorm (eval-mode, the
default with --init) nothing is synchronised: each rank normalises with the same running statistics.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from mobilesam_ros.distill.config import DistillInputError, resolve_device

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Rank 0 validates and saves while the others wait in the next step's all-reduce; a long
# held-out validation must not trip the collective timeout.
DEFAULT_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the run: `rank` of `world_size` (local_rank on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress, validates and writes the state, logs and output."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_from_environ() -> DistEnv:
    """The DistEnv torchrun's variables describe ((0, 1, 0) without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise DistillInputError(f"WORLD_SIZE={world} but {', '.join(missing)} unset; start "
                                "several processes with torchrun")
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))


def init_distributed(device_name: str, timeout: datetime.timedelta = DEFAULT_TIMEOUT
                     ) -> tuple[DistEnv, torch.device, bool]:
    """Join torchrun's process group if there is one; returns (env, this rank's device,
    whether this call created the group and must destroy it: `shutdown_distributed`)."""
    env = env_from_environ()
    if not env.distributed:
        return env, resolve_device(device_name), False
    if device_name not in ("auto", "cpu", "cuda"):
        raise DistillInputError(f"device {device_name!r} under torchrun: use auto, cpu or cuda "
                                "(each process takes cuda:LOCAL_RANK)")
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():  # e.g. a caller that set the group up itself
        return env, device, False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return env, device, True


def shutdown_distributed(created: bool) -> None:
    """Leave the process group `init_distributed` created (no-op otherwise)."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """All ranks wait for each other (no-op in one process)."""
    if env.distributed:
        dist.barrier()


def check_global_batch(batch_size: int, env: DistEnv) -> int:
    """Per-rank batch size of a global `batch_size`; DistillInputError if it does not divide."""
    if batch_size % env.world_size:
        raise DistillInputError(
            f"batch size {batch_size} is the global batch and must be divisible by the "
            f"{env.world_size} processes (per-process batch = batch size / processes); use e.g. "
            f"{env.world_size * max(1, round(batch_size / env.world_size))}")
    return batch_size // env.world_size


def local_rows(rows: Sequence[int], env: DistEnv) -> tuple[list[int], float]:
    """This rank's contiguous share of a global batch and its loss weight.

    Returns (rows, weight): the rank's mean-MSE loss times `weight` makes DDP's gradient average
    the gradient of the mean over all `len(rows)` samples, weight = n_local * world / n_global
    (1.0 for an evenly split batch). A rank left without a sample (an epoch's last batch smaller
    than the world) gets the batch's first row with weight 0: DDP needs every rank to run a
    backward. That row then only enters that step's synchronised BatchNorm statistics.
    """
    n, w = len(rows), env.world_size
    base, extra = divmod(n, w)
    start = env.rank * base + min(env.rank, extra)
    mine = list(rows[start:start + base + (env.rank < extra)])
    if not mine:
        return [rows[0]], 0.0
    return mine, len(mine) * w / n


def all_mean(values: Sequence[float], env: DistEnv) -> list[float]:
    """Element-wise mean over ranks of per-rank float values (identity in one process)."""
    if not env.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / env.world_size).cpu().tolist()


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch (all ranks).

    (B, C, H, W) -> (B, C, H, W). Same parameters, buffers and state-dict keys as BatchNorm2d; in
    eval mode, or outside a process group, it is exactly BatchNorm2d. Statistics are reduced in two
    passes (mean, then centred squares) because E[x^2] - E[x]^2 cancels badly in float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable all-reduce

        c = x.shape[1]
        shape = (1, c, 1, 1)
        xf = x.float()  # under autocast the statistics stay float32, as BatchNorm's do
        count = torch.full((1,), xf.numel() // c, dtype=xf.dtype, device=xf.device)
        sums = all_reduce(torch.cat([xf.sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = all_reduce(centred.square().sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / (n - 1).clamp(min=1)),
                                                  alpha=f)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every BatchNorm2d of `module` into a SyncBatchNorm2d, in place; returns `module`.

    A class swap rather than new modules: the parameters stay the same objects, so an optimizer
    built before (and its loaded state) still holds them. SyncBatchNorm2d adds no state."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return module
