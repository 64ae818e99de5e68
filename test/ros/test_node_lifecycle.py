"""Lifecycle transitions drive the node (load on configure, serve when active, free on cleanup),
a bad checkpoint fails configure with the reason, and parameter changes apply at run time."""
import pytest
from conftest import DATA, read_log, wait_for
from nodeutil import image_msg, node_argv, publish_until, read_rgb, wait_subscribed

pytestmark = [pytest.mark.ros, pytest.mark.slow]
FRAME = str(DATA / "sequence" / "000000.jpg")


def _call(probe, client, request, timeout=60):
    assert client.wait_for_service(timeout_sec=30), "service not available"
    fut = client.call_async(request)
    assert wait_for(fut.done, timeout), "service call timed out"
    return fut.result()


def _transition(probe, name, tid):
    from lifecycle_msgs.srv import ChangeState
    from lifecycle_msgs.msg import Transition

    cli = probe.create_client(ChangeState, f"/{name}/change_state")
    return _call(probe, cli, ChangeState.Request(transition=Transition(id=tid))).success


def _state(probe, name):
    from lifecycle_msgs.srv import GetState

    cli = probe.create_client(GetState, f"/{name}/get_state")
    return _call(probe, cli, GetState.Request()).current_state.label


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_lifecycle_and_parameters(ros_process, ros_probe):
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import InstanceMaskArray

    # reliable: 640x480 best-effort samples can be lost whole in this sandbox (no Fast DDS SHM)
    node = ros_process(node_argv(autostart=False, **{"image.reliable": True}), name="node")
    got = []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", got.append, 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    assert _state(ros_probe, "mobilesam") == "unconfigured"
    rss0 = _rss_mb(node.pid)
    assert _transition(ros_probe, "mobilesam", Transition.TRANSITION_CONFIGURE)
    assert _state(ros_probe, "mobilesam") == "inactive"
    assert "model ready" in read_log(node)
    rss_loaded = _rss_mb(node.pid)
    assert pub.get_subscription_count() == 0  # inactive: not subscribed
    assert _transition(ros_probe, "mobilesam", Transition.TRANSITION_ACTIVATE)
    wait_subscribed(pub, node)
    rgb = read_rgb(FRAME)
    publish_until(pub, image_msg(rgb, 1), lambda: got, node)
    n_default = len(got[0].instances)
    assert n_default >= 2  # persons of the campus frame

    # runtime parameter change: at most one instance from the next frame on
    setp = ros_probe.create_client(SetParameters, "/mobilesam/set_parameters")
    res = _call(ros_probe, setp, SetParameters.Request(parameters=[Parameter(
        name="filter.max_instances", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=1))]))
    assert res.results[0].successful
    publish_until(pub, image_msg(rgb, 2), lambda: any(a.header.stamp.sec == 2 for a in got), node)
    assert len(next(a for a in got if a.header.stamp.sec == 2).instances) == 1
    # detector thresholds apply live too: conf 1.0 keeps no box (scores must exceed it)
    res = _call(ros_probe, setp, SetParameters.Request(parameters=[Parameter(
        name="detector.conf", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1.0))]))
    assert res.results[0].successful
    publish_until(pub, image_msg(rgb, 4), lambda: any(a.header.stamp.sec == 4 for a in got), node)
    assert len(next(a for a in got if a.header.stamp.sec == 4).instances) == 0
    # invalid and read-only changes are refused with a reason
    for prm in (Parameter(name="filter.pred_iou_thresh",
                          value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=7.0)),
                Parameter(name="model.checkpoint",
                          value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="/x.pt"))):
        r = _call(ros_probe, setp, SetParameters.Request(parameters=[prm])).results[0]
        assert not r.successful and r.reason

    assert _transition(ros_probe, "mobilesam", Transition.TRANSITION_DEACTIVATE)
    assert wait_for(lambda: pub.get_subscription_count() == 0, 20)
    n = len(got)
    pub.publish(image_msg(rgb, 3))
    assert not wait_for(lambda: len(got) > n, 3)  # inactive: frames are not processed
    assert _transition(ros_probe, "mobilesam", Transition.TRANSITION_CLEANUP)
    assert _state(ros_probe, "mobilesam") == "unconfigured"
    assert wait_for(lambda: "model released" in read_log(node), 10), read_log(node)
    rss_clean = _rss_mb(node.pid)
    print(f"RSS MB: start {rss0:.0f}, configured+used {rss_loaded:.0f}, after cleanup {rss_clean:.0f}")
    # configure again works (the model is loaded anew), and the node shuts down cleanly
    assert _transition(ros_probe, "mobilesam", Transition.TRANSITION_CONFIGURE)
    assert _state(ros_probe, "mobilesam") == "inactive"


def test_bad_checkpoint_fails_configure_with_reason(ros_process, ros_probe, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint")
    node = ros_process(node_argv(autostart=False, **{"model.checkpoint": str(bad)}), name="node")
    from lifecycle_msgs.msg import Transition

    assert not _transition(ros_probe, "mobilesam", Transition.TRANSITION_CONFIGURE)
    assert _state(ros_probe, "mobilesam") == "unconfigured"
    assert wait_for(lambda: "configure failed" in read_log(node) and "broken.pt" in read_log(node), 10), \
        read_log(node)
    assert node.poll() is None


def test_mode_is_read_only_at_run_time(ros_process, ros_probe):
    """Prompt subscriptions are made at activate for modes segany and both: a run-time switch from
    segevery to segany would leave prompts unanswered, so `mode` is refused with a reason and the
    node keeps answering as it started."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import Prompt

    node = ros_process(node_argv(), name="node")  # mode segevery (the default), autostart
    image_pub = ros_probe.create_publisher(Image, "image", 10)
    prompt_pub = ros_probe.create_publisher(Prompt, "prompt", 10)
    wait_subscribed(image_pub, node)  # active
    assert prompt_pub.get_subscription_count() == 0  # segevery: no prompt subscription

    desc = ros_probe.create_client(DescribeParameters, "/mobilesam/describe_parameters")
    d = _call(ros_probe, desc, DescribeParameters.Request(names=["mode"])).descriptors[0]
    assert d.read_only and "read-only" in d.description
    setp = ros_probe.create_client(SetParameters, "/mobilesam/set_parameters")
    r = _call(ros_probe, setp, SetParameters.Request(parameters=[Parameter(
        name="mode", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="segany"))])).results[0]
    assert not r.successful and "read-only" in r.reason and "mode" in r.reason
    getp = ros_probe.create_client(GetParameters, "/mobilesam/get_parameters")
    assert _call(ros_probe, getp, GetParameters.Request(names=["mode"])).values[0].string_value == "segevery"
    assert prompt_pub.get_subscription_count() == 0 and node.poll() is None


def test_no_checkpoint_fails_configure_naming_the_parameter(ros_process, ros_probe):
    from lifecycle_msgs.msg import Transition

    argv = node_argv(autostart=False)
    i = argv.index(next(a for a in argv if a.startswith("model.checkpoint:=")))
    del argv[i - 1:i + 1]  # no model.checkpoint at all: its default, empty
    node = ros_process(argv, name="node")
    assert not _transition(ros_probe, "mobilesam", Transition.TRANSITION_CONFIGURE)
    assert wait_for(lambda: "no checkpoint given" in read_log(node)
                    and "model.checkpoint is empty" in read_log(node), 10), read_log(node)


@pytest.mark.slow
def test_ids_are_never_given_twice_across_cleanup_and_configure(ros_env):
    """In-process node (real rclpy, the seeded model on torch), two cameras: a click id and the
    tracker of each camera outlive cleanup + configure, so an object seen after a reconfigure never
    takes the id of one seen before (a consumer keyed by id would merge them). Each camera counts
    its own click ids."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from mobilesam_ros.ros.camera_port import CLICK_ID_BASE
    from mobilesam_ros.ros.node import MobileSamNode
    from nodeutil import CHECKPOINT

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    values = {"mode": "segany", "model.checkpoint": CHECKPOINT, "model.backend": "torch", "follow.clicks": True,
              "cameras": ["front", "rear"]}
    node = MobileSamNode("ids_live_on", context=ctx,
                         parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        trackers = {k: p.stream._tracker for k, p in node._ports.items()}
        assert [node._ports["front"]._click_id() for _ in range(2)] == [CLICK_ID_BASE, CLICK_ID_BASE + 1]
        assert node._ports["rear"]._click_id() == CLICK_ID_BASE
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._ports["front"]._click_id() == CLICK_ID_BASE + 2
        assert node._ports["rear"]._click_id() == CLICK_ID_BASE + 1
        assert all(node._ports[k].stream._tracker is t for k, t in trackers.items())
        node.trigger_cleanup()
    finally:
        node.destroy_node()
        ctx.try_shutdown()


def test_a_destroyed_node_leaves_the_graph_without_a_garbage_collection(ros_env, ros_probe):
    """destroy_node() finalises the rcl node at once. rclpy's LifecycleNode keeps it alive in its
    state machine until a garbage collection (the node stays in the graph; the GC then tore down
    its DDS participant at a random moment, which hung a test run inside Fast DDS). The collector
    is off here, so only destroy_node() can make the node leave."""
    import gc

    import rclpy

    from mobilesam_ros.ros.node import MobileSamNode

    def listed():
        return "doomed" in ros_probe.get_node_names()

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    gc.disable()
    try:
        node = MobileSamNode("doomed", context=ctx)
        try:
            assert wait_for(listed, 20), "the node never showed in the graph"
        finally:
            node.destroy_node()
        assert wait_for(lambda: not listed(), 10), "still in the graph 10 s after destroy_node()"
    finally:  # the context too, pass or fail: a node left to the GC is what this test is about
        ctx.try_shutdown()
        gc.enable()
