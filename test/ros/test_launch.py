"""The real launch/mobilesam.launch.py, its actions recorded by the stand-in launch modules and
then executed: the node comes up with the launch arguments as parameters and remappings."""
import os
import re

import cv2

import pytest
from conftest import ROOT, read_log, wait_for, warm_onnx_cache
from nodeutil import CHECKPOINT, DETECTOR, image_msg, publish_until, read_rgb, wait_subscribed

import launch_runner

pytestmark = [pytest.mark.ros, pytest.mark.slow]
LAUNCH = os.path.join(ROOT, "launch", "mobilesam.launch.py")


def test_launch_arguments_validated():
    ld = launch_runner.load(LAUNCH)
    with pytest.raises(ValueError, match="mode='everything'"):
        launch_runner.node_commands(ld, {"mode": "everything"})


def test_launch_file_runs_the_node(ros_process, ros_probe, tmp_path):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import InstanceMaskArray

    warm_onnx_cache(CHECKPOINT)
    ld = launch_runner.load(LAUNCH)
    cmds = launch_runner.node_commands(ld, {"checkpoint": CHECKPOINT, "detector": DETECTOR,
                                            "node_name": "seg", "image": "/cam/image_raw"}, str(tmp_path))
    assert len(cmds) == 1
    node_action, argv = cmds[0]
    assert node_action.executable == "mobilesam_node"
    # OMP_DISPLAY_ENV: libgomp itself prints the wait policy it starts with (the launch default)
    proc = ros_process(argv, name="launched", env={"OMP_DISPLAY_ENV": "TRUE"})
    got = []
    ros_probe.create_subscription(InstanceMaskArray, "/seg/instances", got.append, 10)
    pub = ros_probe.create_publisher(Image, "/cam/image_raw", qos_profile_sensor_data)
    wait_subscribed(pub, proc)  # remapping image:=/cam/image_raw + autostart from config/mobilesam.yaml
    assert wait_for(lambda: "seg" in ros_probe.get_node_names(), 20)
    from conftest import DATA

    # default SensorDataQoS (best effort): a small frame, as large best-effort samples can be lost
    # whole where Fast DDS has no shared memory (this sandbox); re-published until answered
    small = cv2.resize(read_rgb(str(DATA / "sequence" / "000000.jpg")), (320, 240))
    publish_until(pub, image_msg(small, 7), lambda: got, proc, timeout=180)
    assert got[0].header.stamp.sec == 7 and got[0].mode == "segevery"
    log = read_log(proc)
    assert "mode=segevery" in log
    # every OpenMP runtime in the process (torch's, and scipy's bundled copy) starts PASSIVE:
    # one copy loaded before configure would print the default and spin beside other nodes
    policies = re.findall(r"OMP_WAIT_POLICY = '(\w+)'", log)
    assert policies and set(policies) == {"PASSIVE"}, policies
    assert "too late" not in log
    assert "onnxruntime CPU" in log  # backend auto on a CPU machine
