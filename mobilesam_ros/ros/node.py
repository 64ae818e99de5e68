"""The mobilesam lifecycle node: a thin rclpy adapter over core.engine.pipeline.

configure: read parameters, load the models (a bad checkpoint fails the transition with the reason),
create the lifecycle publishers. activate: subscribe and start the worker. deactivate: stop both,
keep the model. cleanup / shutdown: free the model.

Topics (relative names: remap them):
  in   image (sensor_msgs/Image), image/compressed (sensor_msgs/CompressedImage): SensorDataQoS
  in   prompt (mobilesam_ros/Prompt), clicked_point (geometry_msgs/PointStamped: x, y = pixel)
  out  ~/instances (mobilesam_ros/InstanceMaskArray), ~/label_image (mono16), ~/overlay (rgb8,
       only rendered while someone subscribes), /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz)
  3D   depth + camera_info in -> ~/instances_3d, ~/points, ~/markers out: see ros/depth3d.py
  ids  SegEvery ids are track ids (ros/tracking_adapter.py); click-to-track publishes ~/followed and
       serves ~/remove_objects (ros/follow_adapter.py)
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import time
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from mobilesam_ros.core.config import CpuPolicy, FilterConfig
from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError, stamp_to_ns
from mobilesam_ros.core.structures.prompts import PromptError
from mobilesam_ros.msg import Instance3DArray, InstanceMaskArray, Prompt
from mobilesam_ros.ros import params as P
from mobilesam_ros.core.io.image_codec import ImageMessageError, compressed_msg_to_rgb, image_msg_to_rgb
from mobilesam_ros.ros.messages import array_to_image_msg
from mobilesam_ros.ros.depth3d import Depth3D
from mobilesam_ros.ros.messages import instances_to_msg, label_image, overlay_image
from mobilesam_ros.ros.prompt_conversions import click_to_prompts, prompt_msg_to_prompts
from mobilesam_ros.ros.follow_adapter import FollowAdapter
from mobilesam_ros.ros.tracking_adapter import SegEveryTracking
from mobilesam_ros.ros.worker import Abandoned, LatestFrameWorker

WARN_PERIOD_S = 2.0
# On SIGINT/SIGTERM the worker gets this long to leave its item (prompt batches stop between
# decoder chunks); the rest of the exit fits in the remaining second of the 2 s promised.
SHUTDOWN_JOIN_S = 1.0


class MobileSamNode(LifecycleNode):
    def __init__(self, node_name: str = "mobilesam", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        forward_core_logging(self.get_logger())
        # bad start-up values (a typo in a launch argument) fail configure, naming each one
        self._param_errors = P.declare_all(self)
        self.add_on_set_parameters_callback(P.check_choices)
        self._tracking = SegEveryTracking(self)  # one per process: ids are never reused
        self._follow = FollowAdapter(self, self._warn)  # click-to-track; ~/remove_objects
        self._pipeline = None
        self._worker: Optional[LatestFrameWorker] = None
        self._subs: list = []
        self._pubs: dict = {}
        self._frame_count = 0
        self._last_processed = 0.0
        self._warned: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._diag_timer = None
        self._diag_pub = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state) -> TransitionCallbackReturn:
        from mobilesam_ros.core.runtime.cpu_policy import apply_process_policy, describe

        if self._param_errors:
            self.get_logger().error("configure failed: invalid parameter values: " + "; ".join(self._param_errors))
            return TransitionCallbackReturn.FAILURE
        cfg = P.read_all(self)
        t0 = time.perf_counter()
        try:
            # process-wide, so here at the entry point, and before anything imports torch: its
            # OpenMP runtime reads OMP_WAIT_POLICY once, when it is loaded
            policy = P.build(CpuPolicy, cfg)
            self.get_logger().info(f"CPU policy: {describe(apply_process_policy(policy))}")
            from mobilesam_ros.core.engine.pipeline import build_pipeline

            self._pipeline = build_pipeline(P.pipeline_config(cfg))
        except Exception as exc:  # noqa: BLE001  any load failure must fail the transition, with why
            hint = "" if cfg["model.checkpoint"] else " (parameter model.checkpoint is empty)"
            self.get_logger().error(f"configure failed: {exc}{hint}")
            self._pipeline = None
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"model ready in {time.perf_counter() - t0:.1f} s: {self._pipeline.describe()}")
        self._pubs = {
            "instances": self.create_lifecycle_publisher(InstanceMaskArray, "~/instances", 10),
            "label": self.create_lifecycle_publisher(Image, "~/label_image", 10),
            "overlay": self.create_lifecycle_publisher(Image, "~/overlay", 10),
            "followed": self.create_lifecycle_publisher(InstanceMaskArray, "~/followed", 10),
        }
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._depth3d = Depth3D(self, self._warn)  # 3D outputs; creates nothing while 3D is off
        self._pubs.update(self._depth3d.publishers)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        reliable = self.get_parameter("image.reliable").value
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self._worker = LatestFrameWorker(self._process_frame, self._process_prompt, self._on_worker_error,
                                         prompt_queue=self.get_parameter("segany.prompt_queue").value)
        self._subs = [
            self.create_subscription(Image, "image", self._on_image, qos),
            self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos),
        ] + self._depth3d.subscriptions(qos)
        if self.get_parameter("mode").value in ("segany", "both"):
            self._subs += [self.create_subscription(Prompt, "prompt", self._on_prompt, 10),
                           self.create_subscription(PointStamped, "clicked_point", self._on_click, 10)]
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"active: mode={self.get_parameter('mode').value}")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self, join_timeout: float = 10.0) -> bool:
        """Unsubscribe and stop the worker; False if it was still inside a model call after
        join_timeout seconds (it is abandoned: a daemon thread)."""
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if getattr(self, "_depth3d", None) is not None:
            self._depth3d.stop()  # its waiting 3D jobs and their timer
        stopped = True
        if self._worker is not None:
            stopped = self._worker.stop(join_timeout)
            self._worker = None
        return stopped

    def _release(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if getattr(self, "_diag_pub", None) is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        self._follow.clear()  # their cached frames go with the model
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
            gc.collect()  # drop the weights and cached embeddings now, not at some later GC
            self.get_logger().info("model released")

    @property
    def model_loaded(self) -> bool:
        return self._pipeline is not None

    # ------------------------------------------------------------------ input callbacks
    def _warn(self, kind: str, text: str) -> None:
        """At most one log line per `kind` of problem per WARN_PERIOD_S, however the text varies
        (a hostile stream can make every text unique): bad streams must not flood /rosout. Kinds
        are a fixed, small set (input + exception class); the count of lines held back is added."""
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) >= WARN_PERIOD_S:
            self._warned[kind] = now
            held = self._suppressed.pop(kind, 0)
            self.get_logger().warning(text + (f" ({held} more like this suppressed)" if held else ""))
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1

    def _accept_frame(self) -> bool:
        self._frame_count += 1
        if self._frame_count % self.get_parameter("segevery.every_n").value:
            return False
        rate = self.get_parameter("segevery.max_rate_hz").value
        now = time.monotonic()
        if rate > 0 and now - self._last_processed < 1.0 / rate:
            return False
        self._last_processed = now
        return True

    def _on_image(self, msg: Image) -> None:
        self._submit(msg, lambda m, px: image_msg_to_rgb(m, max_pixels=px))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._submit(msg, lambda m, px: compressed_msg_to_rgb(m, max_pixels=px))

    def _submit(self, msg, decode) -> None:
        if self._worker is None or not self._accept_frame():
            return
        try:
            rgb = decode(msg, self.get_parameter("image.max_pixels").value)
        except ImageMessageError as exc:
            self._warn(f"image_{type(exc).__name__}",
                       f"skipping image (stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}): {exc}")
            return
        self._worker.submit_frame((rgb, msg.header))

    def _on_prompt(self, msg: Prompt) -> None:
        if self._worker is not None:
            self._worker.submit_prompt(("prompt", msg))

    def _on_click(self, msg: PointStamped) -> None:
        if self._worker is not None:
            self._worker.submit_prompt(("click", msg))

    # ------------------------------------------------------------------ worker side
    def _on_worker_error(self, kind: str, item, exc: BaseException) -> None:
        if self._worker is None or self._worker.stopping:
            return  # shutting down: the abandoned item is expected, not a problem to report
        self._warn(f"worker_{kind}_{type(exc).__name__}", f"{kind} failed: {type(exc).__name__}: {exc}")

    def _process_frame(self, item) -> None:
        rgb, header = item
        stamp = stamp_to_ns(header.stamp.sec, header.stamp.nanosec)
        mode = self.get_parameter("mode").value
        if mode == "segany":
            frame = self._pipeline.encode(rgb, stamp, meta=header)
            self._followed_3d(self._follow.step(self._pipeline, frame, self._pubs.get("followed")), header)
            return
        self._pipeline.set_detector_thresholds(self.get_parameter("detector.conf").value,
                                               self.get_parameter("detector.iou").value)
        inst = self._pipeline.segment_every(rgb, stamp, self._filters(), meta=header)
        tracks = self._tracking.update(inst, stamp)  # None: tracking.enabled is false
        ids = None if tracks is None else [int(i) for i in tracks.ids]
        self._publish(inst, InstanceMaskArray.MODE_SEGEVERY, ids, tracks)
        self._followed_3d(self._follow.step(self._pipeline, inst.frame, self._pubs.get("followed"), inst),
                          header)

    def _followed_3d(self, followed, header) -> None:
        """3D of the objects just published on ~/followed (source followed): (instances, ids) or None."""
        if followed is not None and self._pubs:
            self._depth3d.publish(followed[0], header, followed[1], Instance3DArray.SOURCE_FOLLOWED)

    def _process_prompt(self, item) -> None:
        kind, msg = item
        pipe = self._pipeline
        try:
            if kind == "click":
                stamp, objects, ids = click_to_prompts(msg, pipe, self._tolerance_ns())
            else:
                stamp, objects, ids = prompt_msg_to_prompts(
                    msg, pipe, self._tolerance_ns(), self.get_parameter("segany.max_objects").value,
                    self.get_parameter("segany.max_points").value)
        except (PromptError, FrameNotCachedError) as exc:
            self._warn(f"{kind}_{type(exc).__name__}", f"skipping {kind}: {exc}")
            return
        check = self._batch_check()  # one budget for the answer and the decode that follows it
        try:
            inst = pipe.segment_prompts(objects, stamp, check)
        except Abandoned as exc:
            if self._worker is None or self._worker.stopping:
                return  # shutting down: rosout may already be gone, and nothing is wrong
            self._warn(f"{kind}_abandoned", f"{kind} with {len(objects)} objects abandoned unanswered: {exc}")
            return
        ids = self._follow.answer_ids(kind, ids)
        self._publish(inst, InstanceMaskArray.MODE_SEGANY, ids)
        try:
            self._follow.add(pipe, kind, msg, stamp, objects, ids, inst, check)
        except Abandoned as exc:
            if self._worker is not None and not self._worker.stopping:
                self._warn(f"{kind}_follow_abandoned", f"{kind} answered, but following its objects was "
                           f"abandoned: {exc}")

    def _batch_check(self):
        """check(done, total) for one prompt batch: raises Abandoned past segany.max_batch_s or
        once the worker is stopping (called between decoder chunks)."""
        budget = self.get_parameter("segany.max_batch_s").value
        deadline = time.monotonic() + budget
        worker = self._worker

        def check(done: int, total: int) -> None:
            if worker is None or worker.stopping:
                raise Abandoned("the node is stopping")
            if time.monotonic() > deadline:
                raise Abandoned(f"segany.max_batch_s = {budget} s spent after {done} of {total} objects")
        return check

    def _tolerance_ns(self) -> int:
        return int(self.get_parameter("segany.stamp_tolerance").value * 1e9)

    def _filters(self) -> FilterConfig:
        return P.build(FilterConfig, P.node_values(self))

    def _publish(self, inst, mode: str, ids, tracks=None) -> None:
        """Publish instances with their frame's own header (the meta it was encoded with) and
        draw the overlay on their frame's own image."""
        if not self._pubs:
            return
        header, rgb = inst.frame.meta, inst.frame.image
        ids = list(range(1, len(inst) + 1)) if ids is None else ids
        self._pubs["instances"].publish(instances_to_msg(inst, header, mode, ids, tracks))
        labels = label_image(inst)
        self._pubs["label"].publish(array_to_image_msg(labels, "mono16", header))
        if self._pubs["overlay"].get_subscription_count() > 0 and rgb is not None:
            over = overlay_image(rgb, inst, labels, ids, self.get_parameter("overlay.alpha").value)
            self._pubs["overlay"].publish(array_to_image_msg(over, "rgb8", header))
        source = (Instance3DArray.SOURCE_SEGEVERY if mode == InstanceMaskArray.MODE_SEGEVERY
                  else Instance3DArray.SOURCE_SEGANY)
        self._depth3d.publish(inst, header, ids, source)

    def _publish_diagnostics(self) -> None:
        w = self._worker
        if w is None or self._diag_pub is None:
            return
        s = w.stats
        busy_with, busy_s = w.in_progress()
        lat = sorted(s.latencies_s)
        med = lat[len(lat) // 2] if lat else 0.0
        level = DiagnosticStatus.OK if s.errors == 0 else DiagnosticStatus.WARN
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: segmentation",
                                  hardware_id=self._pipeline.describe() if self._pipeline else "",
                                  message="running" if level == DiagnosticStatus.OK else f"{s.errors} errors")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("frames_in", s.frames_in), ("frames_done", s.frames_done), ("frames_dropped", s.frames_dropped),
            ("prompts_in", s.prompts_in), ("prompts_done", s.prompts_done),
            ("prompts_dropped", s.prompts_dropped), ("errors", s.errors),
            ("latency_last_s", f"{s.last_latency_s:.4f}"), ("latency_median_s", f"{med:.4f}"),
            ("cached_frames", self._pipeline.cached_frames if self._pipeline else 0),
            ("busy_with", busy_with), ("busy_s", f"{busy_s:.1f}"))]
        self._diag_pub.publish(DiagnosticArray(header=self._diag_header(),
                                               status=[status] + self._depth3d.diagnostic_status()))

    def _diag_header(self):
        from std_msgs.msg import Header

        return Header(stamp=self.get_clock().now().to_msg())


class _RosLogHandler(logging.Handler):
    """The core logs through Python's `logging` ("mobilesam_ros"); this puts it on /rosout."""

    def __init__(self, logger) -> None:
        super().__init__(logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


def forward_core_logging(ros_logger) -> None:
    core = logging.getLogger("mobilesam_ros")
    core.setLevel(logging.INFO)
    core.propagate = False
    core.handlers = [_RosLogHandler(ros_logger)]


def main(args=None) -> None:
    rclpy.init(args=args)
    node = MobileSamNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except BaseException:
        node._stop_processing(SHUTDOWN_JOIN_S)
        raise
    if node._stop_processing(SHUTDOWN_JOIN_S):
        node.destroy_node()
        rclpy.try_shutdown()
    else:
        print("mobilesam: worker still inside a model call at shutdown; not waiting for it", file=sys.stderr)
    # Skip the interpreter's teardown: with the worker abandoned inside torch it aborts in C++
    # ("terminate called without an active exception", exit -6), and even when idle, unloading
    # torch takes seconds on a busy CPU. Everything the node holds dies with the process.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
