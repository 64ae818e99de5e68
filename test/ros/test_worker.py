"""The latest-frame worker: no backlog under a slow model, frames and prompts take turns, errors never
kill it, stop() ends a handler that polls `stopping`; with several cameras, frames take turns
round-robin and one camera's prompts cannot starve another camera's frames; with several threads,
different cameras run at once and one camera never runs two items at once."""
import threading
import time

from conftest import wait_for

from mobilesam_ros.ros.worker import LatestFrameWorker as _Worker


class LatestFrameWorker(_Worker):
    """The one-camera worker (key "") with handlers of the item alone."""

    def __init__(self, on_frame, on_prompt, on_error, prompt_queue=16):
        super().__init__(lambda k, i: on_frame(i), lambda k, i: on_prompt(i),
                         lambda kind, k, i, e: on_error(kind, i, e), prompt_queue=prompt_queue)

    def submit_frame(self, item):
        super().submit_frame("", item)

    def submit_prompt(self, item):
        super().submit_prompt("", item)

    def in_progress(self, key=""):
        return super().in_progress(key)

    @property
    def one(self):
        return self.stats[""]


def test_slow_model_drops_frames_instead_of_queueing():
    done, errors = [], []
    gate = threading.Event()

    def slow(item):
        gate.wait(5)
        done.append(item)

    w = LatestFrameWorker(slow, lambda p: None, lambda *a: errors.append(a))
    for i in range(50):  # 50 frames arrive while the first is still being processed
        w.submit_frame(i)
        time.sleep(0.001)
    gate.set()
    assert wait_for(w.idle, timeout=5)
    w.stop()
    # frame 0 (or the first taken) ran, then only the newest one: never a backlog of 50
    assert len(done) <= 3 and done[-1] == 49
    assert w.one.frames_in == 50 and w.one.frames_done + w.one.frames_dropped == 50
    assert not errors


def test_prompts_served_before_frames_and_errors_survive():
    order, errors = [], []
    gate = threading.Event()

    def on_frame(item):
        if item == "block":
            gate.wait(5)
        if item == "boom":
            raise RuntimeError("bad frame")
        order.append(("f", item))

    w = LatestFrameWorker(on_frame, lambda p: order.append(("p", p)), lambda k, i, e: errors.append((k, i, str(e))))
    w.submit_frame("block")
    time.sleep(0.05)
    w.submit_frame("boom")
    w.submit_prompt(1)
    w.submit_prompt(2)
    gate.set()
    assert wait_for(lambda: w.idle() and len(errors) == 1, timeout=5)
    w.submit_frame("ok")
    assert wait_for(lambda: ("f", "ok") in order, timeout=5)
    w.stop()
    assert order[:3] == [("f", "block"), ("p", 1), ("p", 2)]
    assert errors == [("frame", "boom", "bad frame")]


def test_frames_keep_a_turn_between_prompt_batches():
    """A burst of prompts must not starve the camera: a waiting frame runs after each prompt."""
    order = []
    gate = threading.Event()

    def on_frame(item):
        if item == "block":
            gate.wait(5)
        order.append(("f", item))

    w = LatestFrameWorker(on_frame, lambda p: order.append(("p", p)), lambda *a: None, prompt_queue=8)
    w.submit_frame("block")
    time.sleep(0.05)
    for i in range(6):
        w.submit_prompt(i)
    w.submit_frame("cam")
    gate.set()
    assert wait_for(w.idle, timeout=5)
    w.stop()
    assert order[:3] == [("f", "block"), ("p", 0), ("f", "cam")]
    assert [o for o in order if o[0] == "p"] == [("p", i) for i in range(6)]


def test_prompt_queue_bound_drops_oldest():
    gate = threading.Event()
    done = []
    w = LatestFrameWorker(lambda f: gate.wait(5), done.append, lambda *a: None, prompt_queue=3)
    w.submit_frame("block")
    time.sleep(0.05)
    for i in range(10):
        w.submit_prompt(i)
    gate.set()
    assert wait_for(w.idle, timeout=5)
    w.stop()
    assert done == [7, 8, 9] and w.one.prompts_dropped == 7


def test_stop_ends_a_polling_handler_quickly():
    started = threading.Event()

    def long_prompt(item):
        started.set()
        for _ in range(1000):  # 100 s of "decoder chunks" unless stopped
            if w.stopping:
                return
            time.sleep(0.1)

    w = LatestFrameWorker(lambda f: None, long_prompt, lambda *a: None)
    w.submit_prompt("huge")
    assert started.wait(5)
    t0 = time.monotonic()
    assert w.stop(timeout=2.0)
    assert time.monotonic() - t0 < 1.0


def _two_cameras(order, gate, prompt_queue=8):
    def on_frame(key, item):
        if item == "block":
            gate.wait(5)
        order.append(("f", key, item))

    # one thread: the order of service is the rule under test (with two, both cameras run at once)
    return _Worker(on_frame, lambda key, item: order.append(("p", key, item)), lambda *a: None,
                   keys=["front", "rear"], prompt_queue=prompt_queue, threads=1)


def test_cameras_take_turns_with_their_latest_frames():
    order = []
    gate = threading.Event()
    w = _two_cameras(order, gate)
    w.submit_frame("front", "block")
    time.sleep(0.05)
    for i in range(5):  # front floods, rear sends two: latest per camera, then alternating
        w.submit_frame("front", f"F{i}")
    w.submit_frame("rear", "R0")
    w.submit_frame("rear", "R1")
    gate.set()
    assert wait_for(w.idle, timeout=5)
    w.stop()
    assert order == [("f", "front", "block"), ("f", "rear", "R1"), ("f", "front", "F4")]
    assert w.stats["front"].frames_dropped == 4 and w.stats["rear"].frames_dropped == 1


def test_one_cameras_prompts_cannot_starve_another_cameras_frames():
    """The bound: between two frames at most one prompt message runs. The rear camera always has
    a frame waiting (a 30 Hz camera on a slow model); front has 8 prompts queued."""
    order = []
    gate = threading.Event()
    w = None

    def on_frame(key, item):
        if item == "block":
            gate.wait(5)
        order.append(("f", key, item))

    def on_prompt(key, item):
        order.append(("p", key, item))
        w.submit_frame("rear", f"R{item}")  # a new rear frame arrives while each prompt runs

    w = _Worker(on_frame, on_prompt, lambda *a: None, keys=["front", "rear"], prompt_queue=8, threads=1)
    w.submit_frame("front", "block")
    time.sleep(0.05)
    for i in range(8):
        w.submit_prompt("front", i)
    gate.set()
    assert wait_for(w.idle, timeout=5)
    w.stop()
    assert order[0] == ("f", "front", "block")
    assert order[1:] == [x for i in range(8) for x in (("p", "front", i), ("f", "rear", f"R{i}"))]


def test_prompt_queues_are_per_camera_and_take_turns():
    order = []
    gate = threading.Event()
    w = _two_cameras(order, gate, prompt_queue=2)
    w.submit_frame("front", "block")
    time.sleep(0.05)
    for i in range(4):
        w.submit_prompt("front", f"a{i}")   # front's queue keeps its newest 2
    w.submit_prompt("rear", "b0")           # rear's own queue is untouched by front's flood
    gate.set()
    assert wait_for(w.idle, timeout=5)
    w.stop()
    assert [o[2] for o in order[1:]] == ["a2", "b0", "a3"]
    assert w.stats["front"].prompts_dropped == 2 and w.stats["rear"].prompts_dropped == 0


def test_in_progress_names_the_item_and_its_time():
    release, started = threading.Event(), threading.Event()

    def prompt(item):
        started.set()
        release.wait(10)

    w = LatestFrameWorker(lambda f: None, prompt, lambda *a: None)
    assert w.in_progress() == ("", 0.0)
    w.submit_prompt("p")
    assert started.wait(5)
    time.sleep(0.3)
    kind, s = w.in_progress()
    assert kind == "prompt" and 0.3 <= s < 5.0
    release.set()
    assert wait_for(lambda: w.in_progress() == ("", 0.0), 5)
    w.stop()


def test_threads_run_different_cameras_at_once_never_one_camera_twice():
    """Three cameras flooded with frames and prompts on two threads: two items run at once (so
    the threads are used), never two of one camera (its cache and tracks see one item at a time),
    and every camera is served."""
    lock = threading.Lock()
    running: dict = {}
    seen = {"max_total": 0, "max_one": 0}
    served = {k: 0 for k in "abc"}

    def handle(key, item):
        with lock:
            running[key] = running.get(key, 0) + 1
            seen["max_total"] = max(seen["max_total"], sum(running.values()))
            seen["max_one"] = max(seen["max_one"], running[key])
        time.sleep(0.01)
        with lock:
            running[key] -= 1
            served[key] += 1

    w = _Worker(handle, handle, lambda *a: None, keys=list("abc"), threads=2)
    assert w.threads == 2
    t_end = time.monotonic() + 1.0
    i = 0
    while time.monotonic() < t_end:
        for k in "abc":
            w.submit_frame(k, i)
            w.submit_prompt(k, i)
        i += 1
        time.sleep(0.002)
    assert wait_for(w.idle, timeout=10)
    assert w.stop()
    assert seen["max_one"] == 1
    assert seen["max_total"] == 2
    assert min(served.values()) > 10


def test_a_blocked_camera_leaves_the_other_thread_to_the_others():
    """front is stuck in a long item; with two threads rear's frames keep being answered, and
    front's next frame waits for front's own item (not run beside it)."""
    order, gate = [], threading.Event()

    def on_frame(key, item):
        if item == "block":
            gate.wait(5)
        order.append((key, item))

    w = _Worker(on_frame, lambda *a: None, lambda *a: None, keys=["front", "rear"], threads=2)
    w.submit_frame("front", "block")
    assert wait_for(lambda: w.in_progress("front")[0] == "frame", 5)
    w.submit_frame("front", "F1")
    for i in range(3):
        w.submit_frame("rear", f"R{i}")
        assert wait_for(lambda: ("rear", f"R{i}") in order, 5)
    assert ("front", "F1") not in order and w.in_progress("front")[0] == "frame"
    gate.set()
    assert wait_for(w.idle, 5)
    w.stop()
    assert order[-2:] == [("front", "block"), ("front", "F1")]


def test_no_more_threads_than_cameras_and_stop_ends_them_all():
    assert _Worker(lambda *a: None, lambda *a: None, lambda *a: None, keys=[""], threads=4).threads == 1
    started = threading.Semaphore(0)
    w = None

    def polling(key, item):  # a long prompt batch: checks `stopping` between chunks
        started.release()
        while not w.stopping:
            time.sleep(0.01)

    w = _Worker(polling, polling, lambda *a: None, keys=["a", "b"], threads=2)
    w.submit_frame("a", 1)
    w.submit_prompt("b", 2)
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    assert w.in_progress("a")[0] == "frame" and w.in_progress("b")[0] == "prompt"
    t0 = time.monotonic()
    assert w.stop(timeout=2.0)
    assert time.monotonic() - t0 < 1.0
