"""Interchangeable ONNX Runtime sessions of one graph, lent one per call, so that concurrent
callers (the node's worker threads, one camera each) run side by side.

Why not one session for all: ONNX Runtime allows concurrent runs of one session, but they share
its intra-op thread pool and memory arena, and on a 2-core CPU two threads running the encoder on
one session were no faster than one after another (0.248 vs 0.257 runs/s, medians of 3), while
two sessions gave 0.284 (benchmarks/bench_cameras.py measures the node end to end). The
pool grows on demand up to `size`: a caller that is never concurrent (one camera) costs one
session, never more.
"""
from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["SessionPool"]


class SessionPool:
    """make(): a new session (ONNX Runtime InferenceSession, or anything with the same use);
    size: at most this many, made when callers overlap. `first` is made at once (loading errors
    surface at construction, and inputs/metadata can be read from it)."""

    def __init__(self, make: Callable[[], Any], size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"a session pool needs size >= 1, got {size}")
        self._make, self.size = make, int(size)
        self.first = make()
        self._made = 1
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._free.put(self.first)
        self._lock = threading.Lock()

    @property
    def made(self) -> int:
        """Sessions made so far (1 until two callers overlapped)."""
        return self._made

    @contextmanager
    def lend(self) -> Iterator[Any]:
        """A session no other caller is using, for the duration of the `with` block: a free one,
        else a new one while fewer than `size` exist, else the next one given back."""
        try:
            sess = self._free.get_nowait()
        except queue.Empty:
            sess = None
            with self._lock:
                if self._made < self.size:
                    self._made += 1
                    grow = True
                else:
                    grow = False
            if grow:
                try:
                    sess = self._make()
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            else:
                sess = self._free.get()
        try:
            yield sess
        finally:
            self._free.put(sess)
