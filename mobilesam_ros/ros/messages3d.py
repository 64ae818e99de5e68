"""core Instances3D -> ROS messages: Instance3DArray, PointCloud2 (x, y, z, id), MarkerArray.

All outputs copy the colour image's header (stamp and frame_id): the 3D figures are in that
camera's optical frame (x right, y down, z forward, metres), because depth is registered to it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from visualization_msgs.msg import Marker, MarkerArray

from mobilesam_ros.core.ops.geometry3d import Instances3D
from mobilesam_ros.core.ops.overlay import id_color
from mobilesam_ros.msg import Instance3D, Instance3DArray

BOX_NS, LABEL_NS = "mobilesam_boxes", "mobilesam_labels"
MIN_MARKER_SIZE_M = 0.005   # a face seen head-on has size ~0 along z: keep the cube visible
LABEL_HEIGHT_M = 0.05
# x, y, z float32 then the instance id as uint32: 16 bytes a point, little endian
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")])


def _point(v) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def instances3d_to_msg(res: Instances3D, ids: Sequence[int], header, depth_stamp) -> Instance3DArray:
    """The valid instances of `res` (ids[i] = 2D id of instance i) in an Instance3DArray."""
    out = Instance3DArray(header=header, depth_stamp=depth_stamp)
    for i in np.flatnonzero(res.valid):
        s = res.size[i]
        out.instances.append(Instance3D(
            id=int(ids[i]), position=_point(res.position[i]), box_center=_point(res.box_center[i]),
            size=Vector3(x=float(s[0]), y=float(s[1]), z=float(s[2])),
            valid_points=int(res.valid_points[i])))
    return out


def points_to_cloud(res: Instances3D, ids: Sequence[int], header) -> PointCloud2:
    """Unordered PointCloud2 (height 1) of the gated points: fields x, y, z (float32, metres,
    optical frame) and id (uint32, the instance id); no NaN points (is_dense)."""
    rec = np.empty(len(res.points), CLOUD_DTYPE)
    if len(rec):
        rec["x"], rec["y"], rec["z"] = res.points[:, 0], res.points[:, 1], res.points[:, 2]
        rec["id"] = np.asarray(ids, np.uint32)[res.point_instance]
    fields = [PointField(name=n, offset=CLOUD_DTYPE.fields[n][1], count=1,
                         datatype=PointField.UINT32 if n == "id" else PointField.FLOAT32)
              for n in CLOUD_DTYPE.names]
    return PointCloud2(header=header, height=1, width=len(rec), fields=fields, is_bigendian=False,
                       point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * len(rec),
                       data=rec.tobytes(), is_dense=True)


def markers(res: Instances3D, ids: Sequence[int], header, gone: Iterable[int]) -> MarkerArray:
    """Per valid instance a CUBE (the box, colour of the overlay) and a TEXT_VIEW_FACING id label
    above it (-y is up in the optical frame); DELETE markers for the ids in `gone` (instances shown
    before that are not valid now). Marker ids are the instance ids, in two namespaces."""
    out = MarkerArray()
    for i in np.flatnonzero(res.valid):
        iid = int(ids[i])
        r, g, b = (c / 255.0 for c in id_color(iid))
        cube = Marker(header=header, ns=BOX_NS, id=iid, type=Marker.CUBE, action=Marker.ADD)
        cube.pose.position = _point(res.box_center[i])
        cube.pose.orientation.w = 1.0
        sx, sy, sz = (max(float(v), MIN_MARKER_SIZE_M) for v in res.size[i])
        cube.scale = Vector3(x=sx, y=sy, z=sz)
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = r, g, b, 0.5
        text = Marker(header=header, ns=LABEL_NS, id=iid, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=str(iid))
        text.pose.position = _point(res.box_center[i] - np.array([0.0, sy / 2 + LABEL_HEIGHT_M, 0.0]))
        text.pose.orientation.w = 1.0
        text.scale.z = LABEL_HEIGHT_M
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        out.markers += [cube, text]
    for iid in sorted(gone):
        out.markers += [Marker(header=header, ns=ns, id=int(iid), action=Marker.DELETE)
                        for ns in (BOX_NS, LABEL_NS)]
    return out
