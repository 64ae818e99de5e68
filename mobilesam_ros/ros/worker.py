"""One worker thread for every camera, with a latest-frame policy, so a slow model never builds a
backlog and no camera starves another.

Per camera (a key): frames go into a one-slot mailbox (a new frame replaces one not yet started,
counted as dropped); prompts go into a bounded queue of `prompt_queue` (the oldest is dropped when
full). Scheduling, the whole fairness rule:
  * frames: the cameras with a waiting frame take turns, round-robin from the one after the
    camera served last;
  * prompts: served before frames (they answer a person or another node waiting), but after a
    prompt a waiting frame goes first, and prompt queues also take turns between cameras.
So between two frames at most one prompt message runs (itself bounded by segany.max_batch_s),
and a camera's waiting frame starts after at most N - 1 other cameras' frames and N prompt
messages (N cameras). Exactly one thread touches the model. No rclpy here.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional, Sequence

from mobilesam_ros.core.config import SegAnyConfig


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


class LatestFrameWorker:
    """Runs `on_frame(key, item)` for the newest frame of each camera `key` and `on_prompt(key,
    item)` for its queued prompts, fairly across `keys` (see the module docstring).

    Handlers run on the worker thread; exceptions go to `on_error(kind, key, item, exc)` and never
    stop the thread.
    """

    def __init__(self, on_frame: Callable[[Hashable, Any], None], on_prompt: Callable[[Hashable, Any], None],
                 on_error: Callable[[str, Hashable, Any, BaseException], None], keys: Sequence[Hashable] = ("",),
                 prompt_queue: int = SegAnyConfig.prompt_queue) -> None:
        if not keys:
            raise ValueError("the worker needs at least one camera key")
        self._on_frame, self._on_prompt, self._on_error = on_frame, on_prompt, on_error
        self._frames: dict = {k: None for k in keys}
        self._prompts: dict = {k: deque() for k in keys}
        self._frame_turn, self._prompt_turn = _Round(keys), _Round(keys)
        self._prompt_queue = prompt_queue
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self._busy_since = 0.0  # time.monotonic() when the item in progress started
        self._busy_key: Optional[Hashable] = None  # and its camera
        self._last_kind = ""
        self.stats = {k: WorkerStats() for k in keys}
        self._thread = threading.Thread(target=self._run, name="mobilesam_worker", daemon=True)
        self._thread.start()

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

    def _waiting(self) -> tuple[bool, bool]:
        return (any(f is not None for f in self._frames.values()), any(self._prompts.values()))

    def idle(self) -> bool:
        with self._cv:
            return not any(self._waiting()) and not self._busy

    def in_progress(self, key: Hashable) -> tuple[str, float]:
        """("frame" | "prompt", seconds since it started) of camera `key`'s item in progress,
        ("", 0.0) when the worker is idle or busy with another camera (diagnostics: a long prompt
        batch shows here while it runs)."""
        with self._cv:
            if not self._busy or self._busy_key != key:
                return "", 0.0
            return self._last_kind, time.monotonic() - self._busy_since

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
            self._cv.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self):
        with self._cv:
            while not self._stop and not any(self._waiting()):
                self._cv.wait()
            if self._stop:
                return None, None, None
            self._busy, self._busy_since = True, time.monotonic()
            frames, prompts = self._waiting()
            if prompts and (not frames or self._last_kind != "prompt"):
                self._last_kind = "prompt"
                key = self._busy_key = self._prompt_turn.next(lambda k: bool(self._prompts[k]))
                return "prompt", key, self._prompts[key].popleft()
            self._last_kind = "frame"
            key = self._busy_key = self._frame_turn.next(lambda k: self._frames[k] is not None)
            item, self._frames[key] = self._frames[key], None
            return "frame", key, item

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
                    self._busy = False
                    st = self.stats[key]
                    if kind == "frame":
                        st.frames_done += 1
                        st.last_latency_s = dt
                        st.latencies_s.append(dt)
                    else:
                        st.prompts_done += 1
