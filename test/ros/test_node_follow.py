"""Click-to-track through the real node process: an object started by a prompt (follow = true) and
one started by an RViz click keep their ids on ~/followed over 10 frames of the camera sequence;
with follow.min_pred_iou raised to 1 both are published flagged lost; ~/remove_objects stops each."""
import json

import numpy as np
import pytest
from conftest import DATA, read_log, wait_for
from nodeutil import image_msg, mask_from_instance, node_argv, publish_until, read_rgb, wait_subscribed

pytestmark = [pytest.mark.ros, pytest.mark.slow]

T0 = 300
CLICK_ID = 1 << 31   # camera_port.CLICK_ID_BASE: the first click-started object


def _stamp(k: int) -> tuple[int, int]:
    t = T0 * 10**9 + k * 100_000_000  # 10 fps
    return t // 10**9, t % 10**9


def test_prompt_and_click_are_followed_then_removed(ros_process, ros_probe):
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point, PointStamped
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mobilesam_ros.msg import InstanceMask, InstanceMaskArray, Prompt, PromptObject
    from mobilesam_ros.srv import RemoveObjects
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    # the seeded checkpoint's predicted IoUs carry no meaning: every non-empty mask counts as good
    node = ros_process(node_argv(mode="segany", **{"image.reliable": True, "follow.clicks": True,
                                                   "follow.min_pred_iou": 0.0,
                                                   "follow.max_area_change": 1e6}), name="node")
    answers, followed = [], []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", answers.append, 10)
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/followed", followed.append, 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    prompt_pub = ros_probe.create_publisher(Prompt, "prompt", 10)
    click_pub = ros_probe.create_publisher(PointStamped, "clicked_point", 10)
    remove = ros_probe.create_client(RemoveObjects, "/mobilesam/remove_objects")
    wait_subscribed(pub, node)
    frames = [read_rgb(str(DATA / "sequence" / f"{k:06d}.jpg")) for k in range(14)]
    h, w = frames[0].shape[:2]
    persons = [d["xyxy"] for d in json.loads((DATA / "models" / "expected_detections.json").read_text())
               ["results"]["sequence/000000.jpg"]["detections"] if d["name"] == "person"]
    box, clicked = persons[0], persons[1]

    pub.publish(image_msg(frames[0], *_stamp(0)))
    header = Header(stamp=Time(sec=_stamp(0)[0], nanosec=_stamp(0)[1]), frame_id="camera_optical_frame")
    prompt = Prompt(header=header, objects=[PromptObject(id=42, has_box=True, box=np.array(box, np.float32),
                                                         follow=True)])
    assert wait_for(lambda: prompt_pub.get_subscription_count() > 0, 30)
    # re-sent until frame 0 is encoded (before that the prompt finds no cached frame)
    publish_until(prompt_pub, prompt, lambda: any(a.mode == "segany" for a in answers), node, period=5.0)
    click = PointStamped(header=header, point=Point(x=(clicked[0] + clicked[2]) / 2, y=(clicked[1] + clicked[3]) / 2))
    click_pub.publish(click)
    assert wait_for(lambda: any(i.id == CLICK_ID for a in answers for i in a.instances), 60), read_log(node)

    def followed_at(k):
        sec, ns = _stamp(k)
        return [a for a in followed if (a.header.stamp.sec, a.header.stamp.nanosec) == (sec, ns)]

    for k in range(1, 11):
        pub.publish(image_msg(frames[k], *_stamp(k)))
        assert wait_for(lambda: followed_at(k), 120), read_log(node)
        (arr,) = followed_at(k)
        assert arr.mode == "segany" and [i.id for i in arr.instances] == [42, CLICK_ID]
        for inst in arr.instances:
            assert inst.track_state == InstanceMask.TRACK_CONFIRMED and inst.track_hits == k + 1
            assert (inst.first_seen.sec, inst.first_seen.nanosec) == _stamp(0)
            assert inst.track_age == pytest.approx(k * 0.1, abs=1e-6)
            assert mask_from_instance(inst, h, w).sum() == inst.area > 0

    # no predicted IoU reaches 1: both objects are lost, published flagged with empty masks
    set_params = ros_probe.create_client(SetParameters, "/mobilesam/set_parameters")
    assert set_params.wait_for_service(timeout_sec=30)
    fut = set_params.call_async(SetParameters.Request(
        parameters=[Parameter("follow.min_pred_iou", value=1.0).to_parameter_msg()]))
    assert wait_for(fut.done, 30) and fut.result().results[0].successful
    pub.publish(image_msg(frames[11], *_stamp(11)))
    assert wait_for(lambda: followed_at(11), 120), read_log(node)
    lost = followed_at(11)[0].instances
    assert [i.id for i in lost] == [42, CLICK_ID]
    assert all(i.track_state == InstanceMask.TRACK_LOST and i.area == 0 and i.bbox.width == 0
               and i.track_hits == 11 for i in lost)

    assert remove.wait_for_service(timeout_sec=30)
    fut = remove.call_async(RemoveObjects.Request(ids=[42, 7]))
    assert wait_for(fut.done, 30)
    assert list(fut.result().removed) == [42]
    pub.publish(image_msg(frames[12], *_stamp(12)))
    assert wait_for(lambda: followed_at(12), 120), read_log(node)
    assert [i.id for i in followed_at(12)[0].instances] == [CLICK_ID]

    fut = remove.call_async(RemoveObjects.Request(ids=[CLICK_ID]))
    assert wait_for(fut.done, 30) and list(fut.result().removed) == [CLICK_ID]
    pub.publish(image_msg(frames[13], *_stamp(13)))
    # a plain prompt on frame 13: its answer comes after frame 13 was encoded (and stepped)
    prompt.header.stamp = Time(sec=_stamp(13)[0], nanosec=_stamp(13)[1])
    prompt.objects[0].follow = False
    prompt.objects[0].id = 5
    publish_until(prompt_pub, prompt, lambda: any(i.id == 5 for a in answers for i in a.instances), node,
                  period=5.0)
    assert followed_at(13) == []


def test_follow_limits_first_and_costs_no_second_decode(ros_env, capfd):
    """In-process node (real rclpy, the seeded model on torch): a Prompt with 6 follow objects
    and follow.max_objects = 2 is answered with 6 masks and the first 2 are followed, from the
    answer's own decode: a spy on the backend counts one decoder call of 6 objects, nothing more
    (before: the answer, then the followed objects decoded again outside the prompt's budget).
    Then a frame stamped 10 s earlier (a looping bag) drops the followed objects before any
    decode, with one log line naming the jump."""
    import time

    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from mobilesam_ros.msg import Prompt, PromptObject
    from mobilesam_ros.ros.node import MobileSamNode
    from nodeutil import CHECKPOINT

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    values = {"mode": "segany", "model.checkpoint": CHECKPOINT, "model.backend": "torch", "follow.max_objects": 2,
              "segany.max_batch_s": 600.0}
    node = MobileSamNode("follow_limits", context=ctx,
                         parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        port = node._ports[""]
        backend = node._model.backend
        calls = []
        decode = backend.decode

        def counting_decode(*args, **kwargs):  # a spy: counts, then the real decoder
            calls.append(len(args[1]))
            return decode(*args, **kwargs)
        backend.decode = counting_decode
        answered = []
        publish = port._publish
        port._publish = lambda inst, mode, ids, *a: (answered.append(list(ids)), publish(inst, mode, ids, *a))
        header = Header(stamp=Time(sec=T0, nanosec=0), frame_id="camera_optical_frame")
        port.stream.step(read_rgb(str(DATA / "sequence" / "000000.jpg")), T0 * 10**9, meta=header)
        boxes = [[20 + 100 * k, 40, 110 + 100 * k, 300] for k in range(6)]

        def prompt(first_id):
            return Prompt(header=header, objects=[PromptObject(id=first_id + k, has_box=True, follow=True,
                                                               box=np.array(b, np.float32))
                                                  for k, b in enumerate(boxes)])
        node._process_prompt("", ("prompt", prompt(10)))
        assert calls == [6], calls  # the answer; following its objects decoded nothing more
        assert answered == [list(range(10, 16))]
        assert port.stream.followed_ids == [10, 11]
        assert "follow_refused" in node._warned

        # with room for 8, six more: still one decoder call, all six followed
        node.set_parameters([Parameter("follow.max_objects", value=8)])
        calls.clear()
        node._process_prompt("", ("prompt", prompt(20)))
        assert calls == [6], calls
        assert answered[-1] == list(range(20, 26))
        assert port.stream.followed_ids == [10, 11] + list(range(20, 26))

        calls.clear()
        earlier = Header(stamp=Time(sec=T0 - 10, nanosec=0), frame_id="camera_optical_frame")
        port.process_frame((read_rgb(str(DATA / "sequence" / "000001.jpg")), earlier))
        assert port.stream.followed_ids == [] and calls == []  # dropped before any decode
        time.sleep(0.2)
        err = capfd.readouterr().err
        assert err.count("stamps went back") == 1, err
        assert f"from {T0}.000 s to {T0 - 10}.000 s" in err and "stopped following ids [10, 11, 20" in err, err
    finally:
        node.trigger_deactivate()
        node.trigger_cleanup()
        node.destroy_node()
        ctx.try_shutdown()
