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

    msg = instances3d_to_msg(_res(), [4, 5, 9], _header(), Time(sec=6))
    assert msg.header.frame_id == "cam_optical" and msg.depth_stamp.sec == 6
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

    from mobilesam_ros.ros.messages3d import BOX_NS, LABEL_NS, MIN_MARKER_SIZE_M, markers

    arr = markers(_res(), [4, 5, 9], _header(), gone={2, 3})
    add = [m for m in arr.markers if m.action == Marker.ADD]
    dele = [(m.ns, m.id) for m in arr.markers if m.action == Marker.DELETE]
    assert sorted((m.ns, m.id, m.type) for m in add) == [
        (BOX_NS, 4, Marker.CUBE), (BOX_NS, 9, Marker.CUBE),
        (LABEL_NS, 4, Marker.TEXT_VIEW_FACING), (LABEL_NS, 9, Marker.TEXT_VIEW_FACING)]
    assert sorted(dele) == [(BOX_NS, 2), (BOX_NS, 3), (LABEL_NS, 2), (LABEL_NS, 3)]
    assert all(m.header.frame_id == "cam_optical" and m.header.stamp.sec == 7 for m in arr.markers)
    cube4 = next(m for m in add if m.ns == BOX_NS and m.id == 4)
    assert (cube4.scale.x, cube4.scale.y, cube4.scale.z) == pytest.approx((0.2, 0.2, MIN_MARKER_SIZE_M))
    assert (cube4.pose.position.x, cube4.pose.position.z) == pytest.approx((0.1, 1.0))
    label9 = next(m for m in add if m.ns == LABEL_NS and m.id == 9)
    assert label9.text == "9" and label9.pose.position.y < -0.1   # above the box: -y is up
