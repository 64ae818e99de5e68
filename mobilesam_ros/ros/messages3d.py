"""core Instances3D -> ROS messages: Instance3DArray, PointCloud2 (x, y, z, id), MarkerArray.

All outputs copy the colour image's header (stamp and frame_id): the 3D figures are in that
camera's optical frame (x right, y down, z forward, metres), because depth is registered to it.

Markers: each source (Instance3DArray.SOURCE_*) has its own namespaces "<source>/boxes" and
"<source>/labels". Marker.id is int32 while instance ids are uint32 (click ids start at 2^31):
`marker_id` maps them one-to-one by two's complement (ids >= 2^31 become negative marker ids;
`instance_id` maps back); the label text always shows the instance id.
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

BOX_NS, LABEL_NS = "boxes", "labels"    # namespaces "<source>/boxes", "<source>/labels"
MIN_MARKER_SIZE_M = 0.005   # a face seen head-on has size ~0 along z: keep the cube visible
LABEL_HEIGHT_M = 0.05
# x, y, z float32 then the instance id as uint32: 16 bytes a point, little endian
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")])


def marker_id(instance_id: int) -> int:
    """uint32 instance id -> int32 Marker.id, one-to-one (two's complement: 2^31 -> -2^31)."""
    iid = int(instance_id)
    if not 0 <= iid < 1 << 32:
        raise ValueError(f"instance id {iid} is not a uint32")
    return iid - (1 << 32) if iid >= 1 << 31 else iid


def instance_id(marker_id_: int) -> int:
    """The inverse of :func:`marker_id`."""
    return int(marker_id_) & 0xFFFFFFFF


def marker_namespaces(source: str) -> tuple[str, str]:
    """("<source>/boxes", "<source>/labels"): a source's own namespaces on ~/markers."""
    return f"{source}/{BOX_NS}", f"{source}/{LABEL_NS}"


def _point(v) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def instances3d_to_msg(res: Instances3D, ids: Sequence[int], header, depth_stamp,
                       source: str = Instance3DArray.SOURCE_SEGEVERY) -> Instance3DArray:
    """The valid instances of `res` (ids[i] = 2D id of instance i) in an Instance3DArray of
    `source` (Instance3DArray.SOURCE_*)."""
    out = Instance3DArray(header=header, source=source, depth_stamp=depth_stamp)
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


def markers(res: Instances3D, ids: Sequence[int], header, gone: Iterable[int],
            source: str = Instance3DArray.SOURCE_SEGEVERY) -> MarkerArray:
    """Per valid instance a CUBE (the box, colour of the overlay) and a TEXT_VIEW_FACING id label
    above it (-y is up in the optical frame); DELETE markers for the ids in `gone` (instances of
    this source shown before that are not valid now). Namespaces: :func:`marker_namespaces` of
    `source`; marker ids: :func:`marker_id` of the instance ids."""
    box_ns, label_ns = marker_namespaces(source)
    out = MarkerArray()
    for i in np.flatnonzero(res.valid):
        iid = int(ids[i])
        r, g, b = (c / 255.0 for c in id_color(iid))
        cube = Marker(header=header, ns=box_ns, id=marker_id(iid), type=Marker.CUBE, action=Marker.ADD)
        cube.pose.position = _point(res.box_center[i])
        cube.pose.orientation.w = 1.0
        sx, sy, sz = (max(float(v), MIN_MARKER_SIZE_M) for v in res.size[i])
        cube.scale = Vector3(x=sx, y=sy, z=sz)
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = r, g, b, 0.5
        text = Marker(header=header, ns=label_ns, id=marker_id(iid), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=str(iid))
        text.pose.position = _point(res.box_center[i] - np.array([0.0, sy / 2 + LABEL_HEIGHT_M, 0.0]))
        text.pose.orientation.w = 1.0
        text.scale.z = LABEL_HEIGHT_M
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        out.markers += [cube, text]
    for iid in sorted(gone):
        out.markers += [Marker(header=header, ns=ns, id=marker_id(iid), action=Marker.DELETE)
                        for ns in (box_ns, label_ns)]
    return out
