"""Decoupled distillation end to end on real frames: a seeded TinyViT teacher, a fresh seeded
TinyViT-5M student, held-out frames; plus the bag path into the cache, resume, CLI errors.

The teacher is `mobile_sam_seed1.pt` with its BatchNorm running statistics re-estimated on two
other real photos (bus, zidane). As stored, the fixture's encoder is blind to the image: its
random weights shrink activations until the perturbed BN offsets dominate, and its embeddings of
different frames differ by ~1e-13 (checked below), so distilling it would only teach a constant.
"""
import argparse
import csv
import json
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.core.modeling.tiny_vit import build_tiny_vit_5m
from mobilesam_ros.core.ops.transforms import preprocess_image
from mobilesam_ros.cli import distill as cli
from mobilesam_ros.distill.config import DistillConfig, DistillInputError
from mobilesam_ros.distill.data import ImageFolderSource, split_keys
from mobilesam_ros.distill.inputs import (HFLIP_SUFFIX, MirroredSource, model_input,
                                          preprocess_frame, resized_size)
from mobilesam_ros.distill.prepare import prepare_cache
from mobilesam_ros.distill.state import TRAIN_STATE, load_train_state
from mobilesam_ros.distill.teacher_cache import TeacherCache
from mobilesam_ros.distill.train import calibrate_batchnorm, distill, lr_factor

FRAMES = [f"{i:06d}.jpg" for i in range(0, 48, 6)]  # 8 real frames, 0.6 s apart
SPLIT_SEED = 13  # holds out 2 of the 8 (000024, 000036); asserted below
# 16 steps at lr 3e-3 (this machine, 2 threads): train MSE 0.549x, held-out MSE 0.557x, held-out
# mask IoU 0.373 -> 0.493. Measured beside it: 12 steps at 3e-3 0.611x / 0.609x / +0.126; 12 at 5e-3
# 0.633x / 0.641x / +0.037; 30 at 1e-3 (the earlier setting, 2.3x the time) 0.449x / 0.459x
# / +0.109. The bounds in the test sit ~15 % (MSE) and 2x (IoU) short of the measured run; a student
# that learns nothing stays at 1x and +0.
STEPS, LR, WARMUP = 16, 3e-3, 2


def rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def encode(encoder, image):
    with torch.no_grad():
        x, size = preprocess_frame(image)
        return encoder(model_input(x[None], [size]))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    for name in FRAMES:
        shutil.copy(shared_path("data", "sequence", name), d / name)
    return d


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    sam = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt"))
    photos = [rgb(shared_path("data", "images", n)) for n in ("bus.jpg", "zidane.jpg")]
    inputs = [preprocess_frame(p) for p in photos]
    calibrate_batchnorm(sam.image_encoder, (model_input(x[None], [size]) for x, size in inputs))
    path = tmp_path_factory.mktemp("teacher") / "teacher_seed1_bn.pt"
    torch.save(sam.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache") / "teacher_cache"


def base_config(tmp_path, frames_dir, teacher_ckpt, cache_dir, **kw):
    opts = dict(teacher=str(teacher_ckpt), data=str(frames_dir), out=str(tmp_path / "student.pt"),
                cache_dir=str(cache_dir), batch_size=1, val_fraction=0.25,
                split_seed=SPLIT_SEED, progress=False)
    return DistillConfig(**{**opts, **kw})


# ------------------------------------------------------------------------------ cheap pieces


def test_model_input_is_the_inference_preprocessing():
    for image in (rgb(shared_path("data", "sequence", "000000.jpg")),  # landscape 640x480
                  rgb(shared_path("data", "images", "bus.jpg"))):      # portrait 810x1080
        want, size = preprocess_image(image)
        assert resized_size(image.shape[:2]) == size
        x, cached_size = preprocess_frame(image)
        assert cached_size == size
        got = model_input(x[None], [size])
        assert torch.equal(got, want)  # padding is 0 after normalisation, not -mean/std
        # the same by hand: normalise the resized image, zeros elsewhere
        mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
        std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
        h, w = size
        inside = (torch.from_numpy(x[:h, :w]).permute(2, 0, 1).float() - mean) / std
        assert torch.equal(got[0, :, :h, :w], inside)
        assert not got[0, :, h:].any() and not got[0, :, :, w:].any()
    with pytest.raises(ValueError, match="2 rows but 1 sizes"):
        model_input(np.zeros((2, 1024, 1024, 3), np.uint8), [(10, 10)])


def test_mirrored_source(frames_dir):
    src = MirroredSource(ImageFolderSource(frames_dir), hflip=True)
    keys = src.keys()
    assert keys[:4] == [FRAMES[0], FRAMES[0] + HFLIP_SUFFIX, FRAMES[1], FRAMES[1] + HFLIP_SUFFIX]
    got = {f.key: f.image for f in src.frames(only={FRAMES[1] + HFLIP_SUFFIX, FRAMES[2]})}
    assert list(got) == [FRAMES[1] + HFLIP_SUFFIX, FRAMES[2]]
    np.testing.assert_array_equal(got[FRAMES[1] + HFLIP_SUFFIX],
                                  rgb(frames_dir / FRAMES[1])[:, ::-1])
    assert src.describe()["hflip"] is True


def test_lr_schedule():
    f = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.01, abs=3e-3)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, frames_dir, capsys):
    from mobilesam_ros.__main__ import main

    parser = argparse.ArgumentParser(prog="mobilesam_ros")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    assert "--teacher" in sub.choices["distill"].format_help()
    decoder_only = shared_path("fixtures", "Prompt_guided_Mask_Decoder_seed4.pt")
    cases = [
        (["--teacher", str(tmp_path / "none.pt"), "--data", str(frames_dir)], "does not exist"),
        (["--teacher", str(decoder_only), "--data", str(frames_dir)], "no image encoder"),
        (["--teacher", str(decoder_only), "--data", str(frames_dir), "--batch-size", "0"],
         "batch_size must be >= 1"),
        (["--teacher", str(decoder_only), "--data", str(tmp_path)], "no images"),
    ]
    for argv, msg in cases:
        assert main(["distill", *argv, "--out", str(tmp_path / "s.pt"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mobilesam_ros: error:") and msg in err, err
        assert "\n" not in err


# ------------------------------------------------------------------------------ real training


@pytest.mark.slow
def test_seed1_fixture_as_stored_ignores_the_image():
    enc = load_mobile_sam(shared_path("fixtures", "mobile_sam_seed1.pt")).image_encoder
    a, b = (encode(enc, rgb(shared_path("data", "images", n))) for n in ("bus.jpg", "zidane.jpg"))
    assert float((a - b).pow(2).mean()) < 1e-9  # why the tests re-estimate its BN statistics


@pytest.mark.slow
def test_distill_real_frames_and_resume_its_last_step(tmp_path, frames_dir, teacher_ckpt, cache_dir):
    """16 steps learn (bounds above); the periodic checkpoint of step 15, resumed in a copy of
    the work directory, trains step 16 to the same loss, weights and metrics."""
    train_keys, val_keys = split_keys(FRAMES, 0.25, SPLIT_SEED)
    assert val_keys == ["000024.jpg", "000036.jpg"]
    cfg = base_config(tmp_path, frames_dir, teacher_ckpt, cache_dir, steps=STEPS, lr=LR,
                      warmup_steps=WARMUP, val_every=STEPS, checkpoint_every=STEPS - 1,
                      train_eval_frames=3)
    at_15 = tmp_path / "at_15"

    def keep_step_15(step, loss):
        if step == STEPS - 1:  # saved just before this call
            shutil.copytree(tmp_path / "student_distill", at_15)

    res = distill(cfg, on_step=keep_step_15)
    assert res.train_keys == train_keys and res.val_keys == val_keys
    first, last = res.initial, res.final
    assert (first["step"], last["step"]) == (0, STEPS)
    assert first["train_frames"] == 3 and first["val_frames"] == 2
    print(f"\nembedding MSE train {first['train_mse']:.4f} -> {last['train_mse']:.4f}, "
          f"held-out {first['val_mse']:.4f} -> {last['val_mse']:.4f}; held-out mask IoU "
          f"{first['val_mask_iou']:.3f} -> {last['val_mask_iou']:.3f} "
          f"({last['val_masks']} masks)")
    assert last["train_mse"] < 0.65 * first["train_mse"]
    assert last["val_mse"] < 0.65 * first["val_mse"]
    assert last["val_mask_iou"] > first["val_mask_iou"] + 0.06

    # The written file is an official mobile_sam.pt: strict load, same keys as the fixture,
    # the teacher's decoder, and the student's embeddings.
    sam = load_mobile_sam(res.out)
    official = torch.load(shared_path("fixtures", "mobile_sam_seed1.pt"), weights_only=True)
    written = torch.load(res.out, weights_only=True)
    assert set(written) == set(official)
    assert all(torch.equal(written[k], official[k]) for k in official
               if k.startswith(("prompt_encoder.", "mask_decoder.")))
    student = build_tiny_vit_5m()
    student.load_state_dict(load_train_state(res.work_dir / TRAIN_STATE)["student"])
    student.eval()
    held_out = rgb(frames_dir / val_keys[0])
    emb = encode(sam.image_encoder, held_out)
    assert torch.equal(emb, encode(student, held_out))
    # ... and its held-out error against the cached teacher embeddings is the one reported
    cache = TeacherCache.open(cache_dir)
    other = encode(sam.image_encoder, rgb(frames_dir / val_keys[1]))
    mse = [float((e[0] - torch.from_numpy(np.array(cache[cache.index_of(k)][1]))).pow(2).mean())
           for e, k in ((emb, val_keys[0]), (other, val_keys[1]))]
    assert np.mean(mse) == pytest.approx(last["val_mse"], rel=1e-4)

    rows = list(csv.DictReader(open(res.work_dir / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert json.loads((res.work_dir / "val_log.json").read_text()) == res.validations
    plot = cv2.imread(str(res.work_dir / "loss.png"))
    assert plot is not None and plot.shape == (640, 960, 3)

    # Resume: the saved step 15 (weights, AdamW moments, schedule, data position, RNG) gives
    # step 16 of the run above. Not bit-exact: the CPU backward of TinyViT's attention-bias
    # gather accumulates in a nondeterministic order (~1e-18 on 1e-11 gradients).
    assert load_train_state(at_15 / TRAIN_STATE)["step"] == STEPS - 1
    resumed = distill(DistillConfig(**{**cfg.__dict__, "resume": True, "work_dir": str(at_15),
                                       "out": str(tmp_path / "resumed.pt")}))
    assert [r["step"] for r in resumed.step_log] == list(range(1, STEPS + 1))
    assert resumed.step_log[:-1] == res.step_log[:-1]  # the saved history, as saved
    assert resumed.step_log[-1]["lr"] == res.step_log[-1]["lr"]
    assert resumed.step_log[-1]["loss"] == pytest.approx(res.step_log[-1]["loss"], rel=1e-5)
    a = load_train_state(res.work_dir / TRAIN_STATE)
    b = load_train_state(resumed.work_dir / TRAIN_STATE)
    assert a["step"] == b["step"] == STEPS
    diff = sum(float((v - b["student"][k]).square().sum()) for k, v in a["student"].items()
               if v.is_floating_point())
    norm = sum(float(v.square().sum()) for v in a["student"].values() if v.is_floating_point())
    assert (diff / norm) ** 0.5 < 1e-4
    assert [v["step"] for v in resumed.validations] == [0, STEPS]
    for key in ("train_mse", "val_mse", "val_mask_iou"):
        assert resumed.final[key] == pytest.approx(last[key], rel=1e-4)


@pytest.mark.slow
def test_interrupted_run_saves_its_step_and_refuses_a_restart_or_changed_options(
        tmp_path, frames_dir, teacher_ckpt, cache_dir):
    """Ctrl-C (KeyboardInterrupt from on_step) after step 1 saves step 1; the work directory
    then refuses a fresh run and a resume with changed options (resuming it: test above, and
    test_distributed.py on another world size)."""
    small = dict(steps=2, lr=LR, warmup_steps=1, val_every=2, checkpoint_every=2,
                 train_eval_frames=1, val_frames=1, points_per_side=1)

    def stop_at_1(step, loss):
        if step == 1:
            raise KeyboardInterrupt

    cfg = base_config(tmp_path, frames_dir, teacher_ckpt, cache_dir, **small)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, on_step=stop_at_1)
    saved = load_train_state(tmp_path / "student_distill" / TRAIN_STATE)
    assert saved["step"] == 1 and [r["step"] for r in saved["history"]["steps"]] == [1]
    assert [v["step"] for v in saved["history"]["validations"]] == [0]
    with pytest.raises(DistillInputError, match="already holds a training run"):
        distill(cfg)
    with pytest.raises(DistillInputError, match=re.escape(f"options changed lr: {LR} -> 0.0005")):
        distill(DistillConfig(**{**cfg.__dict__, "resume": True, "lr": 5e-4}))


@pytest.mark.slow
def test_bag_frames_into_teacher_cache(tmp_path, teacher_ckpt):
    """A ROS 2 bag written here (sqlite3; a bgr8 topic with row padding + a chatter topic) goes
    through the distill data path: keys by stamp, exact inputs, the teacher's embeddings."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    frames = [rgb(shared_path("data", "sequence", f"{i:06d}.jpg")) for i in (3, 30)]
    stamps = [1_700_000_000_000_000_000 + i * 50_000_000 for i in range(len(frames))]
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        cam = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        chat = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        for stamp, image in zip(stamps, frames):
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            step = 640 * 3 + 8
            buf = np.zeros((480, step), np.uint8)
            buf[:, :640 * 3] = bgr.reshape(480, -1)
            header = ts.types["std_msgs/msg/Header"](
                stamp=ts.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                              nanosec=stamp % 10**9),
                frame_id="cam")
            msg = ts.types["sensor_msgs/msg/Image"](header=header, height=480, width=640,
                                                    encoding="bgr8", is_bigendian=0, step=step,
                                                    data=buf.reshape(-1))
            w.write(cam, stamp + 1, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            w.write(chat, stamp + 2, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="x"),
                                                      "std_msgs/msg/String"))
    cfg = DistillConfig(teacher=str(teacher_ckpt), data=str(bag), out=str(tmp_path / "s.pt"),
                        topic="/cam/image_raw", progress=False)
    prepared = prepare_cache(cfg, tmp_path / "cache", torch.device("cpu"))
    cache = prepared.cache
    assert cache.keys == [f"/cam/image_raw@{s}" for s in stamps] and cache.complete
    assert prepared.teacher_kind == "tiny_vit_5m" and len(prepared.decoder_state) == 137
    # 640x480 frames: longest side 1024 -> (768, 1024), stored with each row
    assert [cache.image_size(i) for i in range(len(cache))] == [(768, 1024)] * 2
    for i, image in enumerate(frames):
        np.testing.assert_array_equal(cache.input_image(i), preprocess_frame(image)[0])
    teacher = load_mobile_sam(teacher_ckpt).image_encoder
    np.testing.assert_allclose(cache[1][1], encode(teacher, frames[1])[0].numpy(), atol=1e-5)
    again = prepare_cache(cfg, tmp_path / "cache", torch.device("cpu"))  # reused, not rebuilt
    assert again.cache.manifest["created"] == cache.manifest["created"]
