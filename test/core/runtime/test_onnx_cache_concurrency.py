"""Several processes sharing one ONNX cache (two nodes of one launch file): one exports, the others
wait for it and reuse its entry; the temporary folder of a killed export is removed by the next
export, and one whose exporter is alive is left alone. Real processes (test/core/runtime/cache_child.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import shared_path

CHILD = str(Path(__file__).with_name("cache_child.py"))
EXPORTING = "exporting ONNX graphs for"  # onnx_cache logs it once per export
# How long a quick child may take: a guard against hangs, not a speed bound.
QUICK_S = 300
# The children must meet inside a 2 s export window, so these tests run at normal priority, one at
# a time (scripts/run_tests.sh), not at nice 19 beside busy processes.
pytestmark = pytest.mark.timing


def start(checkpoint: Path, root: Path, go: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-P", CHILD, str(checkpoint), str(root), str(go), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY", proc.communicate(timeout=QUICK_S)
    return proc


def finish(proc: subprocess.Popen, timeout: float) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def checkpoint_file(tmp_path: Path, name: str) -> Path:
    """Any bytes: the quick children only hash the file (the entry's key), they never load it."""
    path = tmp_path / name
    path.write_bytes(name.encode() * 1000)
    return path


def temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "onnx").glob(".export-*"))


def test_two_processes_started_together_export_once(tmp_path):
    ckpt, root, go = checkpoint_file(tmp_path, "a.pt"), tmp_path / "cache", tmp_path / "go"
    procs = [start(ckpt, root, go, "quick") for _ in range(2)]  # both imported and waiting
    go.touch()  # both ask for the same entry now; each export takes 2 s, so they overlap
    (paths_a, err_a), (paths_b, err_b) = (finish(p, QUICK_S) for p in procs)
    assert (err_a + err_b).count(EXPORTING) == 1, err_a + err_b
    assert (err_a + err_b).count("waiting for it") == 1, err_a + err_b
    assert paths_a == paths_b and all(os.path.getsize(p) == 4096 for p in paths_a)
    manifest = json.loads((Path(paths_a[0]).parent / "manifest.json").read_text())
    assert set(manifest["sha256"]) == {"encoder.onnx", "decoder.onnx"}
    assert temporaries(root) == []


def test_killed_export_leaves_a_temporary_that_the_next_export_removes(tmp_path):
    root, go = tmp_path / "cache", tmp_path / "go"
    go.touch()
    ckpt_a, ckpt_b = checkpoint_file(tmp_path, "a.pt"), checkpoint_file(tmp_path, "b.pt")
    killed, alive = start(ckpt_a, root, go, "hang"), start(ckpt_b, root, go, "hang")
    try:
        tmp_killed = Path(killed.stdout.readline().split(" ", 1)[1].strip())
        tmp_alive = Path(alive.stdout.readline().split(" ", 1)[1].strip())
        os.kill(killed.pid, signal.SIGKILL)  # mid-export: the graphs are written, no manifest yet
        killed.wait(timeout=10)
        assert tmp_killed.is_dir() and tmp_alive.is_dir()
        assert len(temporaries(root)) == 2

        paths, err = finish(start(ckpt_a, root, go, "quick"), QUICK_S)  # the same checkpoint again
        assert err.count(EXPORTING) == 1, err
        assert f"removing {tmp_killed}" in err, err
        assert not tmp_killed.exists()
        assert tmp_alive.is_dir(), "the temporary of an export that is still running was removed"
        assert temporaries(root) == [tmp_alive.name]
        assert all(os.path.getsize(p) == 4096 for p in paths)
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def test_a_waiting_process_is_released_when_the_exporter_is_killed(tmp_path):
    """The kernel drops the lock of a killed exporter: the waiter exports itself, no time limit hit."""
    ckpt, root, go = checkpoint_file(tmp_path, "a.pt"), tmp_path / "cache", tmp_path / "go"
    go.touch()
    hung = start(ckpt, root, go, "hang")
    try:
        tmp_hung = Path(hung.stdout.readline().split(" ", 1)[1].strip())
        waiter = subprocess.Popen([sys.executable, "-P", CHILD, str(ckpt), str(root), str(go), "quick"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.stdout.readline().strip() == "READY"
        time.sleep(3.0)  # the waiter blocks on the lock meanwhile
        assert waiter.poll() is None and tmp_hung.is_dir()
        os.kill(hung.pid, signal.SIGKILL)
        paths, err = finish(waiter, QUICK_S)
        assert "waiting for it" in err and err.count(EXPORTING) == 1, err
        assert not tmp_hung.exists() and temporaries(root) == []
        assert all(os.path.getsize(p) == 4096 for p in paths)
    finally:
        if hung.poll() is None:
            hung.kill()
        hung.communicate(timeout=10)


@pytest.mark.slow
def test_two_processes_really_exporting_one_checkpoint(tmp_path):
    """The real exporter in two processes started together: one export, both get the checked graphs."""
    ckpt, root, go = shared_path("fixtures", "mobile_sam_seed1.pt"), tmp_path / "cache", tmp_path / "go"
    procs = [start(ckpt, root, go, "real") for _ in range(2)]
    go.touch()
    t0 = time.monotonic()
    (paths_a, err_a), (paths_b, err_b) = (finish(p, 850) for p in procs)
    assert (err_a + err_b).count(EXPORTING) == 1, err_a + err_b
    assert paths_a == paths_b
    manifest = json.loads((Path(paths_a[0]).parent / "manifest.json").read_text())
    assert manifest["check_vs_torch"]["embedding"] <= 1e-3  # the real check against torch ran
    assert temporaries(root) == []
    print(f"two processes, one export: {time.monotonic() - t0:.0f} s")
