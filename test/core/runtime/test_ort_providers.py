"""ONNX Runtime providers with their options (device_id, TensorRT engine cache, fp16, profiles),
the precision the ONNX backend refuses, the detector's providers, and the fallback of backend
auto when a GPU provider fails to start. onnxruntime here is the CPU build, so asking it for
CUDAExecutionProvider is a real failure, not a mock."""
import logging

import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.core.config import ModelConfig
from mobilesam_ros.core.errors import ConfigError
from mobilesam_ros.core.runtime import ort_providers as op
from mobilesam_ros.core.runtime.factory import build_backend, onnx_providers, resolve_backend
from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend, OnnxFrame, ProviderUnavailable, make_session
from mobilesam_ros.core.runtime.onnx_cache import cached_graphs
from mobilesam_ros.core.runtime.torch_backend import TorchBackend

SEED2 = str(shared_path("fixtures", "mobile_sam_seed2.pt"))
CUDA, TRT, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


@pytest.fixture(scope="module")
def graphs():
    """seed2's graphs in the session's ONNX cache (conftest; shared with the other tests)."""
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam

    return cached_graphs([SEED2], lambda: load_mobile_sam(SEED2))


@pytest.mark.parametrize("device, want", [("cpu", 0), ("cuda", 0), ("cuda:0", 0), ("cuda:1", 1), ("cuda:12", 12)])
def test_device_id_from_the_torch_device_string(device, want):
    assert op.device_id(device) == want


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda:1:2", "mps"])
def test_bad_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        op.device_id(device)


def test_cuda_gets_the_device_id_tf32_set_explicitly_and_cpu_gets_no_options():
    assert op.provider_options([CUDA, CPU], "cuda:1") == [(CUDA, {"device_id": 1, "use_tf32": 0}), (CPU, {})]
    assert op.provider_options([CUDA], "cuda", tf32=True) == [(CUDA, {"device_id": 0, "use_tf32": 1})]


def test_tensorrt_options_engine_cache_fp16_and_decoder_profiles(tmp_path):
    enc = dict(op.provider_options([TRT, CUDA, CPU], "cuda:2", "fp16", tmp_path / "e"))[TRT]
    assert enc == {"device_id": 2, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(tmp_path / "e"), "trt_timing_cache_enable": True,
                   "trt_timing_cache_path": str(tmp_path / "e")}  # the encoder is static: no profile
    dec = dict(op.provider_options([TRT, CPU], "cuda", "fp32", tmp_path / "d", decoder=True))[TRT]
    assert dec["trt_fp16_enable"] is False and dec["device_id"] == 0
    # hand-written: B in [1, 32] (opt 32 = the default decode chunk), N in [2, 16] (opt 2 = a box)
    assert dec["trt_profile_min_shapes"] == \
        "point_coords:1x2x2,point_labels:1x2,mask_input:1x1x256x256,has_mask_input:1"
    assert dec["trt_profile_opt_shapes"] == \
        "point_coords:32x2x2,point_labels:32x2,mask_input:32x1x256x256,has_mask_input:32"
    assert dec["trt_profile_max_shapes"] == \
        "point_coords:32x16x2,point_labels:32x16,mask_input:32x1x256x256,has_mask_input:32"


def test_profile_names_are_the_decoder_graphs_dynamic_inputs(graphs):
    """Every name in the profile is a decoder input with a dynamic first axis, and every dynamic
    input is in the profile (a TensorRT build needs all of them)."""
    sess = make_session(graphs[1])
    dynamic = {i.name for i in sess.get_inputs() if any(isinstance(d, str) for d in i.shape)}
    named = {part.split(":")[0] for part in op.decoder_profile(1, 2).split(",")}
    assert named == dynamic == {"point_coords", "point_labels", "mask_input", "has_mask_input"}


def test_tensorrt_cache_sits_beside_the_onnx_cache_keyed_by_the_graph(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"graph one")
    b.write_bytes(b"graph two")
    root = tmp_path / "cache"
    da, db = op.trt_cache_dir(str(a), str(root)), op.trt_cache_dir(str(b), str(root))
    assert da.parent == db.parent == root / "tensorrt" and da != db
    assert op.trt_cache_dir(str(a), str(root)) == da  # same bytes, same engines
    a.write_bytes(b"graph one, re-exported")
    assert op.trt_cache_dir(str(a), str(root)) != da  # new bytes never load old engines


def test_onnx_providers_per_graph_in_the_factory(graphs, tmp_path):
    cfg = ModelConfig(SEED2, backend="onnx", providers=(TRT, CUDA, CPU), device="cuda:1", precision="fp16",
                      onnx_cache_dir=str(tmp_path))
    per = onnx_providers(cfg, *graphs)
    enc, dec = dict(per["encoder"]), dict(per["decoder"])
    assert list(dict(per["decoder"])) == [TRT, CUDA, CPU]
    assert "trt_profile_min_shapes" not in enc[TRT] and "trt_profile_min_shapes" in dec[TRT]
    assert enc[TRT]["trt_fp16_enable"] is True and enc[CUDA] == {"device_id": 1, "use_tf32": 0}
    assert enc[TRT]["trt_engine_cache_path"].startswith(str(tmp_path / "tensorrt"))
    assert enc[TRT]["trt_engine_cache_path"] != dec[TRT]["trt_engine_cache_path"]


@pytest.mark.parametrize("providers, precision", [((CPU,), "fp16"), ((CUDA, CPU), "fp16"), ((TRT, CPU), "bf16"),
                                                  ((CPU,), "bf16")])
def test_precision_the_onnx_graphs_cannot_honour_is_refused(providers, precision):
    with pytest.raises(ConfigError, match=f"precision {precision} is not honoured by backend onnx"):
        op.check_precision(providers, precision)
    with pytest.raises(ConfigError, match="not honoured"):  # explicit onnx: refused before any export
        build_backend(ModelConfig(SEED2, backend="onnx", providers=providers, precision=precision))


def test_precision_the_onnx_backend_honours():
    op.check_precision((CPU,), "fp32")
    op.check_precision((TRT, CUDA, CPU), "fp16")


def test_auto_picks_the_backend_that_honours_the_precision():
    assert resolve_backend(ModelConfig(SEED2, precision="fp16")) == "torch"  # CPU, not ONNX fp32
    assert resolve_backend(ModelConfig(SEED2, precision="bf16", device="cuda", providers=(TRT, CPU))) == "torch"
    assert resolve_backend(ModelConfig(SEED2, precision="fp16", device="cuda", providers=(TRT, CPU))) == "onnx"
    assert resolve_backend(ModelConfig(SEED2)) == "onnx"


def test_detector_never_gets_tensorrt():
    assert op.detector_providers([TRT, CUDA, CPU], "cuda:1") == [(CUDA, {"device_id": 1, "use_tf32": 0}), (CPU, {})]
    assert op.detector_providers([TRT], "cuda") == [(CPU, {})]
    assert op.detector_providers([CPU]) == [(CPU, {})]


def test_real_int8_detector_drops_tensorrt():
    """The real int8 YOLO graph, handed TensorRT first: built on the CPU provider (TensorRT is not
    in this build, so keeping it would raise)."""
    from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector

    det = YoloV8OnnxDetector(shared_path("data", "models", "yolov8n_int8.onnx"), providers=[TRT, CPU])
    assert det._session.get_providers() == [CPU]


def test_missing_gpu_provider_is_provider_unavailable(graphs):
    with pytest.raises(ProviderUnavailable, match="not available in this onnxruntime build"):
        make_session(graphs[1], [(CUDA, {"device_id": 0}), (CPU, {})])


def test_explicit_onnx_refuses_a_gpu_provider_that_fails(graphs):
    with pytest.raises(ProviderUnavailable, match=CUDA):
        build_backend(ModelConfig(SEED2, backend="onnx", providers=(CUDA, CPU)))


def test_auto_falls_back_to_the_cpu_provider_with_one_warning(graphs, caplog, seed2_golden):
    with caplog.at_level(logging.WARNING, logger="mobilesam_ros"):
        be = build_backend(ModelConfig(SEED2, providers=(CUDA, CPU)))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and CUDA in warnings[0].getMessage(), [r.getMessage() for r in warnings]
    assert "ONNX Runtime on CPUExecutionProvider" in warnings[0].getMessage()
    assert isinstance(be, OnnxBackend) and be.providers == [CPU]
    err = np.abs(be.embedding(be.encode(seed2_golden["preprocessed"])) - seed2_golden["embedding"])
    assert err.max() <= 1e-3  # and it serves: the fp32 golden embedding


def test_auto_with_only_gpu_providers_falls_back_to_torch_with_one_warning(graphs, caplog):
    with caplog.at_level(logging.WARNING, logger="mobilesam_ros"):
        be = build_backend(ModelConfig(SEED2, providers=(TRT, CUDA)))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "falling back to torch on cpu" in warnings[0].getMessage()
    assert isinstance(be, TorchBackend)


def test_auto_fp16_on_tensorrt_that_fails_falls_back_to_torch_fp16(graphs, caplog):
    """TensorRT was what honoured fp16: the CPU provider left in the list would not, so torch does."""
    with caplog.at_level(logging.WARNING, logger="mobilesam_ros"):
        be = build_backend(ModelConfig(SEED2, providers=(TRT, CPU), precision="fp16"))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "falling back to torch on cpu" in warnings[0].getMessage()
    assert isinstance(be, TorchBackend) and be.precision == "fp16"


def test_io_binding_keeps_the_embedding_in_an_ortvalue_and_matches_plain_runs(graphs, seed2_golden):
    """The handle holds the embedding as an OrtValue on the session's device (here the CPU); decoding
    through the binding gives exactly what a plain session.run gives."""
    be = OnnxBackend(*graphs)
    h = be.encode(seed2_golden["preprocessed"])
    assert isinstance(h, OnnxFrame) and h.device == ("cpu", 0) and h.value.device_name() == "cpu"
    ref_emb = be.encoder.run(None, {"image": seed2_golden["preprocessed"]})[0]
    np.testing.assert_array_equal(be.embedding(h), ref_emb)
    coords = np.array([[[500.0, 375.0], [0.0, 0.0]], [[100.0, 200.0], [0.0, 0.0]]], np.float32)
    labels = np.array([[1.0, -1.0], [1.0, -1.0]], np.float32)
    low, iou = be.decode(h, coords, labels, None, True)
    ref = be.decoder.run(None, {"image_embeddings": ref_emb, "point_coords": coords, "point_labels": labels,
                                "mask_input": np.zeros((2, 1, 256, 256), np.float32),
                                "has_mask_input": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(low, ref[0][:, 1:])
    np.testing.assert_array_equal(iou, ref[1][:, 1:])
    h2 = be.handle_from_embedding(ref_emb)
    ref_emb[:] = 0  # the handle owns its copy
    np.testing.assert_array_equal(be.decode(h2, coords, labels, None, False)[0], ref[0][:, :1])


def test_decoder_graph_repeats_no_per_frame_projection(graphs):
    """The decoder graph's work that depends on the embedding alone (not on any prompt input) is a
    re-layout of it: DecoderGraph's `prepare` projections are not in the graph (the graph takes the
    per-prompt path, which uses only the raw image tokens, and the exporter drops the rest), so
    there is no per-frame computation to cache across decodes beyond one 4 MB transpose."""
    import onnx

    g = onnx.load(graphs[1]).graph
    prompt = {"point_coords", "point_labels", "mask_input", "has_mask_input"}
    init = {t.name for t in g.initializer}
    frame = {"image_embeddings"}  # values computed from the embedding (and constants) only
    frame_ops = []
    for n in g.node:  # nodes are topologically sorted
        ins = [i for i in n.input if i and i not in init]
        if ins and all(i in frame or i not in prompt and i not in frame and _const(g, i) for i in ins) \
                and any(i in frame for i in ins):
            frame.update(n.output)
            frame_ops.append(n.op_type)
    assert frame_ops and set(frame_ops) <= {"Gather", "Flatten", "Transpose", "Reshape", "Squeeze"}, frame_ops


def _const(g, name: str) -> bool:
    """`name` is the output of a Constant node."""
    return any(n.op_type == "Constant" and name in n.output for n in g.node)
