"""core.engine.follow (click-to-track): the bookkeeping on hand-made decoder results, and on the camera
sequence one batched decode per frame that equals the official single-object decode of each
re-prompt."""
import json

import cv2
import numpy as np
import pytest
from conftest import DATA, shared_path

from mobilesam_ros.core.engine.follow import FollowConfig, FollowSet, ObjectLabel, follow_step
from mobilesam_ros.core.engine.predictor import Prediction

S = 1_000_000_000
HW = (40, 60)


def pred(x0, y0, x1, y1, iou=0.9, fill=1.0):
    """A one-candidate Prediction whose mask is the rectangle [x0, x1) x [y0, y1)."""
    m = np.zeros((1,) + HW, bool)
    m[0, y0:y1, x0:x1] = True
    return Prediction(m, np.array([iou], np.float32), np.full((1, 256, 256), fill, np.float32),
                      np.array([0.95], np.float32))


def test_add_bounds_the_number_and_refuses_empty_masks():
    fs = FollowSet(FollowConfig(max_objects=2))
    refused = fs.add([5, 6, 7, 8], [pred(0, 0, 10, 10), pred(0, 0, 0, 0), pred(20, 0, 30, 10),
                                    pred(40, 0, 50, 10)], 0)
    assert refused == [6, 8] and fs.ids == [5, 7]
    assert fs.add([5], [pred(1, 1, 9, 9)], 0) == []  # an existing id is updated, not refused


def test_reprompt_is_the_last_good_box_and_logits():
    fs = FollowSet()
    fs.add([3], [pred(10, 5, 20, 15, fill=2.5)], 0)
    (p,) = fs.prompts()
    # columns 10..19, rows 5..14 -> box x1, y1 = 10, 5 and x2, y2 one past the last pixel
    np.testing.assert_array_equal(p.box, [10, 5, 20, 15])
    assert p.mask_input.shape == (1, 256, 256) and np.all(p.mask_input == 2.5) and p.points is None


def test_bad_results_are_lost_then_dropped_after_the_timeout_in_seconds():
    fs = FollowSet(FollowConfig(min_pred_iou=0.5, max_area_change=3.0, lost_timeout_s=1.0))
    fs.add([1, 2], [pred(0, 0, 10, 10), pred(30, 0, 40, 10)], 0)
    # 1: good (area 120 vs 100); 2: predicted IoU 0.3 -> lost, not published
    r = fs.update([pred(0, 0, 12, 10, fill=4.0), pred(30, 0, 40, 10, iou=0.3)], S // 10, HW)
    assert r.ids == [1] and r.hits == [2] and r.lost == [2] and r.dropped == []
    assert r.instances.areas.tolist() == [120] and r.first_seen_ns == [0]
    # 1: area x4 (480 vs 120) -> lost; its re-prompt stays the last good state
    r = fs.update([pred(0, 0, 24, 20), pred(30, 0, 40, 10)], 2 * S // 10, HW)
    assert r.ids == [2] and r.hits == [2] and r.lost == [1]
    np.testing.assert_array_equal(fs.prompts()[0].box, [0, 0, 12, 10])
    assert np.all(fs.prompts()[0].mask_input == 4.0)
    # 1 still bad 1.1 s after its last good frame (0.1 s) -> dropped; an empty mask is bad too
    r = fs.update([pred(0, 0, 0, 0), pred(30, 0, 40, 10)], 12 * S // 10 + 1, HW)
    assert r.dropped == [1] and fs.ids == [2] and r.ids == [2] and r.hits == [3]
    assert fs.remove([2, 9]) == [2] and len(fs) == 0


def test_a_lost_object_is_reacquired_from_the_best_overlapping_instance():
    from mobilesam_ros.core.structures.instances import Instances

    fs = FollowSet(FollowConfig(reacquire_iou=0.5))
    fs.add([1, 2], [pred(0, 0, 10, 10), pred(30, 0, 40, 10)], 0)
    fs.update([pred(0, 0, 10, 10, iou=0.1), pred(30, 0, 40, 10)], S // 10, HW)  # 1 lost, 2 good

    def instances(*rects):
        m = np.zeros((len(rects),) + HW, bool)
        for k, (x0, y0, x1, y1) in enumerate(rects):
            m[k, y0:y1, x0:x1] = True
        return Instances.from_masks(m, np.ones(len(rects)))
    # [2,12)x[0,10) overlaps object 1's [0,10)x[0,10) by 80 of 120 px (IoU 0.67);
    # [5,15)x[5,15) by 25 of 175 (0.14); the third sits on object 2, which is not lost
    assert fs.reacquire(instances((5, 5, 15, 15), (2, 0, 12, 10), (30, 0, 40, 10))) == [1]
    p1, p2 = fs.prompts()
    np.testing.assert_array_equal(p1.box, [2, 0, 12, 10])
    assert p1.mask_input is None and p2.mask_input is not None
    assert fs.get(1).lost and fs.get(1).area == 100
    # nothing overlapping enough: nothing taken
    fs2 = FollowSet(FollowConfig(reacquire_iou=0.5))
    fs2.add([1], [pred(0, 0, 10, 10)], 0)
    fs2.update([pred(0, 0, 0, 0)], S // 10, HW)
    assert fs2.reacquire(instances((5, 5, 15, 15))) == []


def test_admit_says_which_ids_fit_before_anything_is_decoded():
    fs = FollowSet(FollowConfig(max_objects=3))
    fs.add([1], [pred(0, 0, 10, 10)], 0)
    # 1 is followed (an update: always), then room for two new ids; a repeated new id counts once
    assert fs.admit([4, 1, 4, 5, 6, 7]) == [True, True, True, True, False, False]
    assert fs.ids == [1]  # asking changes nothing


def test_start_takes_logits_boxes_and_areas_without_masks():
    fs = FollowSet(FollowConfig(max_objects=2))
    logits = np.full((3, 1, 256, 256), 1.5, np.float32)
    boxes = np.array([[10, 5, 20, 15], [0, 0, 4, 4], [1, 1, 3, 3]], np.float32)
    assert fs.start([7, 8, 9], logits, boxes, [100, 0, 4], 5 * S) == [8]  # 8: empty mask
    assert fs.ids == [7, 9] and fs.get(7).area == 100 and fs.get(9).first_ns == 5 * S
    np.testing.assert_array_equal(fs.prompts()[0].box, [10, 5, 20, 15])
    assert fs.start([3], logits[:1], boxes[:1], [9], 5 * S) == [3]  # max_objects = 2 reached


def test_labels_stay_with_their_objects_until_an_update_replaces_them():
    """What a detection said an object is stays with it while it is followed, lost or not; the
    same id started again (the detector's next report) replaces it; unlabelled starts get none."""
    fs = FollowSet()
    logits = np.ones((2, 1, 256, 256), np.float32)
    boxes = np.array([[0, 0, 10, 10], [30, 0, 40, 10]], np.float32)
    person, car = ObjectLabel(0, "person", "yolo-3", 0.8), ObjectLabel(2, "car", "yolo-4", 0.6)
    fs.start([5, 6], logits, boxes, [100, 100], 0, [person, car])
    fs.start([7], logits[:1], boxes[:1], [100], 0)  # a click: nothing known
    r = fs.update([pred(0, 0, 10, 10), pred(30, 0, 40, 10, iou=0.0), pred(1, 1, 10, 10)], S // 10, HW)
    assert r.ids == [5, 7] and r.lost == [6]
    assert r.labels == [person, ObjectLabel()] and fs.get(6).label == car
    assert ObjectLabel().class_id == -1 and ObjectLabel().source_id == "" and np.isnan(ObjectLabel().score)
    relabelled = ObjectLabel(0, "person", "yolo-9", 0.9)
    fs.start([5], logits[:1], boxes[:1], [100], S // 5, [relabelled])
    r = fs.update([pred(0, 0, 10, 10), pred(30, 0, 40, 10), pred(1, 1, 10, 10)], S // 4, HW)
    assert r.ids == [5, 6, 7] and r.labels == [relabelled, car, ObjectLabel()]


def test_stamps_going_back_drop_the_objects_from_the_later_scene():
    """A looping bag: the next frame is stamped before the objects' last good masks. Those objects
    are dropped, reported as rewound with the jump's origin; none is kept with a negative age; an
    object started on the new, earlier frame stays."""
    fs = FollowSet(FollowConfig(lost_timeout_s=1.0))
    fs.add([1, 2], [pred(0, 0, 10, 10), pred(30, 0, 40, 10)], 100 * S)
    r = fs.update([pred(0, 0, 10, 10), pred(30, 0, 40, 10, iou=0.0)], 100 * S + S // 10, HW)
    assert r.ids == [1] and r.lost == [2] and r.rewound == []
    fs.add([3], [pred(20, 20, 30, 30)], S)  # a prompt on the replayed bag's first frame
    r = fs.update([pred(0, 0, 10, 10), pred(30, 0, 40, 10), pred(20, 20, 30, 30)], S + S // 10, HW)
    assert r.rewound == [1, 2] and r.rewound_from_ns == 100 * S + S // 10
    assert fs.ids == [3] and r.ids == [3] and r.lost == [] and r.dropped == []
    assert all(S + S // 10 - f >= 0 for f in r.first_seen_ns)
    # the same stamp again (a repeated frame) is no jump
    r = fs.update([pred(20, 20, 30, 30)], S + S // 10, HW)
    assert r.ids == [3] and r.rewound == []


def test_follow_step_rewinds_before_decoding():
    """follow_step drops the objects from after the frame before it decodes: none of them is
    re-prompted (a decoder spy counts the prompts)."""
    from mobilesam_ros.core.structures.frame import CachedFrame

    class Frames:  # the predictor call follow_step makes, on a 40x60 frame
        decoded = []

        def predict_on(self, frame, prompts):
            self.decoded.append(len(prompts))
            return [pred(20, 20, 30, 30) for _ in prompts]

    def frame(stamp_ns):
        return CachedFrame(stamp_ns=stamp_ns, input_size=(40, 60), original_size=HW, handle=None)

    fs = FollowSet()
    fs.add([1, 2], [pred(0, 0, 10, 10), pred(30, 0, 40, 10)], 50 * S)
    fs.add([3], [pred(20, 20, 30, 30)], S)
    r = follow_step(Frames(), fs, frame(2 * S))
    assert Frames.decoded == [1] and r.rewound == [1, 2] and r.ids == [3]
    fs.add([4], [pred(0, 0, 10, 10)], 50 * S)
    r = follow_step(Frames(), fs, frame(S))
    assert Frames.decoded == [1] and r.rewound == [3, 4] and len(fs) == 0 and len(r.instances) == 0


@pytest.mark.slow
def test_follow_on_the_camera_sequence_batches_and_equals_single_decodes():
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.structures.prompts import make_prompt

    backend = TorchBackend(load_mobile_sam(shared_path("fixtures", "mobile_sam_seed2.pt")))
    calls = []
    decode = backend.decode

    def counting_decode(*args, **kwargs):  # a spy: counts, then runs the real decoder
        calls.append(len(args[1]))
        return decode(*args, **kwargs)
    backend.decode = counting_decode
    p = SamPredictor(backend, cache_size=2)
    expected = json.loads((DATA / "models" / "expected_detections.json").read_text())
    boxes = [d["xyxy"] for d in expected["results"]["sequence/000000.jpg"]["detections"]][:3]
    frame = lambda k: cv2.cvtColor(cv2.imread(str(DATA / "sequence" / f"{k:06d}.jpg")), cv2.COLOR_BGR2RGB)

    p.set_image(frame(0), 0)
    first = p.predict_batch([make_prompt(box=b) for b in boxes], 0)
    # the seeded model's predicted IoUs carry no meaning: accept every non-empty mask here
    fs = FollowSet(FollowConfig(min_pred_iou=0.0, max_area_change=1e9))
    assert fs.add([11, 12, 13], first, 0) == []
    for k, want in ((1, [11, 12, 13]), (2, [11, 13])):
        t = k * S // 10
        if k == 2:
            assert fs.remove([12]) == [12]
        p.set_image(frame(k), t)
        prompts = fs.prompts()
        calls.clear()
        r = follow_step(p, fs, p.frame(t))
        assert calls == [len(want)]  # one decoder call for all followed objects
        assert r.ids == want and r.hits == [k + 1] * len(want) and r.lost == []
        masks = r.instances.dense_masks()
        for j, q in enumerate(prompts):
            single = p.predict(box=q.box, mask_input=q.mask_input, multimask_output=False, stamp_ns=t)
            # batched and single decodes agree to float rounding (fast_decoder: 1e-5), which may
            # flip a pixel whose logit sits on the threshold
            np.testing.assert_allclose(fs._objects[want[j]].logits, single.low_res_logits, atol=1e-4)
            assert np.count_nonzero(masks[j] != single.masks[0]) <= 1e-4 * masks[j].size
