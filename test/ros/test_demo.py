"""The README's main job: the demo plays frames into a real node process and writes overlays; with
no weights it names the missing file and where to put it."""
import os
import shutil
import subprocess
import sys

import pytest
from conftest import DATA, FIXTURES, warm_onnx_cache

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _demo(args, env, cwd):
    return subprocess.run([sys.executable, "-P", "-m", "mobilesam_ros.ros.demo", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_demo_writes_overlays(ros_env, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("000000.jpg", "000010.jpg"):
        shutil.copy(DATA / "sequence" / name, frames / name)
    out = tmp_path / "out"
    warm_onnx_cache(str(FIXTURES / "mobile_sam_seed2.pt"))
    res = _demo(["--checkpoint", str(FIXTURES / "mobile_sam_seed2.pt"), "--detector",
                 str(DATA / "models" / "yolov8n_int8.onnx"), "--frames", str(frames), "--out", str(out),
                 "--rate", "0.2"], ros_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2/2 frames answered" in res.stdout, res.stdout
    pngs = sorted(os.listdir(out))
    # one overlay per frame, named by the frame's place in --frames (not by arrival order)
    assert pngs == ["overlay_0000.png", "overlay_0001.png"], pngs


def test_demo_grid_fallback_without_detector(ros_env, tmp_path):
    """No detector anywhere: the node must start in grid mode (it used to get `-p detector.model:=`,
    which rcl refuses, and the demo ended with "the node did not come up")."""
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(DATA / "sequence" / "000000.jpg", frames / "000000.jpg")
    ckpt_dir = tmp_path / "weights"  # no object_aware.onnx beside the checkpoint
    ckpt_dir.mkdir()
    os.symlink(FIXTURES / "mobile_sam_seed2.pt", ckpt_dir / "mobile_sam.pt")
    res = _demo(["--checkpoint", str(ckpt_dir / "mobile_sam.pt"), "--grid", "2", "--frames", str(frames),
                 "--out", str(tmp_path / "out"), "--rate", "0.5"], {**ros_env, "MOBILESAM_WEIGHTS": str(ckpt_dir)},
                tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "grid 2x2" in res.stdout and "1/1 frames answered" in res.stdout, res.stdout + res.stderr


def test_demo_without_weights_says_what_to_get(ros_env, tmp_path):
    env = {**ros_env, "MOBILESAM_WEIGHTS": str(tmp_path / "weights")}
    res = _demo(["--no-download"], env, tmp_path)
    assert res.returncode == 3
    assert "mobile_sam.pt" in res.stderr and "github.com/ChaoningZhang/MobileSAM" in res.stderr
    assert str(tmp_path / "weights" / "mobile_sam.pt") in res.stderr
