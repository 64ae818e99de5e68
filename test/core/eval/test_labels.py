"""Label files: a round trip through pycocotools, and a journal cut by a kill."""
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from mobilesam_ros.core.eval.coco import decode_rle
from mobilesam_ros.core.eval.labels import LabelFileError, LabelWriter, frame_record
from mobilesam_ros.core.structures.instances import Instances


def _inst(h=12, w=20):
    m = np.zeros((2, h, w), bool)
    m[0, 2:5, 3:9] = True     # 18 px, bbox x 3 y 2 w 6 h 3
    m[1, 7:12, 0:2] = True    # 10 px
    return Instances.from_masks(m, np.array([0.9, 0.7], np.float32)).pack_bits(), m


def test_label_file_round_trips_through_pycocotools(tmp_path):
    inst, masks = _inst()
    out = tmp_path / "ann.json"
    w = LabelWriter(out)
    w.add(frame_record("b.jpg", 1, inst, [5, 6], [1, 1]))
    w.add(frame_record("a.jpg", 0, inst.select(np.array([], np.int64)), [], []))
    w.finish([{"id": 1, "name": "object"}])
    assert not w.journal.exists()
    coco = COCO(str(out))
    assert sorted(coco.imgs) == [1, 2] and coco.imgs[2]["file_name"] == "b.jpg"
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[2]))
    assert [a["bbox"] for a in anns] == [[3.0, 2.0, 6.0, 3.0], [0.0, 7.0, 2.0, 5.0]]
    assert [a["area"] for a in anns] == [18.0, 10.0]
    assert [a["attributes"]["track_id"] for a in anns] == [5, 6]
    for a, m in zip(anns, masks):
        np.testing.assert_array_equal(coco.annToMask(a).astype(bool), m)
        np.testing.assert_array_equal(decode_rle(a["segmentation"]), m)
    res = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")}
                        for a in anns])
    assert len(res.anns) == 2


def test_a_torn_journal_line_is_dropped_and_resumed_over(tmp_path):
    inst, _ = _inst()
    out = tmp_path / "ann.json"
    w = LabelWriter(out)
    w.add(frame_record("f0", 0, inst, [1, 2], [1, 1]))
    w.add(frame_record("f1", 1, inst, [1, 2], [1, 1]))
    with open(w.journal, "ab") as f:  # a kill in the middle of the third line
        f.write(json.dumps(frame_record("f2", 2, inst, [1, 2], [1, 1])).encode()[:40])
    again = LabelWriter(out)
    assert again.done == {"f0", "f1"} and again.max_track_id() == 2
    again.add(frame_record("f2", 2, inst, [3, 4], [1, 1]))
    data = again.finish([{"id": 1, "name": "object"}])
    assert [i["file_name"] for i in data["images"]] == ["f0", "f1", "f2"]
    assert len({a["id"] for a in data["annotations"]}) == 6
    # a finished file is read back: nothing left to do for these frames
    assert LabelWriter(out).done == {"f0", "f1", "f2"}


def test_an_unrelated_output_file_is_refused(tmp_path):
    out = tmp_path / "x.json"
    out.write_text('{"hello": 1}')
    with pytest.raises(LabelFileError):
        LabelWriter(out)
