"""Image-message decoding as a hostile peer would exercise it: `step` far beyond the row, PNG/JPEG
headers declaring huge images, a mask prompt in 32FC1. The limits must hold before anything is
allocated, and a decoded frame must never keep the message buffer alive."""
import tracemalloc
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mobilesam_ros.core.io.image_codec import (MASK_ENCODINGS, fill_image_msg, ImageMessageError, ImageTooLargeError,
                                            UnsupportedImageEncodingError, compressed_msg_to_rgb,
                                            compressed_size, image_msg_to_array, image_msg_to_rgb)


def raw(arr: np.ndarray, encoding: str, step: int | None = None, data: bytes | None = None):
    h, w = arr.shape[:2]
    return SimpleNamespace(encoding=encoding, height=h, width=w, is_bigendian=0,
                           step=arr.strides[0] if step is None else step,
                           data=arr.tobytes() if data is None else data)


def peak_bytes(fn):
    """(result or exception, peak bytes traced while fn ran)."""
    tracemalloc.start()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001  the caller checks what came out
        out = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h (8-bit grey) with one tiny IDAT: what a decompression bomb's header
    looks like, without building the bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_step_with_one_row_neither_allocates_nor_pins_the_buffer():
    row = np.arange(30, dtype=np.uint8).reshape(1, 10, 3)
    msg = raw(row, "rgb8", step=256 << 20)  # the 30-byte message of the issue: one row, huge step
    out, peak = peak_bytes(lambda: image_msg_to_rgb(msg))
    assert isinstance(out, np.ndarray), out
    np.testing.assert_array_equal(out, row)
    assert peak < 1 << 20, f"decoding a 30-byte image allocated {peak} bytes"


@pytest.mark.parametrize("encoding", ["rgb8", "mono8"])
def test_decoded_frame_never_references_the_message_buffer(encoding):
    arr = np.random.default_rng(0).integers(0, 255, (4, 5, 3) if encoding == "rgb8" else (4, 5), np.uint8)
    msg = raw(arr, encoding)
    out = image_msg_to_rgb(msg)
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert out.flags.owndata or out.base is None or not isinstance(out.base, bytes)


def test_padded_rows_and_short_last_row_decode():
    arr = np.random.default_rng(1).integers(0, 255, (3, 4, 3), np.uint8)
    padded = np.zeros((3, 16), np.uint8)
    padded[:, :12] = arr.reshape(3, 12)
    data = padded.tobytes()[:-4]  # the last row without its padding is legal
    np.testing.assert_array_equal(image_msg_to_rgb(raw(arr, "rgb8", step=16, data=data)), arr)
    with pytest.raises(ImageMessageError, match="truncated"):
        image_msg_to_rgb(raw(arr, "rgb8", step=16, data=data[:-1]))


def test_pixel_limit_is_a_parameter_checked_before_allocating():
    msg = SimpleNamespace(encoding="rgb8", height=50_000, width=50_000, is_bigendian=0, step=150_000, data=b"")
    with pytest.raises(ImageTooLargeError, match="50000x50000 exceeds"):
        image_msg_to_rgb(msg)
    small = raw(np.zeros((20, 20, 3), np.uint8), "rgb8")
    with pytest.raises(ImageTooLargeError, match="exceeds the 399 pixel limit"):
        image_msg_to_rgb(small, max_pixels=399)
    assert image_msg_to_rgb(small, max_pixels=400).shape == (20, 20, 3)


def test_compressed_bomb_is_refused_from_its_header():
    bomb = SimpleNamespace(format="png", data=png_header_only(12000, 12000))
    assert compressed_size(bomb.data) == (12000, 12000)
    out, peak = peak_bytes(lambda: compressed_msg_to_rgb(bomb, max_pixels=8192 * 8192))
    assert isinstance(out, ImageTooLargeError), out
    assert peak < 4 << 20, f"refusing a 12000x12000 PNG allocated {peak} bytes"


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_size_read_from_the_header_and_limit_applies(ext):
    img = np.random.default_rng(2).integers(0, 255, (37, 53, 3), np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    assert compressed_size(data) == (53, 37)
    msg = SimpleNamespace(format=ext[1:], data=data)
    assert compressed_msg_to_rgb(msg, max_pixels=53 * 37).shape == (37, 53, 3)
    with pytest.raises(ImageTooLargeError):
        compressed_msg_to_rgb(msg, max_pixels=53 * 37 - 1)


def test_progressive_jpeg_size_and_other_formats_refused():
    img = np.zeros((9, 31, 3), np.uint8)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert compressed_size(data) == (31, 9)
    bmp = cv2.imencode(".bmp", img)[1].tobytes()
    with pytest.raises(UnsupportedImageEncodingError, match="only PNG and JPEG"):
        compressed_msg_to_rgb(SimpleNamespace(format="bmp", data=bmp))
    with pytest.raises(ImageMessageError, match="no frame header"):
        compressed_msg_to_rgb(SimpleNamespace(format="jpeg", data=b"\xff\xd8\xff\xda\x00\x02garbage"))


def test_mask_input_32fc1_256x256_as_the_message_documents():
    logits = np.random.default_rng(3).normal(size=(256, 256)).astype(np.float32)
    msg = raw(logits, "32FC1")
    assert msg.step == 1024
    np.testing.assert_array_equal(image_msg_to_array(msg, encodings=MASK_ENCODINGS), logits)
    # a camera frame in 32FC1 is still refused: it is a mask encoding only
    with pytest.raises(UnsupportedImageEncodingError):
        image_msg_to_rgb(msg)


def test_long_random_encoding_is_shortened_in_the_error():
    msg = raw(np.zeros((2, 2, 3), np.uint8), "x" * 5000)
    with pytest.raises(UnsupportedImageEncodingError) as err:
        image_msg_to_rgb(msg)
    assert len(str(err.value)) < 400


def test_damaged_png_is_one_corrupt_message_not_another_format():
    """A bag's damaged PNG must be skipped and counted (distill), not refuse the whole topic."""
    with pytest.raises(ImageMessageError, match="corrupt PNG") as err:
        compressed_msg_to_rgb(SimpleNamespace(format="png", data=b"\x89PNG broken"))
    assert not isinstance(err.value, UnsupportedImageEncodingError)


@pytest.mark.parametrize("encoding,dtype,shape", [("rgb8", np.uint8, (5, 7, 3)), ("mono16", np.uint16, (5, 7)),
                                                  ("bgra8", np.uint8, (3, 4, 4)), ("32FC1", np.float32, (4, 6))])
def test_encoding_is_the_inverse_of_decoding(encoding, dtype, shape):
    rng = np.random.default_rng(0)
    arr = (rng.random(shape) * 60000).astype(dtype)
    msg = fill_image_msg(SimpleNamespace(), arr, encoding)
    # the row stride a subscriber reads, by hand: width * channels * bytes per element
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert len(msg.data) == msg.step * shape[0] and msg.encoding == encoding
    table = MASK_ENCODINGS if encoding == "32FC1" else None
    np.testing.assert_array_equal(image_msg_to_array(msg, encodings=table), arr)


@pytest.mark.parametrize("encoding,arr", [("mono16", np.zeros((2, 2), np.uint8)),  # wrong dtype
                                          ("rgb8", np.zeros((2, 2), np.uint8)),  # wrong channels
                                          ("yuv422", np.zeros((2, 2, 2), np.uint8))])  # unknown
def test_encoding_refuses_arrays_a_subscriber_would_misread(encoding, arr):
    with pytest.raises(ValueError):
        fill_image_msg(SimpleNamespace(), arr, encoding)
