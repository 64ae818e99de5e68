"""benchmarks/gpu_check.py: `--all --device cpu --quick` as CI runs it (a fresh process from the repo
root: the same rows and code path as a GPU run minus CUDA, the goldens passing, every skip with its
reason, the JSON holding what it prints), the row plan a CUDA machine gets, and exit status 1 on a
failure."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, shared_path, warm_onnx_cache

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

from mobilesam_ros.core.engine import goldens  # noqa: E402

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.mark.slow
def test_all_rows_in_cpu_mode(tmp_path):
    warm_onnx_cache(str(shared_path("fixtures", "mobile_sam_seed2.pt")))  # the export is not what is timed
    out = tmp_path / "gpu_check.json"
    res = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--all", "--device", "cpu", "--quick",
                          "--fixtures", str(shared_path("fixtures")), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert list(rows) == ["torch fp32", "torch tf32", "torch fp16", "torch bf16", "torch fp32+compile(default)",
                          "onnx CPU fp32", "onnx CUDA fp32", "onnx TensorRT fp16 cold", "onnx TensorRT fp16 warm"]
    assert {k for k, r in rows.items() if r["status"] == "PASS"} == {"torch fp32", "onnx CPU fp32"}
    assert all(r["status"] == "SKIP" and r["reason"] for k, r in rows.items() if k not in ("torch fp32", "onnx CPU fp32"))
    assert "summary: 2 passed, 0 failed, 7 skipped; skipped: torch tf32: TF32 is a CUDA mode" in res.stdout
    assert report["summary"] in res.stdout and "lacks CUDAExecutionProvider" in report["summary"]
    assert report["references"] == ["cpu_ref", "golden"]
    tol = goldens.TOLERANCES["fp32"]
    for name in ("torch fp32", "onnx CPU fp32"):
        row = rows[name]
        assert row["failures"] == [] and not goldens.failures(row["golden"], tol) and row["golden"]["emb_max"] > 0
        assert not goldens.failures(row["cpu_ref"], tol)
        for t in row["timings"].values():
            assert 0 < t["min_ms"] <= t["median_ms"] and t["runs"] >= 1
        # a frame is an encoder pass plus the box decode
        assert row["timings"]["segevery_frame"]["min_ms"] > row["timings"]["encoder"]["min_ms"] * 0.5
        assert row["peak_mb"] > 0
    # the torch fp32 row on this CPU repeats the reference's computation: bit-identical
    assert rows["torch fp32"]["cpu_ref"]["emb_max"] == 0 and rows["torch fp32"]["cpu_ref"]["logits"] == 0
    assert rows["onnx CPU fp32"]["start_s"] > 0 and rows["onnx CPU fp32"]["backend"] == "onnxruntime CPU"
    assert report["boxes"] == 20 and report["device_name"] == "CPU"


def test_plan_on_cuda_runs_every_torch_row_and_names_what_is_missing():
    rows = gpu_check.plan_rows("cuda:1", ["fp32", "tf32", "fp16", "bf16"], True, "off", [CUDA, CPU])
    plan = {r["row"]: r["skip"] for r in rows}
    assert list(plan) == ["torch fp32", "torch tf32", "torch fp16", "torch bf16", "torch fp32+compile(default)",
                          "onnx CUDA fp32", "onnx TensorRT fp16 cold", "onnx TensorRT fp16 warm"]
    assert all(plan[k] is None for k in list(plan)[:6])
    assert "lacks TensorrtExecutionProvider" in plan["onnx TensorRT fp16 cold"]
    rows = gpu_check.plan_rows("cuda", [], True, "max-autotune", None)
    assert {r["row"]: r["skip"] for r in rows}["onnx CUDA fp32"] == "onnxruntime is not installed"
    assert rows[4]["compile"] == "max-autotune" and rows[4]["skip"] is None
    rows = gpu_check.plan_rows("cuda", [], True, "off", [TRT, CUDA, CPU])
    assert all(r["skip"] is None for r in rows)


def test_summary_counts_and_gives_each_skip_its_reason():
    rows = [{"row": "a", "status": "PASS"}, {"row": "b", "status": "FAIL"},
            {"row": "c", "status": "SKIP", "reason": "no GPU"}, {"row": "d", "status": "PASS"}]
    assert gpu_check.summary_line(rows) == "summary: 2 passed, 1 failed, 1 skipped; skipped: c: no GPU"


@pytest.mark.slow
def test_seeded_model_sees_the_image():
    """The model built in place (no fixtures) is deterministic and its embedding depends on the
    picture: the mirrored picture moves it by a large share of its norm (measured 0.80; a model
    whose embedding ignored the pixels would pass any CPU-vs-GPU comparison of the encoder)."""
    import torch

    from mobilesam_ros.core.ops.transforms import preprocess_image

    a, b = gpu_check.seeded_sam(), gpu_check.seeded_sam()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    pic = gpu_check.synthetic_picture()
    x, _ = preprocess_image(pic)
    xm, _ = preprocess_image(pic[:, ::-1].copy())
    with torch.inference_mode():
        e, em = a.image_encoder(x), a.image_encoder(xm)
    rel = float((e - em).norm() / e.norm())
    assert rel > 0.1, rel


@pytest.mark.slow
def test_a_failure_exits_1(tmp_path, monkeypatch):
    """Zero tolerances: the fp32 row's real, nonzero errors against the official goldens fail it."""
    zero = goldens.Tolerances(emb_max=0, emb_mean=0, logits=0, iou=0, mask_agree=1.0)
    monkeypatch.setitem(goldens.TOLERANCES, "fp32", zero)
    rc = gpu_check.main(["--device", "cpu", "--quick", "--boxes", "1", "--fixtures", str(shared_path("fixtures")),
                         "--out", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert rc == 1 and report["rows"][0]["status"] == "FAIL"
    assert any(f.startswith("vs golden: emb_max") for f in report["rows"][0]["failures"])
