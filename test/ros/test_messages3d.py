"""Instances3D -> Instance3DArray / PointCloud2 / MarkerArray: fields, byte layout, ids, and DELETE
markers for instances that disappeared (checked against hand-built values, no node)."""
from dataclasses import replace

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _res():
    from mobilesam_ros.core.ops.geometry3d import Instances3D

    nan3 = [np.nan] * 3
    return Instances3D(
        position=np.array([[0.1, -0.2, 1.0], nan3, [0.0, 0.0, 2.0]], np.float32),
        box_min=np.array([[0.0, -0.3, 1.0], nan3, [-0.1, -0.1, 1.9]], np.float32),
        box_max=np.array([[0.2, -0.1, 1.0], nan3, [0.1, 0.1, 2.1]], np.float32),
        valid_points=np.array([100, 3, 50]), valid=np.array([True, False, True]),
        points=np.array([[0.1, -0.2, 1.0], [0.0, 0.0, 2.0], [0.05, 0.01, 1.95]], np.float32),
        point_instance=np.array([0, 2, 2], np.int32))


def _header():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=7, nanosec=9), frame_id="cam_optical")


def test_instances3d_msg_keeps_valid_instances_with_their_2d_ids():
    from builtin_interfaces.msg import Time

    from mobilesam_ros.ros.messages3d import instances3d_to_msg

    msg = instances3d_to_msg(_res(), [4, 5, 9], _header(), Time(sec=6), "followed")
    assert msg.header.frame_id == "cam_optical" and msg.depth_stamp.sec == 6
    assert msg.source == msg.SOURCE_FOLLOWED == "followed"
    assert [i.id for i in msg.instances] == [4, 9] and [i.valid_points for i in msg.instances] == [100, 50]
    a = msg.instances[0]
    assert (a.position.x, a.position.y, a.position.z) == pytest.approx((0.1, -0.2, 1.0))
    assert (a.box_center.x, a.box_center.y, a.box_center.z) == pytest.approx((0.1, -0.2, 1.0))
    assert (a.size.x, a.size.y, a.size.z) == pytest.approx((0.2, 0.2, 0.0))


def test_point_cloud_layout():
    from sensor_msgs.msg import PointField

    from mobilesam_ros.ros.messages3d import points_to_cloud

    cloud = points_to_cloud(_res(), [4, 5, 9], _header())
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (1, 3, 16, 48)
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("id", 12, PointField.UINT32, 1)]
    raw = bytes(cloud.data)
    # read back with struct, independently of the numpy record type used to write it
    import struct

    rows = [struct.unpack_from("<fffI", raw, 16 * k) for k in range(3)]
    assert [r[3] for r in rows] == [4, 9, 9]
    assert rows[2][:3] == pytest.approx((0.05, 0.01, 1.95))
    assert cloud.is_dense and not cloud.is_bigendian
    empty = replace(_res(), points=np.zeros((0, 3), np.float32), point_instance=np.zeros(0, np.int32))
    assert points_to_cloud(empty, [4, 5, 9], _header()).width == 0


def test_markers_boxes_labels_and_deletes():
    from visualization_msgs.msg import Marker

    from mobilesam_ros.ros.messages3d import MIN_MARKER_SIZE_M, markers

    arr = markers(_res(), [4, 5, 9], _header(), gone={2, 3}, source="segany")
    add = [m for m in arr.markers if m.action == Marker.ADD]
    dele = [(m.ns, m.id) for m in arr.markers if m.action == Marker.DELETE]
    box_ns, label_ns = "segany/boxes", "segany/labels"   # each source in its own namespaces
    assert sorted((m.ns, m.id, m.type) for m in add) == [
        (box_ns, 4, Marker.CUBE), (box_ns, 9, Marker.CUBE),
        (label_ns, 4, Marker.TEXT_VIEW_FACING), (label_ns, 9, Marker.TEXT_VIEW_FACING)]
    assert sorted(dele) == [(box_ns, 2), (box_ns, 3), (label_ns, 2), (label_ns, 3)]
    assert all(m.header.frame_id == "cam_optical" and m.header.stamp.sec == 7 for m in arr.markers)
    cube4 = next(m for m in add if m.ns == box_ns and m.id == 4)
    assert (cube4.scale.x, cube4.scale.y, cube4.scale.z) == pytest.approx((0.2, 0.2, MIN_MARKER_SIZE_M))
    assert (cube4.pose.position.x, cube4.pose.position.z) == pytest.approx((0.1, 1.0))
    label9 = next(m for m in add if m.ns == label_ns and m.id == 9)
    assert label9.text == "9" and label9.pose.position.y < -0.1   # above the box: -y is up


_BIG_IDS = r"""
import numpy as np
from std_msgs.msg import Header
from mobilesam_ros.core.ops.geometry3d import Instances3D
from mobilesam_ros.ros.messages3d import instance_id, markers
res = Instances3D(position=np.zeros((3, 3), np.float32), box_min=np.zeros((3, 3), np.float32),
                  box_max=np.full((3, 3), 0.1, np.float32), valid_points=np.array([50, 50, 50]),
                  valid=np.array([True, True, True]), points=np.zeros((0, 3), np.float32),
                  point_instance=np.zeros(0, np.int32))
arr = markers(res, [2**31, 2**32 - 1, 5], Header(), gone={2**31 + 1},
              source="followed")
for m in arr.markers:
    print(m.ns, m.id, m.action, m.text, instance_id(m.id))
"""


def test_marker_ids_of_uint32_instance_ids_with_field_checks_on():
    """Click ids start at 2^31: as int32 Marker ids they are mapped one-to-one by two's complement
    (2^31 -> -2^31, 2^32 - 1 -> -1; hand-computed), the label shows the real id, and the setters'
    range checks (ROS_PYTHON_CHECK_FIELDS=1, read when the message module is imported: a fresh
    process) pass."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ROS_PYTHON_CHECK_FIELDS="1")
    out = subprocess.run([sys.executable, "-P", "-c", _BIG_IDS], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = sorted(tuple(line.split(" ")) for line in out.stdout.strip().splitlines())
    assert rows == sorted([
        ("followed/boxes", "-2147483648", "0", "", "2147483648"),
        ("followed/labels", "-2147483648", "0", "2147483648", "2147483648"),
        ("followed/boxes", "-1", "0", "", "4294967295"),
        ("followed/labels", "-1", "0", "4294967295", "4294967295"),
        ("followed/boxes", "5", "0", "", "5"), ("followed/labels", "5", "0", "5", "5"),
        ("followed/boxes", "-2147483647", "2", "", "2147483649"),      # DELETE of 2^31 + 1
        ("followed/labels", "-2147483647", "2", "", "2147483649")])
