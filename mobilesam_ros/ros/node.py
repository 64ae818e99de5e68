"""The mobilesam lifecycle node: a thin rclpy adapter over one shared model and one core
CameraStream per camera.

configure: read the parameters into one Settings snapshot (a bad value fails the transition with
the parameter, the value and what is allowed), load the model once (a bad checkpoint fails the
transition with the reason), make one CameraPort per camera (publishers, service). activate:
subscribe and start the worker (`workers` threads) that serves every camera fairly. deactivate:
stop both, keep the model. cleanup / shutdown: free it.

Cameras (parameter `cameras`): unset or empty, one camera on the topics below; with
`cameras:=[front, rear]` every topic and service is per camera, `front/image` in and
`~/front/instances` out and so on (ros/topics.py).

Topics of a camera (relative names: remap them):
  in   image (sensor_msgs/Image), image/compressed (sensor_msgs/CompressedImage): SensorDataQoS
  in   prompt (mobilesam_ros/Prompt), clicked_point (geometry_msgs/PointStamped: x, y = pixel)
  out  ~/instances (mobilesam_ros/InstanceMaskArray), ~/label_image (mono16), ~/overlay (rgb8,
       only rendered while someone subscribes), ~/followed; service ~/remove_objects
  3D   depth + camera_info in -> ~/instances_3d, ~/points, ~/markers out: see ros/depth3d.py
  vision_msgs  detections in, ~/detections[/segany|/followed] and ~/detections_3d[...] out: see
       ros/vision_msgs_port.py (off, logged once, without vision_msgs)
  and /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz): one status per camera
"""
from __future__ import annotations

import gc
import logging
from dataclasses import replace
import os
import sys
import threading
import time
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from mobilesam_ros.core.config import CpuPolicy
from mobilesam_ros.ros import params as P
from mobilesam_ros.ros.camera_port import CameraPort, IdCounters
from mobilesam_ros.ros.topics import CameraTopics
from mobilesam_ros.ros.worker import Abandoned, LatestFrameWorker, thread_count

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
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._settings = None
        self._model = None
        self._ports: dict[str, CameraPort] = {}
        # per camera, for the process's life: a track id or a click id is never given twice
        self._trackers: dict = {}
        self._ids: dict = {}
        self._worker: Optional[LatestFrameWorker] = None
        self._warned: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._warn_lock = threading.Lock()  # worker threads and ROS callbacks all warn
        self._diag_timer = None
        self._diag_pub = None
        if P.autostart(self):
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
        values = P.read_all(self)
        t0 = time.perf_counter()
        try:
            settings = P.settings(values, P.camera_names(self))  # the values just read, not a second read
            # process-wide, so here at the entry point, and before anything imports torch: its
            # OpenMP runtime reads OMP_WAIT_POLICY once, when it is loaded
            policy = P.build(CpuPolicy, values)
            self.get_logger().info(f"CPU policy: {describe(apply_process_policy(policy))}")
            from mobilesam_ros.core.engine.model import load_model

            pipeline = P.pipeline_config(values)
            # one ONNX Runtime session per worker thread that can run at once
            threads = thread_count(settings.node.workers, len(settings.node.camera_keys))
            pipeline = replace(pipeline, model=replace(pipeline.model, sessions=threads))
            self._model = load_model(pipeline)
        except Exception as exc:  # noqa: BLE001  any load failure must fail the transition, with why
            hint = "" if values["model.checkpoint"] else " (parameter model.checkpoint is empty)"
            self.get_logger().error(f"configure failed: {exc}{hint}")
            self._model = None
            return TransitionCallbackReturn.FAILURE
        self._settings = settings
        names = settings.node.camera_keys
        self.get_logger().info(f"model ready in {time.perf_counter() - t0:.1f} s: {self._model.describe()}"
                               + (f"; cameras {list(names)}" if settings.node.cameras else ""))
        from mobilesam_ros.core.engine.tracking import Tracker

        self._ports = {n: CameraPort(self, CameraTopics(n), self._model, settings, pipeline.cache_size, self._warn,
                                     self._trackers.setdefault(n, Tracker(settings.tracker)),
                                     self._ids.setdefault(n, IdCounters()))
                       for n in names}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        s = self._settings
        qos = (QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE) if s.image.reliable
               else qos_profile_sensor_data)
        self._worker = LatestFrameWorker(self._process_frame, self._process_prompt, self._on_worker_error,
                                         keys=list(self._ports), prompt_queue=s.segany.prompt_queue,
                                         threads=s.node.workers)
        for port in self._ports.values():
            port.activate(self._worker, qos)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"active: mode={s.node.mode}"
                               + (f", {self._worker.threads} worker threads" if self._worker.threads > 1 else ""))
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

    def destroy_node(self) -> None:
        """Also release the lifecycle state machine, which rclpy's LifecycleNode leaves alive: it
        holds the rcl node, so the node (and, as its context's last one, the DDS participant) was
        finalised only by a later garbage collection, while it still showed in the graph. A
        participant torn down by the GC while another one is being created in the process
        deadlocked Fast DDS (seen as a test run hung in rclpy.Time())."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def _stop_processing(self, join_timeout: float = 10.0) -> bool:
        """Unsubscribe and stop the worker; False if it was still inside a model call after
        join_timeout seconds (it is abandoned: a daemon thread)."""
        for port in self._ports.values():
            port.deactivate()
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
        for port in self._ports.values():
            port.release()  # their cached frames and followed objects go with the model
        self._ports = {}
        if getattr(self, "_diag_pub", None) is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._model is not None:
            self._model.close()
            self._model = None
            gc.collect()  # drop the weights and cached embeddings now, not at some later GC
            self.get_logger().info("model released")

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def _on_parameters_set(self, params) -> None:
        """After an accepted change: one new snapshot for every camera (nothing reads a parameter
        per frame)."""
        if self._settings is None:
            return
        self._settings = P.read_settings(self)
        for port in self._ports.values():
            port.update(self._settings)

    # ------------------------------------------------------------------ problems
    def _warn(self, kind: str, text: str) -> None:
        """At most one log line per `kind` of problem per WARN_PERIOD_S, however the text varies
        (a hostile stream can make every text unique): bad streams must not flood /rosout. Kinds
        are a fixed, small set (input + exception class); the count of lines held back is added."""
        with self._warn_lock:
            now = time.monotonic()
            if now - self._warned.get(kind, -1e9) < WARN_PERIOD_S:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._warned[kind] = now
            held = self._suppressed.pop(kind, 0)
        self.get_logger().warning(text + (f" ({held} more like this suppressed)" if held else ""))

    # ------------------------------------------------------------------ worker side
    def _on_worker_error(self, kind: str, key: str, item, exc: BaseException) -> None:
        if self._worker is None or self._worker.stopping:
            return  # shutting down: the abandoned item is expected, not a problem to report
        where = f"{key} " if key else ""
        self._warn(f"worker_{kind}_{type(exc).__name__}", f"{where}{kind} failed: {type(exc).__name__}: {exc}")

    def _process_frame(self, key: str, item) -> None:
        self._ports[key].process_frame(item)

    def _process_prompt(self, key: str, item) -> None:
        self._ports[key].process_prompt(item, self._batch_check())

    def _batch_check(self):
        """check(done, total) for one prompt batch: raises Abandoned past segany.max_batch_s or
        once the worker is stopping (called between decoder chunks)."""
        budget = self._settings.segany.max_batch_s
        deadline = time.monotonic() + budget
        worker = self._worker

        def check(done: int, total: int) -> None:
            if worker is None or worker.stopping:
                raise Abandoned("the node is stopping")
            if time.monotonic() > deadline:
                raise Abandoned(f"segany.max_batch_s = {budget} s spent after {done} of {total} objects")
        return check

    def _publish_diagnostics(self) -> None:
        w = self._worker
        if w is None or self._diag_pub is None:
            return
        hw = self._model.describe() if self._model else ""
        status = [s for key, port in self._ports.items()
                  for s in port.diagnostic_status(w.stats[key], w.in_progress(key), hw)]
        self._diag_pub.publish(DiagnosticArray(header=self._diag_header(), status=status))

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
