"""TinyViT-5M + neck against the official encoder's golden embedding (fixtures README tolerances)."""
import itertools

import numpy as np
import pytest
import torch

from conftest import shared_path
from mobilesam_ros.core.io.checkpoints import load_image_encoder, load_state_dict
from mobilesam_ros.core.modeling.tiny_vit import Attention, TinyViT, build_tiny_vit_5m, relative_offset_index
from mobilesam_ros.core.ops.transforms import preprocess_image

EMB_MAX_ABS = 1e-3
EMB_MEAN_ABS = 1e-5


@pytest.fixture(scope="module")
def v1_embedding(golden):
    """The v1 checkpoint's encoder on the golden's own preprocessed input (one forward per module)."""
    encoder = load_image_encoder(shared_path("fixtures", "mobile_sam_seed1.pt"))
    with torch.inference_mode():
        return encoder(torch.from_numpy(golden["preprocessed"])).numpy()


@pytest.fixture(scope="module")
def v2_embedding(golden):
    """The v2 encoder file on our own preprocessing of the decoded photo (resize + normalise + pad)."""
    encoder = load_image_encoder(shared_path("fixtures", "mobilesamv2_tiny_vit_from_seed1.pt"))
    x, _ = preprocess_image(golden["image"])
    with torch.inference_mode():
        return encoder(x).numpy()


def assert_close_to_golden(emb: np.ndarray, expected: np.ndarray) -> None:
    assert emb.shape == expected.shape == (1, 256, 64, 64) and emb.dtype == np.float32
    err = np.abs(emb - expected)
    assert err.max() <= EMB_MAX_ABS, f"max abs {err.max():.3g}"
    assert err.mean() <= EMB_MEAN_ABS, f"mean abs {err.mean():.3g}"


@pytest.mark.slow
def test_v1_checkpoint_embedding_matches_golden(v1_embedding, golden):
    assert_close_to_golden(v1_embedding, golden["embedding"])


@pytest.mark.slow
def test_v2_encoder_file_with_our_preprocessing_matches_golden(v2_embedding, golden):
    assert_close_to_golden(v2_embedding, golden["embedding"])


def test_parameter_names_and_shapes_match_official_checkpoint():
    official = {k[len("image_encoder."):]: tuple(v.shape)
                for k, v in load_state_dict(shared_path("fixtures", "mobile_sam_seed1.pt")).items()
                if k.startswith("image_encoder.")}
    ours = {k: tuple(v.shape) for k, v in build_tiny_vit_5m().state_dict().items()}
    assert ours == official
    assert len(ours) == 302
    # Derived index tables stay out of checkpoints, as in the official model.
    assert not any("attention_bias_idxs" in k for k in ours)


@pytest.mark.parametrize("window", [1, 2, 7, 14])
def test_relative_offset_index_matches_first_seen_numbering(window):
    """The official numbering: offsets enumerated in first-seen order over row-major point pairs."""
    points = list(itertools.product(range(window), range(window)))
    seen, idxs = {}, []
    for p1, p2 in itertools.product(points, points):
        off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
        idxs.append(seen.setdefault(off, len(seen)))
    expected = torch.tensor(idxs).view(len(points), len(points))
    assert torch.equal(relative_offset_index(window), expected)


def test_attention_uses_biases_set_after_eval():
    """The official caches the gathered bias in train(False); ours must follow weights loaded later."""
    torch.manual_seed(0)
    attn = Attention(dim=8, key_dim=4, num_heads=2, window=2).eval()
    x = torch.randn(3, 4, 8)
    with torch.no_grad():
        attn.attention_biases.copy_(torch.randn(2, 4) * 3)
        out = attn(x)
        # Plain restatement of the forward for the 2x2 window.
        qkv = attn.qkv(attn.norm(x)).view(3, 4, 2, 12).permute(0, 2, 1, 3)
        q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
        bias = torch.stack([attn.attention_biases[:, abs(a // 2 - b // 2) * 2 + abs(a % 2 - b % 2)]
                            for a in range(4) for b in range(4)], dim=-1).view(2, 4, 4)
        w = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + bias, dim=-1)
        expected = attn.proj((w @ v).transpose(1, 2).reshape(3, 4, 8))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_small_input_shape():
    """Output is (B, 256, img_size/16, img_size/16); windows pad at every stage for 256 x 256."""
    enc = TinyViT(img_size=256).eval()
    with torch.inference_mode():
        assert enc(torch.zeros(2, 3, 256, 256)).shape == (2, 256, 16, 16)
