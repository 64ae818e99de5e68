"""Seeded fuzzing of a running mobilesam node over DDS: every class of hostile.CLASSES, N messages
each, then one valid frame that must be answered within a timeout; the node must stay alive and its
peak RSS (VmHWM) under a bound. Used by test_node_fuzz.py (small N) and tools/fuzz_node.py (N=1000)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import hostile
from nodeutil import image_msg


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass
class ClassResult:
    name: str
    sent: int
    answer_s: float  # time from the valid frame to its answer
    peak_rss_mb: float


@dataclass
class FuzzClient:
    """Publishers/subscription on an rclpy node (spun elsewhere) aimed at the node process `proc`."""

    probe: object
    proc: object
    valid_rgb: np.ndarray
    answers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import CompressedImage, Image

        from mobilesam_ros.msg import InstanceMaskArray, Prompt

        self.pubs = {"image": self.probe.create_publisher(Image, "image", 10),
                     "compressed": self.probe.create_publisher(CompressedImage, "image/compressed", 10),
                     "prompt": self.probe.create_publisher(Prompt, "prompt", 10),
                     "click": self.probe.create_publisher(PointStamped, "clicked_point", 10)}
        self.probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", self.answers.append, 50)
        self.sec = 100

    def wait_ready(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return
            time.sleep(0.1)
        raise AssertionError("node did not subscribe to image, image/compressed, prompt and clicked_point")

    def valid_frame(self, timeout: float) -> float:
        """Publish a valid frame with a fresh stamp (re-publish every 5 s) until the node answers it;
        returns the seconds it took. Raises AssertionError on timeout or a dead node."""
        self.sec += 1
        sec, t0 = self.sec, time.monotonic()
        msg = image_msg(self.valid_rgb, sec)
        while time.monotonic() - t0 < timeout and self.proc.poll() is None:
            self.pubs["image"].publish(msg)
            end = min(t0 + timeout, time.monotonic() + 5.0)
            while time.monotonic() < end:
                if any(a.header.stamp.sec == sec for a in self.answers):
                    return time.monotonic() - t0
                time.sleep(0.02)
        raise AssertionError(f"valid frame {sec} not answered within {timeout} s (alive: {self.proc.poll() is None})")

    def send_class(self, name: str, n: int, rng: np.random.Generator, period_s: float = 0.002) -> None:
        build = hostile.CLASSES[name]
        for _ in range(n):
            topic, msg = build(rng, self.sec)  # prompts refer to the last answered frame
            self.pubs[topic].publish(msg)
            time.sleep(period_s)
        assert self.proc.poll() is None, f"node died during {name}"


def run(client: FuzzClient, n: int, seed: int, timeout: float, classes=None, frame_every: int = 1,
        report=print) -> list[ClassResult]:
    """N messages of each class; after every `frame_every` classes a valid frame must be answered
    within `timeout` s (1 = after each class, the on-demand setting; CI groups classes to stay fast)."""
    rng = np.random.default_rng(seed)
    client.wait_ready()
    client.valid_frame(timeout)
    names, out, pending = list(classes or hostile.CLASSES), [], []
    for k, name in enumerate(names):
        client.send_class(name, n, rng)
        pending.append(name)
        if len(pending) == frame_every or k == len(names) - 1:
            answer_s = client.valid_frame(timeout)
            rss = peak_rss_mb(client.proc.pid)
            for p in pending:
                out.append(ClassResult(p, n, answer_s, rss))
            report(f"{'+'.join(pending):60s} n={n:5d} each; next frame answered in {answer_s:6.2f} s, "
                   f"peak RSS {rss:7.1f} MiB")
            pending = []
    return out
