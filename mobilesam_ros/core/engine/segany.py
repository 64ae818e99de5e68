"""SegAny: many prompt objects (points, boxes, mask inputs) decoded against one encoded frame."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Optional, Sequence

import numpy as np

from mobilesam_ros.core.engine.collect import collect_instances
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.structures.prompts import ObjectPrompt

__all__ = ["PromptAnswer", "decode_prompts"]


@dataclass(frozen=True)
class PromptAnswer:
    """The answer to one prompt message: `instances` (one per object, in order) and the
    (1, 256, 256) float32 low-res logits of the objects asked for (object index -> logits)."""

    instances: Instances
    low_res: dict = field(default_factory=dict)


def decode_prompts(predictor: SamPredictor, prompts: Sequence[ObjectPrompt], frame: CachedFrame,
                   check: Optional[Callable[[int, int], None]] = None, keep_logits: Collection[int] = (),
                   chunk: Optional[int] = None, stability_offset: float = 1.0) -> PromptAnswer:
    """One instance per prompt object, in order, against `frame` (a multimask object keeps its
    best candidate). One chunk at a time (`SamPredictor.chunk_size`), each chunk's masks
    bit-packed before the next; check(done, total) runs between chunks and may raise to abandon
    the batch. keep_logits: indices of objects whose low-res logits the answer keeps (objects to
    follow: they are re-prompted from them on the next frames)."""
    chunks = predictor.iter_decode(frame, list(prompts), select_best=True, stability_offset=stability_offset,
                                   chunk=chunk, check=check)
    logits: dict = {}
    inst = collect_instances(frame, len(prompts), chunks, keep_logits=frozenset(int(k) for k in keep_logits),
                             logits_out=logits)
    return PromptAnswer(inst, logits)
