"""The real node with 3D on (by remapping `depth`): colour + depth (a plane at 1.0 m, 16UC1 at half
the colour resolution) + CameraInfo in; ~/points all at z = 1.0 m and inside their instance's 2D
mask, ~/instances_3d and ~/markers with the colour frame's header; bad depth gets its warning while
the 2D outputs go on; depth that comes after the frame's results is waited for (depth.max_wait_s);
in mode both each source (segevery / segany / followed) has its own markers. Every message is
re-published until the node's answer shows it arrived (nodeutil.publish_until)."""
import time

import numpy as np
import pytest
from conftest import DATA, FIXTURES, read_log, wait_for
from nodeutil import (image_msg, mask_from_instance, node_argv, publish_all_until, publish_until, read_rgb,
                      wait_subscribed)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
FRAME = str(DATA / "sequence" / "000000.jpg")   # 640x480, pedestrians the detector finds
FX, FY, CX, CY = 525.0, 525.0, 319.5, 239.5    # CameraInfo of the 640x480 colour camera
FRAME_ID = "camera_optical_frame"
MAX_WAIT_S = 3.0                                # depth.max_wait_s of these nodes


def _header(sec):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec), frame_id=FRAME_ID)


def _depth(sec, h, w, encoding="16UC1", value=1000):
    from mobilesam_ros.ros.messages import array_to_image_msg

    if encoding == "rgb8":
        return array_to_image_msg(np.zeros((h, w, 3), np.uint8), "rgb8", _header(sec))
    dtype = np.float32 if encoding == "32FC1" else np.uint16
    return array_to_image_msg(np.full((h, w), value, dtype), encoding, _header(sec))


def _camera_info():
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(header=_header(0), width=640, height=480,
                      k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0], distortion_model="plumb_bob",
                      d=[0.0] * 5, p=[FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0])


def test_plane_at_one_metre_through_the_node(ros_process, ros_probe):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from visualization_msgs.msg import Marker, MarkerArray

    from mobilesam_ros.msg import Instance3DArray, InstanceMaskArray

    # image.max_pixels 400000: 640x480 colour passes, an 800x600 depth image does not
    argv = node_argv(mode="segevery", **{"image.reliable": True, "image.max_pixels": 400_000,
                                         "depth.max_wait_s": MAX_WAIT_S,
                                         "model.checkpoint": str(FIXTURES / "mobile_sam_seed2.pt")})
    node = ros_process(argv + ["-r", "depth:=/cam/depth", "-r", "camera_info:=/cam/camera_info"], name="node")
    got = {"2d": [], "3d": [], "points": [], "markers": []}
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", got["2d"].append, 10)
    ros_probe.create_subscription(Instance3DArray, "/mobilesam/instances_3d", got["3d"].append, 10)
    ros_probe.create_subscription(PointCloud2, "/mobilesam/points", got["points"].append, 10)
    ros_probe.create_subscription(MarkerArray, "/mobilesam/markers", got["markers"].append, 10)
    diags = []
    ros_probe.create_subscription(DiagnosticArray, "/diagnostics",
                                  lambda m: diags.extend(s for s in m.status if s.name == "mobilesam: depth"), 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    dpub = ros_probe.create_publisher(Image, "/cam/depth", 10)
    ipub = ros_probe.create_publisher(CameraInfo, "/cam/camera_info", 10)
    wait_subscribed(pub, node)
    assert wait_for(lambda: dpub.get_subscription_count() > 0 and ipub.get_subscription_count() > 0, 30)
    rgb = read_rgb(FRAME)

    def has(key, sec):
        return any(a.header.stamp.sec == sec for a in got[key])

    # an unknown depth encoding is refused on arrival, with the documented warning
    publish_until(dpub, _depth(1, 240, 320, "rgb8"),
                  lambda: "unsupported depth encoding 'rgb8'" in read_log(node), node)

    # depth of another aspect (320x180 for a 640x480 frame): refused, 2D outputs unaffected
    publish_all_until([(ipub, _camera_info()), (dpub, _depth(2, 180, 320)), (pub, image_msg(rgb, 2))],
                      lambda: has("2d", 2) and "different aspect ratios" in read_log(node), node)
    assert not has("3d", 2)
    assert wait_for(lambda: any(d.level == DiagnosticStatus.WARN and "different aspect" in d.message
                                for d in diags), 15), [(d.level, d.message) for d in diags]

    # the plane at 1.0 m at half resolution: masks and K are scaled to it
    done = (lambda: has("points", 3) and has("2d", 3) and has("3d", 3)  # topics arrive in any order
            and any(mk.header.stamp.sec == 3 for a in got["markers"] for mk in a.markers))
    publish_all_until([(dpub, _depth(3, 240, 320)), (ipub, _camera_info()), (pub, image_msg(rgb, 3))], done, node)
    arr2d = next(a for a in got["2d"] if a.header.stamp.sec == 3)
    arr3d = next(a for a in got["3d"] if a.header.stamp.sec == 3)
    cloud = next(a for a in got["points"] if a.header.stamp.sec == 3)
    marks = next(a for a in got["markers"] if a.markers and a.markers[0].header.stamp.sec == 3)
    for m in (arr3d, cloud, *marks.markers):
        assert (m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) == (3, 0, FRAME_ID)
    assert arr3d.source == Instance3DArray.SOURCE_SEGEVERY
    assert {m.ns for m in marks.markers} == {"segevery/boxes", "segevery/labels"}
    assert (arr3d.depth_stamp.sec, arr3d.depth_stamp.nanosec) == (3, 0)
    assert len(arr2d.instances) >= 1 and len(arr3d.instances) >= 1, read_log(node)

    ids2d = {i.id: i for i in arr2d.instances}
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "id"] and cloud.point_step == 16
    pts = np.frombuffer(bytes(cloud.data), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")]))
    assert len(pts) == cloud.width > 0
    np.testing.assert_allclose(pts["z"], 1.0, atol=0.01)            # every point on the plane
    assert set(np.unique(pts["id"])) <= {i.id for i in arr3d.instances} <= set(ids2d)
    # each point projects (colour K) into its instance's 2D mask; a depth pixel covers 2x2 colour
    # pixels, so allow the mask's 1-pixel neighbourhood
    u = np.round(pts["x"] / pts["z"] * FX + CX).astype(int)
    v = np.round(pts["y"] / pts["z"] * FY + CY).astype(int)
    for iid in np.unique(pts["id"]):
        m = mask_from_instance(ids2d[int(iid)], 480, 640)
        near = np.zeros_like(m)
        near[:-1] |= m[1:]
        near[1:] |= m[:-1]
        near |= m
        near[:, :-1] |= near[:, 1:].copy()
        near[:, 1:] |= near[:, :-1].copy()
        sel = pts["id"] == iid
        assert near[np.clip(v[sel], 0, 479), np.clip(u[sel], 0, 639)].all()
    for inst in arr3d.instances:
        assert abs(inst.position.z - 1.0) < 0.01 and abs(inst.size.z) < 0.01 and inst.valid_points >= 20
        # the instance's mask centre seen at 1 m: x, y within the mask's extent
        b = ids2d[inst.id].bbox
        assert (b.x_offset - CX) / FX - 0.01 <= inst.position.x <= (b.x_offset + b.width - CX) / FX + 0.01
        assert (b.y_offset - CY) / FY - 0.01 <= inst.position.y <= (b.y_offset + b.height - CY) / FY + 0.01
    cubes = [m for m in marks.markers if m.type == Marker.CUBE and m.action == Marker.ADD]
    texts = [m for m in marks.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert sorted(m.id for m in cubes) == sorted(m.id for m in texts) == sorted(i.id for i in arr3d.instances)
    assert sorted(t.text for t in texts) == sorted(str(i.id) for i in arr3d.instances)

    def diag_value(d, key):
        return next(int(v.value) for v in d.values if v.key == key)
    assert wait_for(lambda: any(d.level == DiagnosticStatus.OK and diag_value(d, "frames_3d") >= 1
                                for d in diags), 15)

    # a frame with no depth near its stamp (the buffer holds stamps 2 and 3) and none coming: its 3D
    # waits depth.max_wait_s, then one warning; no 3D
    publish_until(pub, image_msg(rgb, 10), lambda: has("2d", 10), node)
    t_2d = time.monotonic()
    missing = "no 3D for frame 10.000 (segevery): no depth image within 0.050 s of stamp 10"
    assert wait_for(lambda: missing in read_log(node), MAX_WAIT_S + 15), read_log(node)
    assert time.monotonic() - t_2d > MAX_WAIT_S - 1.0, "warned before the wait was over"
    assert not has("3d", 10)

    # 32FC1 that holds millimetres (1000.0): nothing lies in [min_m, max_m], the documented warning,
    # an empty Instance3DArray, and DELETE markers for the instances shown at stamp 3
    publish_all_until([(dpub, _depth(11, 240, 320, "32FC1", 1000.0)), (pub, image_msg(rgb, 11))],
                      lambda: has("3d", 11), node)
    assert wait_for(lambda: "or wrong units" in read_log(node), 15), read_log(node)
    assert next(a for a in got["3d"] if a.header.stamp.sec == 11).instances == []
    assert wait_for(lambda: any(a.markers and a.markers[0].header.stamp.sec == 11 for a in got["markers"]), 15)
    gone = next(a for a in got["markers"] if a.markers and a.markers[0].header.stamp.sec == 11)
    assert all(m.action == Marker.DELETE for m in gone.markers)
    assert sorted(m.id for m in gone.markers) == sorted(2 * [i.id for i in arr3d.instances])

    # depth over image.max_pixels (800x600 > 400000, same aspect): refused on arrival, never used
    publish_until(dpub, _depth(12, 600, 800), lambda: "skipping depth 800x600: over the image.max_pixels = "
                  "400000 pixel limit" in read_log(node), node)
    publish_until(pub, image_msg(rgb, 12), lambda: has("2d", 12), node)
    assert wait_for(lambda: "no 3D for frame 12.000" in read_log(node), MAX_WAIT_S + 15), read_log(node)
    assert not has("3d", 12)

    # depth sent only after the frame's 2D results are out: the 3D waits for it and comes with the
    # colour stamp (a fresh stamp per try: a try whose depth came after the wait gets none)
    for sec in (20, 21, 22):
        publish_until(pub, image_msg(rgb, sec), lambda: has("2d", sec), node)
        assert not has("3d", sec)
        publish_until(dpub, _depth(sec, 240, 320), lambda: has("3d", sec) or f"frame {sec}.000" in read_log(node),
                      node, timeout=MAX_WAIT_S + 15, period=1.0)
        if has("3d", sec):
            break
    late = next(a for a in got["3d"] if a.header.stamp.sec == sec)
    assert (late.depth_stamp.sec, late.header.frame_id, late.source) == (sec, FRAME_ID, "segevery")
    assert late.instances and all(abs(i.position.z - 1.0) < 0.01 for i in late.instances)
    assert wait_for(lambda: any(d.level == DiagnosticStatus.OK and diag_value(d, "waited_for_depth") >= 1
                                for d in diags), 15)


def test_mode_both_sources_keep_their_own_markers(ros_process, ros_probe):
    """Mode both with depth: SegEvery frames, a click's answer (id 2^31) and the clicked object
    followed on the next frame each get 3D with their own `source` and marker namespaces; no
    source deletes another's markers; marker ids of uint32 ids >= 2^31 pass the field checks
    (ROS_PYTHON_CHECK_FIELDS=1: an out-of-range setter raised inside _publish before)."""
    from geometry_msgs.msg import Point, PointStamped
    from sensor_msgs.msg import CameraInfo, Image
    from visualization_msgs.msg import Marker, MarkerArray

    from mobilesam_ros.msg import Instance3DArray, InstanceMaskArray

    argv = node_argv(mode="both", **{"image.reliable": True, "depth.max_wait_s": MAX_WAIT_S,
                                     "follow.clicks": True, "follow.min_pred_iou": 0.0,
                                     "follow.max_area_change": 1e6,
                                     "model.checkpoint": str(FIXTURES / "mobile_sam_seed2.pt")})
    node = ros_process(argv + ["-r", "depth:=/cam/depth", "-r", "camera_info:=/cam/camera_info"], name="node",
                       env={"ROS_PYTHON_CHECK_FIELDS": "1"})
    answers, followed, got3d, marks = [], [], [], []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", answers.append, 10)
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/followed", followed.append, 10)
    ros_probe.create_subscription(Instance3DArray, "/mobilesam/instances_3d", got3d.append, 10)
    ros_probe.create_subscription(MarkerArray, "/mobilesam/markers", marks.append, 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    dpub = ros_probe.create_publisher(Image, "/cam/depth", 10)
    ipub = ros_probe.create_publisher(CameraInfo, "/cam/camera_info", 10)
    click_pub = ros_probe.create_publisher(PointStamped, "clicked_point", 10)
    wait_subscribed(pub, node)
    assert wait_for(lambda: dpub.get_subscription_count() > 0 and click_pub.get_subscription_count() > 0, 30)
    rgb = read_rgb(FRAME)

    def got(source, sec):
        return [a for a in got3d if a.source == source and a.header.stamp.sec == sec]

    publish_all_until([(ipub, _camera_info()), (dpub, _depth(40, 240, 320)), (pub, image_msg(rgb, 40))],
                      lambda: got("segevery", 40), node)
    x0, y0, x1, y1 = 491.5, 128.5, 515.1, 195.1          # a pedestrian (expected_detections.json)
    click = PointStamped(header=_header(40), point=Point(x=(x0 + x1) / 2, y=(y0 + y1) / 2))
    publish_until(click_pub, click, lambda: any(i.id >= 1 << 31 for a in got("segany", 40) for i in a.instances),
                  node, period=10.0)
    cid = next(i.id for a in got("segany", 40) for i in a.instances if i.id >= 1 << 31)
    assert any(i.id == cid for a in answers if a.mode == "segany" for i in a.instances)

    # the next frame: SegEvery again, and the clicked object followed, each with its own 3D
    publish_all_until([(dpub, _depth(41, 240, 320)), (pub, image_msg(rgb, 41))],
                      lambda: got("segevery", 41) and got("followed", 41), node)
    (fol,) = got("followed", 41)
    f = next(i for i in fol.instances if i.id == cid)
    assert abs(f.position.z - 1.0) < 0.01 and (fol.depth_stamp.sec, fol.header.frame_id) == (41, FRAME_ID)
    assert any(i.id == cid for a in followed for i in a.instances)

    def source_of(arr):
        return {m.ns.split("/")[0] for m in arr.markers}
    assert wait_for(lambda: any(source_of(a) == {"followed"} for a in marks), 15)
    shown: dict = {}
    for arr in (a for a in marks if a.markers):   # one source per array; DELETE only what it showed
        (src,) = source_of(arr)
        assert {m.ns for m in arr.markers} <= {f"{src}/boxes", f"{src}/labels"}
        for m in arr.markers:
            if m.action == Marker.DELETE:
                assert m.id in shown.get(src, set()), (src, m.id)
        shown.setdefault(src, set()).update(m.id for m in arr.markers if m.action == Marker.ADD)
    for src in ("segany", "followed"):   # 2^31 and up as negative int32 marker ids, labels with the id
        labels = [m for a in marks for m in a.markers if m.ns == f"{src}/labels" and m.action == Marker.ADD]
        assert any(m.id == cid - (1 << 32) and m.text == str(cid) for m in labels), (src, cid)
    assert " failed: " not in read_log(node), read_log(node)
