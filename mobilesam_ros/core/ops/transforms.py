"""Geometry between an original image and SAM's 1024x1024 model input (longest side 1024).

Frames:
* original frame: pixel coordinates (x right, y down) of the camera image, size (H, W);
* input frame: the same image resized so its longest side is `target_length` (1024), size (h, w),
  top-left aligned inside the zero-padded 1024x1024 model input. Prompts go to the model in this frame.
"""
from typing import Sequence, Tuple, TypeVar, Union

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# Pillow's fixed-point resampling precision for 8-bit images (Resample.c: 32 - 8 - 2).
_PRECISION_BITS = 22

Coords = TypeVar("Coords", np.ndarray, torch.Tensor)


def _pil_bilinear_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pillow's BILINEAR coefficients for one axis: (first source index (out,), int weights (out, K)).

    Restates Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` in float64, op for op, so the
    integer weights are identical; K = taps of the widest output pixel. When downscaling, the
    triangle filter is widened by the scale factor: that is Pillow's antialiasing.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C cast truncates, then clamp
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin  # tap count
    taps = np.arange(ksize)
    w = 1.0 - np.abs((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    w = np.where((taps[None, :] < xmax[:, None]) & (w > 0.0), w, 0.0)
    total = np.zeros(out_size)
    for k in range(ksize):  # sequential sum, the order Pillow adds in
        total += w[:, k]
    w = w / np.where(total != 0.0, total, 1.0)[:, None]
    # Weights are non-negative for the triangle filter, so Pillow's rounding is floor(0.5 + w * 2^22).
    iw = np.floor(0.5 + w * (1 << _PRECISION_BITS)).astype(np.int32)
    return torch.from_numpy(xmin), torch.from_numpy(iw)


def _resample_axis(img: torch.Tensor, axis: int, out_size: int) -> torch.Tensor:
    """One Pillow pass along `axis` of an int32 (H, W, C) image holding 0..255 values."""
    # Work along dim 0, where each tap gathers whole contiguous rows.
    src = img if axis == 0 else img.transpose(0, 1).contiguous()
    first, weights = _pil_bilinear_taps(src.shape[0], out_size)
    last = src.shape[0] - 1
    acc = torch.full((out_size, *src.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=torch.int32)
    for k in range(weights.shape[1]):
        # Taps past the image edge have weight 0; clamping only keeps their index valid.
        acc += src.index_select(0, (first + k).clamp(max=last)) * weights[:, k].view(-1, 1, 1)
    # max acc < 255 * 2^22 * (1 + tiny) + 2^21 < 2^31: int32 is exact, as in Pillow.
    out = (acc >> _PRECISION_BITS).clamp_(0, 255)
    return out if axis == 0 else out.transpose(0, 1)


def resize_uint8_like_pil(image: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """`PIL.Image.fromarray(image).resize((w, h), BILINEAR)` reimplemented bit-exactly in torch.

    image: (H, W, C) uint8. Returns (h, w, C) uint8. Pillow runs two 1-D passes, rounding to 8 bits
    in between, and skips a pass whose axis keeps its size. The pass order follows Pillow 13
    (`ImagingResampleInner`): vertical first when the height loses more than twice as many pixels
    as the width, else horizontal first. (Older Pillow always went horizontal first; for the
    proportional shrink of `ResizeLongestSide` the two differ (by 1 level where seen) only on images
    more than about twice as tall as wide.)
    """
    h, w = size_hw
    x = torch.from_numpy(np.ascontiguousarray(image)).to(torch.int32)
    in_h, in_w = image.shape[:2]
    vertical_first = in_h - h > 0 and in_h - h > 2 * (in_w - w)
    for axis, size in ([(0, h), (1, w)] if vertical_first else [(1, w), (0, h)]):
        if size != x.shape[axis]:
            x = _resample_axis(x, axis, size)
    return x.to(torch.uint8).contiguous().numpy()


class ResizeLongestSide:
    """Resizes images and maps points/boxes so the longest side becomes `target_length`."""

    def __init__(self, target_length: int = 1024) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) of the input frame for an (oldh, oldw) image; rounds half up like the official.

        A side that would round to 0 (aspect beyond 2048:1, e.g. a 3000x1 line-scan frame) is kept at
        1 pixel: the official code would divide by zero there; every other size is the official one.
        """
        scale = long_side_length * 1.0 / max(oldh, oldw)
        return max(1, int(oldh * scale + 0.5)), max(1, int(oldw * scale + 0.5))

    def input_size(self, original_size: Tuple[int, int]) -> Tuple[int, int]:
        """(h, w) of the input frame for an original (H, W)."""
        return self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (h, w, 3) uint8, Pillow-BILINEAR exact (antialiased when shrinking)."""
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
        return resize_uint8_like_pil(image, self.input_size(image.shape[:2]))

    def apply_coords(self, coords: Coords, original_size: Tuple[int, int]) -> Coords:
        """Points (..., 2) as (x, y) in original pixels -> the input frame.

        numpy input returns float64, torch input float32 (the official numpy/torch variants).
        """
        old_h, old_w = original_size
        new_h, new_w = self.input_size(original_size)
        if isinstance(coords, torch.Tensor):
            out = coords.clone().to(torch.float32)
        else:
            out = np.array(coords, dtype=np.float64)
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes(self, boxes: Coords, original_size: Tuple[int, int]) -> Coords:
        """Boxes (..., 4) as (x0, y0, x1, y1) in original pixels -> (N, 4) in the input frame
        (flattened to (N, 4) like the official; dtype rule as `apply_coords`)."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def normalize_and_pad(x: torch.Tensor, size: int = 1024,
                      pixel_mean: Union[Sequence[float], torch.Tensor] = PIXEL_MEAN,
                      pixel_std: Union[Sequence[float], torch.Tensor] = PIXEL_STD) -> torch.Tensor:
    """(B, 3, h, w) RGB 0..255 (any dtype) -> (B, 3, size, size) float32: per-channel
    (x - mean) / std, then zeros appended bottom and right (the input frame stays top-left)."""
    mean = torch.as_tensor(pixel_mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    x = (x - mean) / std
    h, w = x.shape[-2:]
    return F.pad(x, (0, size - w, 0, size - h))


def preprocess_image(image: np.ndarray, target_length: int = 1024
                     ) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> (model input (1, 3, target_length, target_length) float32,
    input_size (h, w)): resize longest side, normalise, pad. Matches the official
    `SamPredictor.set_image` up to the encoder."""
    resized = ResizeLongestSide(target_length).apply_image(image)
    x = torch.from_numpy(resized).permute(2, 0, 1).unsqueeze(0)
    return normalize_and_pad(x, target_length), (resized.shape[0], resized.shape[1])


def postprocess_masks(low_res: torch.Tensor, input_size: tuple[int, int],
                      original_size: tuple[int, int], img_size: int = 1024) -> torch.Tensor:
    """Low-res logits (B, C, 256, 256) -> logits (B, C, H, W) in the original frame.

    Bilinear (align_corners=False) to img_size², crop the padding to input_size (h, w), bilinear to
    original_size (H, W): the official two-step order, so thresholds flip exactly where SAM's do.
    """
    x = F.interpolate(low_res, (img_size, img_size), mode="bilinear", align_corners=False)
    x = x[..., : int(input_size[0]), : int(input_size[1])]
    return F.interpolate(x, (int(original_size[0]), int(original_size[1])), mode="bilinear", align_corners=False)
