#!/usr/bin/env python3
"""Several cameras: ONE node serving N cameras (one loaded model) against N separate node
processes (one model each), at 640x480 and 30 Hz per camera, the way a robot runs them.

For each N in --cameras (default 1 2 4) and each layout ("one node" with `workers:=W` for each W in
--workers, "N nodes"), in one run on this machine, alternating the layouts: the node processes start (seeded checkpoint, the YOLOv8n
detector, backend auto = ONNX Runtime, default CPU policy), every camera gets the camera sequence
at 30 Hz (reliable QoS: large best-effort samples can be lost whole without shared memory) for
--seconds after each camera's first answer, and we measure:
  total answered frames/s   answers on every camera's ~/instances / seconds
  latency median / p95 (s)  answer arrival - publish time of that frame, per camera, pooled
  RSS (MB)                  sum of the node processes' VmRSS at the end, and their peak VmHWM
  load                      the host's 1-min load average at the start and end of the case (what
                            else ran: the nodes themselves add about their thread count)
--runs R repeats every (N, layout) R times (alternating); the table shows the median run.
One camera runs as the node always did (no `cameras` parameter, `image` remapped), so the same
script also measures an older revision: run it from that revision's environment
(`cd <old checkout> && source scripts/activate.sh && python <this file> --cameras 1`).
The figures mean this host at this moment: say what else ran beside them.

    source scripts/activate.sh && python benchmarks/bench_cameras.py [--cameras 1 2 4] [--seconds 30] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import SHARED, machine, print_table, write_json

CKPT = str(SHARED / "fixtures" / "mobile_sam_seed2.pt")
DET = str(SHARED / "data" / "models" / "yolov8n_int8.onnx")
SEQ = SHARED / "data" / "sequence"
HZ = 30.0


def node_exe() -> str:
    from ament_index_python.packages import get_package_prefix

    return os.path.join(get_package_prefix("mobilesam_ros"), "lib", "mobilesam_ros", "mobilesam_node")


def one_node(workers: int) -> str:
    return f"one node, workers {workers}"


def start_nodes(layout: str, n: int, env: dict, logdir: str) -> tuple[list, list[str]]:
    """(processes, the instances topic of each camera)."""
    base = [sys.executable, node_exe(), "--ros-args", "-p", f"model.checkpoint:={CKPT}", "-p",
            f"detector.model:={DET}", "-p", "autostart:=true", "-p", "image.reliable:=true"]
    cams = [f"cam{i}" for i in range(n)]
    if layout == "one node" and n == 1:  # the single unnamed camera, as every node before `cameras`
        argv = [base + ["-r", "__node:=one", "-r", "image:=/cam0/image"]]
        topics = ["/one/instances"]
    elif layout.startswith("one node"):
        workers = ["-p", f"workers:={layout.rsplit(' ', 1)[1]}"] if "workers" in layout else []
        argv = [base + workers + ["-r", "__node:=one", "-p", f"cameras:=[{', '.join(cams)}]"]]
        topics = [f"/one/{c}/instances" for c in cams]
    else:
        argv = [base + ["-r", f"__node:=n{i}", "-r", f"image:=/{c}/image"] for i, c in enumerate(cams)]
        topics = [f"/n{i}/instances" for i in range(n)]
    procs = []
    for k, a in enumerate(argv):
        log = open(os.path.join(logdir, f"{layout.replace(' ', '_')}_{n}_{k}.log"), "wb")
        procs.append(subprocess.Popen(a, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs, topics


def rss_mb(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def measure(layout: str, n: int, seconds: float, domain: int, logdir: str) -> dict:
    import cv2
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mobilesam_ros.msg import InstanceMaskArray
    from mobilesam_ros.ros.messages import array_to_image_msg

    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    load_start = os.getloadavg()[0]
    procs, topics = start_nodes(layout, n, env, logdir)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("bench_cameras_player", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    sent: dict = {}                       # (camera, stamp ns) -> publish time
    answers: list[list] = [[] for _ in range(n)]   # per camera: (stamp ns, arrival time)
    for i, t in enumerate(topics):
        node.create_subscription(InstanceMaskArray, t, lambda m, i=i: answers[i].append(
            (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.monotonic())), 10)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(Image, f"/cam{i}/image", qos) for i in range(n)]
    frames = [cv2.cvtColor(cv2.imread(str(SEQ / f"{k:06d}.jpg")), cv2.COLOR_BGR2RGB) for k in range(16)]
    msgs = [array_to_image_msg(f, "rgb8", Header(frame_id="camera_optical_frame")) for f in frames]
    try:
        t0 = time.monotonic()
        while not all(p.get_subscription_count() for p in pubs):
            if time.monotonic() - t0 > 600 or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{layout} x{n}: nodes did not come up (logs in {logdir})")
            time.sleep(0.2)
        k, start, measure_from = 0, time.monotonic(), None
        while True:
            now = time.monotonic()
            if measure_from is None and all(answers):  # every camera answered once: warm
                measure_from = now
                for a in answers:
                    a.clear()
            if measure_from is not None and now - measure_from >= seconds:
                break
            if now - start > 600:
                raise RuntimeError(f"{layout} x{n}: no answer on every camera within 600 s")
            for i, pub in enumerate(pubs):
                m = msgs[k % len(msgs)]
                stamp = (k + 1) * 10**9 // 30 + i  # unique per camera and frame
                m.header.stamp = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
                sent[(i, stamp)] = time.monotonic()
                pub.publish(m)
            k += 1
            time.sleep(max(0.0, start + k / HZ - time.monotonic()))
        rss = sum(rss_mb(p.pid, "VmRSS") for p in procs)
        peak = sum(rss_mb(p.pid, "VmHWM") for p in procs)
        lat = sorted(t - sent[(i, s)] for i, a in enumerate(answers) for s, t in a if (i, s) in sent)
        per_cam = [len(a) / seconds for a in answers]
        return {"layout": layout, "cameras": n, "answered_fps": sum(per_cam), "per_camera_fps": per_cam,
                "latency_median_s": statistics.median(lat) if lat else float("nan"),
                "latency_p95_s": lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"),
                "rss_mb": rss, "peak_rss_mb": peak, "published_per_camera": k, "seconds": seconds,
                "load_start": load_start, "load_end": os.getloadavg()[0]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        ex.shutdown(timeout_sec=5)
        node.destroy_node()
        ctx.try_shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4], help="camera counts to measure")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per case (after warm-up)")
    ap.add_argument("--runs", type=int, default=3, help="runs per case, alternating layouts (median shown)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2],
                    help="the one node's `workers` values to measure, each a layout (several cameras)")
    ap.add_argument("--domain", type=int, default=int(os.environ.get("BENCH_DOMAIN_ID", "173")),
                    help="ROS_DOMAIN_ID of the nodes and the player (keep it apart from other ROS work)")
    ap.add_argument("--json", default="bench_cameras.json", help="where to write the results")
    args = ap.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # the player as the nodes: this host only
    logdir = tempfile.mkdtemp(prefix="bench_cameras_")
    runs: dict = {}
    for r in range(args.runs):
        for n in args.cameras:
            layouts = tuple(one_node(w) for w in args.workers) + ("N nodes",) if n > 1 else ("one node",)
            for layout in (layouts if r % 2 == 0 else layouts[::-1]):
                res = measure(layout, n, args.seconds, args.domain, logdir)
                print(f"run {r + 1}: {layout} x{n}: {res['answered_fps']:.2f} frames/s, "
                      f"median {res['latency_median_s']:.2f} s, RSS {res['rss_mb']:.0f} MB, "
                      f"load {res['load_start']:.1f} -> {res['load_end']:.1f}", flush=True)
                runs.setdefault((n, layout), []).append(res)
    rows = []
    for (n, layout), rs in sorted(runs.items()):
        med = sorted(rs, key=lambda x: x["answered_fps"])[len(rs) // 2]
        rows.append({**med, "runs_fps": [round(x["answered_fps"], 3) for x in rs],
                     "median_rss_mb": statistics.median(x["rss_mb"] for x in rs)})
    print_table(rows, [("cameras", "cameras", ""), ("layout", "layout", ""),
                       ("answered_fps", "total frames/s", "{:.2f}"), ("latency_median_s", "latency median s", "{:.2f}"),
                       ("latency_p95_s", "latency p95 s", "{:.2f}"), ("median_rss_mb", "RSS MB", "{:.0f}"),
                       ("peak_rss_mb", "peak RSS MB", "{:.0f}"), ("load_end", "load at end", "{:.1f}")])
    write_json(args.json, {"machine": machine(), "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
