"""Shared test fixtures: paths to ../shared, isolated ROS 2 domains, reaped node processes.

ROS graph tests get a unique ROS_DOMAIN_ID (flock-reserved, so concurrent pytest runs and xdist
workers never share one) and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST. Every process started through
`ros_process` is reaped at teardown: SIGINT, SIGTERM, then SIGKILL to its whole process group.
"""
import contextlib
import fcntl
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "ros_domain_locks")


# The files that take longest (CPU-seconds at one thread on the 2-core CI machine, measured
# 2026-12-06/07): collected first, so that the two xdist workers of scripts/run_tests.sh (files
# whole, sent in collection order: --no-loadscope-reorder) start them at once and end together,
# instead of one worker finishing a long file alone at the end. A stale list only costs balance.
LONGEST_FIRST = ("distill/test_train.py",              # ~430 s (16 training steps, resumed)
                 "distill/test_distributed.py",        # ~220 s (torchrun, 2 ranks)
                 "cli/test_eval_label.py",             # ~170 s (CLI processes)
                 "core/engine/test_amg.py",            # ~145 s (SAM's 32x32 grid)
                 "benchmarks/test_gpu_check.py",       # ~100 s
                 "core/engine/test_camera_stream.py")  # ~60 s


def pytest_collection_modifyitems(config, items):
    """Everything under test/ros is marked `ros`: scripts/run_tests.sh runs those tests one at a
    time at normal priority, the rest beside them at nice 19 (its worker tests time threads, its
    node tests rates and waits). The LONGEST_FIRST files move to the front (stable otherwise)."""
    ros_dir = ROOT / "test" / "ros"
    for item in items:
        if ros_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.ros)
    rank = {ROOT / "test" / f: k for k, f in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.path)), len(rank)))


def shared_path(*parts: str) -> Path:
    """A file under ../shared; fails loudly (not a skip) when it is missing: CI has it."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(f"test data missing: {p} (../shared must sit beside the checkout)")
    return p


@pytest.fixture(scope="session", autouse=True)
def onnx_cache_dir(tmp_path_factory):
    """One ONNX export cache (backend auto) per test session, outside the user's ~/.cache; every
    node and CLI process the tests start inherits it through the environment. scripts/run_tests.sh
    gives its passes and xdist workers one shared folder (MOBILESAM_TEST_CACHE_DIR): the cache
    locks each key, so one process exports and the others reuse."""
    shared = os.environ.get("MOBILESAM_TEST_CACHE_DIR")
    path = Path(shared) if shared else tmp_path_factory.mktemp("mobilesam_cache")
    os.environ["MOBILESAM_CACHE_DIR"] = str(path)
    yield path


def warm_onnx_cache(checkpoint: str) -> None:
    """Export the graphs of `checkpoint` into the session cache now (once), so a node process the
    test starts comes up in seconds instead of exporting under the test's start-up timeout."""
    from mobilesam_ros.core.runtime.onnx_cache import cached_graphs
    from mobilesam_ros.core.io.checkpoints import CheckpointError, load_mobile_sam

    try:
        sam = load_mobile_sam(checkpoint)
    except CheckpointError:
        return  # a test of a bad checkpoint: the node must report it, not this helper
    cached_graphs([checkpoint], lambda: sam)


@pytest.fixture(scope="session")
def golden():
    """golden_seed1.npz (official SamPredictor / AMG outputs on picture1) as a dict of arrays."""
    import numpy as np

    return dict(np.load(shared_path("fixtures", "golden_seed1.npz")))


@pytest.fixture(scope="session")
def seed2_golden():
    """golden_seed2.npz: official SamPredictor outputs with the image-sensitive mobile_sam_seed2.pt,
    with BGR (`bgr_*`) and mirrored (`flip_*`) controls (fixtures/README.md)."""
    import numpy as np

    return dict(np.load(shared_path("fixtures", "golden_seed2.npz")))


@pytest.fixture(scope="session")
def sam():
    """The seeded official-format MobileSAM (mobile_sam_seed1.pt), loaded by the project's loader.
    Shared: tests must not modify it."""
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam

    return load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))


def wait_for(pred, timeout: float = 15.0, period: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return False


@contextlib.contextmanager
def _reserve_domain_id():
    """Exclusive flock on <tmp>/ros_domain_locks/<id>.lock while the test runs (ids 1..101)."""
    os.makedirs(_LOCK_DIR, exist_ok=True)
    start = os.getpid() % 101
    for i in range(101):
        dom = 1 + (start + i) % 101
        fd = os.open(os.path.join(_LOCK_DIR, f"{dom}.lock"), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield dom
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise RuntimeError("no free ROS_DOMAIN_ID")


@pytest.fixture
def ros_env(monkeypatch):
    with _reserve_domain_id() as dom:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(dom))
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        monkeypatch.delenv("ROS_STATIC_PEERS", raising=False)
        monkeypatch.setenv("PYTHONUNBUFFERED", "1")
        yield dict(os.environ)


def _reap(proc: subprocess.Popen, timeout: float = 5.0):
    """SIGINT -> wait -> SIGTERM -> wait -> SIGKILL, to the whole process group."""
    if proc.poll() is not None:
        return proc.returncode
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=timeout)


@pytest.fixture
def ros_process(ros_env, tmp_path):
    """Factory: start a process (argv list) in the test's domain; always reaped at teardown.
    Output goes to a log file (`proc.log_path`), never a pipe that could fill and block."""
    procs = []

    def start(argv, name=None, env=None):
        name = name or os.path.basename(str(argv[-1]))
        log = open(tmp_path / f"{name}.log", "wb")
        p = subprocess.Popen([str(a) for a in argv], env={**ros_env, **(env or {})}, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        p.log_path = log.name
        procs.append((p, log))
        return p

    yield start
    for p, log in reversed(procs):
        _reap(p)
        log.close()


def read_log(proc) -> str:
    with open(proc.log_path, errors="replace") as f:
        return f.read()


@contextlib.contextmanager
def spun_node(domain_id: int, name: str = "test_probe"):
    """An rclpy node on its own Context in `domain_id`, spun in a daemon thread (tests, tools)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node(name, context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        yield node
    finally:
        # Stop spinning and join BEFORE the executor is shut down: `ex.shutdown()` from here,
        # with the thread inside a callback, destroyed the guard condition that callback's
        # handler then triggered (InvalidHandle: a PytestUnhandledThreadExceptionWarning in
        # test_node_vision_msgs). Then node, then context.
        stop.set()
        th.join(timeout=5)
        ex.shutdown(timeout_sec=5)
        node.destroy_node()
        ctx.try_shutdown()


@pytest.fixture
def ros_probe(ros_env):
    """In-test node on its own Context in the test's domain, spun in a daemon thread."""
    with spun_node(int(ros_env["ROS_DOMAIN_ID"])) as node:
        yield node
