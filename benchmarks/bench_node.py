#!/usr/bin/env python3
"""Node benchmark (issue 5).

1. Overhead per frame of the ROS adapter around the model, at 640x480 and 1280x720: message ->
   array (decode + checks), model (encode + detect + decode + filter), array -> messages (instance
   array with mono8 crops, mono16 label image, rgb8 overlay). Measured in-process on real messages.
2. Bounded latency: a real node process fed 30 Hz frames for --seconds while the model takes
   seconds per frame; latency from publish to answer must not grow (latest-frame policy) and the
   dropped frames are reported.

    source scripts/activate.sh && python benchmarks/bench_node.py [--json out/bench_node.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


from common import SHARED, machine, print_table, timed, write_json

CKPT = str(SHARED / "fixtures" / "mobile_sam_seed2.pt")
DET = str(SHARED / "data" / "models" / "yolov8n_int8.onnx")


def overhead(size, repeat: int) -> dict:
    import cv2
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from mobilesam_ros.core.config import DetectorConfig, ModelConfig, PipelineConfig, Settings
    from mobilesam_ros.core.engine.camera_stream import CameraStream
    from mobilesam_ros.core.engine.model import load_model
    from mobilesam_ros.core.io.image_codec import image_msg_to_rgb
    from mobilesam_ros.ros.messages import array_to_image_msg
    from mobilesam_ros.ros.messages import instances_to_msg, label_image, overlay_image

    rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(SHARED / "data" / "images" / "zidane.jpg")), cv2.COLOR_BGR2RGB), size)
    header = Header(stamp=Time(sec=1), frame_id="camera_optical_frame")
    msg = array_to_image_msg(rgb, "bgr8", header)
    stream = CameraStream("", load_model(PipelineConfig(ModelConfig(CKPT), detector=DetectorConfig(model=DET))),
                          Settings(), cache_size=8)
    state = {}

    def to_array():
        state["rgb"] = image_msg_to_rgb(msg)

    def model():
        state["inst"] = stream.step(state["rgb"], 1).instances

    def to_msgs():
        inst = state["inst"]
        ids = list(range(1, len(inst) + 1))
        instances_to_msg(inst, header, "segevery", ids)
        labels = label_image(inst)
        array_to_image_msg(labels, "mono16", header)
        array_to_image_msg(overlay_image(state["rgb"], inst, labels, ids, 0.5), "rgb8", header)

    r_in, r_model, r_out = timed(to_array, repeat), timed(model, repeat), timed(to_msgs, repeat)
    return {"size": f"{size[0]}x{size[1]}", "msg_to_array_ms": 1e3 * r_in["median_s"],
            "model_s": r_model["median_s"], "array_to_msgs_ms": 1e3 * r_out["median_s"],
            "instances": len(state["inst"]),
            "overhead_pct": 100 * (r_in["median_s"] + r_out["median_s"]) / r_model["median_s"]}


def bounded_latency(seconds: float, hz: float, backend: str) -> dict:
    import rclpy
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ament_index_python.packages import get_package_prefix

    from mobilesam_ros.msg import InstanceMaskArray
    from mobilesam_ros.ros.messages import array_to_image_msg

    import cv2

    exe = os.path.join(get_package_prefix("mobilesam_ros"), "lib", "mobilesam_ros", "mobilesam_node")
    env = {**os.environ, "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "87"),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    node = subprocess.Popen([sys.executable, exe, "--ros-args", "-p", f"model.checkpoint:={CKPT}", "-p",
                             f"detector.model:={DET}", "-p", "autostart:=true", "-p", "image.reliable:=true",
                             "-p", f"model.backend:={backend}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(env)
    rclpy.init()
    n = rclpy.create_node("bench_player")
    sent, lat = {}, []
    n.create_subscription(InstanceMaskArray, "/mobilesam/instances",
                          lambda m: lat.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.monotonic())), 10)
    pub = n.create_publisher(Image, "image", 10)
    frames = [cv2.cvtColor(cv2.imread(str(SHARED / "data" / "sequence" / f"{i:06d}.jpg")), cv2.COLOR_BGR2RGB)
              for i in range(48)]
    try:
        t0 = time.monotonic()
        while pub.get_subscription_count() == 0 and time.monotonic() - t0 < 60:
            rclpy.spin_once(n, timeout_sec=0.1)
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < seconds:
            stamp = 10**9 + k
            pub.publish(array_to_image_msg(frames[k % 48], "rgb8", Header(stamp=Time(sec=1, nanosec=k))))
            sent[stamp] = time.monotonic()
            k += 1
            end = start + k / hz
            while time.monotonic() < end:
                rclpy.spin_once(n, timeout_sec=max(0.0, end - time.monotonic()))
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and (not lat or lat[-1][0] != max(sent)):
            rclpy.spin_once(n, timeout_sec=0.1)
    finally:
        n.destroy_node()
        rclpy.try_shutdown()
        node.terminate()
        node.wait(10)
    lats = [t - sent[s] for s, t in lat if s in sent]
    half = len(lats) // 2
    return {"backend": backend, "input_hz": hz, "seconds": seconds, "frames_sent": len(sent),
            "frames_answered": len(lats), "answered_per_s": len(lats) / seconds,
            "frames_dropped": len(sent) - len(lats),
            "latency_median_first_half_s": statistics.median(lats[:half]) if half else None,
            "latency_median_second_half_s": statistics.median(lats[half:]) if lats else None,
            "latency_max_s": max(lats) if lats else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of the 30 Hz stream")
    ap.add_argument("--backends", default="auto,torch", help="node backends for the 30 Hz stream")
    ap.add_argument("--skip-overhead", action="store_true", help="only the 30 Hz streams")
    ap.add_argument("--json", default="out/bench_node.json")
    args = ap.parse_args()
    from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, apply_process_policy

    apply_process_policy(CpuPolicy(threads=2))  # the node's own policy
    rows = [] if args.skip_overhead else [overhead(s, args.repeat) for s in ((640, 480), (1280, 720))]
    print_table(rows, [("size", "image", ""), ("msg_to_array_ms", "msg->array ms", "{:.1f}"),
                       ("model_s", "model s", "{:.2f}"), ("array_to_msgs_ms", "array->msgs ms", "{:.1f}"),
                       ("instances", "instances", "{}"), ("overhead_pct", "overhead %", "{:.1f}")])
    lats = []
    for backend in args.backends.split(","):
        lat = bounded_latency(args.seconds, 30.0, backend)
        lats.append(lat)
        print(f"\n30 Hz input into the node process, backend {backend}:")
        for k, v in lat.items():
            print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    write_json(args.json, {"machine": machine(), "overhead": rows, "latency_30hz": lats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
