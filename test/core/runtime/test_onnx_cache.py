"""backend auto: ONNX Runtime on CPU from graphs exported once into a cache keyed by the checkpoint;
a corrupt entry is rebuilt, an impossible export falls back to torch; numbers = the official goldens."""
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.runtime import onnx_cache
from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import CheckpointError, load_mobile_sam
from mobilesam_ros.core.runtime.factory import ModelConfig, build_backend, resolve_backend
from mobilesam_ros.core.config import setting_name
from mobilesam_ros.core.engine.predictor import SamPredictor

SEED2 = str(shared_path("fixtures", "mobile_sam_seed2.pt"))
CASES = ["p1_multi", "p1_single", "p3", "box", "boxpt", "refine"]


@pytest.fixture(scope="module")
def golden2():
    return dict(np.load(shared_path("fixtures", "golden_seed2.npz")))


@pytest.fixture(scope="module")
def auto_backend():
    """Exported into the session cache (conftest), shared with the node tests of the session."""
    return build_backend(ModelConfig(SEED2))


def test_auto_resolves_by_device_and_providers():
    assert resolve_backend(ModelConfig(SEED2)) == "onnx"
    assert resolve_backend(ModelConfig(SEED2, device="cuda")) == "torch"
    assert resolve_backend(ModelConfig(SEED2, device="cuda:1", providers=(
        "TensorrtExecutionProvider", "CUDAExecutionProvider"))) == "onnx"
    assert resolve_backend(ModelConfig(SEED2, backend="torch")) == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend(ModelConfig(SEED2, backend="tensorflow"))


def test_auto_on_cpu_is_onnx_runtime_and_reproduces_the_official_goldens(auto_backend, golden2):
    """seed2's encoder sees the image (fixtures README), so this checks the whole image path."""
    assert isinstance(auto_backend, OnnxBackend)
    pred = SamPredictor(auto_backend)
    pred.set_image(golden2["image"])
    emb = pred.embedding()
    assert np.abs(emb - golden2["embedding"]).max() <= 1e-3
    assert np.abs(emb - golden2["embedding"]).mean() <= 1e-5
    for case in CASES:
        kw = {"multimask_output": bool(golden2[f"{case}_multimask_output"])}
        for name in ("point_coords", "point_labels", "box", "mask_input"):
            if f"{case}_{name}" in golden2:
                kw[name] = golden2[f"{case}_{name}"]
        out = pred.predict(**kw)
        np.testing.assert_allclose(out.low_res_logits, golden2[f"{case}_low_res_logits"], atol=5e-3, rtol=0)
        np.testing.assert_allclose(out.iou, golden2[f"{case}_iou"], atol=1e-3, rtol=0)


def _entry(root) -> str:
    entries = [e for e in os.listdir(os.path.join(root, "onnx")) if not e.startswith(".")]
    assert len(entries) == 1, entries
    return os.path.join(root, "onnx", entries[0])


def test_cached_entry_is_reused_and_keyed_by_the_checkpoint(auto_backend, onnx_cache_dir, monkeypatch):
    entry = onnx_cache.cache_root() / "onnx" / onnx_cache.entry_key([SEED2])
    manifest = json.loads((entry / "manifest.json").read_text())
    assert set(manifest["sha256"]) == {"encoder.onnx", "decoder.onnx"}
    assert manifest["check_vs_torch"]["embedding"] <= 1e-3

    def no_export(*a, **k):
        raise AssertionError("a valid cache entry must not be exported again")

    monkeypatch.setattr(onnx_cache, "_export_into", no_export)
    assert isinstance(build_backend(ModelConfig(SEED2)), OnnxBackend)
    assert onnx_cache.entry_key([SEED2]) != onnx_cache.entry_key([str(shared_path("fixtures", "mobile_sam_seed1.pt"))])


def _damage(entry: str, damage: str) -> None:
    if damage == "truncate_encoder":
        with open(os.path.join(entry, "encoder.onnx"), "r+b") as f:
            f.truncate(1000)
    elif damage == "garble_manifest":
        (Path(entry) / "manifest.json").write_text("{not json")
    else:  # a manifest whose recorded checksum is not the file's
        manifest = json.loads((Path(entry) / "manifest.json").read_text())
        manifest["sha256"]["decoder.onnx"] = "0" * 64
        (Path(entry) / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["truncate_encoder", "garble_manifest", "wrong_checksum"])
def test_a_damaged_entry_is_not_trusted(auto_backend, tmp_path, damage):
    """The check cached_graphs makes before using an entry (the test below rebuilds one)."""
    src = onnx_cache.cache_root() / "onnx" / onnx_cache.entry_key([SEED2])
    shutil.copytree(src, tmp_path / src.name)
    assert onnx_cache._valid(tmp_path / src.name)
    _damage(str(tmp_path / src.name), damage)
    assert not onnx_cache._valid(tmp_path / src.name)


@pytest.mark.slow
def test_corrupt_entry_is_rebuilt_never_trusted(auto_backend, tmp_path, caplog, golden2):
    src = onnx_cache.cache_root() / "onnx" / onnx_cache.entry_key([SEED2])
    shutil.copytree(src, tmp_path / "onnx" / src.name)
    entry = _entry(tmp_path)
    _damage(entry, "truncate_encoder")
    with caplog.at_level(logging.INFO, logger="mobilesam_ros"):
        be = build_backend(ModelConfig(SEED2, onnx_cache_dir=str(tmp_path)))
    assert "corrupt: rebuilding" in caplog.text
    assert os.path.getsize(os.path.join(entry, "encoder.onnx")) > 10_000_000
    emb = be.embedding(be.encode(np.asarray(golden2["preprocessed"], np.float32)))
    assert np.abs(emb - golden2["embedding"]).max() <= 1e-3


def test_auto_falls_back_to_torch_when_export_is_impossible(tmp_path, monkeypatch, caplog):
    def broken(folder, load_sam):
        raise onnx_cache.ExportUnavailable("cannot export ONNX graphs: No module named 'onnx'")

    monkeypatch.setattr(onnx_cache, "_export_into", broken)
    with caplog.at_level(logging.WARNING, logger="mobilesam_ros"):
        be = build_backend(ModelConfig(SEED2, onnx_cache_dir=str(tmp_path)))
    assert isinstance(be, TorchBackend)
    assert "falling back to torch" in caplog.text and "No module named 'onnx'" in caplog.text
    # nothing half-written left behind (the key's empty lock file stays: see onnx_cache)
    assert [e for e in os.listdir(tmp_path / "onnx")] == [f".{onnx_cache.entry_key([SEED2])}.lock"]
    with pytest.raises(onnx_cache.ExportUnavailable):  # an explicit onnx choice is not overridden
        build_backend(ModelConfig(SEED2, backend="onnx", onnx_cache_dir=str(tmp_path)))


def test_bad_checkpoint_is_the_same_clear_error_under_auto(tmp_path):
    bad = tmp_path / "mobile_sam.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        build_backend(ModelConfig(str(bad), onnx_cache_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match="not found"):
        build_backend(ModelConfig(str(tmp_path / "missing.pt"), onnx_cache_dir=str(tmp_path)))


def test_export_uses_the_loaded_checkpoint(tmp_path, monkeypatch):
    """The graphs are exported from the very weights the user named (seed1 here, not seed2)."""
    calls = []

    def fake(folder, load_sam):
        calls.append(load_sam())
        raise onnx_cache.ExportUnavailable("stop here")

    monkeypatch.setattr(onnx_cache, "_export_into", fake)
    seed1 = str(shared_path("fixtures", "mobile_sam_seed1.pt"))
    build_backend(ModelConfig(seed1, onnx_cache_dir=str(tmp_path)))
    ref = load_mobile_sam(seed1).state_dict()
    assert all((calls[0].state_dict()[k] == v).all() for k, v in ref.items())


def test_precision_choices_are_the_torch_backends():
    from mobilesam_ros.core.runtime.torch_backend import PRECISIONS
    from mobilesam_ros.core.config import PRECISION_CHOICES

    assert set(PRECISION_CHOICES) == set(PRECISIONS)


def unwritable(tmp_path) -> str:
    """A cache folder that cannot be created, even by root (tests run as root, where a chmod-ed
    folder stays writable): a path below a regular file."""
    (tmp_path / "a_file").write_text("not a folder")
    return str(tmp_path / "a_file" / "cache")


@pytest.mark.parametrize("via", ["parameter", "environment"])
def test_auto_falls_back_to_torch_with_one_warning_when_the_cache_cannot_be_written(
        tmp_path, monkeypatch, caplog, via):
    """A read-only ~/.cache (a system service's home): torch, and one warning that names the folder
    and the parameter that moves it."""
    folder = unwritable(tmp_path)
    if via == "environment":  # the default cache location, as a service account meets it
        monkeypatch.setenv("MOBILESAM_CACHE_DIR", folder)
    cfg = ModelConfig(SEED2, onnx_cache_dir=folder if via == "parameter" else "")
    with caplog.at_level(logging.INFO, logger="mobilesam_ros"):
        be = build_backend(cfg)
    assert isinstance(be, TorchBackend)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert folder in warnings[0] and setting_name(ModelConfig, "onnx_cache_dir") in warnings[0], warnings[0]
    assert "falling back to torch" in warnings[0]


def test_explicit_onnx_with_an_unwritable_cache_is_one_clear_error(tmp_path):
    folder = unwritable(tmp_path)
    with pytest.raises(onnx_cache.ExportUnavailable) as err:
        build_backend(ModelConfig(SEED2, backend="onnx", onnx_cache_dir=folder))
    assert folder in str(err.value) and setting_name(ModelConfig, "onnx_cache_dir") in str(err.value)
    assert "NotADirectoryError" in str(err.value)  # the reason, as the OS gave it
