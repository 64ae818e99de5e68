"""One camera's vision_msgs side: the `detections` input and the Detection2DArray /
Detection3DArray outputs, wired by its CameraPort (conversions: ros/detection_conversions.py).

Topics (CameraTopics names them per camera):
  in   detections (vision_msgs/Detection2DArray): reliable QoS (detections.reliable), depth 10
  out  ~/detections, ~/detections/segany, ~/detections/followed (vision_msgs/Detection2DArray):
       one topic per source, never mixed: SegEvery frames / SegAny answers (Prompt, click and
       detections answers) / followed objects; one array per published InstanceMaskArray
  out  ~/detections_3d, ~/detections_3d/segany, ~/detections_3d/followed
       (vision_msgs/Detection3DArray): with depth, one per ~/instances_3d message of that source

vision_msgs is an optional run-time dependency: without it (not importable) these topics are off,
the process logs that once, and everything else works.
"""
from __future__ import annotations

from typing import Callable, Optional

from mobilesam_ros.msg import Instance3DArray

__all__ = ["VisionMsgsPort", "vision_msgs_missing", "SUFFIX"]

# topic suffix of each source (Instance3DArray.SOURCE_*): "" = the bare ~/detections
SUFFIX = {Instance3DArray.SOURCE_SEGEVERY: "", Instance3DArray.SOURCE_SEGANY: "/segany",
          Instance3DArray.SOURCE_FOLLOWED: "/followed"}
_logged_missing = False


def vision_msgs_missing() -> Optional[str]:
    """None when vision_msgs' Python messages import; else why not."""
    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class VisionMsgsPort:
    """Publishers at construction (the node's configure), the subscription with `subscribe`
    (activate); `enabled` is False without vision_msgs (then every method does nothing)."""

    def __init__(self, node, topics, depth3d) -> None:
        global _logged_missing
        self._node, self._topics = node, topics
        self.pubs: dict = {}
        why = vision_msgs_missing()
        self.enabled = why is None
        if not self.enabled:
            if not _logged_missing:  # once per process, however many cameras
                _logged_missing = True
                node.get_logger().warning(
                    f"vision_msgs is not available ({why}): the `detections` input and the ~/detections, "
                    f"~/detections_3d outputs are off; everything else works (install ros-<distro>-vision-msgs)")
            return
        from vision_msgs.msg import Detection2DArray, Detection3DArray

        for source, suffix in SUFFIX.items():
            self.pubs[source] = node.create_lifecycle_publisher(
                Detection2DArray, topics.output("detections" + suffix), 10)
        if depth3d.enabled:
            for source, suffix in SUFFIX.items():
                self.pubs["3d_" + source] = node.create_lifecycle_publisher(
                    Detection3DArray, topics.output("detections_3d" + suffix), 10)
            depth3d.on_3d = self.publish_3d

    def subscribe(self, callback: Callable, reliable: bool) -> list:
        """[the `detections` subscription] (reliable or best effort, depth 10), [] when off.
        callback(raw bytes): serialized messages, so that an oversized array is refused by its
        count before rclpy builds its Python objects (`detection_conversions.serialized_count`)."""
        if not self.enabled:
            return []
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import Detection2DArray

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        return [self._node.create_subscription(Detection2DArray, self._topics.input("detections"), callback, qos,
                                               raw=True)]

    def publish(self, arr, source: str) -> Optional[dict]:
        """The Detection2DArray of an InstanceMaskArray `arr` of `source`; returns its hypotheses
        by id (for the 3D detections of the same result), None when off."""
        if not self.enabled or not self.pubs:
            return None
        from mobilesam_ros.ros.detection_conversions import hypotheses_of, instances_to_detections

        self.pubs[source].publish(instances_to_detections(arr))
        return hypotheses_of(arr)

    def publish_3d(self, arr3d, hypotheses) -> None:
        """Depth3D's on_3d hook: the Detection3DArray of an Instance3DArray."""
        pub = self.pubs.get("3d_" + arr3d.source)
        if pub is None:
            return
        from mobilesam_ros.ros.detection_conversions import instances3d_to_detections

        pub.publish(instances3d_to_detections(arr3d, hypotheses or {}))

    def release(self) -> None:
        for pub in self.pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        self.pubs = {}
