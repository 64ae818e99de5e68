"""benchmarks/gpu_check.py in its CPU mode, as CI runs it: a fresh process from the repo root, exit
status 0 with the fp32 goldens passing, and the JSON it writes holding every figure it prints."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, shared_path


@pytest.mark.slow
def test_gpu_check_cpu_mode(tmp_path):
    out = tmp_path / "gpu_check.json"
    res = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--fixtures", str(shared_path("fixtures")),
                          "--device", "cpu", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout and "FAIL" not in res.stdout
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["boxes"] == 20
    (row,) = report["rows"]
    assert row["precision"] == "fp32" and row["golden"] == "PASS" and row["failures"] == []
    tol = report["tolerances"]["fp32"]
    assert row["emb_max"] <= tol["emb_max"] and row["logits"] <= tol["logits"]
    assert row["mask_agree"] >= tol["mask_agree"]
    assert set(row["cases"]) == {"p1_multi", "p1_single", "p3", "box", "boxpt", "refine", "boxes8"}
    for name in ("encoder", "decode_1pt", "boxes", "segevery_frame"):
        t = row["timings"][name]
        assert 0 < t["min_ms"] <= t["median_ms"] and t["runs"] >= 1
    # a frame is an encoder pass plus the box decode
    assert row["timings"]["segevery_frame"]["min_ms"] > row["timings"]["encoder"]["min_ms"] * 0.5
    assert row["peak_mb"] > 0
