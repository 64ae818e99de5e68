"""The real node, in its own process: frames in -> instances, label image and overlay out with the
source header; masks equal the engine's command line; SegAny prompts decode against their frame."""
import numpy as np
import pytest
from conftest import read_log, wait_for
from nodeutil import (BUS, CHECKPOINT, DETECTOR, ZIDANE, image_msg, mask_from_instance, node_argv,
                      publish_until, read_rgb, run_cli, unpack_npz_masks, wait_subscribed)

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _subscribe_outputs(probe, name="mobilesam"):
    from sensor_msgs.msg import Image

    from mobilesam_ros.msg import InstanceMaskArray

    got = {"instances": [], "label": [], "overlay": []}
    probe.create_subscription(InstanceMaskArray, f"/{name}/instances", got["instances"].append, 10)
    probe.create_subscription(Image, f"/{name}/label_image", got["label"].append, 10)
    probe.create_subscription(Image, f"/{name}/overlay", got["overlay"].append, 10)
    return got


def test_segevery_frame_matches_cli(ros_process, ros_probe, tmp_path):
    from sensor_msgs.msg import Image

    # reliable: multi-megabyte best-effort frames lose UDP fragments where Fast DDS has no shared
    # memory (as in this sandbox); the small-frame tests use the default SensorDataQoS
    node = ros_process(node_argv(mode="segevery", **{"image.reliable": True}), name="node")
    got = _subscribe_outputs(ros_probe)
    pub = ros_probe.create_publisher(Image, "image", 10)
    wait_subscribed(pub, node)
    rgb = read_rgb(BUS)
    publish_until(pub, image_msg(rgb, 1700000000, 5),
                  lambda: got["instances"] and got["label"] and got["overlay"], node)
    arr, label, overlay = got["instances"][0], got["label"][0], got["overlay"][0]
    for m in (arr, label, overlay):
        assert (m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) == \
            (1700000000, 5, "camera_optical_frame")
    assert (arr.image_height, arr.image_width) == rgb.shape[:2] and arr.mode == "segevery"
    assert label.encoding == "mono16" and overlay.encoding == "rgb8"
    assert (overlay.height, overlay.width) == rgb.shape[:2]

    out = tmp_path / "cli.npz"
    res = run_cli("segevery", "--checkpoint", CHECKPOINT, "--image", BUS, "--detector", DETECTOR,
                  "--max-instances", "100", "--output", str(out))
    assert res.returncode == 0, res.stderr
    ref = np.load(out)
    ref_masks = unpack_npz_masks(ref)
    assert len(arr.instances) == len(ref_masks) >= 3  # the bus and persons of bus.jpg
    h, w = rgb.shape[:2]
    labels = np.frombuffer(bytes(label.data), np.uint16).reshape(h, w)
    for k, inst in enumerate(arr.instances):
        m = mask_from_instance(inst, h, w)
        np.testing.assert_array_equal(m, ref_masks[k])
        assert inst.area == m.sum() == ref["areas"][k]
        assert inst.score == pytest.approx(float(ref["scores"][k]), abs=1e-6)
        assert inst.id == k + 1 and inst.class_id == ref["class_ids"][k]
        assert np.all(m[labels == inst.id])  # a label pixel always lies in its instance's mask
    assert set(np.unique(labels)) <= {0} | {i.id for i in arr.instances}


def test_prompt_decodes_against_its_own_older_frame(ros_process, ros_probe, tmp_path):
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    from mobilesam_ros.msg import Prompt, PromptObject

    node = ros_process(node_argv(mode="both", **{"image.reliable": True}), name="node")
    got = _subscribe_outputs(ros_probe)
    pub = ros_probe.create_publisher(Image, "image", 10)
    prompt_pub = ros_probe.create_publisher(Prompt, "prompt", 10)
    wait_subscribed(pub, node)
    publish_until(pub, image_msg(read_rgb(BUS), 10), lambda: len(got["instances"]) >= 1, node)
    publish_until(pub, image_msg(read_rgb(ZIDANE), 20),
                  lambda: any(a.header.stamp.sec == 20 for a in got["instances"]), node)

    box = [50.0, 230.0, 800.0, 750.0]
    point = (400.0, 500.0)
    prompt = Prompt(header=Header(stamp=Time(sec=10, nanosec=1000), frame_id="camera_optical_frame"), objects=[
        PromptObject(id=7, has_box=True, box=np.array(box, np.float32)),
        PromptObject(id=9, points=[Point(x=point[0], y=point[1])], labels=[1], multimask=True)])
    assert wait_for(lambda: prompt_pub.get_subscription_count() > 0, 30)
    prompt_pub.publish(prompt)
    assert wait_for(lambda: any(a.mode == "segany" for a in got["instances"]), 60), read_log(node)
    ans = next(a for a in got["instances"] if a.mode == "segany")
    assert ans.header.stamp.sec == 10 and ans.header.stamp.nanosec == 0  # the frame's header
    assert (ans.image_height, ans.image_width) == (1080, 810)  # bus.jpg, not zidane
    assert [i.id for i in ans.instances] == [7, 9]

    for inst, extra in ((ans.instances[0], ["--box", ",".join(map(str, box))]),
                        (ans.instances[1], ["--point", f"{point[0]},{point[1]},1", "--multimask"])):
        out = tmp_path / f"segany_{inst.id}.npz"
        res = run_cli("segany", "--checkpoint", CHECKPOINT, "--image", BUS, *extra, "--output", str(out))
        assert res.returncode == 0, res.stderr
        ref = np.load(out)
        best = int(np.argmax(ref["iou"]))
        np.testing.assert_array_equal(mask_from_instance(inst, 1080, 810), ref["masks"][best])
        assert inst.score == pytest.approx(float(ref["iou"][best]), abs=1e-6)

    # a prompt for a frame that was never seen: one warning, no answer, node keeps serving
    n = len(got["instances"])
    prompt.header.stamp = Time(sec=999)
    prompt_pub.publish(prompt)
    assert wait_for(lambda: "no cached frame within" in read_log(node), 30), read_log(node)
    publish_until(pub, image_msg(read_rgb(BUS), 30),
                  lambda: any(a.header.stamp.sec == 30 for a in got["instances"]), node)
    assert all(a.header.stamp.sec != 999 for a in got["instances"][n:])
