"""A stream of malformed inputs, each followed by nothing, then a valid frame: the node logs one
clear line per problem, skips the message, stays up, and answers the valid frame."""
import numpy as np
import pytest
from conftest import DATA, read_log, wait_for
from nodeutil import image_msg, node_argv, publish_until, read_rgb, wait_subscribed

pytestmark = [pytest.mark.ros, pytest.mark.slow]
FRAME = str(DATA / "sequence" / "000000.jpg")


def _bad_images(rgb):
    from sensor_msgs.msg import CompressedImage

    good = image_msg(rgb, 1)
    out = []

    def variant(**kw):
        m = image_msg(rgb, 1)
        for k, v in kw.items():
            setattr(m, k, v)
        return m
    out.append(("unsupported encoding", variant(encoding="yuv422_yuy2")))
    out.append(("step < width", variant(step=good.width)))
    out.append(("truncated", variant(data=bytes(good.data)[: len(good.data) // 2])))
    out.append(("empty", variant(height=0, width=0, step=0, data=b"")))
    out.append(("huge", variant(height=100000, width=100000, step=300000)))
    bad_jpeg = CompressedImage(format="jpeg", data=b"\xff\xd8not a jpeg at all")
    bad_jpeg.header = good.header
    return out, bad_jpeg


def test_malformed_stream_then_valid_frame(ros_process, ros_probe):
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptObject

    # reliable: this test is about input handling, not about best-effort delivery of big samples
    node = ros_process(node_argv(mode="both", **{"image.reliable": True}), name="node")
    got = []
    ros_probe.create_subscription(InstanceMaskArray, "/mobilesam/instances", got.append, 10)
    pub = ros_probe.create_publisher(Image, "image", 10)
    cpub = ros_probe.create_publisher(CompressedImage, "image/compressed", 10)
    ppub = ros_probe.create_publisher(Prompt, "prompt", 10)
    wait_subscribed(pub, node)
    rgb = read_rgb(FRAME)
    bad, bad_jpeg = _bad_images(rgb)
    assert wait_for(lambda: cpub.get_subscription_count() > 0, 30)
    expected = ["unsupported encoding 'yuv422_yuy2'", "step 640 < width", "truncated data", "empty image",
                "exceeds the"]
    # one at a time: the node's image subscription keeps only the newest sample (depth 1)
    for (_, msg), needle in list(zip(bad, expected)) + [(("jpeg", bad_jpeg), "could not decode CompressedImage")]:
        target = cpub if needle.startswith("could not decode") else pub
        for _ in range(5):
            target.publish(msg)
            if wait_for(lambda: needle in read_log(node), 3):
                break
        assert needle in read_log(node), f"no log line with {needle!r}:\n{read_log(node)}"
    assert node.poll() is None

    # a valid frame is answered after all that
    publish_until(pub, image_msg(rgb, 50), lambda: any(a.header.stamp.sec == 50 for a in got), node)

    hdr = Header(stamp=Time(sec=50), frame_id="camera_optical_frame")
    bad_prompts = [
        ("NaN", [PromptObject(id=1, points=[Point(x=float("nan"), y=1.0)], labels=[1])], "NaN or inf"),
        ("inf box", [PromptObject(id=1, has_box=True, box=np.array([0, 0, np.inf, 5], np.float32))], "NaN or inf"),
        ("outside", [PromptObject(id=1, points=[Point(x=5000.0, y=10.0)], labels=[1])], "outside the 640x480 image"),
        ("mismatch", [PromptObject(id=1, points=[Point(x=5.0, y=5.0)], labels=[1, 0])], "1 points but 2 labels"),
        ("bad mask", [PromptObject(id=1, has_box=True, box=np.array([1, 1, 50, 50], np.float32),
                                   mask_input=image_msg(rgb, 50))], "mask_input must be a 32FC1"),
    ]
    assert wait_for(lambda: ppub.get_subscription_count() > 0, 30)
    # one at a time, re-sent after the 2 s throttle: all of these are one kind (a refused prompt),
    # logged at most once per 2 s
    for _, objs, needle in bad_prompts:
        for _ in range(4):
            ppub.publish(Prompt(header=hdr, objects=objs))
            if wait_for(lambda: needle in read_log(node), 3):
                break
        assert needle in read_log(node), f"no log line with {needle!r}:\n{read_log(node)}"
    ppub.publish(Prompt(header=Header(stamp=Time(sec=12345)), objects=[
        PromptObject(id=1, points=[Point(x=5.0, y=5.0)], labels=[1])]))
    assert wait_for(lambda: "no cached frame within" in read_log(node), 20), read_log(node)
    # an empty prompt is valid and answered with an empty array; a good one after it is answered
    ppub.publish(Prompt(header=hdr, objects=[]))
    ppub.publish(Prompt(header=hdr, objects=[PromptObject(id=4, points=[Point(x=320.0, y=240.0)], labels=[1])]))
    assert wait_for(lambda: sum(a.mode == "segany" for a in got) >= 2, 60), read_log(node)
    answers = [a for a in got if a.mode == "segany"]
    assert len(answers[0].instances) == 0 and [i.id for i in answers[1].instances] == [4]
    assert node.poll() is None
