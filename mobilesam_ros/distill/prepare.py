"""Teacher pass of a distillation run: frames -> TeacherCache (+ the decoder tensors).

Each frame is resized/padded as at inference (`inputs.preprocess_frame`), the teacher encodes it
once (float32), and the cache keeps the uint8 input, its resized size and the (256, 64, 64)
embedding. Rows already in the cache (same teacher checkpoint, same frames) are not encoded again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilesam_ros.distill.config import DistillConfig, DistillInputError
from mobilesam_ros.distill.data import FrameSource, open_source
from mobilesam_ros.distill.distributed import DistEnv, all_mean, barrier
from mobilesam_ros.distill.inputs import (PREPROCESSING_VERSION, MirroredSource, model_input,
                                          preprocess_frame)
from mobilesam_ros.distill.teacher_cache import TeacherCache
from mobilesam_ros.distill.teachers import build_decoder, decoder_state_from_file, load_teacher


@dataclass
class PreparedData:
    """A filled cache (embeddings, inputs and their sizes), the decoder tensors
    (`prompt_encoder.*` + `mask_decoder.*`) and the source the frames came from."""

    cache: TeacherCache
    decoder_state: dict[str, torch.Tensor]
    source: FrameSource
    teacher_kind: str


def open_configured_source(cfg: DistillConfig) -> FrameSource:
    """The frame source of `cfg.data` with the video/bag options that were given."""
    kwargs: dict[str, Any] = {}
    if cfg.topic is not None:
        kwargs["topic"] = cfg.topic
    if cfg.every_n != 1:
        kwargs["every_n"] = cfg.every_n
    if cfg.max_frames is not None:
        kwargs["max_frames"] = cfg.max_frames
    try:
        return open_source(cfg.data, **kwargs)
    except TypeError as e:  # e.g. topic= for an image folder
        raise DistillInputError(f"{cfg.data}: option not valid for this kind of source ({e})"
                                ) from None


def prepare_cache(cfg: DistillConfig, cache_dir: Path, device: torch.device,
                  source: FrameSource | None = None, env: DistEnv = DistEnv()) -> PreparedData:
    """Teacher pass over `cfg.data` (rows already cached are skipped) into `cache_dir`.

    Under torchrun (`env.distributed`) every rank encodes its shard of the missing rows
    (`TeacherCache.build(shard=...)`)."""
    if source is None:
        source = open_configured_source(cfg)
    teacher = load_teacher(cfg.teacher)
    decoder_state = (decoder_state_from_file(cfg.decoder) if cfg.decoder
                     else teacher.decoder_state)
    if not decoder_state:
        raise DistillInputError(f"{cfg.teacher} has no prompt encoder / mask decoder; pass a "
                                "decoder checkpoint (a mobile_sam.pt or SAM .pth) as decoder")
    build_decoder(decoder_state, cfg.decoder or cfg.teacher)  # fail now, not after training
    cache_dir.mkdir(parents=True, exist_ok=True)
    on_device: list[torch.nn.Module] = []  # moved only if some row still needs encoding

    @torch.no_grad()
    def encode(batch: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
        if not on_device:
            on_device.append(teacher.encoder.to(device))
        # The teacher runs in float32: its embeddings are the targets for the whole run.
        return on_device[0](model_input(batch, sizes, device)).float().cpu()

    cache = TeacherCache.build(
        cache_dir, MirroredSource(source, hflip=cfg.hflip), encode, cfg.teacher_batch_size,
        teacher.kind, cfg.progress and env.is_main,
        preprocess_fn=preprocess_frame, teacher_checkpoint=cfg.teacher,
        preprocessing_version=PREPROCESSING_VERSION, store_inputs=True,
        dtype=cfg.cache_dtype, shard=(env.rank, env.world_size),
        agree=(lambda ok: all_mean([float(ok)], env)[0] == 1.0) if env.distributed else None)
    kind = teacher.kind
    on_device.clear()
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    barrier(env)
    return PreparedData(cache, decoder_state, source, kind)
