"""Loading the three official checkpoint formats, and the errors for files that are not one of them."""
import os
import pickle

import pytest
import torch

from conftest import shared_path
from mobilesam_ros.core.io.checkpoints import (CheckpointError, load_image_encoder, load_mobile_sam,
                                            load_state_dict, load_v2, sniff_format)
from mobilesam_ros.core.modeling.sam import Sam
from mobilesam_ros.core.modeling.tiny_vit import TinyViT, build_tiny_vit_5m

V1 = ("fixtures", "mobile_sam_seed1.pt")
V2_ENCODER = ("fixtures", "mobilesamv2_tiny_vit_from_seed1.pt")
V2_DECODER = ("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt")


def raw(parts) -> dict:
    """The file as torch itself reads it: the independent reference for loaded values."""
    return torch.load(shared_path(*parts), map_location="cpu", weights_only=True)


def assert_holds(module: torch.nn.Module, expected: dict) -> None:
    state = module.state_dict()
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(state[k], v.to(state[k].dtype)), k


def assert_ready(module: torch.nn.Module) -> None:
    assert not any(m.training for m in module.modules())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in module.parameters())


class RunsShell:
    """Unpickling this calls os.system: what a malicious "checkpoint" does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- the real formats ---------------------------------------------------------------------------

def test_sniff_format_of_official_files():
    assert sniff_format(raw(V1)) == "mobile_sam"
    assert sniff_format(raw(V2_ENCODER)) == "v2_encoder"
    assert sniff_format(raw(V2_DECODER)) == "v2_decoder"
    assert sniff_format(raw(V2_ENCODER)["model"]) == "encoder"
    assert sniff_format({"foo": torch.zeros(1)}) == "unknown"


def test_load_mobile_sam_strict_eval_float32():
    sam = load_mobile_sam(shared_path(*V1))
    assert isinstance(sam, Sam)
    assert_ready(sam)
    assert_holds(sam, raw(V1))  # all 439 tensors, BN num_batches_tracked included


def test_load_v2_takes_encoder_and_misspelled_decoder_keys():
    sam = load_v2(shared_path(*V2_ENCODER), shared_path(*V2_DECODER))
    assert_ready(sam)
    decoder = raw(V2_DECODER)
    assert_holds(sam.image_encoder, raw(V2_ENCODER)["model"])
    assert_holds(sam.prompt_encoder, decoder["PromtEncoder"])
    assert_holds(sam.mask_decoder, decoder["MaskDecoder"])


@pytest.mark.parametrize("parts", [V1, V2_ENCODER])
def test_load_image_encoder_from_flat_and_model_formats(parts):
    encoder = load_image_encoder(shared_path(*parts))
    assert isinstance(encoder, TinyViT)
    assert_ready(encoder)
    state = raw(parts)
    expected = state["model"] if "model" in state else {
        k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
    assert_holds(encoder, expected)


def test_half_precision_bare_encoder_loads_as_float32(tmp_path):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in raw(V2_ENCODER)["model"].items()}
    torch.save(half, tmp_path / "encoder_fp16.pt")
    encoder = load_image_encoder(tmp_path / "encoder_fp16.pt")
    assert_ready(encoder)
    assert_holds(encoder, half)


# -- files that must be refused -------------------------------------------------------------------

def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "mobile_sam.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_mobile_sam(path)
    assert str(path) in str(e.value)


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        load_state_dict(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(tmp_path / "empty.pt")


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "truncated.pt"
    with open(shared_path(*V1), "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(1 << 20))  # the first 1 MB of 40 MB
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        load_mobile_sam(path)
    assert str(path) in str(e.value)


def test_text_file_is_refused_as_unreadable(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint\n" * 20)
    with pytest.raises(CheckpointError, match="cannot read it"):
        load_state_dict(tmp_path / "notes.pt")


def test_code_running_torch_save_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"image_encoder.neck.0.weight": RunsShell(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"run code") as e:
        load_mobile_sam(tmp_path / "evil.pt")
    assert "system" in str(e.value)
    assert not marker.exists()


def test_code_running_plain_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(RunsShell(str(marker)), protocol=2))
    with pytest.raises(CheckpointError, match=r"run code"):
        load_image_encoder(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_not_a_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict of tensors, got list"):
        load_state_dict(tmp_path / "list.pt")


def test_sam_vit_b_file_lists_missing_and_unexpected_keys(tmp_path):
    """Key names and shapes of the original SAM ViT-B (patch 16, 768 wide, absolute pos_embed)."""
    vit_b = {
        "image_encoder.pos_embed": torch.zeros(1, 64, 64, 768),
        "image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
        "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(2304, 768),
        "image_encoder.neck.0.weight": torch.zeros(256, 768, 1, 1),
    }
    torch.save(vit_b, tmp_path / "sam_vit_b.pt")
    with pytest.raises(CheckpointError) as e:
        load_mobile_sam(tmp_path / "sam_vit_b.pt")
    msg = str(e.value)
    assert "missing keys" in msg and "image_encoder.patch_embed.seq.0.c.weight" in msg
    assert "3 unexpected keys" in msg and "image_encoder.pos_embed" in msg
    assert "1 shape mismatches" in msg and "image_encoder.neck.0.weight: file (256, 768, 1, 1) vs model (256, 320, 1, 1)" in msg


def test_wider_encoder_reports_shape_mismatch(tmp_path):
    state = build_tiny_vit_5m().state_dict()
    state["neck.0.weight"] = torch.zeros(256, 448, 1, 1)  # TinyViT-11M's last width
    torch.save(state, tmp_path / "tinyvit11m_like.pt")
    with pytest.raises(CheckpointError, match=r"neck\.0\.weight: file \(256, 448, 1, 1\) vs model \(256, 320, 1, 1\)"):
        load_image_encoder(tmp_path / "tinyvit11m_like.pt")


def test_random_dict_and_swapped_v2_files(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "random.pt")
    with pytest.raises(CheckpointError, match=r"439 missing keys.*1 unexpected keys \(e\.g\. weight\)"):
        load_mobile_sam(tmp_path / "random.pt")
    with pytest.raises(CheckpointError, match="not a MobileSAMv2 prompt-guided decoder file.*PromtEncoder"):
        load_v2(shared_path(*V2_ENCODER), shared_path(*V2_ENCODER))
    with pytest.raises(CheckpointError, match="MobileSAMv2 decoder file"):
        load_image_encoder(shared_path(*V2_DECODER))


def test_str_paths_are_accepted():
    assert_ready(load_v2(str(shared_path(*V2_ENCODER)), str(shared_path(*V2_DECODER))))
