"""Helpers for tests that run the real mobilesam node as a separate process."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
from conftest import DATA, FIXTURES, read_log, wait_for, warm_onnx_cache

CHECKPOINT = str(FIXTURES / "mobile_sam_seed2.pt")
DETECTOR = str(DATA / "models" / "yolov8n_int8.onnx")
BUS = str(DATA / "images" / "bus.jpg")
ZIDANE = str(DATA / "images" / "zidane.jpg")


def node_executable() -> str:
    from ament_index_python.packages import get_package_prefix

    return os.path.join(get_package_prefix("mobilesam_ros"), "lib", "mobilesam_ros", "mobilesam_node")


def node_argv(name: str = "mobilesam", **params) -> list[str]:
    """argv of a node process with the seeded checkpoint and the detector; its ONNX graphs (backend
    auto) are exported beforehand into the session cache."""
    base = {"model.checkpoint": CHECKPOINT, "detector.model": DETECTOR, "autostart": True}
    base.update(params)
    if base.get("model.backend", "auto") != "torch" and os.path.isfile(str(base["model.checkpoint"])):
        warm_onnx_cache(str(base["model.checkpoint"]))
    argv = [sys.executable, node_executable(), "--ros-args", "-r", f"__node:={name}"]
    for k, v in base.items():
        v = str(v).lower() if isinstance(v, bool) else v
        argv += ["-p", f"{k}:={v}"]
    return argv


def read_rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def image_msg(rgb: np.ndarray, sec: int, nanosec: int = 0, frame_id: str = "camera_optical_frame"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from mobilesam_ros.ros.messages import array_to_image_msg

    return array_to_image_msg(rgb, "rgb8", Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id))


def wait_subscribed(pub, proc, timeout: float = 60.0) -> None:
    """Until the node's subscription matched our publisher (the node is active)."""
    ok = wait_for(lambda: pub.get_subscription_count() > 0 or proc.poll() is not None, timeout)
    assert ok and proc.poll() is None, read_log(proc)


def mask_from_instance(inst, h: int, w: int) -> np.ndarray:
    """The full-image bool mask of an InstanceMask (its mono8 crop placed at its ROI)."""
    full = np.zeros((h, w), bool)
    if inst.bbox.width and inst.bbox.height:
        crop = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(inst.mask.height, inst.mask.width) > 0
        y, x = inst.bbox.y_offset, inst.bbox.x_offset
        full[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return full


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "mobilesam_ros", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def unpack_npz_masks(npz) -> np.ndarray:
    shape = tuple(npz["masks_shape"])
    return np.unpackbits(npz["masks_packed"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


def publish_until(pub, msg, pred, proc, timeout: float = 120.0, period: float = 4.0) -> None:
    """Publish `msg` and re-publish it every `period` s until pred() holds: the first best-effort
    sample after discovery can be lost before the node's reader has matched our writer."""
    publish_all_until([(pub, msg)], pred, proc, timeout, period)


def publish_all_until(pairs, pred, proc, timeout: float = 120.0, period: float = 4.0) -> None:
    """:func:`publish_until` for several (publisher, message) pairs, published in order each round
    (e.g. a depth image, its CameraInfo and the colour frame that needs both)."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        for pub, msg in pairs:
            pub.publish(msg)
        if wait_for(pred, min(period, max(0.0, end - time.monotonic()))):
            return
    raise AssertionError(f"no answer within {timeout} s:\n{read_log(proc)}")


def set_parameters(probe, node_name: str, **values) -> None:
    """Set parameters of the node `node_name` through its set_parameters service (names with dots
    as keyword arguments: set_parameters(probe, "mobilesam", **{"a.b": 1})); each must succeed."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from conftest import wait_for

    client = probe.create_client(SetParameters, f"/{node_name}/set_parameters")
    assert client.wait_for_service(timeout_sec=30), "set_parameters not available"
    fut = client.call_async(SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
    assert wait_for(fut.done, 30), "set_parameters timed out"
    assert all(r.successful for r in fut.result().results), [r.reason for r in fut.result().results]
    probe.destroy_client(client)


def detection_array(sec: int, boxes, labels, ids, scores=None, nanosec: int = 0):
    """A vision_msgs/Detection2DArray stamped (sec, nanosec): one Detection2D per xyxy box (as
    centre and size), one hypothesis each (class_id = labels[k], score = scores[k] or 1.0) and
    id = ids[k]."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose, Point2D, Pose2D)

    header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera_optical_frame")
    out = Detection2DArray(header=header)
    for k, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        centre = Pose2D(position=Point2D(x=(x1 + x2) / 2, y=(y1 + y2) / 2))
        hyp = ObjectHypothesis(class_id=str(labels[k]), score=float(1.0 if scores is None else scores[k]))
        out.detections.append(Detection2D(header=header, bbox=BoundingBox2D(center=centre, size_x=x2 - x1,
                                                                             size_y=y2 - y1),
                                          results=[ObjectHypothesisWithPose(hypothesis=hyp)], id=str(ids[k])))
    return out
