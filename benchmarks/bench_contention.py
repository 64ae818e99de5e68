#!/usr/bin/env python3
"""Speed on a shared CPU (issue 10): quiet, beside 1 and 2 neighbour processes running 2-thread
torch matmuls with the default OpenMP policy (as any torch node does), and beside a busy loop.

Workloads (each measured in a fresh process, the neighbours restarted for every measurement):
  encoder      set_image of a 640x480 frame (resize + normalise + encoder)
  decode_1pt   predict() with 1 point, multimask, masks at image size
  segevery     one SegEvery frame at 640x480: detector + encoder + batched box decode + filters
  cli_segany   `python -m mobilesam_ros segany` on a 640x480 image, whole process (start to exit)
  node_e2e     a real node process: publish a 640x480 frame, wait for its InstanceMaskArray
               (frames sent one at a time: latency, not throughput)
for backend torch and onnx (what `auto` picks on CPU), under the project's CPU policy (passive
OpenMP waiting, no ONNX Runtime spinning) and, with --compare-library-policy, under the libraries' defaults
(OpenMP workers and ONNX Runtime threads spin). Conditions alternate backends within each
condition; ratios are to the quiet figure of the same backend and policy in the same run.

    source scripts/activate.sh && python benchmarks/bench_contention.py [--repeat 5] [--compare-library-policy]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import SHARED, machine, print_table, write_json

CKPT = str(SHARED / "fixtures" / "mobile_sam_seed2.pt")
DET = str(SHARED / "data" / "models" / "yolov8n_int8.onnx")
IMAGE = str(SHARED / "data" / "images" / "bus.jpg")
WORKLOADS = ("encoder", "decode_1pt", "segevery", "cli_segany", "node_e2e")
CONDITIONS = ("quiet", "1 torch neighbour", "2 torch neighbours", "busy loop")
NEIGHBOUR = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
             "while True:\n    a @ a\n")
BUSY = "while True:\n    pass\n"


def _clean_env() -> dict:
    """Neighbours and every measured process start without OMP_WAIT_POLICY (the libraries' default);
    the project policy is applied by the measured process itself, as the node and CLI do."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_neighbours(condition: str) -> list[subprocess.Popen]:
    n, code = {"quiet": (0, ""), "1 torch neighbour": (1, NEIGHBOUR), "2 torch neighbours": (2, NEIGHBOUR),
               "busy loop": (1, BUSY)}[condition]
    procs = [subprocess.Popen([sys.executable, "-c", code], env=_clean_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    time.sleep(1.5 if n else 0)  # torch import, pool start
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def policy_args(policy: str) -> dict:
    """project: passive OpenMP waiting, no ONNX Runtime spinning. library: OMP_WAIT_POLICY unset
    (libgomp spins a while at every barrier) and ONNX Runtime spinning, as plain torch/ORT do."""
    return {"omp_wait_policy": "passive" if policy == "project" else "env",
            "ort_spinning": policy != "project"}


# ------------------------------------------------------------------ measured in a child process
def frame_640x480():
    import cv2

    return cv2.resize(cv2.cvtColor(cv2.imread(IMAGE), cv2.COLOR_BGR2RGB), (640, 480), interpolation=cv2.INTER_AREA)


def single(args) -> dict:
    workload, backend, policy = args.single.split(":")
    if workload == "cli_segany":
        return cli_segany(backend, policy, args.repeat)
    if workload == "node_e2e":
        return node_e2e(backend, policy, args.repeat)
    from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, apply_process_policy

    cpu = CpuPolicy(threads=2, **policy_args(policy))
    apply_process_policy(cpu)
    import numpy as np

    from mobilesam_ros.core.config import DetectorConfig, ModelConfig, PipelineConfig, Settings
    from mobilesam_ros.core.engine.camera_stream import CameraStream
    from mobilesam_ros.core.engine.model import load_model

    model = load_model(PipelineConfig(ModelConfig(CKPT, backend=backend, cpu=cpu), detector=DetectorConfig(model=DET)))
    stream = CameraStream("", model, Settings(), cache_size=8)
    rgb = frame_640x480()
    pred = stream.predictor
    pred.set_image(rgb, 1)
    point = np.array([[320.0, 240.0]], np.float32)
    runs = {"encoder": lambda: pred.set_image(rgb, 1),
            "decode_1pt": lambda: pred.predict(point, np.array([1]), multimask_output=True),
            "segevery": lambda: stream.step(rgb, 1)}
    fn = runs[workload]
    fn()  # warm-up
    ts = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"times_s": ts}


def cli_segany(backend: str, policy: str, repeat: int) -> dict:
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        img = os.path.join(tmp, "frame.png")
        cv2.imwrite(img, cv2.cvtColor(frame_640x480(), cv2.COLOR_RGB2BGR))
        cmd = [sys.executable, "-P", "-m", "mobilesam_ros", "segany", "--checkpoint", CKPT, "--image", img,
               "--point", "320,240,1", "--output", os.path.join(tmp, "out.npz"), "--backend", backend,
               "--threads", "2", "--omp-wait-policy", policy_args(policy)["omp_wait_policy"]]
        if policy_args(policy)["ort_spinning"]:
            cmd.append("--ort-spinning")
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=_clean_env(), timeout=600)
            ts.append(time.perf_counter() - t0)
    return {"times_s": ts}


def node_e2e(backend: str, policy: str, repeat: int) -> dict:
    import rclpy
    from ament_index_python.packages import get_package_prefix
    from builtin_interfaces.msg import Time
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mobilesam_ros.msg import InstanceMaskArray
    from mobilesam_ros.ros.messages import array_to_image_msg

    exe = os.path.join(get_package_prefix("mobilesam_ros"), "lib", "mobilesam_ros", "mobilesam_node")
    pa = policy_args(policy)
    env = {**_clean_env(), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": os.environ.get("BENCH_DOMAIN_ID", "171")}
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    node = subprocess.Popen([sys.executable, exe, "--ros-args", "-p", f"model.checkpoint:={CKPT}",
                             "-p", f"detector.model:={DET}", "-p", "autostart:=true", "-p", "image.reliable:=true",
                             "-p", f"model.backend:={backend}", "-p", "cpu.threads:=2",
                             "-p", f"cpu.omp_wait_policy:={pa['omp_wait_policy']}",
                             "-p", f"cpu.ort_spinning:={str(pa['ort_spinning']).lower()}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rclpy.init()
    n = rclpy.create_node("bench_contention_player")
    got = {}
    n.create_subscription(InstanceMaskArray, "/mobilesam/instances",
                          lambda m: got.setdefault(m.header.stamp.nanosec, time.monotonic()), 10)
    pub = n.create_publisher(Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    rgb = frame_640x480()
    ts = []
    try:
        t0 = time.monotonic()
        while pub.get_subscription_count() == 0:
            if time.monotonic() - t0 > 300 or node.poll() is not None:
                raise RuntimeError("node did not come up")
            rclpy.spin_once(n, timeout_sec=0.1)
        for k in range(repeat + 1):  # the first frame is the warm-up
            sent = time.monotonic()
            pub.publish(array_to_image_msg(rgb, "rgb8", Header(stamp=Time(sec=1, nanosec=k))))
            while k not in got:
                if time.monotonic() - sent > 120:
                    raise RuntimeError(f"frame {k} not answered in 120 s")
                rclpy.spin_once(n, timeout_sec=0.01)
            if k:
                ts.append(got[k] - sent)
    finally:
        n.destroy_node()
        rclpy.try_shutdown()
        os.killpg(node.pid, signal.SIGINT)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
    return {"times_s": ts}


# ------------------------------------------------------------------ the parent
def measure(workload: str, backend: str, policy: str, condition: str, repeat: int) -> dict:
    neighbours = start_neighbours(condition)
    try:
        cmd = [sys.executable, __file__, "--single", f"{workload}:{backend}:{policy}", "--repeat", str(repeat)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=_clean_env())
    finally:
        stop(neighbours)
    row = {"workload": workload, "backend": backend, "policy": policy, "condition": condition}
    if res.returncode != 0:
        return {**row, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    ts = json.loads(res.stdout.strip().splitlines()[-1])["times_s"]
    return {**row, "min_s": min(ts), "median_s": statistics.median(ts), "runs": len(ts)}


def warm_cache() -> None:
    from mobilesam_ros.core.runtime.onnx_cache import cached_graphs
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam

    cached_graphs([CKPT], lambda: load_mobile_sam(CKPT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--single", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (after a warm-up)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of %(default)s")
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--compare-library-policy", action="store_true",
                    help="also measure under the libraries' own defaults (spinning OpenMP and ONNX Runtime)")
    ap.add_argument("--library-conditions", default="quiet,2 torch neighbours",
                    help="conditions measured under the libraries' defaults (default: %(default)s)")
    ap.add_argument("--json", default="out/bench_contention.json")
    args = ap.parse_args()
    if args.single:
        print(json.dumps(single(args)))
        return 0
    warm_cache()
    policies = ["project"] + (["library"] if args.compare_library_policy else [])
    rows = []
    for workload in args.workloads.split(","):
        for condition in args.conditions.split(","):
            for policy in policies:
                if policy == "library" and condition not in args.library_conditions.split(","):
                    continue
                for backend in args.backends.split(","):  # alternate backends inside each condition
                    r = measure(workload, backend, policy, condition, args.repeat)
                    rows.append(r)
                    print(f"  {workload:11s} {backend:5s} {policy:7s} {condition:19s} "
                          + (f"min {r['min_s']:.3f} s  median {r['median_s']:.3f} s" if "min_s" in r else r["error"]),
                          flush=True)
    quiet = {(r["workload"], r["backend"], r["policy"]): r["median_s"] for r in rows
             if r["condition"] == "quiet" and "median_s" in r}
    for r in rows:
        q = quiet.get((r["workload"], r["backend"], r["policy"]))
        if q and "median_s" in r:
            r["x_quiet_median"] = r["median_s"] / q
    print()
    print_table(rows, [("workload", "workload", ""), ("backend", "backend", ""), ("policy", "policy", ""),
                       ("condition", "condition", ""), ("min_s", "min s", "{:.3f}"),
                       ("median_s", "median s", "{:.3f}"), ("x_quiet_median", "x quiet", "{:.2f}")])
    write_json(args.json, {"machine": machine(), "repeat": args.repeat, "rows": rows})
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
