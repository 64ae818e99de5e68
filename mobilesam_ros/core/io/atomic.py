"""Atomic file writes: a reader sees the old file or the whole new one, never a half-written one.

Every writer goes through `atomic_path`: the content is written to a temporary file beside the
target (same filesystem, so the rename is atomic), flushed to disk with fsync, then renamed over
the target with os.replace. A failure leaves the target untouched and removes the temporary file.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; write it (any way: open, torch.save, cv2...) inside
    the `with` block. On a normal exit it is fsync'ed and renamed onto `path`; on an exception
    it is deleted and `path` is left as it was."""
    target = Path(path)
    # A unique name (not mkstemp: its 0600 mode would hide e.g. a shared cache from other users).
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 1) -> None:
    """Replace `path` with `obj` as JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_save(obj: Any, path: PathLike) -> None:
    """`torch.save(obj)` to `path` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
