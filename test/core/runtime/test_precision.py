"""Mixed precision of the torch backend (fp32 weights, bf16/fp16 autocast, fp32 norms/softmax/PE)
against the official fp32 goldens of the image-sensitive seed2 checkpoint, with the tolerances stated
in core/engine/goldens.py (measured, with margin; README "Precision").

The 16-bit products (convolutions, linear layers, matmuls) of the slow tests run with a GPU's
arithmetic (`GpuArithmetic`): the 16-bit operands autocast made, multiplied and summed in fp32,
the result rounded to 16 bits, which is what cuDNN/cuBLAS do on the GPUs these precisions are for.
This AVX2 CPU has no native 16-bit kernels: torch's fall-backs do the same arithmetic (checked
below against them, op by op, within one 16-bit rounding step) but single-threaded and ~15x slower
(an encoder pass: 84 s instead of 5.3 s on one thread). Everything else (which ops autocast puts
in 16 bits, the fp32 norms and softmax, 16-bit element-wise ops and activations) runs as torch
runs it. The fast fp16 box test runs torch's own CPU kernels throughout."""
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import shared_path
from mobilesam_ros.core.engine import goldens
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.modeling.common import LayerNorm, LayerNorm2d, softmax_fp32
from mobilesam_ros.core.engine.predictor import SamPredictor

HALF = (torch.float16, torch.bfloat16)
_aten = torch.ops.aten


class GpuArithmetic(TorchDispatchMode):
    """Inside `with GpuArithmetic():`, every convolution / linear / matmul whose first operand is
    16-bit computes in fp32 from its (already 16-bit) operands and rounds the result to that
    dtype: fp32 accumulation and a 16-bit output, as a GPU's 16-bit kernels do. `calls` counts
    them, so a test can tell the mode really saw the model's products."""

    PRODUCTS = frozenset({_aten.convolution.default, _aten.conv2d.default, _aten.linear.default,
                          _aten.matmul.default, _aten.mm.default, _aten.bmm.default,
                          _aten.addmm.default, _aten.baddbmm.default})

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.PRODUCTS and args[0].dtype in HALF:
            self.calls += 1
            wide = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
            return func(*wide, **kwargs).to(args[0].dtype)
        return func(*args, **kwargs)


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


def _product_cases(dtype: torch.dtype) -> list:
    """(name, op, 16-bit operands): one of each product kind the encoder and decoder run."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    F = torch.nn.functional
    return [
        ("conv 1x1", lambda x, w, b: F.conv2d(x, w, b), (r(1, 32, 24, 24), r(16, 32, 1, 1), r(16))),
        ("conv 3x3 stride 2", lambda x, w, b: F.conv2d(x, w, b, 2, 1),
         (r(1, 3, 33, 33), r(8, 3, 3, 3), r(8))),
        ("depthwise 3x3", lambda x, w, b: F.conv2d(x, w, b, 1, 1, 1, 16),
         (r(1, 16, 20, 20), r(16, 1, 3, 3), r(16))),
        ("linear", F.linear, (r(300, 160), r(640, 160), r(640))),
        ("matmul", torch.matmul, (r(8, 49, 32), r(8, 32, 49))),
        ("baddbmm", torch.baddbmm, (r(4, 7, 50), r(4, 7, 16), r(4, 16, 50))),
        ("addmm", torch.addmm, (r(256), r(100, 64), r(64, 256))),
    ]


def test_fp16_box_decode_from_golden_embedding(sam2, golden2):
    """Prompt encoder + fast decoder under fp16 autocast on torch's own CPU kernels (one case:
    seconds on this CPU)."""
    errors = decoder_errors(sam2, golden2, "fp16", ("box",), False)
    assert_within(errors, "fp16")
    # the 16-bit path really ran: fp32 is within 1.4e-5 of the golden
    assert errors["logits"] > 1e-3


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
def test_gpu_arithmetic_is_this_cpus_16_bit_arithmetic(dtype):
    """Each product kind, emulated and by torch's own CPU kernel, against the exact (fp64) product
    of the same 16-bit operands: both within one rounding of the result to 16 bits (half a step:
    2^-11 of it for fp16, 2^-8 for bf16) plus the error of fp32 sums (2^-16 of the sum of the
    terms' magnitudes; a few hundred terms here). A kernel that summed in 16 bits fails it: torch's
    CPU conv_transpose2d does (1.7x the bound in fp16, 8x in bf16), which is why the mode leaves
    that op alone (the fast decoder runs its transposed convolutions as matmuls)."""
    half_step = 2.0 ** (-11 if dtype == torch.float16 else -8)
    for name, op, operands in _product_cases(dtype):
        exact = op(*(o.double() for o in operands))
        bound = half_step * exact.abs() + 2.0 ** -16 * op(*(o.double().abs() for o in operands))
        with torch.inference_mode():
            cpu = op(*operands)
            with GpuArithmetic() as mode:
                emulated = op(*operands)
        assert mode.calls >= 1 and emulated.dtype == cpu.dtype == dtype, name
        for kernel, got in (("emulated", emulated), ("torch cpu", cpu)):
            worst = float(((got.double() - exact).abs() / bound).max())
            assert worst <= 1.0, (name, kernel, worst)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_decoder_from_golden_embedding(sam2, golden2, precision):
    """Every case and the 8-box batch (mask input, multimask, batching) under autocast."""
    with GpuArithmetic() as mode:
        errors = decoder_errors(sam2, golden2, precision, goldens.CASES, True)
    assert mode.calls > 100  # the decoder's products went through it
    assert_within(errors, precision)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_end_to_end_from_preprocessed_photo(sam2, golden2, precision):
    """Encoder (16-bit autocast) on the golden's preprocessed photo, then every decoder case and
    the 8-box batch on that embedding, against the fp32 goldens."""
    be = TorchBackend(sam2, precision=precision)
    with GpuArithmetic() as mode:
        emb = be.embedding(be.encode(golden2["preprocessed"]))
        encoder_products = mode.calls
        errors = goldens.embedding_errors(emb, golden2["embedding"])
        p = SamPredictor(be)
        p.set_embedding(emb, tuple(golden2["original_size"]))
        errors.update(goldens.worst(goldens.predictor_errors(p, golden2)))
    print(f"\n{precision} end to end: {errors}")
    assert encoder_products >= 29 + 20  # TinyViT's 29 convolutions and 20 attention matmuls at least
    assert emb.dtype == np.float32
    assert_within(errors, precision)
    # the 16-bit path really ran: its embedding is off by more than fp32 is allowed to be
    assert errors["emb_max"] > goldens.TOLERANCES["fp32"].emb_max


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
