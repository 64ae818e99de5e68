"""Depth3D's wait for late depth (depth.max_wait_s), in-process: a real rclpy LifecycleNode with
the node's parameters, real depth Image messages, a real subscriber on ~/instances_3d. A frame
whose depth comes after its results gets its 3D when the depth arrives (colour stamp, that depth's
stamp); a frame whose depth never comes gets one warning once the wait is over; a frame the depth
stream has already passed is warned at once; the waiting frames are bounded by depth.buffer_size;
depth over image.max_pixels is refused on arrival."""
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

MAX_WAIT_S = 1.0


@pytest.fixture
def rig(ros_env):
    """(node, depth3d, warnings list, received Instance3DArray list, spin-until helper)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import LifecycleNode
    from rclpy.parameter import Parameter

    from mobilesam_ros.msg import Instance3DArray
    from mobilesam_ros.ros import params as P
    from mobilesam_ros.ros.depth3d import Depth3D

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    node = LifecycleNode("mobilesam", context=ctx, parameter_overrides=[   # depth.enabled is read-only
        Parameter("depth.enabled", value=True), Parameter("depth.max_wait_s", value=MAX_WAIT_S),
        Parameter("image.max_pixels", value=400_000)])
    P.declare_all(node)
    warnings = []
    from mobilesam_ros.ros.topics import CameraTopics

    d3 = Depth3D(node, lambda kind, text: warnings.append((kind, text)), CameraTopics(), P.read_settings(node))
    got = []
    node.create_subscription(Instance3DArray, "~/instances_3d", got.append, 10)
    d3.subscriptions(10)
    node.trigger_configure()
    node.trigger_activate()
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    d3._on_info(_camera_info())

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)
            if pred():
                return True
        return False

    try:
        assert spin_until(lambda: d3.publishers["instances_3d"].get_subscription_count() > 0, 10)
        yield node, d3, warnings, got, spin_until
    finally:
        d3.stop()
        ex.shutdown()
        node.destroy_node()
        ctx.try_shutdown()


def _header(sec, nanosec=0):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="cam")


def _camera_info():
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(header=_header(0), width=640, height=480, k=[525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1])


def _depth(sec, h=240, w=320, mm=1000):
    from mobilesam_ros.ros.messages import array_to_image_msg

    return array_to_image_msg(np.full((h, w), mm, np.uint16), "16UC1", _header(sec))


def _instances():
    """One 100x80 px square instance in a 640x480 frame."""
    from mobilesam_ros.core.structures.instances import Instances

    m = np.zeros((1, 480, 640), bool)
    m[0, 200:280, 300:400] = True
    return Instances.from_masks(m, np.ones(1, np.float32))


def _missing(warnings, sec):
    return [t for k, t in warnings if k == "depth_missing" and f"frame {sec}.000" in t]


def test_depth_after_the_results_gets_3d_with_the_colour_stamp(rig):
    node, d3, warnings, got, spin_until = rig
    d3.publish(_instances(), _header(5), [7])
    assert not spin_until(lambda: got, 0.3) and not warnings      # waiting, not skipped
    d3._on_depth(_depth(5, mm=1000))                               # 0.3 s late: completed now
    assert spin_until(lambda: got, 5)
    (arr,) = got
    assert (arr.header.stamp.sec, arr.depth_stamp.sec, arr.source) == (5, 5, "segevery")
    assert [i.id for i in arr.instances] == [7] and arr.instances[0].position.z == pytest.approx(1.0)
    assert d3.counts["waited_for_depth"] == 1 and d3.counts["frames_3d"] == 1 and not warnings


def test_depth_that_never_comes_gives_one_warning_after_the_wait(rig):
    node, d3, warnings, got, spin_until = rig
    t0 = time.monotonic()
    d3.publish(_instances(), _header(6), [7])
    assert spin_until(lambda: _missing(warnings, 6), MAX_WAIT_S + 5)
    waited = time.monotonic() - t0
    assert MAX_WAIT_S <= waited < MAX_WAIT_S + 1.0, waited
    assert "no depth image received yet" in _missing(warnings, 6)[0]
    spin_until(lambda: False, 0.5)
    assert len(_missing(warnings, 6)) == 1 and not got and d3.counts["no_depth"] == 1


def test_a_frame_the_depth_stream_has_passed_is_warned_at_once(rig):
    node, d3, warnings, got, spin_until = rig
    d3._on_depth(_depth(9))
    d3.publish(_instances(), _header(6), [7])          # depth 9 arrived: none will come for 6
    assert len(_missing(warnings, 6)) == 1 and "no depth image within 0.050 s of stamp 6" in _missing(warnings, 6)[0]
    d3.publish(_instances(), _header(10), [7])         # waits; depth 11 passes it
    assert not _missing(warnings, 10)
    d3._on_depth(_depth(11))
    assert len(_missing(warnings, 10)) == 1 and not got


def test_waiting_frames_are_bounded_by_the_buffer_size(rig):
    node, d3, warnings, got, spin_until = rig
    limit = d3.settings.depth.buffer_size
    for k in range(limit + 2):
        d3.publish(_instances(), _header(100, k * 1_000_000), [7])   # 1 ms apart, all waiting
    assert len(d3._pending) == limit and d3.counts["no_depth"] == 2   # the two oldest dropped


def test_depth_over_image_max_pixels_is_refused_on_arrival(rig):
    node, d3, warnings, got, spin_until = rig
    d3._on_depth(_depth(3, 600, 800))                  # 480000 px > 400000, same aspect
    assert [k for k, _ in warnings] == ["depth_size"] and d3.counts["depth_in"] == 0
    assert "800x600" in warnings[0][1] and "image.max_pixels" in warnings[0][1]
    d3.publish(_instances(), _header(3), [7])          # not buffered: no 3D from it
    assert not spin_until(lambda: got, 0.3)
