"""Teacher pass of a distillation run: frames -> TeacherCache (+ resized sizes, decoder tensors).

Each frame is resized/padded as at inference (`inputs.preprocess_frame`), the teacher encodes it
once (float32), and the cache keeps the uint8 input and the (256, 64, 64) embedding. Rows already
in the cache (same teacher checkpoint, same frames) are not encoded again.
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
from mobilesam_ros.distill.inputs import (PREPROCESSING_VERSION, HFLIP_SUFFIX, SizedSource,
                                          base_key, load_sizes, model_input, preprocess_frame,
                                          resized_size, save_sizes)
from mobilesam_ros.distill.teacher_cache import TeacherCache
from mobilesam_ros.distill.teachers import build_decoder, decoder_state_from_file, load_teacher


@dataclass
class PreparedData:
    """A filled cache, the resized (h, w) of each cached key, the decoder tensors
    (`prompt_encoder.*` + `mask_decoder.*`) and the source the frames came from."""

    cache: TeacherCache
    sizes: dict[str, tuple[int, int]]
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
    (`TeacherCache.build(shard=...)`); rank 0 alone writes the sizes file."""
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
    sized = SizedSource(source, hflip=cfg.hflip, known_sizes=load_sizes(cache_dir))
    on_device: list[torch.nn.Module] = []  # moved only if some row still needs encoding

    @torch.no_grad()
    def encode(batch: np.ndarray) -> torch.Tensor:
        if not on_device:
            on_device.append(teacher.encoder.to(device))
        # The teacher runs in float32: its embeddings are the targets for the whole run.
        return on_device[0](model_input(batch, sized.pop_sizes(batch), device)).float().cpu()

    try:
        cache = TeacherCache.build(
            cache_dir, sized, encode, cfg.teacher_batch_size, teacher.kind,
            cfg.progress and env.is_main,
            preprocess_fn=preprocess_frame, teacher_checkpoint=cfg.teacher,
            preprocessing_version=PREPROCESSING_VERSION, store_inputs=True,
            dtype=cfg.cache_dtype, shard=(env.rank, env.world_size),
            agree=(lambda ok: all_mean([float(ok)], env)[0] == 1.0) if env.distributed else None)
    finally:
        if not env.distributed:  # ranks would overwrite each other's sizes: gathered below
            save_sizes(cache_dir, sized.sizes)
    if env.distributed:
        import torch.distributed as dist

        per_rank: list[dict[str, tuple[int, int]]] = [{}] * env.world_size
        dist.all_gather_object(per_rank, sized.sizes)
        if env.is_main:
            save_sizes(cache_dir, {k: v for s in per_rank for k, v in s.items()})
    kind = teacher.kind
    on_device.clear()
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if env.is_main:
        _complete_sizes(cache, cache_dir, source)
    barrier(env)
    return PreparedData(cache, load_sizes(cache_dir), decoder_state, source, kind)


def _complete_sizes(cache: TeacherCache, cache_dir: Path, source: FrameSource) -> None:
    """Record the sizes of cached rows whose build was killed before it could record them (a
    pure function of the frame's size: the frames are read again, the teacher is not run)."""
    sizes = load_sizes(cache_dir)
    missing = {base_key(cache.keys[i]) for i in cache.indices if cache.keys[i] not in sizes}
    if missing:
        for frame in source.frames(only=missing):
            for k in (frame.key, frame.key + HFLIP_SUFFIX):
                sizes[k] = resized_size(frame.image.shape[:2])
        save_sizes(cache_dir, sizes)
