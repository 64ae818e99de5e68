import numpy as np
import pytest

from mobilesam_ros.core.structures.prompts import PromptError, group_by_layout, make_prompt, to_tokens


@pytest.mark.parametrize("kw, match", [
    (dict(points=[[1, 2]], labels=[1, 0]), "1 points but 2 labels"),
    (dict(points=[[np.nan, 2]], labels=[1]), "NaN or inf"),
    (dict(points=[[1, 2]]), "without labels"),
    (dict(points=[[1, 2]], labels=[5]), "must be 0 .* or 1"),
    (dict(points=[[700, 2]], labels=[1]), "outside the 640x480 image"),
    (dict(box=[10, 10, 5, 20]), "empty or inverted"),
    (dict(box=[1, 2, 3]), "4 numbers"),
    (dict(box=[0, 0, np.inf, 4]), "NaN or inf"),
    (dict(box=[650, 10, 700, 20]), "outside the 640x480 image"),
    (dict(mask_input=np.zeros((10, 10))), "256x256"),
    (dict(labels=[1]), "labels but no points"),
    (dict(), "empty prompt"),
])
def test_bad_prompts_raise_clear_errors(kw, match):
    with pytest.raises(PromptError, match=match):
        make_prompt(image_size=(480, 640), **kw)


def test_box_partly_outside_is_clipped():
    p = make_prompt(box=[-5, 10, 700, 500], image_size=(480, 640))
    assert p.box.tolist() == [0, 10, 640, 480]


def test_tokens_follow_sam_layout():
    scale = lambda c: c * 2.0  # noqa: E731  stand-in for ResizeLongestSide.apply_coords
    pts = make_prompt(points=[[1, 2], [3, 4]], labels=[1, 0])
    coords, labels = to_tokens([pts], scale)
    assert coords.tolist() == [[[2, 4], [6, 8], [0, 0]]] and labels.tolist() == [[1, 0, -1]]
    boxpt = make_prompt(points=[[1, 2]], labels=[0], box=[0, 0, 5, 6])
    coords, labels = to_tokens([boxpt], scale)
    assert coords.tolist() == [[[2, 4], [0, 0], [10, 12]]] and labels.tolist() == [[0, 2, 3]]
    coords, labels = to_tokens([make_prompt(mask_input=np.zeros((256, 256)))], scale)
    assert coords.shape == (1, 0, 2)


def test_grouping_keeps_layouts_apart():
    a = make_prompt(box=[0, 0, 5, 5])
    b = make_prompt(points=[[1, 1]], labels=[1])
    c = make_prompt(box=[1, 1, 4, 4])
    d = make_prompt(points=[[2, 2]], labels=[0], multimask=True)
    assert group_by_layout([a, b, c, d]) == {(0, True, False, False): [0, 2], (1, False, False, False): [1],
                                             (1, False, False, True): [3]}


def test_box_tokens_equal_to_tokens_of_box_prompts_and_name_the_bad_box():
    from mobilesam_ros.core.structures.prompts import box_tokens

    boxes = np.array([[1, 2, 30, 40], [0.5, 0, 7, 9.25]], np.float32)
    coords, labels = box_tokens(boxes)
    assert coords.dtype == np.float32 and coords.shape == (2, 2, 2)
    assert coords.tolist() == [[[1, 2], [30, 40]], [[0.5, 0], [7, 9.25]]]
    assert labels.tolist() == [[2, 3], [2, 3]]
    ref_c, ref_l = to_tokens([make_prompt(box=b) for b in boxes])
    np.testing.assert_array_equal(coords, ref_c)
    np.testing.assert_array_equal(labels, ref_l)
    assert box_tokens(np.zeros((0, 4)))[0].shape == (0, 2, 2)
    with pytest.raises(PromptError, match=r"box 1 of 3: box \[5.0, 5.0, 5.0, 9.0\] is empty or inverted"):
        box_tokens([[0, 0, 1, 1], [5, 5, 5, 9], [0, 0, np.nan, 1]])
    with pytest.raises(PromptError, match="box 2 of 3: box contains NaN or inf"):
        box_tokens([[0, 0, 1, 1], [5, 5, 6, 9], [0, 0, np.nan, 1]])
