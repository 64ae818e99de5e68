"""A single worker thread with a latest-frame policy, so a slow model never builds a backlog.

Frames go into a one-slot mailbox: a new frame replaces a frame not yet started (counted as
dropped). Prompts go into a small bounded queue (the oldest is dropped when full). Turns alternate:
after a prompt, a waiting frame goes first, so a burst of prompts never starves the camera.
Exactly one thread touches the model. No rclpy here.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


class Abandoned(Exception):
    """Raised by a handler's between-steps check to give up its item (time budget, shutdown)."""


@dataclass
class WorkerStats:
    """Counters since start (read them under no lock: they are monotonic ints/floats)."""

    frames_in: int = 0
    frames_done: int = 0
    frames_dropped: int = 0
    prompts_in: int = 0
    prompts_done: int = 0
    prompts_dropped: int = 0
    errors: int = 0
    last_latency_s: float = 0.0
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=100))


class LatestFrameWorker:
    """Runs `on_frame(item)` for the newest frame and `on_prompt(item)` for queued prompts.

    Handlers run on the worker thread; exceptions are passed to `on_error(kind, item, exc)` and
    never stop the thread.
    """

    def __init__(self, on_frame: Callable[[Any], None], on_prompt: Callable[[Any], None],
                 on_error: Callable[[str, Any, BaseException], None], prompt_queue: int = 16) -> None:
        self._on_frame, self._on_prompt, self._on_error = on_frame, on_prompt, on_error
        self._frame: Optional[Any] = None
        self._prompts: deque = deque()
        self._prompt_queue = prompt_queue
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self._busy_since = 0.0  # time.monotonic() when the item in progress started
        self._last_kind = ""
        self.stats = WorkerStats()
        self._thread = threading.Thread(target=self._run, name="mobilesam_worker", daemon=True)
        self._thread.start()

    def submit_frame(self, item: Any) -> None:
        with self._cv:
            self.stats.frames_in += 1
            if self._frame is not None:
                self.stats.frames_dropped += 1
            self._frame = item
            self._cv.notify()

    def submit_prompt(self, item: Any) -> None:
        with self._cv:
            self.stats.prompts_in += 1
            if len(self._prompts) >= self._prompt_queue:
                self._prompts.popleft()
                self.stats.prompts_dropped += 1
            self._prompts.append(item)
            self._cv.notify()

    def idle(self) -> bool:
        with self._cv:
            return self._frame is None and not self._prompts and not self._busy

    def in_progress(self) -> tuple[str, float]:
        """("frame" | "prompt", seconds since it started) of the item in progress, ("", 0.0) when
        idle (diagnostics: a long prompt batch shows here while it runs)."""
        with self._cv:
            if not self._busy:
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
            self._frame = None
            self._prompts.clear()
            self._cv.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self):
        with self._cv:
            while not self._stop and self._frame is None and not self._prompts:
                self._cv.wait()
            if self._stop:
                return None, None
            self._busy, self._busy_since = True, time.monotonic()
            if self._prompts and (self._frame is None or self._last_kind != "prompt"):
                self._last_kind = "prompt"
                return "prompt", self._prompts.popleft()
            self._last_kind = "frame"
            item, self._frame = self._frame, None
            return "frame", item

    def _run(self) -> None:
        while True:
            kind, item = self._next()
            if kind is None:
                return
            t0 = time.perf_counter()
            try:
                (self._on_prompt if kind == "prompt" else self._on_frame)(item)
            except BaseException as exc:  # noqa: BLE001  a bad item must never kill the worker
                self.stats.errors += 1
                self._on_error(kind, item, exc)
            finally:
                dt = time.perf_counter() - t0
                with self._cv:
                    self._busy = False
                    if kind == "frame":
                        self.stats.frames_done += 1
                        self.stats.last_latency_s = dt
                        self.stats.latencies_s.append(dt)
                    else:
                        self.stats.prompts_done += 1
