"""ONNX export + ONNX Runtime backend: the exported graphs reproduce the official goldens (from the
stored embedding and from the preprocessed image) and agree with the PyTorch backend."""
import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.runtime.export import export_decoder, export_encoder
from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.engine.predictor import SamPredictor
from mobilesam_ros.core.structures.prompts import make_prompt

pytestmark = pytest.mark.slow
CASES = ["p1_multi", "p1_single", "p3", "box", "boxpt", "refine"]


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    sam = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))
    return export_encoder(sam, str(d / "encoder.onnx")), export_decoder(sam, str(d / "decoder.onnx"))


@pytest.fixture(scope="module")
def onnx_predictor(onnx_files, golden):
    p = SamPredictor(OnnxBackend(*onnx_files))
    p.set_embedding(golden["embedding"], tuple(golden["original_size"]))
    return p


def _kwargs(g, case):
    kw = {"multimask_output": bool(g[f"{case}_multimask_output"])}
    for name in ("point_coords", "point_labels", "box", "mask_input"):
        if f"{case}_{name}" in g:
            kw[name] = g[f"{case}_{name}"]
    return kw


def test_encoder_graph_reproduces_golden_embedding(onnx_files, golden):
    be = OnnxBackend(*onnx_files)
    emb = be.embedding(be.encode(golden["preprocessed"]))
    err = np.abs(emb - golden["embedding"])
    assert err.max() <= 1e-3 and err.mean() <= 1e-5, (err.max(), err.mean())


@pytest.mark.parametrize("case", CASES)
def test_decoder_graph_reproduces_predict_goldens(onnx_predictor, golden, case):
    pred = onnx_predictor.predict(**_kwargs(golden, case))
    np.testing.assert_allclose(pred.low_res_logits, golden[f"{case}_low_res_logits"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(pred.iou, golden[f"{case}_iou"], atol=1e-3, rtol=0)
    shape = tuple(golden[f"{case}_masks_shape"])
    ref = np.unpackbits(golden[f"{case}_masks_packed"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
    assert min((a == b).mean() for a, b in zip(pred.masks, ref)) >= 0.999


def test_dynamic_batch_of_boxes_matches_golden_and_torch(onnx_predictor, golden):
    preds = onnx_predictor.predict_batch([make_prompt(box=b) for b in golden["boxes8"]])
    low = np.stack([p.low_res_logits for p in preds])
    np.testing.assert_allclose(low, golden["boxes8_low_res_logits"], atol=5e-3, rtol=0)
    torch_pred = SamPredictor(TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))))
    torch_pred.set_embedding(golden["embedding"], tuple(golden["original_size"]))
    tl = np.stack([p.low_res_logits for p in torch_pred.predict_batch([make_prompt(box=b) for b in golden["boxes8"]])])
    assert np.abs(tl - low).max() <= 1e-3


def test_clear_errors(onnx_files, tmp_path):
    enc, dec = onnx_files
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxBackend(str(tmp_path / "none.onnx"), dec)
    with pytest.raises(ValueError, match="not available in this onnxruntime build"):
        OnnxBackend(enc, dec, providers=["TensorrtExecutionProvider"])
    with pytest.raises(ValueError, match="expected"):
        OnnxBackend(dec, enc)  # swapped graphs
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        OnnxBackend(str(bad), dec)


def test_concurrent_calls_on_a_session_pool_reproduce_the_goldens(onnx_files, golden):
    """Two threads encoding and decoding at once on a backend with 2 sessions per graph (the node's
    `workers`): each on its own session (the pool made a second one), every result still the
    official golden within the single-session tolerances."""
    import threading

    be = OnnxBackend(*onnx_files, sessions=2)
    start = threading.Barrier(2)
    out, errors = [None, None], []

    def work(k):
        try:
            start.wait(10)
            emb = be.embedding(be.encode(golden["preprocessed"]))
            p = SamPredictor(be)
            p.set_embedding(emb, tuple(golden["original_size"]))
            out[k] = (emb, p.predict(**_kwargs(golden, "box")))
        except BaseException as exc:  # noqa: BLE001  reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert be._encoders.made == 2  # both encodes overlapped (the barrier), each on its own session
    for emb, pred in out:
        err = np.abs(emb - golden["embedding"])
        assert err.max() <= 1e-3 and err.mean() <= 1e-5
        np.testing.assert_allclose(pred.low_res_logits, golden["box_low_res_logits"], atol=5e-3, rtol=0)
