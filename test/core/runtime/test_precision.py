"""Mixed precision of the torch backend (fp32 weights, bf16/fp16 autocast, fp32 norms/softmax/PE)
against the official fp32 goldens of the image-sensitive seed2 checkpoint, with the tolerances stated
in core/engine/goldens.py (measured, with margin; README "Precision"). On this CPU 16-bit convolutions
have no native kernels, so the end-to-end encoder tests take minutes and are marked slow."""
import numpy as np
import pytest
import torch

from conftest import shared_path
from mobilesam_ros.core.engine import goldens
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.modeling.common import LayerNorm, LayerNorm2d, softmax_fp32
from mobilesam_ros.core.engine.predictor import SamPredictor


@pytest.fixture(scope="module")
def golden2():
    return goldens.load_golden(str(shared_path("fixtures", "golden_seed2.npz")))


@pytest.fixture(scope="module")
def sam2():
    return load_mobile_sam(shared_path("fixtures", "mobile_sam_seed2.pt"))


def assert_within(errors: dict, precision: str) -> None:
    bad = goldens.failures(errors, goldens.TOLERANCES[precision])
    assert not bad, f"{precision}: {bad} (errors {errors})"


def decoder_errors(sam2, golden2, precision: str, cases, boxes8: bool) -> dict:
    p = SamPredictor(TorchBackend(sam2, precision=precision))
    p.set_embedding(golden2["embedding"], tuple(golden2["original_size"]))
    return goldens.worst(goldens.predictor_errors(p, golden2, cases, boxes8))


def test_fp16_box_decode_from_golden_embedding(sam2, golden2):
    """Prompt encoder + fast decoder under fp16 autocast (one case: seconds on this CPU)."""
    errors = decoder_errors(sam2, golden2, "fp16", ("box",), False)
    assert_within(errors, "fp16")
    # the 16-bit path really ran: fp32 is within 1.4e-5 of the golden
    assert errors["logits"] > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_decoder_from_golden_embedding(sam2, golden2, precision):
    """Every case and the 8-box batch (mask input, multimask, batching) under autocast."""
    assert_within(decoder_errors(sam2, golden2, precision, goldens.CASES, True), precision)


END_TO_END = "test_end_to_end_from_preprocessed_photo"


def _end_to_end_errors(precision: str) -> tuple[str, dict]:
    """Encoder (16-bit autocast) on the golden's preprocessed photo, then every decoder case on that
    embedding -> (the embedding's dtype, flat errors against the fp32 goldens). Runs in a child
    process (see below), which cannot use the sam2 / golden2 fixtures."""
    sam2 = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed2.pt"))
    golden2 = goldens.load_golden(str(shared_path("fixtures", "golden_seed2.npz")))
    be = TorchBackend(sam2, precision=precision)
    emb = be.embedding(be.encode(golden2["preprocessed"]))
    errors = goldens.embedding_errors(emb, golden2["embedding"])
    p = SamPredictor(be)
    p.set_embedding(emb, tuple(golden2["original_size"]))
    errors.update(goldens.worst(goldens.predictor_errors(p, golden2)))
    return str(emb.dtype), errors


@pytest.fixture(scope="module")
def end_to_end_errors(request):
    """The selected 16-bit encoder passes (both, unless -k picked one) at once, one process each.
    On this CPU 16-bit convolutions fall back to torch's single-threaded reference kernel (~85 %
    of a ~90 s pass): run one after the other they leave a core idle for three minutes. Processes,
    not threads: autocast's cache of cast weights is shared between threads, so an fp16 and a bf16
    pass in one process collide."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    selected = {item.name for item in request.session.items}
    wanted = [p for p in ("bf16", "fp16") if f"{END_TO_END}[{p}]" in selected]
    with ProcessPoolExecutor(len(wanted), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {p: pool.submit(_end_to_end_errors, p) for p in wanted}
        return {p: f.result() for p, f in futures.items()}



@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_end_to_end_from_preprocessed_photo(end_to_end_errors, precision):
    dtype, errors = end_to_end_errors[precision]
    assert dtype == "float32"
    assert_within(errors, precision)


def _layer_norm_f64(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference over the last axis, in float64."""
    x = x.double()
    u = x.mean(-1, keepdim=True)
    var = ((x - u) ** 2).mean(-1, keepdim=True)
    return (x - u) / torch.sqrt(var + eps) * weight.double() + bias.double()


def test_norms_compute_in_fp32_for_bf16_inputs():
    """A large mean with a small spread: in bf16 (8 bits) the mean itself is off by up to 0.25,
    as much as the spread, so a 16-bit mean/variance gives garbage; fp32 normalisation stays within
    the bf16 rounding of the output."""
    g = torch.Generator().manual_seed(0)
    x = (100 + torch.randn(2, 256, 4, 4, generator=g)).bfloat16()  # exact bf16 inputs
    ln2d = LayerNorm2d(256)
    ln = LayerNorm(256, eps=1e-6)
    with torch.no_grad():
        for m in (ln2d, ln):
            m.weight.copy_(1 + 0.1 * torch.randn(256, generator=g))
            m.bias.copy_(0.1 * torch.randn(256, generator=g))
        ref = _layer_norm_f64(x.permute(0, 2, 3, 1), ln2d.weight, ln2d.bias, 1e-6).permute(0, 3, 1, 2)
        out2d = ln2d(x)
        ref_ln = _layer_norm_f64(x.permute(0, 2, 3, 1), ln.weight, ln.bias, 1e-6)
        out_ln = ln(x.permute(0, 2, 3, 1))
    assert out2d.dtype == out_ln.dtype == torch.bfloat16
    # bf16 output rounding: 2^-8 relative of |y| <= ~5
    assert (out2d.double() - ref).abs().max() < 0.03
    assert (out_ln.double() - ref_ln).abs().max() < 0.03
    # the same inputs normalised in bf16 arithmetic are far off (what the naive .half() model did)
    u = x.mean(1, keepdim=True)
    naive = (x - u) / torch.sqrt((x - u).pow(2).mean(1, keepdim=True) + 1e-6)
    naive = naive * ln2d.weight.bfloat16()[:, None, None] + ln2d.bias.bfloat16()[:, None, None]
    assert (naive.double() - ref).abs().max() > 0.1


def test_softmax_fp32_matches_fp64_for_fp16_scores():
    g = torch.Generator().manual_seed(1)
    s = (20 * torch.randn(3, 4096, generator=g)).half()
    out = softmax_fp32(s, dim=-1)
    assert out.dtype == torch.float16
    ref = torch.softmax(s.double(), dim=-1)
    assert (out.double() - ref).abs().max() < 1e-3 * ref.max()


def test_precision_argument(sam2):
    assert TorchBackend(sam2, fp16=True).precision == "fp16"  # the older spelling
    be = TorchBackend(sam2, precision="bf16")
    assert be.describe() == "torch cpu bf16"
    assert all(p.dtype == torch.float32 for p in be.sam.parameters())  # weights stay fp32
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchBackend(sam2, precision="int8")


def test_failures_names_each_broken_bound():
    tol = goldens.TOLERANCES["fp32"]
    ok = {"emb_max": 1e-4, "emb_mean": 1e-6, "logits": 1e-3, "iou": 1e-4, "mask_agree": 0.9999}
    assert goldens.failures(ok, tol) == []
    bad = goldens.failures(dict(ok, logits=0.1, mask_agree=0.9, iou=float("nan")), tol)
    assert [b.split()[0] for b in bad] == ["logits", "iou", "mask_agree"]


@pytest.fixture
def restore_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_set_explicitly_off_by_default(sam2, restore_tf32):
    """torch's own defaults differ (cuDNN convolutions TF32 ON, CUDA matmuls off): every backend sets
    both from its tf32 argument (ModelConfig.tf32, default False), so an fp32 GPU run is true fp32."""
    from mobilesam_ros.core.config import ModelConfig

    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
    TorchBackend(sam2)
    assert ModelConfig().tf32 is False
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    TorchBackend(sam2, tf32=True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)


def test_factory_passes_model_tf32_to_the_torch_backend(restore_tf32):
    from mobilesam_ros.core.config import ModelConfig
    from mobilesam_ros.core.runtime.factory import build_backend

    seed2 = str(shared_path("fixtures", "mobile_sam_seed2.pt"))
    be = build_backend(ModelConfig(seed2, backend="torch", tf32=True))
    assert be.tf32 and torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    be = build_backend(ModelConfig(seed2, backend="torch"))
    assert not be.tf32 and not torch.backends.cudnn.allow_tf32
