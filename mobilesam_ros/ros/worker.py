"""Worker threads for every camera, with a latest-frame policy, so a slow model never builds a
backlog and no camera starves another.

Per camera (a key): frames go into a one-slot mailbox (a new frame replaces one not yet started,
counted as dropped); prompts go into a bounded queue of `prompt_queue` (the oldest is dropped when
full). Scheduling, the whole fairness rule:
  * a camera has at most one item in progress: its frames and prompts run in order, one at a time
    (its cache, tracks and followed objects are touched by one thread at a time);
  * frames: the cameras with a waiting frame and nothing in progress take turns, round-robin from
    the one after the camera served last;
  * prompts: served before frames (they answer a person or another node waiting), but after a
    prompt a waiting frame goes first, and prompt queues also take turns between cameras.
So between two frames at most one prompt message starts (itself bounded by segany.max_batch_s),
and a camera's waiting frame starts after at most N - 1 other cameras' frames and N prompt
messages (N cameras), with any number of threads.

`threads` (node.workers) items of different cameras run at once: one camera's encoder overlaps
another's decoder or detector, which keeps a multi-core CPU or a GPU busy where one call after
another leaves it idle between and inside model calls (the backends and the detector keep no
per-call state: core/engine/model.py). One camera gains nothing from more than one thread. No
rclpy here.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional, Sequence

from mobilesam_ros.core.config import NodeConfig, SegAnyConfig


class Abandoned(Exception):
    """Raised by a handler's between-steps check to give up its item (time budget, shutdown)."""


@dataclass
class WorkerStats:
    """Counters of one camera since start (read them under no lock: monotonic ints/floats)."""

    frames_in: int = 0
    frames_done: int = 0
    frames_dropped: int = 0
    prompts_in: int = 0
    prompts_done: int = 0
    prompts_dropped: int = 0
    errors: int = 0
    last_latency_s: float = 0.0
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=100))


class _Round:
    """Round-robin over the keys: the next key after the last one served that `has` work."""

    def __init__(self, keys: Sequence[Hashable]) -> None:
        self.keys = list(keys)
        self._last = len(self.keys) - 1

    def next(self, has: Callable[[Hashable], bool]) -> Optional[Hashable]:
        n = len(self.keys)
        for step in range(1, n + 1):
            k = (self._last + step) % n
            if has(self.keys[k]):
                self._last = k
                return self.keys[k]
        return None


def thread_count(threads: int, n_cameras: int) -> int:
    """Threads a worker for `n_cameras` cameras runs when asked for `threads` (node.workers): more
    than one per camera would never find work, since a camera runs one item at a time. The node
    sizes its ONNX Runtime session pool by the same number."""
    return min(threads, n_cameras)


class LatestFrameWorker:
    """Runs `on_frame(key, item)` for the newest frame of each camera `key` and `on_prompt(key,
    item)` for its queued prompts, fairly across `keys`, on `threads` threads (see the module
    docstring).

    Handlers run on the worker threads, one camera's on one thread at a time; exceptions go to
    `on_error(kind, key, item, exc)` and never stop the thread.
    """

    def __init__(self, on_frame: Callable[[Hashable, Any], None], on_prompt: Callable[[Hashable, Any], None],
                 on_error: Callable[[str, Hashable, Any, BaseException], None], keys: Sequence[Hashable] = ("",),
                 prompt_queue: int = SegAnyConfig.prompt_queue, threads: int = NodeConfig.workers) -> None:
        if not keys:
            raise ValueError("the worker needs at least one camera key")
        if threads < 1:
            raise ValueError(f"the worker needs at least one thread, got {threads}")
        self._on_frame, self._on_prompt, self._on_error = on_frame, on_prompt, on_error
        self._frames: dict = {k: None for k in keys}
        self._prompts: dict = {k: deque() for k in keys}
        self._frame_turn, self._prompt_turn = _Round(keys), _Round(keys)
        self._prompt_queue = prompt_queue
        self._cv = threading.Condition()
        self._stop = False
        self._busy: dict = {}  # camera -> (kind, time.monotonic() at start) of its item in progress
        self._last_kind = ""
        self.stats = {k: WorkerStats() for k in keys}
        self._threads = [threading.Thread(target=self._run, name=f"mobilesam_worker_{i}", daemon=True)
                         for i in range(thread_count(threads, len(keys)))]
        for t in self._threads:
            t.start()

    @property
    def threads(self) -> int:
        """Items of different cameras that may run at once."""
        return len(self._threads)

    def submit_frame(self, key: Hashable, item: Any) -> None:
        with self._cv:
            st = self.stats[key]
            st.frames_in += 1
            if self._frames[key] is not None:
                st.frames_dropped += 1
            self._frames[key] = item
            self._cv.notify()

    def submit_prompt(self, key: Hashable, item: Any) -> None:
        with self._cv:
            st, queue = self.stats[key], self._prompts[key]
            st.prompts_in += 1
            if len(queue) >= self._prompt_queue:
                queue.popleft()
                st.prompts_dropped += 1
            queue.append(item)
            self._cv.notify()

    def _frame_ready(self, key: Hashable) -> bool:
        return self._frames[key] is not None and key not in self._busy

    def _prompt_ready(self, key: Hashable) -> bool:
        return bool(self._prompts[key]) and key not in self._busy

    def _waiting(self) -> tuple[bool, bool]:
        """(a frame, a prompt) that a free thread may start now (its camera has nothing in progress)."""
        return any(map(self._frame_ready, self._frames)), any(map(self._prompt_ready, self._prompts))

    def idle(self) -> bool:
        with self._cv:
            return not self._busy and not any(f is not None for f in self._frames.values()) \
                and not any(self._prompts.values())

    def in_progress(self, key: Hashable) -> tuple[str, float]:
        """("frame" | "prompt", seconds since it started) of camera `key`'s item in progress,
        ("", 0.0) when the worker is idle or busy with another camera (diagnostics: a long prompt
        batch shows here while it runs)."""
        with self._cv:
            if key not in self._busy:
                return "", 0.0
            kind, since = self._busy[key]
            return kind, time.monotonic() - since

    @property
    def stopping(self) -> bool:
        """True once stop() was called: long handlers poll it between steps and give up."""
        return self._stop

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the item in progress (handlers polling `stopping` end it early); pending items
        are discarded. Returns whether the thread ended within `timeout` seconds."""
        with self._cv:
            self._stop = True
            for k in self._frames:
                self._frames[k] = None
                self._prompts[k].clear()
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _next(self):
        with self._cv:
            while not self._stop and not any(self._waiting()):
                self._cv.wait()
            if self._stop:
                return None, None, None
            frames, prompts = self._waiting()
            if prompts and (not frames or self._last_kind != "prompt"):
                kind = self._last_kind = "prompt"
                key = self._prompt_turn.next(self._prompt_ready)
                item = self._prompts[key].popleft()
            else:
                kind = self._last_kind = "frame"
                key = self._frame_turn.next(self._frame_ready)
                item, self._frames[key] = self._frames[key], None
            self._busy[key] = (kind, time.monotonic())
            return kind, key, item

    def _run(self) -> None:
        while True:
            kind, key, item = self._next()
            if kind is None:
                return
            t0 = time.perf_counter()
            try:
                (self._on_prompt if kind == "prompt" else self._on_frame)(key, item)
            except BaseException as exc:  # noqa: BLE001  a bad item must never kill the worker
                self.stats[key].errors += 1
                self._on_error(kind, key, item, exc)
            finally:
                dt = time.perf_counter() - t0
                with self._cv:
                    del self._busy[key]
                    self._cv.notify()  # this camera's next item may be waiting for it
                    st = self.stats[key]
                    if kind == "frame":
                        st.frames_done += 1
                        st.last_latency_s = dt
                        st.latencies_s.append(dt)
                    else:
                        st.prompts_done += 1
