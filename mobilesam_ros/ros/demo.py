"""The node demo (`make demo`): play a camera sequence into a real mobilesam node process and save
the overlays it publishes.

It starts `mobilesam_node` as its own process (as `ros2 launch` would), publishes the frames as
sensor_msgs/Image on `image` at --rate Hz, and writes every `~/overlay` image it receives to
--out as PNG, with a line per frame: instances found and latency from publish to answer.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

import cv2
import numpy as np

from mobilesam_ros.core.io import weights

HERE = os.path.dirname(os.path.realpath(__file__))


def default_frames() -> str:
    """data/demo_sequence from the install's share/ (ros2 run) or the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = os.path.join(get_package_share_directory("mobilesam_ros"), "data", "demo_sequence")
        if os.path.isdir(share):
            return share
    except Exception:  # noqa: BLE001  no ament index: fall back to the source tree
        pass
    return os.path.normpath(os.path.join(HERE, "..", "..", "data", "demo_sequence"))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="mobilesam_demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="MobileSAM checkpoint (default: weights/mobile_sam.pt, "
                    "fetched when the network allows)")
    ap.add_argument("--detector", default="", help="YOLOv8-style ONNX box proposer (default: "
                    "weights/object_aware.onnx if present, else the point grid)")
    ap.add_argument("--grid", type=int, default=8, help="grid points per side without a detector (default 8)")
    ap.add_argument("--frames", default=None, help="folder of images to play (default: the bundled sequence)")
    ap.add_argument("--out", default="out/demo", help="where overlays are written (default out/demo)")
    ap.add_argument("--rate", type=float, default=2.0, help="publish rate in Hz (default 2)")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    ap.add_argument("--no-download", action="store_true", help="never try to download weights")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        ckpt = weights.find(weights.MOBILE_SAM, args.checkpoint, download=not args.no_download)
    except weights.WeightsMissing as exc:
        print(f"mobilesam demo: {exc}\n\nThen run `make demo` again. To try the plumbing without the real "
              "weights, pass any official-format checkpoint: "
              "`bash scripts/run_demo.sh --checkpoint PATH/mobile_sam.pt`.", file=sys.stderr)
        return 3
    detector = args.detector
    default_det = os.path.join(os.path.dirname(ckpt), "object_aware.onnx")
    if not detector and os.path.exists(default_det):
        detector = default_det
    frames = sorted(glob.glob(os.path.join(args.frames or default_frames(), "*.jpg")))
    if not frames:
        print(f"mobilesam demo: no .jpg frames in {args.frames or default_frames()}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    return _run(ckpt, detector, args.grid, frames, args.out, args.rate, args.timeout)


def _run(ckpt, detector, grid, frames, out_dir, rate, timeout) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import InstanceMaskArray
    from mobilesam_ros.core.io.image_codec import image_msg_to_rgb
    from mobilesam_ros.ros.messages import array_to_image_msg

    from ament_index_python.packages import get_package_prefix

    exe = os.path.join(get_package_prefix("mobilesam_ros"), "lib", "mobilesam_ros", "mobilesam_node")
    node_cmd = [sys.executable, exe, "--ros-args", "-p", f"model.checkpoint:={ckpt}", "-p", "autostart:=true",
                "-p", f"segevery.grid_points_per_side:={grid}", "-p", "image.reliable:=true",
                "-r", "image:=demo/image"]
    if detector:  # rcl refuses an empty override (`-p detector.model:=`); empty is the default: grid
        node_cmd += ["-p", f"detector.model:={detector}"]
    print(f"mobilesam demo: {len(frames)} frames, checkpoint {ckpt}, "
          f"{'detector ' + detector if detector else f'grid {grid}x{grid}'}; overlays -> {out_dir}")
    proc = subprocess.Popen(node_cmd)
    rclpy.init()
    node = rclpy.create_node("mobilesam_demo_player")
    got: dict[int, dict] = {}
    sent: dict[int, float] = {}
    frame_index: dict[int, int] = {}  # stamp key -> index of the frame in --frames order

    def key(h):
        return h.stamp.sec * 1_000_000_000 + h.stamp.nanosec

    def on_overlay(msg):
        rgb = image_msg_to_rgb(msg)
        k = key(msg.header)
        # named by the frame it shows: overlays and instance arrays arrive on different topics in
        # any order, so a running count would give two frames the same name
        name = f"overlay_{frame_index.get(k, len(frame_index)):04d}.png"
        cv2.imwrite(os.path.join(out_dir, name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        got.setdefault(k, {})["overlay"] = time.monotonic()

    def on_instances(msg):
        k = key(msg.header)
        got.setdefault(k, {})["n"] = len(msg.instances)
        got[k]["t"] = time.monotonic()

    # reliable: multi-100-kB best-effort samples can be lost whole where Fast DDS has no shared memory
    pub = node.create_publisher(Image, "demo/image", 10)
    node.create_subscription(Image, "mobilesam/overlay", on_overlay, 10)
    node.create_subscription(InstanceMaskArray, "mobilesam/instances", on_instances, 10)
    deadline = time.monotonic() + timeout
    try:
        while pub.get_subscription_count() == 0:  # the node subscribes once it is active
            if proc.poll() is not None or time.monotonic() > deadline:
                print("mobilesam demo: the node did not come up (see its log above)", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        for i, path in enumerate(frames):
            rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            from std_msgs.msg import Header
            from builtin_interfaces.msg import Time

            header = Header(stamp=Time(sec=1000 + i, nanosec=0), frame_id="camera_optical_frame")
            pub.publish(array_to_image_msg(np.ascontiguousarray(rgb), "rgb8", header))
            sent[key(header)] = time.monotonic()
            frame_index[key(header)] = i
            end = time.monotonic() + 1.0 / rate
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.02)
        last = min(deadline, time.monotonic() + 120)  # the newest frame is always processed
        while time.monotonic() < last and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
            if max(sent) in got and "overlay" in got[max(sent)]:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        print("mobilesam demo: interrupted", file=sys.stderr)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    answered = [k for k in sent if k in got and "n" in got[k]]
    print(f"\n{'frame stamp':>12} {'instances':>9} {'latency s':>9}")
    for k in sorted(sent):
        if k in got and "n" in got[k]:
            print(f"{k / 1e9:12.1f} {got[k]['n']:9d} {got[k]['t'] - sent[k]:9.2f}")
        else:
            print(f"{k / 1e9:12.1f} {'dropped':>9}")
    print(f"\n{len(answered)}/{len(sent)} frames answered (the node keeps only the newest frame while "
          f"busy); overlays in {os.path.abspath(out_dir)}")
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
