"""The package's messages cross a process boundary with every field intact, and test domains are
isolated from each other."""
import os
import sys
import time

import numpy as np
import pytest
from conftest import _reserve_domain_id, read_log, wait_for

pytestmark = pytest.mark.ros
ECHO = os.path.join(os.path.dirname(__file__), "echo_node.py")


def _instance_array():
    from geometry_msgs.msg import Point  # noqa: F401  (import check of deps)
    from mobilesam_ros.msg import InstanceMask, InstanceMaskArray
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    header = Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="camera_optical_frame")
    rng = np.random.default_rng(0)
    instances = []
    for i, (x, y, w, h) in enumerate([(10, 20, 7, 5), (0, 0, 1, 1), (600, 400, 40, 80)], start=1):
        crop = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255
        mask = Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w,
                     data=crop.tobytes())
        instances.append(InstanceMask(
            id=i, score=0.5 + 0.125 * i, stability_score=0.875 - 0.0625 * i,  # float32-exact area=int((crop > 0).sum()),
            class_id=i - 2, detection_score=0.25 * i,
            bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False),
            mask=mask))
    return InstanceMaskArray(header=header, image_width=640, image_height=480,
                             mode=InstanceMaskArray.MODE_SEGEVERY, instances=instances)


def _prompt():
    from geometry_msgs.msg import Point
    from mobilesam_ros.msg import Prompt, PromptObject
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    header = Header(stamp=Time(sec=42, nanosec=7), frame_id="camera_optical_frame")
    logits = np.linspace(-20, 20, 256 * 256, dtype=np.float32).reshape(256, 256)
    mask_in = Image(header=header, height=256, width=256, encoding="32FC1", is_bigendian=0,
                    step=256 * 4, data=logits.tobytes())
    objs = [
        PromptObject(id=1, points=[Point(x=10.5, y=20.25, z=0.0), Point(x=30.0, y=40.0, z=0.0)],
                     labels=[PromptObject.LABEL_POSITIVE, PromptObject.LABEL_NEGATIVE],
                     has_box=False, multimask=True),
        PromptObject(id=7, points=[], labels=[], has_box=True,
                     box=np.array([1.0, 2.0, 300.5, 400.25], np.float32), mask_input=mask_in),
    ]
    return Prompt(header=header, objects=objs)


def test_messages_round_trip_through_another_process(ros_process, ros_probe):
    from mobilesam_ros.msg import InstanceMaskArray, Prompt

    echo = ros_process([sys.executable, ECHO, "mobilesam_ros.msg/InstanceMaskArray",
                        "mobilesam_ros.msg/Prompt"], name="echo")
    got = {"InstanceMaskArray": [], "Prompt": []}
    pubs = {}
    for t in (InstanceMaskArray, Prompt):
        ros_probe.create_subscription(t, f"out_{t.__name__}", got[t.__name__].append, 10)
        pubs[t.__name__] = ros_probe.create_publisher(t, f"in_{t.__name__}", 10)
    sent = {"InstanceMaskArray": _instance_array(), "Prompt": _prompt()}

    def pump():  # publish until the echo's subscription has matched and answered
        for name, pub in pubs.items():
            if not got[name]:
                pub.publish(sent[name])
        return all(got.values())

    assert wait_for(pump, timeout=20, period=0.2), read_log(echo)
    arr, prm = got["InstanceMaskArray"][0], got["Prompt"][0]
    assert arr == sent["InstanceMaskArray"]  # generated __eq__ compares every field
    assert prm == sent["Prompt"]
    # spot-check the decoded payloads, not only equality of objects
    inst = arr.instances[2]
    crop = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(inst.mask.height, inst.mask.width)
    assert crop.shape == (80, 40) and set(np.unique(crop)) <= {0, 255}
    assert (inst.bbox.x_offset, inst.bbox.y_offset) == (600, 400)
    assert arr.header.frame_id == "camera_optical_frame" and arr.header.stamp.nanosec == 123456789
    logits = np.frombuffer(bytes(prm.objects[1].mask_input.data), np.float32).reshape(256, 256)
    assert logits[0, 0] == -20.0 and logits[-1, -1] == 20.0
    assert list(prm.objects[1].box) == [1.0, 2.0, 300.5, 400.25]
    assert list(prm.objects[0].labels) == [1, 0]


TALKER = """
import sys, rclpy
from std_msgs.msg import String
rclpy.init(); n = rclpy.create_node('talker'); p = n.create_publisher(String, 'chatter', 10)
t = n.create_timer(0.1, lambda: p.publish(String(data=sys.argv[1])))
try: rclpy.spin(n)
except BaseException: pass
finally: rclpy.try_shutdown()
"""


def test_domains_are_isolated(ros_process, ros_probe, ros_env, tmp_path):
    """A talker in another reserved domain (as a concurrent test run would have) is never heard;
    the talker in our own domain is (the positive control)."""
    from std_msgs.msg import String

    script = tmp_path / "talker.py"
    script.write_text(TALKER)
    with _reserve_domain_id() as other:
        assert str(other) != ros_env["ROS_DOMAIN_ID"]
        ros_process([sys.executable, script, "mine"], name="mine")
        ros_process([sys.executable, script, "theirs"], name="theirs",
                    env={"ROS_DOMAIN_ID": str(other)})
        heard = set()
        ros_probe.create_subscription(String, "chatter", lambda m: heard.add(m.data), 10)
        assert wait_for(lambda: "mine" in heard, timeout=20)
        time.sleep(2.0)  # give a leak time to show up
        assert heard == {"mine"}
