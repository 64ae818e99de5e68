"""core.engine.tracking: coarse masks and IoUs against direct numpy computation, the optimal assignment on
a case a greedy matcher gets wrong, the lifecycle in seconds (not frames), ids never reused."""
import numpy as np
import pytest

from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.engine.tracking import (TRACK_COASTING, TRACK_CONFIRMED, TRACK_TENTATIVE, Tracker,
                                         TrackerConfig, box_iou_matrix, coarse_masks, grid_stride,
                                         mask_iou_matrix)

S = 1_000_000_000  # ns per second


def rects(hw, boxes, class_ids=None, packed=True) -> Instances:
    """Instances whose masks are the given filled rectangles (x0, y0, x1, y1), end exclusive."""
    m = np.zeros((len(boxes),) + tuple(hw), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    inst = Instances.from_masks(m, np.ones(len(boxes)), class_ids=class_ids)
    return inst.pack_bits() if packed else inst


@pytest.mark.parametrize("hw", [(480, 640), (61, 645), (37, 13)])
@pytest.mark.parametrize("s", [1, 2, 4, 8, 16])
def test_coarse_masks_sample_every_sth_pixel(hw, s):
    rng = np.random.default_rng(s)
    m = rng.random((3,) + hw) > 0.6
    want = np.packbits(m[:, s // 2::s, s // 2::s], axis=-1)
    inst = Instances.from_masks(m, np.ones(3))
    np.testing.assert_array_equal(coarse_masks(inst.pack_bits(), s), want)
    np.testing.assert_array_equal(coarse_masks(inst, s), want)
    none = Instances.empty(hw)
    assert coarse_masks(none.pack_bits(), s).shape == coarse_masks(none, s).shape == (0,) + want.shape[1:]


def test_grid_stride_is_the_smallest_power_of_two_that_fits():
    assert grid_stride((480, 640), 128) == 8      # 80 columns; 4 would give 160
    assert grid_stride((480, 640), 160) == 4
    assert grid_stride((16, 100), 128) == 1
    assert grid_stride((1080, 810), 128) == 16    # 68 rows; 8 would give 135


def test_mask_iou_matrix_equals_dense_iou_and_skips_non_candidates():
    rng = np.random.default_rng(0)
    a = rng.random((4, 9, 21)) > 0.5
    b = rng.random((5, 9, 21)) > 0.7
    b[4] = False  # empty
    inter = np.einsum("ihw,jhw->ij", a.astype(int), b.astype(int))
    union = a.sum((1, 2))[:, None] + b.sum((1, 2))[None, :] - inter
    want = inter / union
    got = mask_iou_matrix(np.packbits(a, axis=-1), np.packbits(b, axis=-1))
    np.testing.assert_allclose(got, want, atol=1e-12)
    cand = np.zeros((4, 5), bool)
    cand[1, 2] = cand[3, 0] = True
    got = mask_iou_matrix(np.packbits(a, axis=-1), np.packbits(b, axis=-1), cand)
    np.testing.assert_allclose(got, np.where(cand, want, 0.0), atol=1e-12)


def test_box_iou_counts_inclusive_pixels():
    # 10x10 px boxes (x2, y2 inclusive) overlapping on 5x10 px: IoU 50 / 150
    got = box_iou_matrix(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9], [20, 20, 29, 29]]))
    np.testing.assert_allclose(got, [[50 / 150, 0.0]])


def test_optimal_assignment_where_greedy_fails():
    # one 16-row band, columns as intervals; grid stride 1 so IoUs are exact interval IoUs:
    # A-X 0.818 is the best single pair, but A-Y 0.7 + B-X 0.154 is the better assignment
    hw = (16, 120)
    cfg = TrackerConfig(iou_thresh=0.1, grid_cells=128, confirm_hits=1)
    tr = Tracker(cfg)
    first = tr.update(rects(hw, [(0, 0, 80, 16), (72, 0, 112, 16)]), 0)
    a, b = first.ids
    out = tr.update(rects(hw, [(8, 0, 88, 16), (0, 0, 56, 16)]), S // 10)  # X, Y
    assert list(out.ids) == [b, a]


def test_class_breaks_a_tie_of_equal_masks():
    hw = (64, 64)
    tr = Tracker(TrackerConfig(confirm_hits=1))
    tid = tr.update(rects(hw, [(10, 10, 40, 40)], class_ids=[3]), 0).ids[0]
    out = tr.update(rects(hw, [(10, 10, 40, 40), (10, 10, 40, 40)], class_ids=[5, 3]), S // 10)
    assert out.ids[1] == tid and out.ids[0] > tid


def test_lifecycle_tentative_confirmed_coasting_lost_in_seconds():
    hw = (100, 100)
    cfg = TrackerConfig(confirm_hits=3, max_age_s=1.0)
    tr = Tracker(cfg)
    obj = rects(hw, [(20, 20, 50, 50)])
    none = rects(hw, [])
    states, hits = [], []
    for k in range(3):
        out = tr.update(obj, k * S // 10)
        states.append(int(out.states[0]))
        hits.append(int(out.hits[0]))
    tid = int(out.ids[0])
    assert states == [TRACK_TENTATIVE, TRACK_TENTATIVE, TRACK_CONFIRMED] and hits == [1, 2, 3]
    assert out.first_seen_ns[0] == 0 and out.age_s[0] == pytest.approx(0.2)
    # unseen for 0.95 s (one frame or many: only the stamps count) -> still the same id
    t = 2 * S // 10
    tr.update(none, t + S // 2)
    assert tr.tracks == 1 and tr._tracks[0].state == TRACK_COASTING
    out = tr.update(obj, t + 95 * S // 100)
    assert out.ids[0] == tid and out.states[0] == TRACK_CONFIRMED and out.hits[0] == 4
    # unseen for 1.05 s in a single frame gap -> lost; the object comes back with a new id
    t = t + 95 * S // 100
    out = tr.update(obj, t + 105 * S // 100)
    assert out.ids[0] == tid + 1 and out.states[0] == TRACK_TENTATIVE and out.hits[0] == 1


def test_a_tentative_track_that_misses_a_frame_is_gone_and_ids_are_never_reused():
    hw = (100, 100)
    tr = Tracker(TrackerConfig(confirm_hits=3))
    first = tr.update(rects(hw, [(0, 0, 20, 20)]), 0).ids[0]
    tr.update(rects(hw, []), S // 10)
    assert tr.tracks == 0
    again = tr.update(rects(hw, [(0, 0, 20, 20)]), 2 * S // 10).ids[0]
    tr.update(rects(hw, [(0, 0, 20, 20)]), S // 10)  # stamp went back: reset, ids keep counting
    after_reset = tr.update(rects(hw, [(0, 0, 20, 20)]), 3 * S // 10).ids[0]
    assert (first, again) == (1, 2) and after_reset == 3


def test_motion_model_keeps_ids_across_skipped_frames():
    # a 30x30 square moving 200 px/s right; frames processed at irregular stamps (skipped frames):
    # the first gaps move it 10 px (IoU 0.5, enough to start), later ones up to 90 px (IoU 0)
    hw = (120, 640)
    gaps_s = [0.05, 0.05, 0.45, 0.15, 0.35, 0.1, 0.4]
    def run(smoothing):
        tr = Tracker(TrackerConfig(velocity_smoothing=smoothing, grid_cells=160))
        t, ids = 0.0, []
        for gap in [0.0] + gaps_s:
            t += gap
            x = int(round(10 + 200 * t))
            ids.append(int(tr.update(rects(hw, [(x, 40, x + 30, 70)]), int(t * S)).ids[0]))
        return ids
    assert len(set(run(0.5))) == 1
    assert len(set(run(0.0))) > 1  # the same frames without the motion model lose the object


def test_objects_smaller_than_the_grid_are_matched_by_their_boxes():
    # 6x6 px squares at 640x480 (grid stride 8: at most one sample each) moving 1 px per frame
    hw = (480, 640)
    tr = Tracker(TrackerConfig(grid_cells=80))
    ids = [list(tr.update(rects(hw, [(100 + k, 50, 106 + k, 56), (300, 200 - k, 306, 206 - k)]),
                          k * S // 10).ids) for k in range(5)]
    assert ids == [[1, 2]] * 5


def test_first_frame_numbers_instances_in_order_and_config_is_validated():
    tr = Tracker()
    out = tr.update(rects((50, 50), [(0, 0, 5, 5), (20, 20, 30, 30), (40, 0, 50, 9)]), 7)
    assert list(out.ids) == [1, 2, 3] and list(out.first_seen_ns) == [7, 7, 7]
    with pytest.raises(ValueError):
        TrackerConfig(iou_thresh=0.0)
    with pytest.raises(ValueError):
        TrackerConfig(max_age_s=-1.0)


def test_max_tracks_drops_the_oldest_coasting_tracks():
    hw = (100, 400)
    tr = Tracker(TrackerConfig(confirm_hits=1, max_tracks=3))
    tr.update(rects(hw, [(0, 0, 20, 20), (100, 0, 120, 20)]), 0)           # ids 1, 2
    tr.update(rects(hw, [(100, 0, 120, 20), (200, 0, 220, 20)]), S // 10)  # 2 seen, 3 new, 1 coasts
    tr.update(rects(hw, [(300, 0, 320, 20)]), 2 * S // 10)                 # 4 new; 1, 2, 3 coast
    assert sorted(t.id for t in tr._tracks) == [2, 3, 4]
