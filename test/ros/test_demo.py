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
    warm_onnx_cache(str(FIXTURES / "mobile_sam_seed1.pt"))
    res = _demo(["--checkpoint", str(FIXTURES / "mobile_sam_seed1.pt"), "--detector",
                 str(DATA / "models" / "yolov8n_int8.onnx"), "--frames", str(frames), "--out", str(out),
                 "--rate", "0.2"], ros_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2/2 frames answered" in res.stdout, res.stdout
    pngs = sorted(os.listdir(out))
    assert len(pngs) == 2 and all(p.endswith(".png") for p in pngs)


def test_demo_without_weights_says_what_to_get(ros_env, tmp_path):
    env = {**ros_env, "MOBILESAM_WEIGHTS": str(tmp_path / "weights")}
    res = _demo(["--no-download"], env, tmp_path)
    assert res.returncode == 3
    assert "mobile_sam.pt" in res.stderr and "github.com/ChaoningZhang/MobileSAM" in res.stderr
    assert str(tmp_path / "weights" / "mobile_sam.pt") in res.stderr
