"""`python -P -m mobilesam_ros ...` exit codes, as a script sees them (real subprocesses):
bad input -> one line and 2; a bug (an unexpected exception from inside numpy) -> traceback and 1."""
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared_path


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-P", "-m", "mobilesam_ros", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_bad_input_exits_2_with_one_line(tmp_path):
    image = str(shared_path("data", "images", "bus.jpg"))
    cases = [  # (arguments, what the line must say)
        (["--checkpoint", str(tmp_path / "missing.pt"), "--point", "1,1,1"],
         "checkpoint file not found"),
        (["--checkpoint", str(tmp_path / "missing.pt"), "--point", "1,1"],
         "expected 3 comma-separated numbers, got 2"),
    ]
    for extra, message in cases:
        res = run_cli("segany", "--image", image, "--output", str(tmp_path / "o.npz"),
                      "--backend", "torch", *extra)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines[-1].startswith("mobilesam_ros: error:") and message in lines[-1], res.stderr
        assert "Traceback" not in res.stderr


def test_bug_exits_1_with_traceback(tmp_path):
    # An empty `iou` array makes numpy's argmax raise ValueError inside the CLI: not the user's
    # option being out of range but code that never expected it, so it is reported as a bug.
    prev = tmp_path / "prev.npz"
    np.savez(prev, iou=np.zeros(0, np.float32), low_res_logits=np.zeros((0, 256, 256), np.float32))
    res = run_cli("segany", "--checkpoint", str(tmp_path / "missing.pt"),
                  "--image", str(shared_path("data", "images", "bus.jpg")),
                  "--mask-input", str(prev), "--output", str(tmp_path / "o.npz"))
    assert res.returncode == 1, res.stderr
    assert "Traceback (most recent call last)" in res.stderr and "argmax" in res.stderr
    assert "mobilesam_ros: internal error" in res.stderr.strip().splitlines()[-1]


def test_distill_bad_input_exits_2(tmp_path):
    res = run_cli("distill", "--teacher", str(tmp_path / "none.pt"), "--data", str(tmp_path),
                  "--out", str(tmp_path / "s.pt"), "--no-progress")
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("mobilesam_ros: error:") and "none.pt" in last, res.stderr
    assert "Traceback" not in res.stderr


def test_unwritable_onnx_cache_is_one_line_or_a_fallback(tmp_path):
    """A cache folder that cannot be created (below a regular file: tests run as root, where a
    chmod-ed folder stays writable): `--backend onnx` is one line naming the folder and the
    parameter, exit 2; the default `auto` answers with torch after one warning."""
    (tmp_path / "a_file").write_text("")
    folder = str(tmp_path / "a_file" / "cache")
    common = ["segany", "--checkpoint", str(shared_path("fixtures", "mobile_sam_seed2.pt")),
              "--image", str(shared_path("data", "images", "bus.jpg")), "--point", "100,100,1",
              "--output", str(tmp_path / "o.npz"), "--onnx-cache-dir", folder]
    res = run_cli(*common, "--backend", "onnx")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mobilesam_ros: error: ONNX cache folder"), res.stderr
    # named as the CLI user sets it (core/config.setting_name): the option, not the node's parameter
    assert folder in lines[0] and "--onnx-cache-dir" in lines[0] and "model.onnx_cache_dir" not in lines[0]
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.slow
def test_unwritable_onnx_cache_under_auto_answers_with_torch(tmp_path):
    (tmp_path / "a_file").write_text("")
    folder = str(tmp_path / "a_file" / "cache")
    res = run_cli("segany", "--checkpoint", str(shared_path("fixtures", "mobile_sam_seed2.pt")),
                  "--image", str(shared_path("data", "images", "bus.jpg")), "--point", "100,100,1",
                  "--output", str(tmp_path / "o.npz"), "--onnx-cache-dir", folder)
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if folder in ln]
    assert len(warnings) == 1 and "falling back to torch" in warnings[0], res.stderr
    assert "--onnx-cache-dir" in warnings[0]  # the setting, named as the CLI user sets it
    assert np.load(tmp_path / "o.npz")["masks"].shape[1:] == (1080, 810)  # bus.jpg, answered
