"""core.engine.camera_stream: streams over ONE shared model keep their own frames, tracks and
followed objects; a frame enters once and is never looked up by stamp again; a prompt is
resolved once; following costs no second decode; the follow limit applies before anything.

Real seeded model (mobile_sam_seed2: it sees the image), real camera frames; the detector is the
boxes MobileSAMv2 would get from elsewhere (Detections), so the decode is checked against the
predictor's own official-path decode of the same boxes computed independently here.
"""
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import DATA, shared_path

from mobilesam_ros.core.config import FollowConfig, NodeConfig, Settings, TrackerConfig
from mobilesam_ros.core.engine.follow import ObjectLabel
from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError
from mobilesam_ros.core.structures.detections import Detections
from mobilesam_ros.core.structures.prompts import make_prompt

S = 1_000_000_000
EXPECTED = json.loads((DATA / "models" / "expected_detections.json").read_text())
BOXES = np.array([d["xyxy"] for d in EXPECTED["results"]["sequence/000000.jpg"]["detections"]][:4], np.float32)


def frame(k: int) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / "sequence" / f"{k:06d}.jpg")), cv2.COLOR_BGR2RGB)


class FixedBoxes:
    """Box proposals from elsewhere (a detector's boxes recorded once): the same boxes each frame."""

    def detect(self, image, conf=None, iou=None):
        return Detections(BOXES, np.ones(len(BOXES), np.float32), np.arange(len(BOXES), dtype=np.int32))


@pytest.fixture(scope="module")
def model():
    from mobilesam_ros.core.engine.model import SegmentationModel
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    return SegmentationModel(TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed2.pt"))),
                             FixedBoxes())


def spy(obj, name, calls):
    """Count calls of obj.name (then run the real one)."""
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)
    setattr(obj, name, counted)


@pytest.mark.slow
def test_two_streams_share_the_model_and_keep_their_own_state(model):
    from mobilesam_ros.core.engine.camera_stream import CameraStream
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.engine.segevery import decode_boxes
    from mobilesam_ros.core.ops.filters import filter_instances

    settings = Settings(tracker=TrackerConfig(confirm_hits=1))
    front, rear = CameraStream("front", model, settings, 2), CameraStream("rear", model, settings, 2)
    assert front.predictor.backend is rear.predictor.backend is model.backend
    img = frame(0)
    res = front.step(img, 5 * S, meta="front header")
    # the same boxes decoded by a plain predictor on the same backend, the official path
    ref = SamPredictor(model.backend)
    ref_inst = filter_instances(decode_boxes(ref, BOXES, ref.set_image(img, 1)), settings.filters)
    np.testing.assert_array_equal(res.instances.dense_masks(), ref_inst.dense_masks())
    np.testing.assert_array_equal(res.instances.boxes, ref_inst.boxes)
    assert res.frame.meta == "front header" and res.instances.frame is res.frame
    assert res.ids == [1, 2, 3, 4]
    # the rear camera has its own cache: front's stamp is unknown there
    with pytest.raises(FrameNotCachedError):
        rear.resolve(5 * S, 0)
    r2 = rear.step(frame(1), 7 * S)
    assert r2.ids == [1, 2, 3, 4]  # ids per camera: rear starts at 1 too
    f2 = front.step(frame(1), 6 * S)
    assert sorted(f2.ids) == [1, 2, 3, 4]  # the same objects keep their ids on front
    assert front.resolve(5 * S, 0) is res.frame and rear.resolve(7 * S, 0) is r2.frame


@pytest.mark.slow
def test_a_frame_and_a_prompt_look_nothing_up_again(model):
    from mobilesam_ros.core.engine.camera_stream import CameraStream

    s = Settings(node=NodeConfig(mode="both"), follow=FollowConfig(min_pred_iou=0.0, max_area_change=1e9))
    cam = CameraStream("", model, s, 3)
    lookups = []
    spy(cam.predictor.cache, "get", lookups)
    spy(cam.predictor.cache, "find", lookups)
    res = cam.step(frame(0), 1 * S)
    assert lookups == []  # encode, detect, decode, track, follow: all on the frame object
    fr = cam.resolve(1 * S, 0)
    assert fr is res.frame and len(lookups) >= 1
    lookups.clear()
    ans = cam.answer([make_prompt(box=BOXES[0])], fr, [7], [True])
    assert lookups == [] and ans.instances.frame is fr and cam.followed_ids == [7]
    res = cam.step(frame(1), 2 * S)
    assert lookups == [] and res.followed is not None and list(res.followed.tracks.ids) == [7]


@pytest.mark.slow
def test_follow_limits_first_and_starts_from_the_answer_without_a_second_decode(model):
    from mobilesam_ros.core.engine.camera_stream import CameraStream
    from mobilesam_ros.core.engine.predictor import SamPredictor

    s = Settings(node=NodeConfig(mode="segany"), follow=FollowConfig(max_objects=2, min_pred_iou=0.0,
                                                                     max_area_change=1e9))
    cam = CameraStream("", model, s, 2)
    fr = cam.step(frame(0), 1 * S).frame
    decodes = []
    spy(cam.predictor, "decode_tokens", decodes)
    prompts = [make_prompt(box=b) for b in BOXES]
    labels = [ObjectLabel(k, f"class{k}", f"det{k}", 0.5 + k / 10) for k in range(4)]
    ans = cam.answer(prompts, fr, [11, 12, 13, 14], [True, True, True, False], labels=labels)
    assert len(decodes) == 1  # the answer's own decode; following took none
    assert ans.refused == [13] and cam.followed_ids == [11, 12]
    # the followed state is the answer's decode: its logits equal a separate official decode
    ref = SamPredictor(model.backend)
    ref.set_image(frame(0), 1)
    single = ref.predict(box=BOXES[1], multimask_output=False)
    np.testing.assert_allclose(cam._follow.get(12).logits, single.low_res_logits, atol=1e-4)
    # on the next frame each followed object still carries what its prompt said it is
    f = cam.step(frame(1), 2 * S).followed
    by_id = {int(i): k for k, i in enumerate(f.tracks.ids)}
    assert sorted(by_id) == [11, 12]
    for oid, k in ((11, 0), (12, 1)):
        assert f.labels[by_id[oid]] == labels[k]
        assert f.instances.class_ids[by_id[oid]] == k
        assert f.instances.det_scores[by_id[oid]] == pytest.approx(0.5 + k / 10)


@pytest.mark.slow
def test_settings_swap_switches_tracking_and_thresholds(model):
    from mobilesam_ros.core.engine.camera_stream import CameraStream

    s = Settings(tracker=TrackerConfig(confirm_hits=1))
    cam = CameraStream("", model, s, 1)
    assert cam.step(frame(0), 1 * S).ids == [1, 2, 3, 4]
    cam.update(replace(s, node=NodeConfig(tracking_enabled=False)))
    off = cam.step(frame(1), 2 * S)
    assert off.tracks is None and off.ids == [1, 2, 3, 4]
    cam.update(replace(s, tracker=TrackerConfig(confirm_hits=5)))
    on = cam.step(frame(2), 3 * S)
    # the pause forgot the tracks: new ids (never reused), tentative under confirm_hits 5
    assert sorted(on.ids) == [5, 6, 7, 8] and set(int(x) for x in on.tracks.states) == {1}


def test_admit_every_n_and_max_rate():
    from mobilesam_ros.core.config import SegEveryConfig
    from mobilesam_ros.core.engine.camera_stream import CameraStream
    from mobilesam_ros.core.engine.model import SegmentationModel

    class NoBackend:
        pass

    m = SegmentationModel(NoBackend())
    cam = CameraStream("", m, Settings(segevery=SegEveryConfig(every_n=2)), 1)
    assert [cam.admit(k * 0.01) for k in range(6)] == [False, True, False, True, False, True]
    cam.update(Settings(segevery=SegEveryConfig(max_rate_hz=10.0)))
    # 10 Hz: after an admitted frame at t, the next one at t + 0.1 s or later
    got = [cam.admit(t) for t in (1.0, 1.05, 1.099, 1.1, 1.15, 1.25)]
    assert got == [True, False, False, True, False, True]


@pytest.mark.slow
def test_a_tracker_handed_over_keeps_counting_ids(model):
    """The node keeps one Tracker per camera for the process: a stream built again after a
    cleanup and configure never gives an old id to a new object."""
    from mobilesam_ros.core.engine.camera_stream import CameraStream
    from mobilesam_ros.core.engine.tracking import Tracker

    s = Settings(tracker=TrackerConfig(confirm_hits=1))
    tracker = Tracker(s.tracker)
    first = CameraStream("", model, s, 1, tracker)
    assert first.step(frame(0), 1 * S).ids == [1, 2, 3, 4]
    first.clear()  # cleanup: frames and tracks go, the id counter stays
    again = CameraStream("", model, s, 1, tracker)
    assert sorted(again.step(frame(0), 2 * S).ids) == [5, 6, 7, 8]
