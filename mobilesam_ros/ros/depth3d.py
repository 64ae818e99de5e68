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
is used. A frame whose results are ready before its depth (routine on a GPU) waits for it up to
`depth.max_wait_s`: its 3D job is kept (at most `depth.buffer_size` jobs) and completed from the
depth callback when a depth image within the tolerance arrives, or dropped with the "no depth"
warning when the wait runs out or the depth stream has passed its stamp. Only the 3D outputs wait:
the 2D outputs are already out and the worker thread never waits. Depth images over
`image.max_pixels` are refused on arrival (before they are buffered). Problems (no/stale depth, no
CameraInfo, unknown encoding, too large, another aspect, too few valid points) give one throttled
warning per kind and are counted in the "<node>: depth" diagnostics; the 2D outputs are never held
back by them.

Sources (Instance3DArray.SOURCE_*): SegEvery frames, SegAny answers and followed objects each have
their own marker namespaces and their own set of shown ids, so one source never deletes another's
markers.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

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

EXPIRE_PERIOD_S = 0.05  # how often waits for depth are checked: a wait ends at most this late
_DEPTH_MSG_ENCODINGS = {enc: (dtype, 1) for enc, (dtype, _) in DEPTH_ENCODINGS.items()}


def depth_requested(node, settings: Settings, topics: CameraTopics) -> bool:
    """`depth.enabled`, or this camera's `depth` remapped to another name than its own expansion."""
    name = topics.input("depth")
    return settings.depth.enabled or \
        node.resolve_topic_name(name) != node.resolve_topic_name(name, only_expand=True)


@dataclass
class _Job:
    """The 3D outputs of one published 2D result, waiting for (or given) its depth."""

    crops: list             # Instances.crops(): per instance (x0, y0, (h, w) bool), colour px
    image_hw: tuple         # the colour frame's (H, W)
    header: object          # the colour image's std_msgs/Header
    ids: list
    source: str
    stamp_ns: int
    deadline: float         # time.monotonic() after which the wait for depth is over
    extra: object = None    # handed to on_3d with the 3D message (the vision_msgs hypotheses)

    def detach(self) -> "_Job":
        """Before waiting: own copies of the mask crops, so that a waiting job keeps neither the
        full-frame masks nor the frame (its image and embedding) alive."""
        self.crops = [(x0, y0, np.array(c, bool, copy=True)) for x0, y0, c in self.crops]
        return self


class Depth3D:
    """One camera's 3D side, owned by its camera port: created at configure (publishers),
    subscribed at activate (with the timer that ends waits), called from the worker thread with
    every published result (`publish`); depth callbacks complete waiting jobs on the executor. One
    lock serialises the two. `settings` is swapped by the port when parameters change.
    """

    def __init__(self, node, warn: Callable[[str, str], None], topics: CameraTopics, settings: Settings) -> None:
        self._node, self._warn, self._topics = node, warn, topics
        self.settings = settings
        self.enabled = depth_requested(node, settings, topics)
        self._depths: EmbeddingCache = EmbeddingCache(settings.depth.buffer_size)
        self._info: Optional[CameraInfo] = None
        self._shown: dict[str, set[int]] = {}   # per source: ids whose markers are on screen
        self._pending: list[_Job] = []          # waiting for depth, in publish order
        self._lock = threading.Lock()
        self._timer = None
        self.counts = {k: 0 for k in ("depth_in", "frames_3d", "no_depth", "no_camera_info",
                                      "refused", "instances_3d", "instances_without_depth",
                                      "waited_for_depth")}
        self.last_problem = ""
        self._failing = False              # the last segmented frame got no 3D
        self.publishers: dict = {}
        self.on_3d: Optional[Callable] = None  # on_3d(Instance3DArray, extra) after each 3D result
        if self.enabled:
            out = topics.output
            self.publishers = {
                "instances_3d": node.create_lifecycle_publisher(Instance3DArray, out("instances_3d"), 10),
                "points": node.create_lifecycle_publisher(PointCloud2, out("points"), 10),
                "markers": node.create_lifecycle_publisher(MarkerArray, out("markers"), 10)}
            node.get_logger().info(f"3D on: depth from {node.resolve_topic_name(topics.input('depth'))}, "
                                   f"intrinsics from {node.resolve_topic_name(topics.input('camera_info'))}")

    def subscriptions(self, qos) -> list:
        """The depth + camera_info subscriptions (and the timer ending waits for depth)."""
        if not self.enabled:
            return []
        self._timer = self._node.create_timer(EXPIRE_PERIOD_S, self._expire)
        return [self._node.create_subscription(Image, self._topics.input("depth"), self._on_depth, qos),
                self._node.create_subscription(CameraInfo, self._topics.input("camera_info"), self._on_info, qos)]

    def stop(self) -> None:
        """At deactivate: no more waiting jobs, no timer."""
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        with self._lock:
            self._pending = []

    # ------------------------------------------------------------------ inputs (executor thread)
    def _on_depth(self, msg: Image) -> None:
        if msg.encoding not in DEPTH_ENCODINGS:  # refused on arrival: it concerns the whole stream
            self._problem("encoding", f"skipping depth: unsupported depth encoding {msg.encoding!r} "
                          f"(supported: 16UC1 / mono16 in millimetres, 32FC1 in metres)", "refused")
            return
        max_px = self.settings.image.max_pixels
        if msg.width * msg.height > max_px:  # the colour limit: 30 buffered giants would be GBs
            self._problem("size", f"skipping depth {msg.width}x{msg.height}: over the image.max_pixels "
                          f"= {max_px} pixel limit", "refused")
            return
        self.counts["depth_in"] += 1
        stamp = header_ns(msg.header)
        self._depths.put(stamp, msg)
        with self._lock:
            waiting, self._pending = self._pending, []
            tol = self._tolerance_ns()
            for job in waiting:
                if abs(job.stamp_ns - stamp) <= tol:
                    self._emit(job, msg)
                elif job.stamp_ns + tol < stamp:   # the depth stream has passed it: none will come
                    self._give_up(job, "the depth stream is past its stamp")
                else:
                    self._pending.append(job)

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    def _expire(self) -> None:
        """Timer: drop the jobs whose wait for depth is over, with the "no depth" warning."""
        now = time.monotonic()
        with self._lock:
            over = [j for j in self._pending if j.deadline <= now]
            self._pending = [j for j in self._pending if j.deadline > now]
            for job in over:
                self._give_up(job)

    def _problem(self, key: str, text: str, counter: str) -> None:
        self.counts[counter] += 1
        self.last_problem = text
        self._failing = True
        self._warn(f"depth_{key}", text)

    def _tolerance_ns(self) -> int:
        return int(self.settings.depth.stamp_tolerance_s * 1e9)

    def _give_up(self, job: _Job, why: str = "") -> None:
        try:  # the cache's own text says what is buffered
            self._depths.get(job.stamp_ns, self._tolerance_ns())
            text = "no depth image arrived in time"
        except FrameNotCachedError as exc:
            text = str(exc).replace("no cached frame", "no depth image").replace(
                "no frame has been encoded yet", "no depth image received yet")
        if not why:
            why = f"waited depth.max_wait_s = {self.settings.depth.max_wait_s} s"
        self._problem("missing", f"no 3D for frame {job.stamp_ns / 1e9:.3f} ({job.source}): {text}; {why}",
                      "no_depth")

    # ------------------------------------------------------------------ output (worker thread)
    def publish(self, inst, header, ids, source: str = Instance3DArray.SOURCE_SEGEVERY, extra=None) -> None:
        """3D outputs of one published result (instances `inst`, 2D ids `ids`, colour `header`,
        `source` = Instance3DArray.SOURCE_*): now if its depth is buffered, else when it arrives
        (within depth.max_wait_s); never waits here."""
        if not self.enabled or not self.publishers:
            return
        stamp = header_ns(header)
        wait = float(self.settings.depth.max_wait_s)
        job = _Job(inst.crops(), inst.image_hw, header, [int(i) for i in ids], source, stamp,
                   time.monotonic() + wait, extra)
        tol = self._tolerance_ns()
        with self._lock:
            try:
                depth_msg = self._depths.get(stamp, tol)
            except FrameNotCachedError:
                newest = self._depths.find(None)[0] if len(self._depths) else None
                if wait <= 0 or (newest is not None and newest > stamp + tol):
                    self._give_up(job, "depth.max_wait_s = 0" if wait <= 0 else "the depth stream is past its stamp")
                    return
                self.counts["waited_for_depth"] += 1
                self._pending.append(job.detach())
                limit = self._depths.capacity   # depth.buffer_size bounds the waiting jobs too
                while len(self._pending) > limit:
                    self._give_up(self._pending.pop(0), f"more than depth.buffer_size = {limit} frames waiting")
                return
            self._emit(job, depth_msg)

    def _emit(self, job: _Job, depth_msg) -> None:
        """Compute and publish the 3D outputs of `job` with `depth_msg` (caller holds the lock)."""
        s, stamp, ids, source = self.settings, job.stamp_ns, job.ids, job.source
        info = self._info
        if info is None:
            self._problem("info", "no 3D: no CameraInfo received on camera_info yet", "no_camera_info")
            return
        cfg = s.extract3d
        want_points = self.publishers["points"].get_subscription_count() > 0
        try:
            cam = PinholeCamera.from_k(info.k, info.width, info.height)
            raw = image_msg_to_array(depth_msg, max_pixels=s.image.max_pixels,
                                     encodings=_DEPTH_MSG_ENCODINGS)
            res = extract_instances_3d(job.crops, job.image_hw,
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
        header = job.header
        now = {ids[i] for i in range(len(ids)) if res.valid[i]}
        msg3d = instances3d_to_msg(res, ids, header, depth_msg.header.stamp, source)
        self.publishers["instances_3d"].publish(msg3d)
        if self.on_3d is not None:  # the same result as vision_msgs (ros/vision_msgs_port.py)
            self.on_3d(msg3d, job.extra)
        if want_points:
            self.publishers["points"].publish(points_to_cloud(res, ids, header))
        self.publishers["markers"].publish(markers(res, ids, header, self._shown.get(source, set()) - now,
                                                   source))
        self._shown[source] = now
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
                          KeyValue(key="waiting_for_depth", value=str(len(self._pending))),
                          KeyValue(key="last_problem", value=self.last_problem)]
        return [status]


__all__ = ["Depth3D", "depth_requested"]
