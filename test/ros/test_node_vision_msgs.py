"""vision_msgs through the real node (issue 21), from a client process over DDS with real ONNX
Runtime: YOLOv8n detections of camera frames sent as Detection2DArray give the masks of the same
boxes sent as a Prompt (every pixel), with the detection ids and classes on the instances; point
mode gives the masks of one-point prompts; ~/detections[/segany|/followed] and ~/detections_3d
carry every answer of their source (colour frame's header, the instance boxes, the Instance3D
values); detector.classes keeps SegEvery to the classes named, changed at run time; without
vision_msgs the node says so once and serves images and prompts.

One node process serves the detection checks (its frames, then its parameters changed between
checks); vision_msgs comes from the real package or the tests' stand-in (scripts/setup.sh)."""
import json
import os

import numpy as np
import pytest
from conftest import DATA, FIXTURES, read_log, wait_for
from nodeutil import (BUS, DETECTOR, detection_array, image_msg, mask_from_instance, node_argv,
                      publish_all_until, publish_until, read_rgb, set_parameters, wait_subscribed)
from test_node_3d import _camera_info, _depth

from mobilesam_ros.ros.camera_port import CLICK_ID_BASE, DETECTION_ID_BASE

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SEQ = DATA / "sequence"
EXPECTED = json.loads((DATA / "models" / "expected_detections.json").read_text())["results"]


def _xyxy(d):
    """The xyxy box the node makes of a Detection2D: centre -+ size / 2 (float64)."""
    b = d.bbox
    cx, cy = b.center.position.x, b.center.position.y
    return [cx - b.size_x / 2, cy - b.size_y / 2, cx + b.size_x / 2, cy + b.size_y / 2]


def _prompt(sec, dets, mode):
    """The same detections as a mobilesam_ros/Prompt: ids 1..N; mode box = each box, point = each
    box centre as one positive multimask point."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header

    from mobilesam_ros.msg import Prompt, PromptObject

    objs = []
    for k, d in enumerate(dets.detections):
        box = _xyxy(d)
        if mode == "box":
            objs.append(PromptObject(id=k + 1, has_box=True, box=np.array(box, np.float32)))
        else:
            c = Point(x=(box[0] + box[2]) / 2, y=(box[1] + box[3]) / 2)
            objs.append(PromptObject(id=k + 1, points=[c], labels=[1], multimask=True))
    return Prompt(header=Header(stamp=Time(sec=sec), frame_id="camera_optical_frame"), objects=objs)


def _same_masks(a, b, h, w):
    assert len(a.instances) == len(b.instances) > 0
    for x, y in zip(a.instances, b.instances):
        np.testing.assert_array_equal(mask_from_instance(x, h, w), mask_from_instance(y, h, w))
        assert x.score == y.score and x.area == y.area


def _check_2d(arr, det):
    """A Detection2DArray equals its InstanceMaskArray: header, ids, boxes of the masks' ROIs."""
    assert (det.header.stamp.sec, det.header.stamp.nanosec, det.header.frame_id) == \
        (arr.header.stamp.sec, arr.header.stamp.nanosec, arr.header.frame_id)
    with_mask = [m for m in arr.instances if m.bbox.width > 0]
    assert [d.id for d in det.detections] == [str(m.id) for m in with_mask]
    for d, m in zip(det.detections, with_mask):
        r = m.bbox
        assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == \
            (r.x_offset + r.width / 2, r.y_offset + r.height / 2, r.width, r.height)
        hyp = d.results[0].hypothesis
        assert hyp.class_id == (m.class_name or (str(m.class_id) if m.class_id >= 0 else ""))
        assert hyp.score == pytest.approx(m.detection_score if m.detection_score > 0 else m.score)


def _check_3d(arr3d, det3d):
    assert (det3d.header.stamp.sec, det3d.header.frame_id) == (arr3d.header.stamp.sec, arr3d.header.frame_id)
    assert [d.id for d in det3d.detections] == [str(i.id) for i in arr3d.instances]
    for d, i in zip(det3d.detections, arr3d.instances):
        c, s = d.bbox.center.position, d.bbox.size
        assert (c.x, c.y, c.z) == (i.box_center.x, i.box_center.y, i.box_center.z)
        assert (s.x, s.y, s.z) == (i.size.x, i.size.y, i.size.z)


def test_detections_in_and_out(ros_process, ros_probe):
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector
    from mobilesam_ros.msg import Instance3DArray, InstanceMaskArray, Prompt

    argv = node_argv(mode="both", **{"image.reliable": True, "depth.max_wait_s": 3.0,
                                     "model.checkpoint": str(FIXTURES / "mobile_sam_seed2.pt"),
                                     # the seeded checkpoint's predicted IoUs mean nothing: keep every mask
                                     "follow.min_pred_iou": 0.0, "follow.max_area_change": 1e6})
    node = ros_process(argv + ["-r", "depth:=/cam/depth", "-r", "camera_info:=/cam/camera_info"], name="node")
    got = {k: [] for k in ("inst", "followed", "3d", "det", "det/segany", "det/followed",
                           "3d/segevery", "3d/segany", "3d/followed")}
    sub = ros_probe.create_subscription
    sub(InstanceMaskArray, "/mobilesam/instances", got["inst"].append, 50)
    sub(InstanceMaskArray, "/mobilesam/followed", got["followed"].append, 50)
    sub(Instance3DArray, "/mobilesam/instances_3d", got["3d"].append, 50)
    sub(Detection2DArray, "/mobilesam/detections", got["det"].append, 50)
    sub(Detection2DArray, "/mobilesam/detections/segany", got["det/segany"].append, 50)
    sub(Detection2DArray, "/mobilesam/detections/followed", got["det/followed"].append, 50)
    sub(Detection3DArray, "/mobilesam/detections_3d", got["3d/segevery"].append, 50)
    sub(Detection3DArray, "/mobilesam/detections_3d/segany", got["3d/segany"].append, 50)
    sub(Detection3DArray, "/mobilesam/detections_3d/followed", got["3d/followed"].append, 50)
    pub = ros_probe.create_publisher(Image, "image", 10)
    dpub = ros_probe.create_publisher(Image, "/cam/depth", 10)
    ipub = ros_probe.create_publisher(CameraInfo, "/cam/camera_info", 10)
    ppub = ros_probe.create_publisher(Prompt, "prompt", 10)
    detpub = ros_probe.create_publisher(Detection2DArray, "detections", 10)  # reliable, as the node
    wait_subscribed(pub, node)
    assert wait_for(lambda: detpub.get_subscription_count() > 0 and ppub.get_subscription_count() > 0, 30)

    frames = {1: read_rgb(str(SEQ / "000000.jpg")), 2: read_rgb(str(SEQ / "000005.jpg")),
              3: read_rgb(str(SEQ / "000006.jpg"))}
    h, w = frames[1].shape[:2]

    def segevery_at(sec):
        return any(a.mode == "segevery" and a.header.stamp.sec == sec for a in got["inst"])

    for sec in (1, 2):
        publish_all_until([(dpub, _depth(sec, 240, 320)), (ipub, _camera_info()), (pub, image_msg(frames[sec], sec))],
                          lambda: segevery_at(sec), node)

    def answer(sec, pred):
        ok = wait_for(lambda: any(a.mode == "segany" and a.header.stamp.sec == sec and pred(a)
                                  for a in got["inst"]), 120)
        assert ok, read_log(node)
        return next(a for a in got["inst"] if a.mode == "segany" and a.header.stamp.sec == sec and pred(a))

    def from_detections(a):
        return bool(a.instances) and all(DETECTION_ID_BASE <= i.id < CLICK_ID_BASE for i in a.instances)

    # --- box mode, the expected YOLOv8n detections of frame 0; class ids as a name, a number and
    # a name the detector does not know
    ref = EXPECTED["sequence/000000.jpg"]["detections"]
    labels = [{"person": "person", "car": "2"}.get(d["name"], "robot") for d in ref]
    dets = detection_array(1, [d["xyxy"] for d in ref], labels, [f"yolo-{k}" for k in range(len(ref))],
                           [d["score"] for d in ref])
    detpub.publish(dets)
    by_det = answer(1, from_detections)
    ppub.publish(_prompt(1, dets, "box"))
    by_prompt = answer(1, lambda a: [i.id for i in a.instances] == list(range(1, len(ref) + 1)))
    _same_masks(by_det, by_prompt, h, w)
    assert len({i.id for i in by_det.instances}) == len(ref)
    assert [i.detection_id for i in by_det.instances] == [f"yolo-{k}" for k in range(len(ref))]
    want = [(0, "person") if d["name"] == "person" else (2, "car") if d["name"] == "car" else (-1, "robot")
            for d in ref]
    assert [(i.class_id, i.class_name) for i in by_det.instances] == want
    assert [i.detection_score for i in by_det.instances] == pytest.approx([d["score"] for d in ref], abs=1e-6)
    assert all(i.class_id == -1 and i.class_name == "" and i.detection_id == "" for i in by_prompt.instances)
    # an array for a frame that is not cached: the late prompt's warning, no answer
    n_answers = len(got["inst"])
    detpub.publish(detection_array(999, [ref[0]["xyxy"]], ["person"], ["late"]))
    assert wait_for(lambda: "skipping detections: no cached frame within" in read_log(node), 60), read_log(node)
    assert all(a.header.stamp.sec != 999 for a in got["inst"][n_answers:])

    # --- point mode, YOLOv8n run here (real ONNX Runtime) on frame 5
    det5 = YoloV8OnnxDetector(DETECTOR, conf=0.25, iou=0.45).detect(frames[2])
    assert len(det5) >= 3
    names5 = [str(int(c)) for c in det5.class_ids]
    set_parameters(ros_probe, "mobilesam", **{"detections.prompt": "point"})
    dets5 = detection_array(2, det5.boxes.tolist(), names5, [f"p{k}" for k in range(len(det5))])
    detpub.publish(dets5)
    by_det5 = answer(2, from_detections)
    ppub.publish(_prompt(2, dets5, "point"))
    by_prompt5 = answer(2, lambda a: [i.id for i in a.instances] == list(range(1, len(det5) + 1)))
    _same_masks(by_det5, by_prompt5, h, w)
    assert [i.class_id for i in by_det5.instances] == [int(c) for c in det5.class_ids]

    # --- detections.follow: the answer's objects are followed on the next frame (~/followed and
    # ~/detections/followed); the same detections again update them (same ids), none added
    set_parameters(ros_probe, "mobilesam", **{"detections.prompt": "box", "detections.follow": True})
    detpub.publish(detection_array(2, det5.boxes.tolist(), names5, [f"f{k}" for k in range(len(det5))]))
    first = answer(2, lambda a: from_detections(a) and a.instances[0].detection_id == "f0")
    publish_all_until([(dpub, _depth(3, 240, 320)), (ipub, _camera_info()), (pub, image_msg(frames[3], 3))],
                      lambda: any(a.header.stamp.sec == 3 for a in got["followed"]) and segevery_at(3), node)
    followed = next(a for a in got["followed"] if a.header.stamp.sec == 3)
    assert sorted(i.id for i in followed.instances) == sorted(i.id for i in first.instances)
    # each followed object keeps its detection's class, score and id, as on the answer it started from
    def labels(a):
        return {i.id: (i.class_id, i.class_name, i.detection_id, round(i.detection_score, 5)) for i in a.instances}
    assert labels(followed) == labels(first)
    assert all(i.detection_id.startswith("f") for i in followed.instances)
    # a detector that now reports each followed object at its last mask box (box IoU 1 with it)
    # and one object clear of every followed box: the first ones update, the last one is new
    fb = {i.id: [i.bbox.x_offset, i.bbox.y_offset, i.bbox.x_offset + i.bbox.width, i.bbox.y_offset + i.bbox.height]
          for i in followed.instances if i.bbox.width > 0}
    assert fb, "no followed object has a mask"
    new_box = [0.0, 300.0, 40.0, 340.0]

    def iou(a, b):  # continuous xyxy boxes
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    assert all(iou(new_box, b) < 0.4 for b in fb.values()), fb  # far below detections.follow_iou
    boxes = list(fb.values()) + [new_box]
    detpub.publish(detection_array(3, boxes, ["0"] * len(boxes), [f"g{k}" for k in range(len(boxes))]))
    again = answer(3, lambda a: from_detections(a) and a.instances[0].detection_id == "g0")
    assert [i.id for i in again.instances[:-1]] == list(fb)
    assert again.instances[-1].id not in fb and again.instances[-1].id not in {i.id for i in first.instances}

    # --- every published answer has its vision_msgs twin, per source, never mixed
    def settled():
        n = {"segevery": sum(a.mode == "segevery" for a in got["inst"]),
             "segany": sum(a.mode == "segany" for a in got["inst"])}
        n3 = {s: sum(a.source == s for a in got["3d"]) for s in ("segevery", "segany", "followed")}
        return (len(got["det"]) == n["segevery"] and len(got["det/segany"]) == n["segany"]
                and len(got["det/followed"]) == len(got["followed"])
                and all(len(got["3d/" + s]) == n3[s] for s in n3) and n3["segany"] >= 1 and n3["followed"] >= 1)
    assert wait_for(settled, 30), {k: len(v) for k, v in got.items()}
    for det, arr in zip(got["det"], [a for a in got["inst"] if a.mode == "segevery"]):
        _check_2d(arr, det)
    for det, arr in zip(got["det/segany"], [a for a in got["inst"] if a.mode == "segany"]):
        _check_2d(arr, det)
    for det, arr in zip(got["det/followed"], got["followed"]):
        _check_2d(arr, det)
    for s in ("segevery", "segany", "followed"):
        for det3d, arr3d in zip(got["3d/" + s], [a for a in got["3d"] if a.source == s]):
            _check_3d(arr3d, det3d)

    # --- detector.classes: SegEvery keeps the persons of bus.jpg only, then the bus only (run time)
    bus = read_rgb(BUS)
    set_parameters(ros_probe, "mobilesam", **{"detector.classes": ["person"]})
    publish_until(pub, image_msg(bus, 10), lambda: segevery_at(10), node)
    persons = next(a for a in got["inst"] if a.mode == "segevery" and a.header.stamp.sec == 10)
    assert len(persons.instances) >= 3 and {(i.class_id, i.class_name) for i in persons.instances} == {(0, "person")}
    set_parameters(ros_probe, "mobilesam", **{"detector.classes": ["5"]})
    publish_until(pub, image_msg(bus, 11), lambda: segevery_at(11), node)
    only_bus = next(a for a in got["inst"] if a.mode == "segevery" and a.header.stamp.sec == 11)
    assert len(only_bus.instances) >= 1 and {(i.class_id, i.class_name) for i in only_bus.instances} == {(5, "bus")}
    set_parameters(ros_probe, "mobilesam", **{"detector.classes": [""]})  # all again
    publish_until(pub, image_msg(bus, 12), lambda: segevery_at(12), node)
    every = next(a for a in got["inst"] if a.mode == "segevery" and a.header.stamp.sec == 12)
    classes = [i.class_id for i in every.instances]
    assert classes.count(0) == len(persons.instances) and classes.count(5) == len(only_bus.instances)
    assert node.poll() is None


def _without_standin(env: dict) -> dict:
    """The environment minus every path of the tests' vision_msgs stand-in prefix."""
    prefix = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "build", "standin")
    out = dict(env)
    for key in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "COLCON_PREFIX_PATH", "PATH"):
        if key in out:
            out[key] = os.pathsep.join(p for p in out[key].split(os.pathsep) if not p.startswith(prefix))
    return out


def test_node_without_vision_msgs(ros_process, ros_probe, ros_env):
    """No vision_msgs importable: one log line says the detection topics are off; frames and
    prompts are answered as always."""
    import subprocess
    import sys

    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import InstanceMaskArray, Prompt

    env = _without_standin(ros_env)
    probe = subprocess.run([sys.executable, "-P", "-c", "import vision_msgs.msg"], env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("a real vision_msgs is installed: the node cannot be run without it here")
    node = ros_process(node_argv(mode="both"), name="node", env={k: env.get(k, "") for k in ros_env})
    got = []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", got.append, 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    ppub = ros_probe.create_publisher(Prompt, "prompt", 10)
    wait_subscribed(pub, node)
    small = read_rgb(str(SEQ / "000000.jpg"))[::2, ::2].copy()  # 320x240: this check needs no detail
    publish_until(pub, image_msg(small, 1), lambda: any(a.mode == "segevery" for a in got), node)
    assert wait_for(lambda: ppub.get_subscription_count() > 0, 30)
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from mobilesam_ros.msg import PromptObject
    prompt = Prompt(header=Header(stamp=Time(sec=1)), objects=[
        PromptObject(id=3, has_box=True, box=np.array([140, 60, 180, 120], np.float32))])
    publish_until(ppub, prompt, lambda: any(a.mode == "segany" for a in got), node)
    log = read_log(node)
    assert log.count("vision_msgs is not available") == 1, log
    assert "the `detections` input and the ~/detections, ~/detections_3d outputs are off" in log
    topics = dict(ros_probe.get_topic_names_and_types())
    assert "/mobilesam/detections" not in topics and "/detections" not in topics
