"""Messages a broken driver or a hostile peer sends, shared by the node reliability tests and the
fuzz tool (tools/fuzz_node.py). Every builder takes a numpy Generator and a stamp (s) and returns
(topic, message); no rclpy at import."""
from __future__ import annotations

import string
import zlib

import numpy as np

from nodeutil import image_msg


def header(sec: int):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=int(sec)), frame_id="camera_optical_frame")


def png_bomb(w: int = 12000, h: int = 12000) -> bytes:
    """A valid 8-bit grey all-black PNG of w x h: ~140 KB that decodes to w*h*3 bytes of RGB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    comp = zlib.compressobj(9)
    row = b"\0" * (w + 1)  # filter byte 0 + w grey pixels
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def random_encoding(rng, sec):
    enc = "".join(rng.choice(list(string.ascii_letters + string.digits + "_"), int(rng.integers(1, 40))))
    m = image_msg(np.zeros((4, 4, 3), np.uint8), sec)
    m.encoding = enc
    return "image", m


def huge_step(rng, sec):
    m = image_msg(rng.integers(0, 255, (1, 10, 3), np.uint8), sec)
    m.step = int(rng.integers(1 << 20, 1 << 31))
    return "image", m


def truncated(rng, sec):
    m = image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), sec)
    m.data = bytes(m.data)[: int(rng.integers(0, len(m.data)))]
    return "image", m


def step_below_row(rng, sec):
    m = image_msg(np.zeros((8, 8, 3), np.uint8), sec)
    m.step = int(rng.integers(0, 24))
    return "image", m


def huge_dims(rng, sec):
    m = image_msg(np.zeros((2, 2, 3), np.uint8), sec)
    m.height, m.width = (int(v) for v in rng.integers(5000, 1 << 31, 2))
    m.step = m.width * 3 % (1 << 32)
    return "image", m


_BOMB: list[bytes] = []


def compressed_bomb(rng, sec):
    from sensor_msgs.msg import CompressedImage

    if not _BOMB:
        _BOMB.append(png_bomb())
    return "compressed", CompressedImage(header=header(sec), format="png", data=_BOMB[0])


def compressed_garbage(rng, sec):
    from sensor_msgs.msg import CompressedImage

    head = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b""][int(rng.integers(0, 3))]
    data = head + rng.integers(0, 256, int(rng.integers(0, 2000)), np.uint8).tobytes()
    return "compressed", CompressedImage(header=header(sec), format=["png", "jpeg", "bmp"][int(rng.integers(0, 3))],
                                         data=data)


def extreme_aspect(rng, sec):
    """A VALID frame: the node answers it (with a detector: maybe empty) instead of failing."""
    short, long_ = int(rng.integers(1, 4)), int(rng.integers(1000, 20000))
    hw = (short, long_) if rng.integers(0, 2) else (long_, short)
    return "image", image_msg(rng.integers(0, 255, (*hw, 3), np.uint8), sec)


def _obj(**kw):
    from mobilesam_ros.msg import PromptObject

    return PromptObject(**kw)


def _pt(x, y):
    from geometry_msgs.msg import Point

    return Point(x=float(x), y=float(y))


def _prompt(sec, objects):
    from mobilesam_ros.msg import Prompt

    return "prompt", Prompt(header=header(sec), objects=objects)


def too_many_objects(rng, sec, limit: int = 100):
    n = limit + 1 + int(rng.integers(0, 400))
    return _prompt(sec, [_obj(id=i, points=[_pt(5, 5)], labels=[1]) for i in range(n)])


def too_many_points(rng, sec, limit: int = 64):
    n = limit + 1 + int(rng.integers(0, 2000))
    return _prompt(sec, [_obj(id=1, points=[_pt(5, 5)] * n, labels=[1] * n)])


def bad_point(rng, sec):
    x = [float("nan"), float("inf"), -1e9, 1e12, -5.0][int(rng.integers(0, 5))]
    return _prompt(sec, [_obj(id=1, points=[_pt(x, 3)], labels=[1])])


def bad_labels(rng, sec):
    n = int(rng.integers(1, 5))
    labels = [int(v) for v in rng.integers(-128, 127, n + int(rng.integers(0, 2)))]
    return _prompt(sec, [_obj(id=1, points=[_pt(5, 5)] * n, labels=labels)])


def bad_box(rng, sec):
    box = rng.normal(0, 1e4, 4).astype(np.float32)
    if rng.integers(0, 2):
        box[int(rng.integers(0, 4))] = np.nan
    return _prompt(sec, [_obj(id=1, has_box=True, box=box)])


def bad_mask_input(rng, sec):
    choice = int(rng.integers(0, 4))
    if choice == 0:  # wrong size
        arr = np.zeros((int(rng.integers(1, 300)), int(rng.integers(1, 300))), np.float32)
        m = image_msg(np.zeros((1, 1, 3), np.uint8), sec)
        m.encoding, m.height, m.width, m.step, m.data = "32FC1", arr.shape[0], arr.shape[1], arr.shape[1] * 4, arr.tobytes()
    elif choice == 1:  # right size, NaN logits
        arr = np.full((256, 256), np.nan, np.float32)
        m = image_msg(np.zeros((1, 1, 3), np.uint8), sec)
        m.encoding, m.height, m.width, m.step, m.data = "32FC1", 256, 256, 1024, arr.tobytes()
    elif choice == 2:  # truncated
        m = image_msg(np.zeros((1, 1, 3), np.uint8), sec)
        m.encoding, m.height, m.width, m.step, m.data = "32FC1", 256, 256, 1024, b"\0" * int(rng.integers(0, 1024 * 256))
    else:  # wrong encoding
        m = image_msg(np.zeros((256, 256, 3), np.uint8), sec)
    return _prompt(sec, [_obj(id=1, points=[_pt(5, 5)], labels=[1], mask_input=m)])


def large_ids(rng, sec):
    """VALID: ids anywhere in uint32 are echoed; the label image holds indices."""
    ids = [int(v) for v in rng.integers(0, 1 << 32, int(rng.integers(1, 4)), dtype=np.uint64)]
    return _prompt(sec, [_obj(id=i, points=[_pt(2, 2)], labels=[1]) for i in ids])


def stale_stamp(rng, sec):
    return _prompt(int(rng.integers(10**6, 2**31 - 1)), [_obj(id=1, points=[_pt(5, 5)], labels=[1])])


def bad_click(rng, sec):
    from geometry_msgs.msg import PointStamped

    x = [float("nan"), float("inf"), -3.0, 1e9][int(rng.integers(0, 4))]
    return "click", PointStamped(header=header(sec), point=_pt(x, x))


# class name -> builder; every class of the issue plus: step < row, garbage compressed payloads,
# bad labels, bad boxes, stale stamps, bad clicks
CLASSES = {f.__name__: f for f in (
    random_encoding, huge_step, truncated, step_below_row, huge_dims, compressed_bomb, compressed_garbage,
    extreme_aspect, too_many_objects, too_many_points, bad_point, bad_labels, bad_box, bad_mask_input,
    large_ids, stale_stamp, bad_click)}


def detections(rng, sec, n: int, image_wh=(640, 480)):
    """A vision_msgs/Detection2DArray (topic `detections`) of n detections stamped `sec`: most boxes
    valid, the rest NaN / inf, negative sizes, huge boxes or boxes far outside the image, with
    random class strings and ids. Arrays over segany.max_objects are refused whole; with one bad box
    the whole array is (one throttled warning either way)."""
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose, Point2D, Pose2D)

    w, h = image_wh
    out = Detection2DArray(header=header(sec))
    kinds = rng.integers(0, 10, n)
    for k in range(n):
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        sx, sy = float(rng.uniform(2, w / 2)), float(rng.uniform(2, h / 2))
        kind = int(kinds[k])
        if kind == 6:
            cx, sx = float("nan"), float("inf")
        elif kind == 7:
            sx, sy = -sx, -sy
        elif kind == 8:
            sx, sy = 1e30, 1e30
        elif kind == 9:
            cx, cy = -1e9, 1e9
        hyp = ObjectHypothesis(class_id=str(rng.choice(["person", "0", "??", "", "99999999999"])),
                               score=float(rng.choice([0.5, float("nan"), -1.0])))
        out.detections.append(Detection2D(
            header=out.header, results=[ObjectHypothesisWithPose(hypothesis=hyp)],
            bbox=BoundingBox2D(center=Pose2D(position=Point2D(x=cx, y=cy)), size_x=sx, size_y=sy), id=str(k)))
    return "detections", out
