"""A bounded cache of per-frame image embeddings (CachedFrame, core/structures/frame.py), keyed
by the frame's stamp.

SegAny prompts refer to the camera frame they were made on (their header stamp). Encoding is the
expensive step (one encoder pass per frame), so the last K frames' embeddings are kept and a prompt
is decoded against the frame whose stamp is nearest to its own, within a tolerance. Memory is
bounded by `capacity` entries; the oldest inserted frame is evicted first.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class FrameNotCachedError(KeyError):
    """No cached frame matches the requested stamp (evicted, never seen, or out of tolerance)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable in logs
        return str(self.args[0]) if self.args else "frame not cached"


class EmbeddingCache(Generic[T]):
    """Thread-safe map stamp (int ns) -> value (a CachedFrame for the predictor, any object for
    other stamp-matched streams such as depth images), holding at most `capacity` values."""

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError(f"EmbeddingCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._frames: OrderedDict[int, T] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def put(self, stamp_ns: int, value: T) -> T:
        """Insert (or replace) the value of stamp_ns; evicts the oldest inserted beyond capacity."""
        stamp = int(stamp_ns)
        with self._lock:
            self._frames.pop(stamp, None)
            self._frames[stamp] = value
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)
        return value

    def latest(self) -> T:
        """The most recently inserted value."""
        return self.find(None)[1]

    def get(self, stamp_ns: Optional[int] = None, tolerance_ns: int = 0) -> T:
        """The value whose stamp is nearest to `stamp_ns` within `tolerance_ns` (None: the latest).

        Raises FrameNotCachedError naming the cached stamp range when nothing is close enough.
        """
        return self.find(stamp_ns, tolerance_ns)[1]

    def find(self, stamp_ns: Optional[int] = None, tolerance_ns: int = 0) -> tuple[int, T]:
        """(stamp, value) of :meth:`get`: the stamp actually matched."""
        with self._lock:
            if not self._frames:
                raise FrameNotCachedError("no frame has been encoded yet")
            if stamp_ns is None:
                return next(reversed(self._frames.items()))
            nearest = min(self._frames, key=lambda s: abs(s - stamp_ns))
            if abs(nearest - stamp_ns) <= tolerance_ns:
                return nearest, self._frames[nearest]
            n, lo, hi = len(self._frames), min(self._frames), max(self._frames)
        raise FrameNotCachedError(
            f"no cached frame within {tolerance_ns / 1e9:.3f} s of stamp {stamp_ns / 1e9:.9f} s "
            f"(cached: {n} frame(s), stamps {lo / 1e9:.9f} .. {hi / 1e9:.9f} s)")

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()

    def stamps(self) -> list[int]:
        with self._lock:
            return list(self._frames)


__all__ = ["EmbeddingCache", "FrameNotCachedError"]
