"""The node's 3D side: depth + CameraInfo in, ~/instances_3d, ~/points, ~/markers out.

On when the parameter `depth.enabled` is true or when the `depth` topic is remapped
(`-r depth:=/camera/aligned_depth_to_color/image_raw`); off otherwise, and then it creates nothing.

Inputs (relative names, remap them; QoS follows `image.reliable` like the colour image):
  depth        sensor_msgs/Image 16UC1 / mono16 (millimetres) or 32FC1 (metres), registered to the
               colour camera (same viewpoint; any resolution of the same aspect), rectified
  camera_info  sensor_msgs/CameraInfo of the colour camera (K is used; distortion is not)

Segmentation runs asynchronously, so depth is not synchronised with colour on arrival: the last
`depth.buffer_size` depth messages are kept by stamp (raw, decoded only when used) and a segmented
frame takes the one nearest to its own stamp within `depth.stamp_tolerance`; the latest CameraInfo
is used. Problems (no/stale depth, no CameraInfo, unknown encoding, another aspect, too few valid
points) give one throttled warning per kind and are counted in the "<node>: depth" diagnostics;
the 2D outputs are never held back by them.
"""
from __future__ import annotations

from typing import Callable, Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from mobilesam_ros.core.engine.embedding_cache import EmbeddingCache, FrameNotCachedError, stamp_to_ns
from mobilesam_ros.core.ops.geometry3d import (DEPTH_ENCODINGS, DepthError, Extract3DConfig, PinholeCamera,
                                           depth_to_metres, extract_instances_3d)
from mobilesam_ros.core.io.image_codec import ImageMessageError, image_msg_to_array
from mobilesam_ros.msg import Instance3DArray
from mobilesam_ros.ros import params as P
from mobilesam_ros.ros.messages3d import instances3d_to_msg, markers, points_to_cloud

_DEPTH_MSG_ENCODINGS = {enc: (dtype, 1) for enc, (dtype, _) in DEPTH_ENCODINGS.items()}


def depth_requested(node) -> bool:
    """`depth.enabled`, or `depth` remapped to another name than its own expansion."""
    return bool(node.get_parameter("depth.enabled").value) or \
        node.resolve_topic_name("depth") != node.resolve_topic_name("depth", only_expand=True)


def extract_config(node) -> Extract3DConfig:
    return P.build(Extract3DConfig, P.node_values(node))


class Depth3D:
    """Owned by the node: created at configure (publishers), subscribed at activate, called from
    the worker thread with every published result (`publish`)."""

    def __init__(self, node, warn: Callable[[str, str], None]) -> None:
        self._node, self._warn = node, warn
        self.enabled = depth_requested(node)
        self._depths: EmbeddingCache = EmbeddingCache(node.get_parameter("depth.buffer_size").value)
        self._info: Optional[CameraInfo] = None
        self._shown: set[int] = set()      # ids whose markers are on screen (DELETE when gone)
        self.counts = {k: 0 for k in ("depth_in", "frames_3d", "no_depth", "no_camera_info",
                                      "refused", "instances_3d", "instances_without_depth")}
        self.last_problem = ""
        self._failing = False              # the last segmented frame got no 3D
        self.publishers: dict = {}
        if self.enabled:
            self.publishers = {
                "instances_3d": node.create_lifecycle_publisher(Instance3DArray, "~/instances_3d", 10),
                "points": node.create_lifecycle_publisher(PointCloud2, "~/points", 10),
                "markers": node.create_lifecycle_publisher(MarkerArray, "~/markers", 10)}
            node.get_logger().info(f"3D on: depth from {node.resolve_topic_name('depth')}, intrinsics "
                                   f"from {node.resolve_topic_name('camera_info')}")

    def subscriptions(self, qos) -> list:
        if not self.enabled:
            return []
        return [self._node.create_subscription(Image, "depth", self._on_depth, qos),
                self._node.create_subscription(CameraInfo, "camera_info", self._on_info, qos)]

    # ------------------------------------------------------------------ inputs (executor thread)
    def _on_depth(self, msg: Image) -> None:
        if msg.encoding not in DEPTH_ENCODINGS:  # refused on arrival: it concerns the whole stream
            self._problem("encoding", f"skipping depth: unsupported depth encoding {msg.encoding!r} "
                          f"(supported: 16UC1 / mono16 in millimetres, 32FC1 in metres)", "refused")
            return
        self.counts["depth_in"] += 1
        self._depths.put(stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), msg)

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    def _problem(self, key: str, text: str, counter: str) -> None:
        self.counts[counter] += 1
        self.last_problem = text
        self._failing = True
        self._warn(f"depth_{key}", text)

    # ------------------------------------------------------------------ output (worker thread)
    def publish(self, inst, header, ids) -> None:
        """3D outputs of one segmented frame (instances `inst`, 2D ids `ids`, colour `header`)."""
        if not self.enabled or not self.publishers:
            return
        node = self._node
        stamp = stamp_to_ns(header.stamp.sec, header.stamp.nanosec)
        tol = int(node.get_parameter("depth.stamp_tolerance").value * 1e9)
        try:
            depth_msg = self._depths.get(stamp, tol)
        except FrameNotCachedError as exc:
            text = str(exc).replace("no cached frame", "no depth image").replace(
                "no frame has been encoded yet", "no depth image received yet")
            self._problem("missing", f"no 3D for frame {stamp / 1e9:.3f}: {text}", "no_depth")
            return
        info = self._info
        if info is None:
            self._problem("info", "no 3D: no CameraInfo received on camera_info yet", "no_camera_info")
            return
        cfg = extract_config(node)
        want_points = self.publishers["points"].get_subscription_count() > 0
        try:
            cam = PinholeCamera.from_k(info.k, info.width, info.height)
            raw = image_msg_to_array(depth_msg, encodings=_DEPTH_MSG_ENCODINGS)
            res = extract_instances_3d(inst.crops(), inst.image_hw,
                                       depth_to_metres(raw, depth_msg.encoding, cfg), cam, cfg,
                                       node.get_parameter("depth.points_stride").value if want_points else 0)
        except (DepthError, ImageMessageError) as exc:
            self._problem("refused", f"no 3D for frame {stamp / 1e9:.3f}: {exc}", "refused")
            return
        n_bad = int((~res.valid).sum())
        if n_bad:
            self.counts["instances_without_depth"] += n_bad
            self._warn("depth_points", f"{n_bad} of {len(res)} instances have fewer than {cfg.min_points} "
                       f"valid depth points (holes, out of [{cfg.min_depth_m}, {cfg.max_depth_m}] m, or "
                       f"wrong units): left out of ~/instances_3d")
        ids = [int(i) for i in ids]
        now = {ids[i] for i in range(len(ids)) if res.valid[i]}
        self.publishers["instances_3d"].publish(instances3d_to_msg(res, ids, header, depth_msg.header.stamp))
        if want_points:
            self.publishers["points"].publish(points_to_cloud(res, ids, header))
        self.publishers["markers"].publish(markers(res, ids, header, self._shown - now))
        self._shown = now
        self._failing = False
        self.counts["frames_3d"] += 1
        self.counts["instances_3d"] += len(now)

    def diagnostic_status(self) -> list:
        """[] when off; else one "<node>: depth" status: WARN while the last frame had a problem."""
        if not self.enabled:
            return []
        c = self.counts
        ok = c["depth_in"] > 0 and self._info is not None and not self._failing
        status = DiagnosticStatus(level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
                                  name=f"{self._node.get_name()}: depth",
                                  message="running" if ok else (self.last_problem or "waiting for depth"))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in c.items()]
        status.values += [KeyValue(key="camera_info", value="yes" if self._info is not None else "no"),
                          KeyValue(key="buffered_depth", value=str(len(self._depths))),
                          KeyValue(key="last_problem", value=self.last_problem)]
        return [status]


__all__ = ["Depth3D", "depth_requested", "extract_config"]
