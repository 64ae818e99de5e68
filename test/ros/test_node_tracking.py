"""SegEvery tracking through the real node process: the same image published with increasing stamps
keeps every instance id, with hits, state, first_seen and age as the stamps say; then 10 frames of
the camera sequence get ids never given before, and every published track field agrees with the
history of the published ids (recomputed here from the messages)."""
import numpy as np
import pytest
from conftest import DATA, read_log, wait_for
from nodeutil import BUS, image_msg, mask_from_instance, node_argv, read_rgb, wait_subscribed

pytestmark = [pytest.mark.ros, pytest.mark.slow]

T0 = 100                      # s
STEP_NS = 250_000_000         # 0.25 s between published frames
SEQ_T0 = 200                  # s, camera sequence at 10 fps
SEQ_FRAMES = 10


def test_same_image_keeps_every_instance_id(ros_process, ros_probe):
    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import InstanceMask, InstanceMaskArray

    node = ros_process(node_argv(mode="segevery", **{"image.reliable": True}), name="node")
    got = []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", got.append, 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    wait_subscribed(pub, node)
    bus = read_rgb(BUS)
    h, w = bus.shape[:2]
    # one frame at a time, each after the previous answer (the node keeps only the newest frame);
    # reliable QoS and a matched subscription, so one publish each (a re-sent frame would count
    # as another hit at the same stamp)
    plan = [(T0 * 10**9 + k * STEP_NS, bus) for k in range(3)]
    plan += [(SEQ_T0 * 10**9 + k * 100_000_000, read_rgb(str(DATA / "sequence" / f"{k:06d}.jpg")))
             for k in range(SEQ_FRAMES)]
    for k, (t_ns, rgb) in enumerate(plan):
        pub.publish(image_msg(rgb, t_ns // 10**9, t_ns % 10**9))
        assert wait_for(lambda: len(got) > k, 180), read_log(node)
        assert (got[k].header.stamp.sec * 10**9 + got[k].header.stamp.nanosec) == t_ns
    frames = got[:3]

    first = frames[0]
    assert len(first.instances) >= 3  # the bus and persons of bus.jpg
    ids0 = [i.id for i in first.instances]
    assert ids0 == list(range(1, len(ids0) + 1))  # a fresh node numbers its first frame 1..N
    masks0 = [mask_from_instance(i, h, w) for i in first.instances]
    for k, arr in enumerate(frames):
        assert [i.id for i in arr.instances] == ids0, f"frame {k}"
        for inst, m0 in zip(arr.instances, masks0):
            np.testing.assert_array_equal(mask_from_instance(inst, h, w), m0)  # the same objects
            assert inst.track_hits == k + 1
            assert inst.track_state == (InstanceMask.TRACK_TENTATIVE if k + 1 < 3 else InstanceMask.TRACK_CONFIRMED)
            assert (inst.first_seen.sec, inst.first_seen.nanosec) == (T0, 0)
            assert inst.track_age == pytest.approx(k * STEP_NS * 1e-9, abs=1e-6)

    # the camera sequence (640x480: another size, so the tracks start over; ids keep counting up)
    seq = got[3:3 + SEQ_FRAMES]
    assert min(i.id for a in seq for i in a.instances) > max(ids0)
    history: dict[int, list[int]] = {}  # id -> stamps (ns) of the frames it was published in
    for arr in seq:
        t = arr.header.stamp.sec * 10**9 + arr.header.stamp.nanosec
        ids = [i.id for i in arr.instances]
        assert len(set(ids)) == len(ids)
        for inst in arr.instances:
            seen = history.setdefault(inst.id, [])
            if seen:
                # back after a gap only as a confirmed track, and within tracking.max_age_s = 1 s
                assert t - seen[-1] <= 10**9
                if t - seen[-1] > 100_000_000:
                    assert len(seen) >= 3
            seen.append(t)
            assert inst.track_hits == len(seen)
            assert inst.first_seen.sec * 10**9 + inst.first_seen.nanosec == seen[0]
            assert inst.track_age == pytest.approx((t - seen[0]) * 1e-9, abs=1e-6)
            assert inst.track_state == (InstanceMask.TRACK_CONFIRMED if len(seen) >= 3 else InstanceMask.TRACK_TENTATIVE)
    # plumbing on real frames: some pedestrian or vehicle keeps its id through all 10 frames
    assert max(len(v) for v in history.values()) == SEQ_FRAMES, {k: len(v) for k, v in history.items()}
