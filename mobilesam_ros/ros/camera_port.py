"""One camera's ROS side: its topics, its service and the messages of its core CameraStream.

The node makes one port per camera (ros/topics.py names the topics). A port only converts:
messages in -> arrays for the worker (on the executor thread), and on the worker thread
`process_frame` / `process_prompt` hand them to the camera's stream and publish what comes back,
every output with the header of the frame it was computed on (`CachedFrame.meta`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CompressedImage, Image

from mobilesam_ros.core.config import Settings
from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError
from mobilesam_ros.core.engine.tracking import TRACK_CONFIRMED
from mobilesam_ros.core.io.image_codec import ImageMessageError, compressed_msg_to_rgb, image_msg_to_rgb
from mobilesam_ros.core.structures.prompts import PromptError
from mobilesam_ros.msg import Instance3DArray, InstanceMaskArray, Prompt
from mobilesam_ros.ros.depth3d import Depth3D
from mobilesam_ros.ros.detection_conversions import check_detections_size, detections_to_prompts, serialized_count
from mobilesam_ros.ros.messages import array_to_image_msg, instances_to_msg, label_image, overlay_image
from mobilesam_ros.ros.prompt_conversions import (PromptObjects, check_prompt_size, click_to_prompts,
                                                  prompt_msg_to_prompts)
from mobilesam_ros.ros.stamps import header_ns
from mobilesam_ros.ros.topics import CameraTopics
from mobilesam_ros.ros.vision_msgs_port import VisionMsgsPort
from mobilesam_ros.ros.worker import Abandoned, LatestFrameWorker, WorkerStats

if TYPE_CHECKING:  # torch loads with the engine: the node imports this before its CPU policy is set
    from mobilesam_ros.core.engine.camera_stream import FrameResult
    from mobilesam_ros.core.engine.model import SegmentationModel

CLICK_ID_BASE = 1 << 31  # click-started objects get ids from here up: clear of prompt ids in use
# instances answering the `detections` input get ids from here up to CLICK_ID_BASE - 1 (then from
# here again): apart from click ids, and from the small ids callers give their own Prompts
DETECTION_ID_BASE = 1 << 30


def _cycle(start: int, stop: int) -> Iterator[int]:
    """start, start + 1, ..., stop - 1, then start again (no list kept, unlike itertools.cycle)."""
    while True:
        yield from range(start, stop)


@dataclass
class IdCounters:
    """The ids one camera hands out: click-started objects from CLICK_ID_BASE up to 2^32 - 1,
    detections from DETECTION_ID_BASE up to CLICK_ID_BASE - 1 (each range starts again at its
    end: 2^30 detections, about 4 days of 100 detections at 30 Hz). The node keeps one per camera
    for the process's life, so no id is given twice across cleanup / configure."""

    clicks: Iterator[int] = field(default_factory=lambda: _cycle(CLICK_ID_BASE, 1 << 32))
    detections: Iterator[int] = field(default_factory=lambda: _cycle(DETECTION_ID_BASE, CLICK_ID_BASE))


class CameraPort:
    """Created at configure (publishers, service, the stream over the shared `model`), subscribed
    at activate (`activate`), released at cleanup (`release`)."""

    def __init__(self, node, topics: CameraTopics, model: SegmentationModel, settings: Settings,
                 cache_size: int, warn: Callable[[str, str], None], tracker=None,
                 ids: Optional[IdCounters] = None) -> None:
        from mobilesam_ros.core.engine.camera_stream import CameraStream
        from mobilesam_ros.srv import RemoveObjects

        self._node, self.topics, self._warn = node, topics, warn
        self.stream = CameraStream(topics.name, model, settings, cache_size, tracker)
        self.settings = settings
        self._worker: Optional[LatestFrameWorker] = None
        self._subs: list = []
        self._ids = IdCounters() if ids is None else ids
        out = topics.output
        self._pubs = {
            "instances": node.create_lifecycle_publisher(InstanceMaskArray, out("instances"), 10),
            "label": node.create_lifecycle_publisher(Image, out("label_image"), 10),
            "overlay": node.create_lifecycle_publisher(Image, out("overlay"), 10),
            "followed": node.create_lifecycle_publisher(InstanceMaskArray, out("followed"), 10),
        }
        self._srv = node.create_service(RemoveObjects, out("remove_objects"), self._on_remove)
        self.depth3d = Depth3D(node, self._warn, topics, settings)
        self._pubs.update(self.depth3d.publishers)
        self.vision = VisionMsgsPort(node, topics, self.depth3d)  # off (logged once) without vision_msgs

    @property
    def key(self) -> str:
        return self.topics.name

    def update(self, settings: Settings) -> None:
        """New parameter values: from the next frame or prompt on."""
        self.settings = settings
        self.stream.update(settings)
        self.depth3d.settings = settings

    # ------------------------------------------------------------------ lifecycle
    def activate(self, worker: LatestFrameWorker, qos) -> None:
        node, name = self._node, self.topics.input
        self._worker = worker
        self._subs = [node.create_subscription(Image, name("image"), self._on_image, qos),
                      node.create_subscription(CompressedImage, name("image/compressed"), self._on_compressed, qos)]
        self._subs += self.depth3d.subscriptions(qos)
        if self.settings.node.mode in ("segany", "both"):
            self._subs += [node.create_subscription(Prompt, name("prompt"), self._on_prompt, 10),
                           node.create_subscription(PointStamped, name("clicked_point"), self._on_click, 10)]
            self._subs += self.vision.subscribe(self._on_detections, self.settings.detections.reliable)

    def deactivate(self) -> None:
        for s in self._subs:
            self._node.destroy_subscription(s)
        self._subs = []
        self.depth3d.stop()  # its 3D jobs waiting for depth, and their timer
        self._worker = None

    def release(self) -> None:
        self.deactivate()
        for pub in self._pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.vision.release()
        self._node.destroy_service(self._srv)
        self.stream.clear()

    # ------------------------------------------------------------------ executor thread
    def _on_image(self, msg: Image) -> None:
        self._submit(msg, image_msg_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._submit(msg, compressed_msg_to_rgb)

    def _submit(self, msg, decode) -> None:
        worker = self._worker
        if worker is None or not self.stream.admit(time.monotonic()):
            return
        try:
            rgb = decode(msg, max_pixels=self.settings.image.max_pixels)
        except ImageMessageError as exc:
            self._warn(f"image_{type(exc).__name__}", f"{self.topics.prefix}skipping image (stamp "
                       f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}): {exc}")
            return
        worker.submit_frame(self.key, (rgb, msg.header))

    def _on_prompt(self, msg: Prompt) -> None:
        if self._worker is not None:
            self._worker.submit_prompt(self.key, ("prompt", msg))

    def _on_click(self, msg: PointStamped) -> None:
        if self._worker is not None:
            self._worker.submit_prompt(self.key, ("click", msg))

    def _on_detections(self, raw: bytes) -> None:
        """A serialized Detection2DArray: refused by its count (segany.max_objects) before it is
        deserialized (a flood of huge arrays must not hold up this executor thread), then queued."""
        if self._worker is None:
            return
        n, limit = serialized_count(raw), self.settings.segany.max_objects
        if n is not None and n > limit:
            self._worker.stats[self.key].prompts_in += 1  # counted like any refused prompt
            # its own kind of warning: a flood of oversized arrays must not hide other problems
            # (bad boxes share the throttle of "detections_PromptError")
            self._warn("detections_over_limit", f"{self.topics.prefix}skipping detections: {n} detections, "
                       f"over the limit of {limit} (segany.max_objects)")
            return
        from rclpy.serialization import deserialize_message
        from vision_msgs.msg import Detection2DArray

        self._worker.submit_prompt(self.key, ("detections", deserialize_message(raw, Detection2DArray)))

    def _on_remove(self, request, response):
        response.removed = self.stream.remove_followed(list(request.ids))
        return response

    # ------------------------------------------------------------------ worker thread
    def process_frame(self, item) -> None:
        rgb, header = item
        res = self.stream.step(rgb, header_ns(header), meta=header)
        if res.instances is not None:
            self._publish(res.instances, InstanceMaskArray.MODE_SEGEVERY, res.ids, res.tracks)
        self._publish_followed(res)

    def process_prompt(self, item, check: Callable[[int, int], None]) -> None:
        kind, msg = item
        s = self.settings
        try:
            if kind == "prompt":
                check_prompt_size(msg, s.segany)  # before any lookup: the cheapest refusal first
            elif kind == "detections":
                check_detections_size(msg, s.segany)
            stamp = header_ns(msg.header)
            if kind == "click":  # RViz stamps clicks with the click time (or 0), not an image stamp
                frame = self.stream.resolve(stamp or None, int(s.segany.stamp_tolerance_s * 1e9), latest_if_missing=True)
            else:
                frame = self.stream.resolve(stamp, int(s.segany.stamp_tolerance_s * 1e9))
            labels = None
            if kind == "click":
                objects = click_to_prompts(msg, frame.original_size, self._click_id(), s.node.follow_clicks)
            elif kind == "detections":
                labels = detections_to_prompts(msg, frame.original_size, s.segany, s.detections,
                                               self.stream.model.class_names)
                objects = PromptObjects(labels.prompts, *self._detection_ids(labels.boxes))
            else:
                objects = prompt_msg_to_prompts(msg, frame.original_size, s.segany)
        except (PromptError, FrameNotCachedError) as exc:
            self._warn(f"{kind}_{type(exc).__name__}", f"{self.topics.prefix}skipping {kind}: {exc}")
            return
        try:
            res = self.stream.answer(objects.prompts, frame, objects.ids, objects.follow, check,
                                     None if labels is None else labels.object_labels())
        except Abandoned as exc:
            if self._worker is None or self._worker.stopping:
                return  # shutting down: rosout may already be gone, and nothing is wrong
            self._warn(f"{kind}_abandoned", f"{self.topics.prefix}{kind} with {len(objects.prompts)} objects "
                       f"abandoned unanswered: {exc}")
            return
        inst, names, det_ids = res.instances, None, None
        if labels is not None:  # a detection's class and score stay on its instance
            inst = replace(inst, class_ids=np.asarray(labels.class_ids, np.int32).reshape(-1),
                           det_scores=np.asarray(labels.scores, np.float32).reshape(-1))
            names, det_ids = labels.class_names, labels.detection_ids
        self._publish(inst, InstanceMaskArray.MODE_SEGANY, res.ids, None, names, det_ids)
        if res.refused:
            self._warn("follow_refused", f"{self.topics.prefix}not following ids {res.refused}: "
                       f"follow.max_objects = {s.follow.max_objects} reached, or an empty mask")

    def _click_id(self) -> int:
        """A click followed under follow.clicks gets a fresh id (the one it will be followed
        under); otherwise id 1."""
        if not self.settings.node.follow_clicks:
            return 1
        return next(self._ids.clicks)

    def _detection_ids(self, boxes: np.ndarray) -> tuple[list, list]:
        """(ids, follow) of a detections array's objects: with detections.follow, a detection
        overlapping a followed object's box (IoU >= detections.follow_iou) takes its id (an update);
        every other one a new id from DETECTION_ID_BASE up."""
        cfg = self.settings.detections
        matched = self.stream.match_followed(boxes, cfg.follow_iou) if cfg.follow else [None] * len(boxes)
        ids = []
        for m in matched:
            ids.append(int(next(self._ids.detections) if m is None else m))
        return ids, [cfg.follow] * len(ids)

    def _class_names(self, inst) -> list:
        names = self.stream.model.class_names
        return [names.name(int(c)) for c in inst.class_ids]

    def _publish(self, inst, mode: str, ids, tracks=None, names=None, detection_ids=None) -> None:
        """Instances with their frame's own header and the overlay on their frame's own image.
        names: class names (default: the class table's name of each class id)."""
        if not self._pubs:
            return
        header, rgb = inst.frame.meta, inst.frame.image
        msg = instances_to_msg(inst, header, mode, ids, tracks,
                               self._class_names(inst) if names is None else names, detection_ids)
        self._pubs["instances"].publish(msg)
        labels = label_image(inst)
        self._pubs["label"].publish(array_to_image_msg(labels, "mono16", header))
        if self._pubs["overlay"].get_subscription_count() > 0 and rgb is not None:
            over = overlay_image(rgb, inst, labels, ids, self.settings.overlay.alpha)
            self._pubs["overlay"].publish(array_to_image_msg(over, "rgb8", header))
        source = (Instance3DArray.SOURCE_SEGEVERY if mode == InstanceMaskArray.MODE_SEGEVERY
                  else Instance3DArray.SOURCE_SEGANY)
        hyps = self.vision.publish(msg, source)
        self.depth3d.publish(inst, header, ids, source, hyps)

    def _publish_followed(self, res: FrameResult) -> None:
        f = res.followed
        if f is None:
            return
        log = self._node.get_logger()
        if f.reacquired:
            log.info(f"{self.topics.prefix}re-acquired followed ids {f.reacquired} from SegEvery instances",
                     throttle_duration_sec=5.0)
        if f.rewound:
            log.warning(f"{self.topics.prefix}stamps went back from {f.rewound_from_ns * 1e-9:.3f} s to "
                        f"{res.frame.stamp_ns * 1e-9:.3f} s (a looping bag, a simulator reset?): stopped "
                        f"following ids {f.rewound}")
        if f.dropped:
            log.info(f"{self.topics.prefix}stopped following ids {f.dropped}: no good mask for "
                     f"{self.settings.follow.lost_timeout_s} s")
        if self._pubs:
            ids = [int(i) for i in f.tracks.ids]
            header = res.frame.meta
            # the class name and detection id its prompt gave (a detection's), as on its answer
            msg = instances_to_msg(f.instances, header, InstanceMaskArray.MODE_SEGANY, ids, f.tracks,
                                   [lb.class_name for lb in f.labels], [lb.source_id for lb in f.labels])
            self._pubs["followed"].publish(msg)
            hyps = self.vision.publish(msg, Instance3DArray.SOURCE_FOLLOWED)
            found = np.flatnonzero(f.tracks.states == TRACK_CONFIRMED)  # lost ones have no mask: no 3D
            self.depth3d.publish(f.instances.select(found), header, [ids[k] for k in found],
                                 Instance3DArray.SOURCE_FOLLOWED, hyps)

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_status(self, stats: WorkerStats, busy: tuple[str, float], hardware_id: str) -> list:
        """This camera's "<node>: [<camera> ]segmentation" status (busy: what the worker is doing
        for this camera and for how long, `LatestFrameWorker.in_progress`), and its depth status
        when 3D is on."""
        lat = sorted(stats.latencies_s)
        med = lat[len(lat) // 2] if lat else 0.0
        level = DiagnosticStatus.OK if stats.errors == 0 else DiagnosticStatus.WARN
        status = DiagnosticStatus(level=level, name=f"{self._node.get_name()}: {self.topics.prefix}segmentation",
                                  hardware_id=hardware_id,
                                  message="running" if level == DiagnosticStatus.OK else f"{stats.errors} errors")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("frames_in", stats.frames_in), ("frames_done", stats.frames_done),
            ("frames_dropped", stats.frames_dropped), ("prompts_in", stats.prompts_in),
            ("prompts_done", stats.prompts_done), ("prompts_dropped", stats.prompts_dropped),
            ("errors", stats.errors), ("latency_last_s", f"{stats.last_latency_s:.4f}"),
            ("latency_median_s", f"{med:.4f}"), ("cached_frames", self.stream.cached_frames),
            ("busy_with", busy[0]), ("busy_s", f"{busy[1]:.1f}"))]
        return [status] + self.depth3d.diagnostic_status()


__all__ = ["CameraPort", "CLICK_ID_BASE", "DETECTION_ID_BASE", "IdCounters"]
