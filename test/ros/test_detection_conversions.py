"""vision_msgs conversions without a node: Detection2DArray -> prompts (boxes, points, classes,
refusals) against hand-computed values; the detection count read from the serialized bytes equals
the array's length for every frame_id length (CDR alignment)."""
import numpy as np
import pytest
from nodeutil import detection_array

import hostile
from mobilesam_ros.core.config import DetectionsConfig, SegAnyConfig
from mobilesam_ros.core.engine.class_names import ClassNames
from mobilesam_ros.core.structures.prompts import PromptError
from mobilesam_ros.ros.detection_conversions import detections_to_prompts, serialized_count

NAMES = ClassNames({0: "person", 2: "car"})


def test_boxes_classes_and_ids():
    msg = detection_array(1, [[10, 20, 50, 80], [-5, 0, 30, 600]], ["person", "robot"], ["a", "b"], [0.9, 0.4])
    out = detections_to_prompts(msg, (480, 640), SegAnyConfig(), DetectionsConfig(), NAMES)
    np.testing.assert_array_equal(out.prompts[0].box, np.array([10, 20, 50, 80], np.float32))
    np.testing.assert_array_equal(out.prompts[1].box, np.array([0, 0, 30, 480], np.float32))  # clipped
    assert (out.detection_ids, out.class_ids, out.class_names) == (["a", "b"], [0, -1], ["person", "robot"])
    assert out.scores == pytest.approx([0.9, 0.4])


def test_point_mode_is_the_box_centre_one_multimask_point():
    msg = detection_array(1, [[10, 20, 50, 80]], ["2"], ["a"])
    p = detections_to_prompts(msg, (480, 640), SegAnyConfig(), DetectionsConfig(prompt="point"), NAMES).prompts[0]
    np.testing.assert_array_equal(p.points, [[30, 50]])
    assert list(p.labels) == [1] and p.multimask and p.box is None


@pytest.mark.parametrize("box", [[np.nan, 0, 10, 10], [0, 0, np.inf, 10], [700, 500, 900, 600]])
def test_a_bad_detection_refuses_the_array(box):
    msg = detection_array(1, [[0, 0, 10, 10], box], ["0", "0"], ["ok", "bad"])
    with pytest.raises(PromptError, match="detection 1 \\(id 'bad'\\)"):
        detections_to_prompts(msg, (480, 640), SegAnyConfig(), DetectionsConfig(), NAMES)


def test_negative_size_and_too_many():
    msg = detection_array(1, [[10, 10, 5, 20]], ["0"], ["neg"])  # x2 < x1: size_x = -5
    with pytest.raises(PromptError, match="negative size"):
        detections_to_prompts(msg, (480, 640), SegAnyConfig(), DetectionsConfig(), NAMES)
    msg = detection_array(1, [[0, 0, 10, 10]] * 3, ["0"] * 3, ["x"] * 3)
    with pytest.raises(PromptError, match="3 detections, over the limit of 2"):
        detections_to_prompts(msg, (480, 640), SegAnyConfig(max_objects=2), DetectionsConfig(), NAMES)


def test_serialized_count_reads_cdr():
    from rclpy.serialization import serialize_message

    for frame_id in ("", "a", "ab", "abc", "camera_optical_frame"):
        for n in (0, 1, 7, 101):
            _, msg = hostile.detections(np.random.default_rng(n), 5, n)
            msg.header.frame_id = frame_id
            assert serialized_count(serialize_message(msg)) == n
    assert serialized_count(b"\0\1\0\0") is None
