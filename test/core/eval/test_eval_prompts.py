"""Prompts sampled from masks: points inside, the tight box, repeatable with a seed."""
import numpy as np
import pytest

from mobilesam_ros.core.eval.prompts import PROMPT_KINDS, prompts_from_masks


def test_points_inside_box_tight_and_seeded():
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 5:9, 10:20] = True
    masks[1, 12, 3] = True  # one pixel: three points repeat it
    p = prompts_from_masks(masks, np.random.default_rng(0))
    assert list(p) == list(PROMPT_KINDS)
    for kind in ("1pt", "3pt"):
        for m, prompt in zip(masks, p[kind]):
            xy = prompt.points.astype(int)
            assert m[xy[:, 1], xy[:, 0]].all() and (prompt.labels == 1).all()
    assert [len(q.points) for q in p["3pt"]] == [3, 3]
    assert len({tuple(x) for x in p["3pt"][0].points.tolist()}) == 3  # distinct when possible
    assert p["1pt"][0].multimask and not p["3pt"][0].multimask and not p["box"][0].multimask
    np.testing.assert_array_equal(p["box"][0].box, [10, 5, 19, 8])  # x2, y2 inside (SAM's boxes)
    np.testing.assert_array_equal(p["box"][1].box, [3, 12, 3, 12])
    again = prompts_from_masks(masks, np.random.default_rng(0))
    np.testing.assert_array_equal(again["3pt"][0].points, p["3pt"][0].points)


def test_empty_mask_is_refused():
    with pytest.raises(ValueError):
        prompts_from_masks(np.zeros((1, 4, 4), bool), np.random.default_rng(0))
