"""The optional int8 encoder (ONNX Runtime dynamic quantization of encoder.onnx) against the
official fp32 goldens of seed2, within the loose documented bound core.engine.goldens.TOLERANCES["int8"]."""
import onnx
import pytest

from conftest import shared_path
from mobilesam_ros.core.engine import goldens
from mobilesam_ros.core.runtime.export import export_encoder, quantize_encoder
from mobilesam_ros.core.runtime.onnx_backend import ENCODER_INPUT, make_session
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.engine.predictor import SamPredictor

pytestmark = pytest.mark.slow


def test_int8_encoder_within_documented_bound(tmp_path):
    golden = goldens.load_golden(str(shared_path("fixtures", "golden_seed2.npz")))
    sam = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed2.pt"))
    fp32 = export_encoder(sam, str(tmp_path / "encoder.onnx"))
    int8 = quantize_encoder(fp32, str(tmp_path / "encoder_int8.onnx"))
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "ConvInteger" not in ops
    emb = make_session(int8).run(None, {ENCODER_INPUT: golden["preprocessed"]})[0]
    errors = goldens.embedding_errors(emb, golden["embedding"])
    assert errors["emb_mean"] > 1e-3  # really quantized (fp32 is within 1.1e-6)
    p = SamPredictor(TorchBackend(sam))
    p.set_embedding(emb, tuple(golden["original_size"]))
    errors.update(goldens.worst(goldens.predictor_errors(p, golden)))
    assert not goldens.failures(errors, goldens.TOLERANCES["int8"]), errors
