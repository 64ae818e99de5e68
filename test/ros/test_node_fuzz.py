"""Seeded fuzz of the real node (CI size): every hostile class, a few messages each, then a valid
frame that must be answered; the node stays alive with its peak RSS under the documented bound.
`python tools/fuzz_node.py --n 1000` runs the same classes 1000 times each."""
import pytest
from conftest import DATA
from nodeutil import image_msg, node_argv, read_rgb

import hostile
from fuzz import FuzzClient, peak_rss_mb, run
from test_node_reliability import PEAK_RSS_BOUND_MB

pytestmark = [pytest.mark.ros]
N_PER_CLASS = 3
SEED = 12


def test_fuzz_every_class(ros_process, ros_probe):
    proc = ros_process(node_argv(mode="both", **{"image.reliable": True}), name="node")
    client = FuzzClient(ros_probe, proc, read_rgb(str(DATA / "sequence" / "000000.jpg")))
    results = run(client, N_PER_CLASS, SEED, timeout=60.0, frame_every=5)
    assert [r.name for r in results] == list(hostile.CLASSES)
    assert proc.poll() is None
    assert max(r.peak_rss_mb for r in results) < PEAK_RSS_BOUND_MB, results


@pytest.mark.slow
def test_detections_flood(ros_process, ros_probe):
    """Detection2DArray flood, all reliable (best effort would drop large arrays before the node):
    arrays of 0-1000 detections at 30 Hz for a minute (hostile.detections: NaN, negative, huge
    and outside boxes among valid ones), with single arrays of 10,000 every 10 s. Valid frames sent
    during the flood are answered, each within the bound below (a frame waits for at most one
    prompt message, itself bounded by segany.max_batch_s), and some small valid arrays are answered
    too; the node's peak RSS stays under the reliability bound; the refusals are throttled."""
    import time

    import numpy as np
    from conftest import read_log, wait_for
    from vision_msgs.msg import Detection2DArray

    from mobilesam_ros.msg import InstanceMaskArray

    max_batch_s = 2.0
    proc = ros_process(node_argv(mode="both", **{"image.reliable": True, "segany.max_batch_s": max_batch_s}),
                       name="node")
    rgb = read_rgb(str(DATA / "sequence" / "000000.jpg"))
    client = FuzzClient(ros_probe, proc, rgb)
    pub = ros_probe.create_publisher(Detection2DArray, "detections", 10)  # reliable
    answers = []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances",
                                  lambda a: answers.append(a) if a.mode == "segany" else None, 50)
    client.wait_ready()
    assert wait_for(lambda: pub.get_subscription_count() > 0, 30)
    client.valid_frame(120.0)
    rng = np.random.default_rng(SEED)
    sec = client.sec
    # built beforehand (building 1000 Python messages at 30 Hz would make the client the bottleneck);
    # a few small all-valid arrays among them must be answered
    pool = [hostile.detections(rng, sec, int(n))[1] for n in rng.integers(0, 1001, 12)]
    small = [hostile.detections(np.random.default_rng(100 + k), sec, 40)[1] for k in range(2)]
    for m in small:  # keep 5 boxes of the valid kind (centre inside, size 2 px .. half the image)
        m.detections = [d for d in m.detections if np.isfinite(d.bbox.center.position.x)
                        and 0 <= d.bbox.center.position.x <= 640 and 0 <= d.bbox.center.position.y <= 480
                        and 2 <= d.bbox.size_x <= 320 and 2 <= d.bbox.size_y <= 240][:5]
    big = hostile.detections(rng, sec, 10_000)[1]
    answer_s, t_end, sent, k = [], time.monotonic() + 60.0, 0, 0
    next_frame = next_big = time.monotonic() + 10.0
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        pub.publish(small[k % 2] if k % 15 == 0 else pool[k % len(pool)])
        k += 1
        sent += 1
        if t0 >= next_big:
            pub.publish(big)
            next_big += 10.0
        if t0 >= next_frame:  # the frame must be answered while the flood goes on
            frame_t0 = time.monotonic()
            client.pubs["image"].publish(client_msg := image_msg(rgb, client.sec + 1))
            client.sec += 1
            while not any(a.header.stamp.sec == client.sec for a in client.answers):
                assert time.monotonic() - frame_t0 < 4 * max_batch_s + 30, \
                    f"frame not answered during the flood\n{read_log(proc)[-3000:]}"
                pub.publish(pool[k % len(pool)])
                k += 1
                sent += 1
                time.sleep(1 / 30)
                if k % 150 == 0:
                    client.pubs["image"].publish(client_msg)
            answer_s.append(time.monotonic() - frame_t0)
            next_frame = time.monotonic() + 10.0
        time.sleep(max(0.0, 1 / 30 - (time.monotonic() - t0)))
    assert proc.poll() is None
    final_s = client.valid_frame(60.0)
    log = read_log(proc)
    assert len(answer_s) >= 2 and answers, (answer_s, len(answers))
    rss = peak_rss_mb(proc.pid)
    assert rss < PEAK_RSS_BOUND_MB
    assert "over the limit of 100 (segany.max_objects)" in log and "not a box" in log
    assert log.count("skipping detections") < 200, "refusals are not throttled"
    print(f"flood: {sent} arrays in 60 s, frames answered in {[round(a, 1) for a in answer_s]} s "
          f"during it, {final_s:.1f} s after; {len(answers)} prompt answers; peak RSS {rss:.0f} MiB")
