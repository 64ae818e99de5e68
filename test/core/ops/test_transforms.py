"""Geometry between original image and model input, checked against the official goldens and Pillow."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from mobilesam_ros.core.ops.transforms import (ResizeLongestSide, normalize_and_pad, postprocess_masks,
                                               preprocess_image, resize_uint8_like_pil)


def pil_resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """The official stand-in for torchvision's resize of a PIL image (fixtures README)."""
    return np.array(Image.fromarray(image, "RGB").resize((w, h), Image.BILINEAR))


def photo(name: str) -> np.ndarray:
    return np.array(Image.open(shared_path("data", "images", name)).convert("RGB"))


def test_preprocess_shape_rounds_half_up():
    assert ResizeLongestSide.get_preprocess_shape(770, 769, 1024) == (1024, 1023)
    assert ResizeLongestSide.get_preprocess_shape(720, 1280, 1024) == (576, 1024)
    # 5 * 0.5 = 2.5 -> 3 (int(x + 0.5)), where Python's round() would give 2.
    assert ResizeLongestSide.get_preprocess_shape(5, 2048, 1024) == (3, 1024)
    assert ResizeLongestSide.get_preprocess_shape(2048, 5, 1024) == (1024, 3)


def test_apply_image_matches_golden_exactly(golden):
    out = ResizeLongestSide(1024).apply_image(golden["image"])
    assert out.dtype == np.uint8 and out.shape == golden["resized"].shape == (1024, 1023, 3)
    assert np.array_equal(out, golden["resized"])
    assert tuple(golden["input_size"]) == out.shape[:2]


@pytest.mark.parametrize("name", ["zidane.jpg", "cars.jpg", "bus.jpg", "groceries.jpg", "truck.jpg"])
def test_apply_image_equals_pillow_on_photos(name):
    """zidane (1280x720), cars (2250x1500), bus, truck shrink (Pillow antialiases); groceries grows."""
    image = photo(name)
    t = ResizeLongestSide(1024)
    h, w = t.input_size(image.shape[:2])
    assert np.array_equal(t.apply_image(image), pil_resize(image, h, w))


@pytest.mark.parametrize("in_hw,out_hw", [
    ((37, 53), (715, 1024)),     # strong upscale
    ((301, 3), (224, 224)),      # height shrinks, width grows: Pillow goes vertical first
    ((3001, 17), (1024, 6)),     # both shrink, height far more: vertical first
    ((189, 294), (37, 136)),     # both shrink, width not enough less: horizontal first
    ((50, 1), (1, 1)),           # single pixel
    ((64, 80), (64, 33)),        # one axis only
    ((80, 64), (33, 64)),
])
def test_resize_equals_pillow_on_awkward_sizes(in_hw, out_hw):
    image = np.random.default_rng(sum(in_hw) + sum(out_hw)).integers(0, 256, (*in_hw, 3), dtype=np.uint8)
    assert np.array_equal(resize_uint8_like_pil(image, out_hw), pil_resize(image, *out_hw))


def test_apply_image_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        ResizeLongestSide().apply_image(np.zeros((4, 4, 3), np.float32))


def test_apply_boxes_torch_matches_golden(golden):
    """Official `apply_boxes_torch` (float32) on the golden's 8 boxes."""
    out = ResizeLongestSide(1024).apply_boxes(torch.from_numpy(golden["boxes8"]), (770, 769))
    assert out.dtype == torch.float32 and out.shape == (8, 4)
    assert torch.equal(out, torch.from_numpy(golden["boxes8_transformed"]))


def test_apply_boxes_numpy_matches_v2_golden():
    """Official numpy `apply_boxes` returns float64 (MobileSAMv2's Inference.py relies on it)."""
    with np.load(shared_path("fixtures", "golden_v2_boxes.npz")) as g:
        boxes, expected, size = g["boxes_xyxy"], g["boxes_transformed"], tuple(g["original_size"])
    out = ResizeLongestSide(1024).apply_boxes(boxes, size)
    assert out.dtype == np.float64
    assert np.array_equal(out, expected)


def test_apply_coords_scales_each_axis(golden):
    pts = golden["p3_point_coords"]  # (N, 2) x, y in original pixels of the 770 x 769 (H x W) image
    out = ResizeLongestSide(1024).apply_coords(pts, (770, 769))
    np.testing.assert_allclose(out[:, 0], pts[:, 0].astype(np.float64) * 1023 / 769, rtol=1e-15)
    np.testing.assert_allclose(out[:, 1], pts[:, 1].astype(np.float64) * 1024 / 770, rtol=1e-15)
    assert np.array_equal(pts, golden["p3_point_coords"])  # input untouched


def test_preprocess_image_matches_golden(golden):
    x, input_size = preprocess_image(golden["image"])
    assert x.dtype == torch.float32 and x.shape == (1, 3, 1024, 1024)
    assert input_size == (1024, 1023)
    np.testing.assert_allclose(x.numpy(), golden["preprocessed"], rtol=0, atol=1e-5)
    assert torch.all(x[..., 1023:] == 0)  # the padded column


def test_normalize_and_pad_matches_golden(golden):
    resized = torch.from_numpy(golden["resized"]).permute(2, 0, 1)[None]  # uint8, as the predictor passes it
    np.testing.assert_allclose(normalize_and_pad(resized, 1024).numpy(), golden["preprocessed"], rtol=0, atol=1e-5)


def test_normalize_and_pad_pads_bottom_right():
    x = torch.full((1, 3, 2, 3), 255, dtype=torch.uint8)
    out = normalize_and_pad(x, size=4, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0))
    assert out.shape == (1, 3, 4, 4)
    assert torch.all(out[..., :2, :3] == 255) and out.sum() == 255 * 3 * 6


@pytest.mark.parametrize("case", ["p1_multi", "box", "refine"])
def test_postprocess_masks_reproduces_golden_masks(golden, case):
    """Golden masks = official postprocess_masks(low_res_logits) > 0 in the 770 x 769 frame."""
    low = torch.from_numpy(golden[f"{case}_low_res_logits"])[None]  # (1, C, 256, 256)
    masks = postprocess_masks(low, (1024, 1023), (770, 769))[0] > 0
    shape = tuple(golden[f"{case}_masks_shape"])
    expected = np.unpackbits(golden[f"{case}_masks_packed"], axis=-1, count=shape[-1]).astype(bool)
    assert masks.shape == shape
    assert (masks.numpy() != expected).sum() <= 2  # identical ops; allow a flip where |logit| ~ 0


@pytest.mark.parametrize("hw", [(1, 3000), (3000, 1), (1, 1500), (2, 4000), (3, 19475), (19475, 3)])
def test_extreme_aspect_keeps_one_pixel_and_maps_back(hw):
    """Line-scan / cropped frames: the short side never rounds to 0 (the official code divides by
    zero there); prompts and masks still map between the frames."""
    t = ResizeLongestSide(1024)
    h, w = t.input_size(hw)
    assert min(h, w) >= 1 and max(h, w) == 1024
    img = np.random.default_rng(0).integers(0, 255, (*hw, 3), np.uint8)
    x, input_size = preprocess_image(img)
    assert x.shape == (1, 3, 1024, 1024) and input_size == (h, w)
    from mobilesam_ros.core.ops.transforms import postprocess_masks
    logits = postprocess_masks(torch.zeros(1, 1, 256, 256), input_size, hw)
    assert logits.shape == (1, 1, *hw)
    pt = t.apply_coords(np.array([[hw[1] - 1.0, hw[0] - 1.0]]), hw)
    assert np.isfinite(pt).all() and pt[0, 0] <= w and pt[0, 1] <= h
