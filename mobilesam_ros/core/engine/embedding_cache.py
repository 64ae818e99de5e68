"""A bounded cache of per-frame image embeddings, keyed by the frame's stamp.

SegAny prompts refer to the camera frame they were made on (their header stamp). Encoding is the
expensive step (one encoder pass per frame), so the last K frames' embeddings are kept and a prompt
is decoded against the frame whose stamp is nearest to its own, within a tolerance. Memory is
bounded by `capacity` entries; the oldest inserted frame is evicted first.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar

T = TypeVar("T")


class FrameNotCachedError(KeyError):
    """No cached frame matches the requested stamp (evicted, never seen, or out of tolerance)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable in logs
        return str(self.args[0]) if self.args else "frame not cached"


@dataclass(frozen=True)
class CachedFrame(Generic[T]):
    """One cached frame: its stamp (ns), original image size (H, W) and the backend's embedding."""

    stamp_ns: int
    original_size: tuple[int, int]
    embedding: T


class EmbeddingCache(Generic[T]):
    """Thread-safe map stamp (int ns) -> CachedFrame, holding at most `capacity` frames."""

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError(f"EmbeddingCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._frames: OrderedDict[int, CachedFrame[T]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def put(self, stamp_ns: int, original_size: tuple[int, int], embedding: T) -> CachedFrame[T]:
        """Insert (or replace) a frame; evicts the oldest inserted frames beyond capacity."""
        frame = CachedFrame(int(stamp_ns), (int(original_size[0]), int(original_size[1])), embedding)
        with self._lock:
            self._frames.pop(frame.stamp_ns, None)
            self._frames[frame.stamp_ns] = frame
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)
        return frame

    def latest(self) -> CachedFrame[T]:
        """The most recently inserted frame."""
        with self._lock:
            if not self._frames:
                raise FrameNotCachedError("no frame has been encoded yet")
            return next(reversed(self._frames.values()))

    def get(self, stamp_ns: Optional[int] = None, tolerance_ns: int = 0) -> CachedFrame[T]:
        """The cached frame nearest to `stamp_ns` within `tolerance_ns` (None: the latest frame).

        Raises FrameNotCachedError naming the cached stamp range when nothing is close enough.
        """
        if stamp_ns is None:
            return self.latest()
        with self._lock:
            if not self._frames:
                raise FrameNotCachedError("no frame has been encoded yet")
            nearest = min(self._frames, key=lambda s: abs(s - stamp_ns))
            if abs(nearest - stamp_ns) <= tolerance_ns:
                return self._frames[nearest]
            lo, hi = min(self._frames), max(self._frames)
        raise FrameNotCachedError(
            f"no cached frame within {tolerance_ns / 1e9:.3f} s of stamp {stamp_ns / 1e9:.9f} s "
            f"(cached: {len(self)} frame(s), stamps {lo / 1e9:.9f} .. {hi / 1e9:.9f} s)")

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()

    def stamps(self) -> list[int]:
        with self._lock:
            return list(self._frames)


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """A ROS-style (sec, nanosec) stamp as integer nanoseconds (the cache key)."""
    return int(sec) * 1_000_000_000 + int(nanosec)


__all__: list[Any] = ["EmbeddingCache", "CachedFrame", "FrameNotCachedError", "stamp_to_ns"]
