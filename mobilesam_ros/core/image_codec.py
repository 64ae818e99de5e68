"""Decode sensor_msgs/Image and CompressedImage payloads to numpy, without cv_bridge or rclpy.

Works on any object with the messages' fields (rclpy messages, rosbags messages), so the node and
the distillation bag reader share it. Every decode validates what a camera driver or a bad bag can get wrong (unknown encoding, `step`
smaller than a row, truncated `data`, empty or absurdly large images) and raises ImageMessageError
with the reason, so the node can log one line and go on with the next frame.
"""
from __future__ import annotations

import numpy as np

# encoding -> (dtype, channels)
_ENCODINGS = {
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "8UC3": (np.uint8, 3),
    "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4), "8UC4": (np.uint8, 4),
    "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3),
}
MAX_PIXELS = 8192 * 8192  # a frame larger than this is a corrupt header, not a camera


class ImageMessageError(ValueError):
    """An image message that cannot be turned into an RGB array."""


class UnsupportedImageEncodingError(ImageMessageError):
    """The message's pixel encoding / compressed format is not decoded here at all.

    Unlike a corrupt frame, this concerns every message of the topic, so a reader of a recorded bag
    should stop instead of skipping frame after frame (the node, catching ImageMessageError, logs).
    """


def image_msg_to_array(msg, encodings: dict | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, C) or (H, W) array in the message's own channel order.

    `encodings` (default: the camera encodings) maps encoding -> (dtype, channels)."""
    table = _ENCODINGS if encodings is None else encodings
    if msg.encoding not in table:
        raise UnsupportedImageEncodingError(
            f"unsupported encoding {msg.encoding!r} (supported: {', '.join(sorted(table))})")
    dtype, ch = table[msg.encoding]
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ImageMessageError(f"empty image ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise ImageMessageError(f"image {w}x{h} exceeds the {MAX_PIXELS} pixel limit")
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = w * ch * dt.itemsize
    if msg.step < row:
        raise ImageMessageError(f"step {msg.step} < width*channels*bytes = {row} for {msg.encoding} {w}x{h}")
    need = msg.step * (h - 1) + row
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < need:
        raise ImageMessageError(f"truncated data: {buf.size} bytes, {msg.encoding} {w}x{h} step {msg.step} needs {need}")
    if buf.size < msg.step * h:  # last row may legally omit its padding
        buf = np.concatenate([buf, np.zeros(msg.step * h - buf.size, np.uint8)])
    rows = buf[: msg.step * h].reshape(h, msg.step)[:, :row]
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch).astype(dt.newbyteorder("="), copy=False)
    return arr[:, :, 0] if ch == 1 else arr


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


def image_msg_to_rgb(msg, mono16: str = "range") -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (16-bit scaled as `to_rgb8`'s `mono16` says).

    The result may share memory with `msg.data` (rgb8 without row padding); copy it to keep it
    beyond the message or to write into it.
    """
    return to_rgb8(image_msg_to_array(msg), msg.encoding, mono16)


def compressed_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB.

    compressedDepth payloads (a depth-quantisation header before the PNG) are refused with
    UnsupportedImageEncodingError: they hold depth, not an image.
    """
    import cv2

    if "compresseddepth" in str(msg.format).lower().replace(" ", ""):
        raise UnsupportedImageEncodingError(
            f"unsupported CompressedImage format {msg.format!r} (compressedDepth holds depth)")
    buf = np.frombuffer(msg.data, np.uint8)
    if buf.size == 0:
        raise ImageMessageError("empty CompressedImage data")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageMessageError(f"could not decode CompressedImage (format {msg.format!r}, {buf.size} bytes)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    enc = "mono" if img.ndim == 2 else "bgr"  # OpenCV decodes colour as BGR
    return to_rgb8(img, enc)
