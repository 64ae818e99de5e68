"""The run's schedule: the learning-rate curve and the data order, both pure functions of
(step, seed), so an interrupted run resumes exactly where it was, on any number of processes."""
from __future__ import annotations

import dataclasses
import math

import torch


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier for 0-based optimizer step `step`: linear warm-up, then cosine to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


@dataclasses.dataclass
class BatchPlan:
    """The run's data order, the same for any number of processes: epoch e is the permutation of
    `rows` seeded by (seed, e), cut into global batches of `batch_size` (the last may be smaller).

    The data position is counted in global samples, so a state written by N processes resumes
    on M: `samples_before(step)` and `step_at(samples)` convert between the two."""

    rows: list[int]
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        self.per_epoch = math.ceil(len(self.rows) / self.batch_size)
        self._perm: tuple[int, list[int]] | None = None

    def batch(self, step: int) -> list[int]:
        """Cache rows of 0-based optimizer step `step` (the global batch)."""
        epoch, pos = divmod(step, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:  # depends on (seed, epoch) only
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, [self.rows[i] for i in torch.randperm(len(self.rows),
                                                                      generator=g)])
        return self._perm[1][pos * self.batch_size:(pos + 1) * self.batch_size]

    def samples_before(self, step: int) -> int:
        """Training samples consumed by the first `step` optimizer steps."""
        epoch, pos = divmod(step, self.per_epoch)
        return epoch * len(self.rows) + min(pos * self.batch_size, len(self.rows))

    def step_at(self, samples: int) -> int:
        """The optimizer step that starts at data position `samples` (ValueError if none does)."""
        epoch, offset = divmod(samples, len(self.rows))
        step = epoch * self.per_epoch + math.ceil(offset / self.batch_size)
        if self.samples_before(step) != samples:
            raise ValueError(f"data position {samples} is not at a batch boundary")
        return step
