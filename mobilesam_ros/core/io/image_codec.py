"""sensor_msgs/Image and CompressedImage payloads <-> numpy, without cv_bridge or rclpy.

Decoding and encoding share one encoding table (`_ENCODINGS`, `MASK_ENCODINGS`), so what the node
publishes is exactly what it would accept back.

Works on any object with the messages' fields (rclpy messages, rosbags messages), so the node and
the distillation bag reader share it. Every decode validates what a camera driver or a bad bag can get wrong (unknown encoding, `step`
smaller than a row, truncated `data`, empty or absurdly large images) and raises ImageMessageError
with the reason, so the node can log one line and go on with the next frame.
"""
from __future__ import annotations

import sys

import numpy as np

# encoding -> (dtype, channels)
_ENCODINGS = {
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "8UC3": (np.uint8, 3),
    "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4), "8UC4": (np.uint8, 4),
    "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3),
}
# Decoded-array encodings accepted for SegAny mask prompts only (never as camera frames).
MASK_ENCODINGS = {"32FC1": (np.float32, 1)}
MAX_PIXELS = 8192 * 8192  # default bound: a frame larger than this is a corrupt header, not a camera


class ImageMessageError(ValueError):
    """An image message that cannot be turned into an RGB array."""


class ImageTooLargeError(ImageMessageError):
    """The image (raw, or compressed once decoded) has more pixels than the configured limit."""


class UnsupportedImageEncodingError(ImageMessageError):
    """The message's pixel encoding / compressed format is not decoded here at all.

    Unlike a corrupt frame, this concerns every message of the topic, so a reader of a recorded bag
    should stop instead of skipping frame after frame (the node, catching ImageMessageError, logs).
    """


def image_msg_to_array(msg, max_pixels: int = MAX_PIXELS, encodings: dict | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, C) or (H, W) array in the message's own channel order.

    `encodings` (default: the camera encodings) maps encoding -> (dtype, channels). Size, `step`
    and data length are checked before anything is allocated; the result is a fresh array of
    exactly H*W*C elements (it never keeps `msg.data` alive, whatever `step` or padding it has).
    """
    table = _ENCODINGS if encodings is None else encodings
    if msg.encoding not in table:
        shown = msg.encoding if len(msg.encoding) <= 40 else msg.encoding[:40] + "..."
        raise UnsupportedImageEncodingError(
            f"unsupported encoding {shown!r} (supported: {', '.join(sorted(table))})")
    dtype, ch = table[msg.encoding]
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ImageMessageError(f"empty image ({w}x{h})")
    if h * w > max_pixels:
        raise ImageTooLargeError(f"image {w}x{h} exceeds the {max_pixels} pixel limit")
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = w * ch * dt.itemsize
    step = int(msg.step)
    if step < row:
        raise ImageMessageError(f"step {step} < width*channels*bytes = {row} for {msg.encoding} {w}x{h}")
    need = step * (h - 1) + row  # the last row may legally omit its padding
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < need:
        raise ImageMessageError(f"truncated data: {buf.size} bytes, {msg.encoding} {w}x{h} step {step} needs {need}")
    # A strided view over the rows (no padding allocated, whatever `step` says), then one copy of
    # exactly H*row bytes: the frame may outlive the message in the embedding cache.
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1), writeable=False)
    arr = rows.copy().view(dt).reshape(h, w, ch).astype(dt.newbyteorder("="), copy=False)
    return arr[:, :, 0] if ch == 1 else arr


def fill_image_msg(msg, arr: np.ndarray, encoding: str):
    """Write (H, W) or (H, W, C) `arr` into `msg` (a sensor_msgs/Image, header already set) as
    `encoding`; returns msg. The array's dtype and channel count must be those of the encoding
    (the inverse of `image_msg_to_array`): a mismatch is a bug in the caller, so it raises
    ValueError rather than publishing bytes a subscriber would misread."""
    table = {**_ENCODINGS, **MASK_ENCODINGS}
    if encoding not in table:
        raise ValueError(f"cannot encode {encoding!r} (known: {', '.join(sorted(table))})")
    dtype, ch = table[encoding]
    arr = np.ascontiguousarray(arr)
    got_ch = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else -1)
    if arr.dtype != np.dtype(dtype) or got_ch != ch:
        raise ValueError(f"{encoding} needs {np.dtype(dtype).name} with {ch} channel(s), got {arr.dtype} {arr.shape}")
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")  # the dtype check above admits native order only
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.step = int(arr.strides[0])
    msg.data = arr.tobytes()
    return msg


MONO16_MODES = ("range", "minmax")


def _u16_to_u8(arr: np.ndarray, mode: str) -> np.ndarray:
    if mode == "range":
        return (arr.astype(np.uint32) // 257).astype(np.uint8)
    if mode == "minmax":
        lo, hi = int(arr.min()), int(arr.max())
        if hi == lo:
            return np.zeros(arr.shape, np.uint8)
        return np.rint((arr.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    raise ValueError(f"mono16 must be one of {MONO16_MODES}, got {mode!r}")


def to_rgb8(arr: np.ndarray, encoding: str, mono16: str = "range") -> np.ndarray:
    """Any supported decoded image -> (H, W, 3) uint8 RGB (alpha dropped).

    16-bit images: `mono16='range'` maps 0..65535 onto 0..255 (// 257, so 257*k -> k);
    `'minmax'` stretches the frame's own min..max (all channels together) onto 0..255, for sensors
    that use a few of the 16 bits. Either way it is a display conversion, not a calibrated one.
    """
    if arr.dtype == np.uint16:
        arr = _u16_to_u8(arr, mono16)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if encoding.startswith("bgr"):
        arr = arr[:, :, 2::-1]
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def image_msg_to_rgb(msg, mono16: str = "range", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (16-bit scaled as `to_rgb8`'s `mono16` says).

    Refuses (ImageTooLargeError) frames of more than `max_pixels` pixels before allocating.
    """
    return to_rgb8(image_msg_to_array(msg, max_pixels), msg.encoding, mono16)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's first SOFn segment; walks the marker segments only."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageMessageError(f"corrupt JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers carry no length
            i += 2
            continue
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker == 0xDA or seg < 2:  # scan data before any frame header: not a valid JPEG
            break
        i += 2 + seg
    raise ImageMessageError("corrupt JPEG: no frame header (SOF) before the image data")


def compressed_size(data: bytes) -> tuple[int, int]:
    """(width, height) a CompressedImage payload declares, read from the PNG / JPEG header without
    decoding. Other formats raise UnsupportedImageEncodingError: their decoded size cannot be
    bounded before OpenCV allocates it."""
    if data[:4] == b"\x89PNG":  # a PNG, maybe damaged: one corrupt message, not another format
        if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageMessageError("corrupt PNG: bad signature or no IHDR chunk")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    raise UnsupportedImageEncodingError(
        f"unsupported CompressedImage payload (starts {data[:4].hex()}): only PNG and JPEG are decoded")


def compressed_msg_to_rgb(msg, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB.

    The size in the PNG/JPEG header is checked against `max_pixels` before decoding (a small PNG
    can declare a huge image). compressedDepth payloads (a depth-quantisation header before the
    PNG) are refused with UnsupportedImageEncodingError: they hold depth, not an image.
    """
    import cv2

    if "compresseddepth" in str(msg.format).lower().replace(" ", ""):
        raise UnsupportedImageEncodingError(
            f"unsupported CompressedImage format {str(msg.format)[:40]!r} (compressedDepth holds depth)")
    data = bytes(msg.data)
    if not data:
        raise ImageMessageError("empty CompressedImage data")
    try:
        w, h = compressed_size(data)
    except UnsupportedImageEncodingError:
        raise
    except ImageMessageError as exc:
        raise ImageMessageError(f"could not decode CompressedImage (format {str(msg.format)[:40]!r}, "
                                f"{len(data)} bytes): {exc}") from exc
    if w == 0 or h == 0:
        raise ImageMessageError(f"empty image ({w}x{h}) in the CompressedImage header")
    if w * h > max_pixels:
        raise ImageTooLargeError(f"compressed image declares {w}x{h}, over the {max_pixels} pixel limit")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageMessageError(f"could not decode CompressedImage (format {str(msg.format)[:40]!r}, {len(data)} bytes)")
    if img.shape[0] * img.shape[1] > max_pixels:  # the decoder read another size than the header
        raise ImageTooLargeError(f"decoded image {img.shape[1]}x{img.shape[0]} exceeds the {max_pixels} pixel limit")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    enc = "mono" if img.ndim == 2 else "bgr"  # OpenCV decodes colour as BGR
    return to_rgb8(img, enc)
