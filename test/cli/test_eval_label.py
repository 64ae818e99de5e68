"""`mobilesam eval segany|segevery` and `mobilesam label` end to end: real subprocesses, real
checkpoints (the seeded ones), real images (COCO8-seg, the camera sequence), a bag and a video
made here. Small on purpose: one or two frames, few prompts, a 4x4 grid."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import shared_path
from pycocotools.coco import COCO

SEED1 = str(shared_path("fixtures", "mobile_sam_seed1.pt"))
SEED2 = str(shared_path("fixtures", "mobile_sam_seed2.pt"))
DETECTOR = str(shared_path("data", "models", "yolov8n_int8.onnx"))
VAL_IMAGES = str(shared_path("data", "coco8-seg", "images", "val"))
VAL_LABELS = str(shared_path("data", "coco8-seg", "labels", "val"))
FAST = ["--backend", "torch", "--no-progress", "--threads", "2"]
GRID = ["--grid", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0"]


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-P", "-m", "mobilesam_ros", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_cli(*args, timeout=600):
    p = cli(*args)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _one_image_folder(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    name = "000000000036.jpg"
    (d / name).write_bytes(shared_path("data", "coco8-seg", "images", "val", name).read_bytes())
    return str(d)


def _segany(tmp_path, teacher, student, name):
    out = tmp_path / f"{name}.json"
    rc, so, se = run_cli("eval", "segany", "--teacher", teacher, "--student", student,
                         "--data", _one_image_folder(tmp_path) if not (tmp_path / "img").exists()
                         else str(tmp_path / "img"), "--gt", VAL_LABELS, "--max-objects", "2",
                         "--json", str(out), *FAST)
    assert rc == 0, se
    return json.loads(out.read_text()), so


@pytest.mark.slow
def test_eval_segany_seed2_against_itself_is_one_and_seed1_less(tmp_path):
    same, table = _segany(tmp_path, SEED2, SEED2, "same")
    assert same["images"] == 1 and same["prompts"] == {"1pt": 2, "3pt": 2, "box": 2}
    assert same["miou"] == {"1pt": 1.0, "3pt": 1.0, "box": 1.0}
    assert same["ci95"]["box"] == [1.0, 1.0]
    assert "1pt" in table and "95% CI" in table
    other, _ = _segany(tmp_path, SEED2, SEED1, "other")
    assert other["prompts"] == same["prompts"]
    assert all(0.0 <= v < 1.0 for v in other["miou"].values()), other
    for kind, (lo, hi) in other["ci95"].items():
        assert lo <= other["miou"][kind] <= hi


@pytest.mark.slow
def test_eval_segany_on_a_video_with_the_teachers_grid(tmp_path):
    video = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(2):
        wr.write(cv2.resize(cv2.imread(str(shared_path("data", "sequence", f"{i:06d}.jpg"))), (320, 240)))
    wr.release()
    out = tmp_path / "r.json"
    rc, so, se = run_cli("eval", "segany", "--teacher", SEED2, "--student", SEED1, "--data", str(video),
                         "--max-objects", "2", "--json", str(out), *GRID, *FAST)
    assert rc == 0, se
    r = json.loads(out.read_text())
    assert r["images"] == 2 and r["reference"] == "grid4"
    assert all(n > 0 for n in r["prompts"].values()), r


@pytest.mark.slow
def test_eval_segevery_detector_and_grid_side_by_side(tmp_path):
    out = tmp_path / "ar.json"
    rc, so, se = run_cli("eval", "segevery", "--checkpoint", SEED2, "--detector", DETECTOR, "--gt", VAL_LABELS,
                         "--images", VAL_IMAGES, "--max-images", "1", "--json", str(out), *GRID, *FAST)
    assert rc == 0, se
    r = json.loads(out.read_text())
    assert set(r) == {"grid4", "detector"}
    for m in r.values():
        assert 0.0 <= m["ar@10"] <= m["ar@100"] <= m["ar@1000"] <= 1.0 and 0.0 <= m["ap"] <= 1.0
        assert m["s_per_image"] > 0
    assert "AR@1000" in so and "2 ground-truth masks" in so


def _frames(tmp_path, n, size=(160, 120)):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(n):
        img = cv2.imread(str(shared_path("data", "sequence", f"{i:06d}.jpg")))
        cv2.imwrite(str(d / f"{i:06d}.png"), cv2.resize(img, size))
    return d


@pytest.mark.slow
def test_label_killed_half_way_and_restarted_writes_every_frame_once(tmp_path):
    n = 6
    frames = _frames(tmp_path, n)
    out = tmp_path / "ann.json"
    journal = tmp_path / "ann.json.partial.jsonl"
    args = ["label", "--checkpoint", SEED2, "--input", str(frames), "--out", str(out), *GRID, *FAST]
    p = cli(*args)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and p.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.communicate()
    assert not out.exists()
    written = journal.read_bytes().count(b"\n")
    assert 2 <= written < n
    rc, so, se = run_cli(*args)
    assert rc == 0, se
    assert f"{n} frame(s), {written} already labelled" in so and f"labelled {n - written} frame(s)" in so
    assert not journal.exists()
    coco = COCO(str(out))
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == sorted(os.listdir(frames))
    assert sorted(coco.imgs) == list(range(1, n + 1))
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(ann_ids) == len(set(ann_ids)) > 0
    assert all(a["attributes"]["track_id"] >= 1 for a in coco.dataset["annotations"])
    res = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")}
                        for a in coco.dataset["annotations"]])
    assert len(res.anns) == len(ann_ids)
    # a third run finds nothing to do and rewrites the same file
    before = json.loads(out.read_text())
    rc, so, _ = run_cli(*args)
    assert rc == 0 and "labelled 0 frame(s)" in so
    assert json.loads(out.read_text())["annotations"] == before["annotations"]


def _bag(tmp_path, n):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    Image, Header = ts.types["sensor_msgs/msg/Image"], ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    path = tmp_path / "bag"
    stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(n)]
    with Writer(path, version=9) as w:
        cam = w.add_connection("/camera/image_raw", Image.__msgtype__, typestore=ts)
        other = w.add_connection("/other/image", Image.__msgtype__, typestore=ts)
        for i, t in enumerate(stamps):
            rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(shared_path("data", "sequence", f"{i:06d}.jpg"))),
                                          (320, 240)), cv2.COLOR_BGR2RGB)
            for conn in (cam, other):
                msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam"),
                            height=240, width=320, encoding="rgb8", is_bigendian=0, step=960,
                            data=np.ascontiguousarray(rgb).reshape(-1))
                w.write(conn, t, ts.serialize_cdr(msg, Image.__msgtype__))
    return path, stamps


@pytest.mark.slow
def test_label_a_bag_topic_with_the_detector_and_overlays(tmp_path):
    bag, stamps = _bag(tmp_path, 3)
    out, ov = tmp_path / "bag.json", tmp_path / "ov"
    rc, so, se = run_cli("label", "--checkpoint", SEED2, "--detector", DETECTOR, "--conf", "0.25",
                         "--input", f"{bag}:/camera/image_raw", "--out", str(out), "--overlays", str(ov),
                         *FAST)
    assert rc == 0, se
    coco = COCO(str(out))
    assert [i["file_name"] for i in coco.dataset["images"]] == [f"/camera/image_raw@{t}" for t in stamps]
    names = {c["name"] for c in coco.dataset["categories"]}
    assert "person" in names
    anns = coco.dataset["annotations"]
    assert anns and {a["category_id"] for a in anns} <= {c["id"] for c in coco.dataset["categories"]}
    assert len(list(ov.glob("*.png"))) == 3
    # the bag has two image topics: without one named it is a user error, one line
    rc, _, se = run_cli("label", "--checkpoint", SEED2, "--input", str(bag), "--out", str(tmp_path / "x.json"),
                        *FAST)
    assert rc == 2 and "several image topics" in se.strip().splitlines()[-1] and "Traceback" not in se


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "prompts.json"
    bad.write_text('{"a.png": {"boxes": [[1, 2, 3]]}}')
    frames = _frames(tmp_path, 1)
    cases = [
        (["eval", "segevery", "--checkpoint", SEED2, "--gt", str(tmp_path / "none.json"), "--images",
          VAL_IMAGES], "none.json does not exist"),
        (["label", "--checkpoint", SEED2, "--input", str(frames), "--out", str(tmp_path / "o.json"),
          "--prompts", str(bad)], "boxes must be a list of 4 numbers"),
        (["eval", "segany", "--teacher", SEED2, "--student", SEED2, "--data", str(tmp_path / "nowhere")],
         "no such file or directory"),
        (["eval", "segany", "--teacher", SEED2, "--student", SEED2, "--data", VAL_IMAGES, "--gt", VAL_LABELS,
          "--detector", DETECTOR], "give one"),
        (["eval", "segevery", "--checkpoint", SEED2, "--gt", VAL_LABELS, "--images", VAL_IMAGES, "--no-grid"],
         "nothing to score"),
    ]
    for args, message in cases:
        rc, _, se = run_cli(*args, *FAST)
        assert rc == 2, se
        assert message in se.strip().splitlines()[-1] and "Traceback" not in se, se


@pytest.mark.slow
def test_label_with_a_prompts_file(tmp_path):
    frames = _frames(tmp_path, 2)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"000000.png": {"boxes": [[10, 10, 80, 100], [90, 20, 150, 110]],
                                                  "points": [[40, 60]]}}))
    out = tmp_path / "p_out.json"
    rc, so, se = run_cli("label", "--checkpoint", SEED2, "--input", str(frames), "--out", str(out),
                         "--prompts", str(prompts), "--no-track", *FAST)
    assert rc == 0, se
    coco = COCO(str(out))
    by_name = {i["file_name"]: i["id"] for i in coco.dataset["images"]}
    first = coco.loadAnns(coco.getAnnIds(imgIds=[by_name["000000.png"]]))
    assert 1 <= len(first) <= 3  # one per prompt, minus masks that came out empty
    assert coco.getAnnIds(imgIds=[by_name["000001.png"]]) == []  # no entry, no objects
    assert all(a["attributes"]["track_id"] == 0 and a["category_id"] == 1 for a in first)
