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

from mobilesam_ros.core.config import Settings
from mobilesam_ros.core.engine.embedding_cache import EmbeddingCache, FrameNotCachedError
from mobilesam_ros.core.ops.geometry3d import (DEPTH_ENCODINGS, DepthError, PinholeCamera,
                                           depth_to_metres, extract_instances_3d)
from mobilesam_ros.core.io.image_codec import ImageMessageError, image_msg_to_array
from mobilesam_ros.msg import Instance3DArray
from mobilesam_ros.ros.messages3d import instances3d_to_msg, markers, points_to_cloud
from mobilesam_ros.ros.stamps import header_ns
from mobilesam_ros.ros.topics import CameraTopics

_DEPTH_MSG_ENCODINGS = {enc: (dtype, 1) for enc, (dtype, _) in DEPTH_ENCODINGS.items()}


def depth_requested(node, settings: Settings, topics: CameraTopics) -> bool:
    """`depth.enabled`, or this camera's `depth` remapped to another name than its own expansion."""
    name = topics.input("depth")
    return settings.depth.enabled or \
        node.resolve_topic_name(name) != node.resolve_topic_name(name, only_expand=True)


class Depth3D:
    """One camera's 3D side, owned by its camera port: created at configure (publishers),
    subscribed at activate, called from the worker thread with every published result
    (`publish`); `settings` is swapped by the port when parameters change."""

    def __init__(self, node, warn: Callable[[str, str], None], topics: CameraTopics, settings: Settings) -> None:
        self._node, self._warn, self._topics = node, warn, topics
        self.settings = settings
        self.enabled = depth_requested(node, settings, topics)
        self._depths: EmbeddingCache = EmbeddingCache(settings.depth.buffer_size)
        self._info: Optional[CameraInfo] = None
        self._shown: set[int] = set()      # ids whose markers are on screen (DELETE when gone)
        self.counts = {k: 0 for k in ("depth_in", "frames_3d", "no_depth", "no_camera_info",
                                      "refused", "instances_3d", "instances_without_depth")}
        self.last_problem = ""
        self._failing = False              # the last segmented frame got no 3D
        self.publishers: dict = {}
        if self.enabled:
            out = topics.output
            self.publishers = {
                "instances_3d": node.create_lifecycle_publisher(Instance3DArray, out("instances_3d"), 10),
                "points": node.create_lifecycle_publisher(PointCloud2, out("points"), 10),
                "markers": node.create_lifecycle_publisher(MarkerArray, out("markers"), 10)}
            node.get_logger().info(f"3D on: depth from {node.resolve_topic_name(topics.input('depth'))}, "
                                   f"intrinsics from {node.resolve_topic_name(topics.input('camera_info'))}")

    def subscriptions(self, qos) -> list:
        if not self.enabled:
            return []
        return [self._node.create_subscription(Image, self._topics.input("depth"), self._on_depth, qos),
                self._node.create_subscription(CameraInfo, self._topics.input("camera_info"), self._on_info, qos)]

    # ------------------------------------------------------------------ inputs (executor thread)
    def _on_depth(self, msg: Image) -> None:
        if msg.encoding not in DEPTH_ENCODINGS:  # refused on arrival: it concerns the whole stream
            self._problem("encoding", f"skipping depth: unsupported depth encoding {msg.encoding!r} "
                          f"(supported: 16UC1 / mono16 in millimetres, 32FC1 in metres)", "refused")
            return
        self.counts["depth_in"] += 1
        self._depths.put(header_ns(msg.header), msg)

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
        s = self.settings
        stamp = header_ns(header)
        tol = int(s.depth.stamp_tolerance_s * 1e9)
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
        cfg = s.extract3d
        want_points = self.publishers["points"].get_subscription_count() > 0
        try:
            cam = PinholeCamera.from_k(info.k, info.width, info.height)
            raw = image_msg_to_array(depth_msg, encodings=_DEPTH_MSG_ENCODINGS)
            res = extract_instances_3d(inst.crops(), inst.image_hw,
                                       depth_to_metres(raw, depth_msg.encoding, cfg), cam, cfg,
                                       s.depth.points_stride if want_points else 0)
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
                                  name=f"{self._node.get_name()}: {self._topics.prefix}depth",
                                  message="running" if ok else (self.last_problem or "waiting for depth"))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in c.items()]
        status.values += [KeyValue(key="camera_info", value="yes" if self._info is not None else "no"),
                          KeyValue(key="buffered_depth", value=str(len(self._depths))),
                          KeyValue(key="last_problem", value=self.last_problem)]
        return [status]


__all__ = ["Depth3D", "depth_requested"]
