"""TeacherCache: build, exact contents, resume after an interruption, refusal to mix teachers,
a parallel build (2 gloo processes) that loses no finished row when one rank is SIGKILLed."""
import hashlib
import json
import logging
import os
import pickle
import shutil
import signal

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import shared_path
from torch.multiprocessing.spawn import ProcessException

from mobilesam_ros.distill.data import ImageFolderSource, VideoSource
from mobilesam_ros.distill.teacher_cache import (
    CacheError, RowNotFilledError, TeacherCache, TeacherMismatchError)

S = 1024
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
FRAMES = (0, 9, 18, 27, 36)  # 5 frames, batch 2 -> two full batches and a partial one


def preprocess(rgb):
    """Test stand-in for the real transform: longest side -> 1024, pad bottom/right with 0;
    returns (input, (h, w) of the resized image)."""
    h, w = rgb.shape[:2]
    scale = S / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    out = np.zeros((S, S, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, (nh, nw)


def image(rgb):
    return preprocess(rgb)[0]


class PatchTeacher:
    """A fixed random 16x16/16 conv (seeded): (B,1024,1024,3) uint8 -> torch (B,256,64,64).

    Images are encoded one at a time so the result does not depend on how rows are batched,
    which lets the test compare with exact equality. Records which inputs it saw."""

    def __init__(self, fail_after_calls=None):
        g = torch.Generator().manual_seed(1234)
        self.weight = torch.randn(256, 3, 16, 16, generator=g) * 0.02
        self.bias = torch.randn(256, generator=g)
        self.calls = 0
        self.seen = []  # sha1 of each input image, in call order
        self.sizes = []  # the (h, w) handed over with each input
        self.fail_after_calls = fail_after_calls

    def embed_one(self, img_u8):
        x = (torch.from_numpy(img_u8).float() - torch.from_numpy(MEAN)) / torch.from_numpy(STD)
        x = x.permute(2, 0, 1)[None]
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, self.weight, self.bias, stride=16)[0]

    def __call__(self, batch, sizes):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise RuntimeError("simulated crash")
        self.calls += 1
        assert batch.dtype == np.uint8 and batch.shape[1:] == (S, S, 3)
        assert sizes.dtype == np.int32 and sizes.shape == (len(batch), 2)
        self.sizes += [tuple(int(v) for v in hw) for hw in sizes]
        self.seen += [hashlib.sha1(b.tobytes()).hexdigest() for b in batch]
        return torch.stack([self.embed_one(b) for b in batch])


@pytest.fixture(scope="module")
def frames_rgb():
    seq = shared_path("data", "sequence")
    return {f"{i:06d}.jpg": cv2.cvtColor(cv2.imread(str(seq / f"{i:06d}.jpg")), cv2.COLOR_BGR2RGB)
            for i in FRAMES}


@pytest.fixture(scope="module")
def expected(frames_rgb):
    """Embeddings computed without the cache: cv2.imread -> preprocess -> teacher, per image."""
    t = PatchTeacher()
    return {k: t.embed_one(image(im)).numpy() for k, im in frames_rgb.items()}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    seq = shared_path("data", "sequence")
    for i in FRAMES:
        shutil.copy(seq / f"{i:06d}.jpg", d)
    return d


@pytest.fixture
def checkpoint(tmp_path):
    p = tmp_path / "teacher.pt"
    p.write_bytes(b"pretend these are ViT-H weights" * 1000)
    return p


def _build(out, source, teacher, teacher_id="sam_vit_h", progress=False, **kw):
    return TeacherCache.build(out, source, teacher, 2, teacher_id, progress=progress,
                              preprocess_fn=preprocess, **kw)


def test_build_contents_and_manifest(tmp_path, folder, checkpoint, expected):
    teacher = PatchTeacher()
    cache = _build(tmp_path / "cache", ImageFolderSource(folder), teacher,
                   teacher_checkpoint=checkpoint)
    keys = [f"{i:06d}.jpg" for i in FRAMES]
    assert teacher.calls == 3 and len(cache) == 5 and cache.complete and cache.keys == keys
    for i, k in enumerate(keys):
        key, emb = cache[i]
        assert key == k and emb.shape == (256, 64, 64) and emb.dtype == np.float32
        np.testing.assert_array_equal(emb, expected[k])
    assert cache[-1][0] == keys[-1]
    assert cache.index_of("000018.jpg") == 2
    assert [k for k, _ in cache] == keys
    assert not cache.has_inputs and not (tmp_path / "cache" / "inputs.npy").exists()  # folder
    # every frame is 640x480: longest side 1024 -> (768, 1024) inside the input, kept per row
    assert teacher.sizes == [(768, 1024)] * 5
    np.testing.assert_array_equal(np.load(tmp_path / "cache" / "sizes.npy"), [[768, 1024]] * 5)
    assert cache.image_size(2) == (768, 1024)
    with pytest.raises(CacheError, match="stores no inputs"):
        cache.input_image(0)

    # the files on disk are plain .npy / .json, readable without this module
    on_disk = np.load(tmp_path / "cache" / "embeddings.npy", mmap_mode="r")
    assert isinstance(cache.embeddings, np.memmap) and on_disk.shape == (5, 256, 64, 64)
    np.testing.assert_array_equal(on_disk[3], expected[keys[3]])
    assert json.loads((tmp_path / "cache" / "keys.json").read_text()) == keys
    m = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert m["teacher_id"] == "sam_vit_h" and m["count"] == 5 and m["filled"] == [[0, 5]]
    assert m["teacher_checkpoint"] == {
        "path": str(checkpoint.resolve()),
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    assert m["preprocessing_version"] and m["dtype"] == "float32" and m["unreadable"] == []
    assert m["source"]["kind"] == "folder"

    # reopening, and pickling (DataLoader workers) that carries the path, not the data
    again = TeacherCache.open(tmp_path / "cache")
    np.testing.assert_array_equal(again[4][1], expected[keys[4]])
    blob = pickle.dumps(again)
    assert len(blob) < 2000
    np.testing.assert_array_equal(pickle.loads(blob)[1][1], expected[keys[1]])
    assert not again.embeddings.flags.writeable

    # a finished cache is not re-encoded
    idle = PatchTeacher()
    _build(tmp_path / "cache", ImageFolderSource(folder), idle, teacher_checkpoint=checkpoint)
    assert idle.calls == 0


def test_resume_fills_only_missing_rows(tmp_path, folder, frames_rgb, expected, caplog):
    out = tmp_path / "cache"
    crashing = PatchTeacher(fail_after_calls=2)  # batches 1 and 2 land, the third raises
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="simulated crash"):
        _build(out, ImageFolderSource(folder), crashing)
    assert "interrupted with 4 of 5 rows filled" in caplog.text

    partial = TeacherCache.open(out)
    assert list(partial.indices) == [0, 1, 2, 3] and not partial.complete
    assert partial.manifest["filled"] == [[0, 4]]
    np.testing.assert_array_equal(partial[3][1], expected["000027.jpg"])
    with pytest.raises(RowNotFilledError, match="000036.jpg"):
        partial[4]
    assert [k for k, _ in partial] == ["000000.jpg", "000009.jpg", "000018.jpg", "000027.jpg"]

    resumed = PatchTeacher()
    cache = _build(out, ImageFolderSource(folder), resumed)
    missing_input = hashlib.sha1(image(frames_rgb["000036.jpg"]).tobytes()).hexdigest()
    assert resumed.calls == 1 and resumed.seen == [missing_input]
    assert resumed.sizes == [(768, 1024)] and cache.image_size(4) == (768, 1024)
    assert cache.complete
    for k, emb in cache:
        np.testing.assert_array_equal(emb, expected[k])


def test_refuses_other_teacher_checkpoint_frames_or_dtype(tmp_path, folder, checkpoint):
    out = tmp_path / "cache"
    with pytest.raises(RuntimeError):  # a partial cache: 2 of 5 rows
        _build(out, ImageFolderSource(folder), PatchTeacher(fail_after_calls=1),
               teacher_checkpoint=checkpoint)
    never = PatchTeacher(fail_after_calls=0)  # any call would raise RuntimeError, not the below
    with pytest.raises(TeacherMismatchError, match="'sam_vit_h', not 'sam_vit_b'"):
        _build(out, ImageFolderSource(folder), never, teacher_id="sam_vit_b")
    other = tmp_path / "other.pt"
    other.write_bytes(b"different weights")
    with pytest.raises(TeacherMismatchError, match="other.pt"):
        _build(out, ImageFolderSource(folder), never, teacher_checkpoint=other)
    with pytest.raises(CacheError, match="dtype"):
        _build(out, ImageFolderSource(folder), never, dtype="float16")
    (folder / "000036.jpg").unlink()
    with pytest.raises(CacheError, match="other frames"):
        _build(out, ImageFolderSource(folder), never)
    assert TeacherCache.open(out).manifest["filled"] == [[0, 2]]  # untouched by the refusals


def test_video_source_stores_inputs_by_default_float16(tmp_path, frames_rgb):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for im in list(frames_rgb.values())[:3]:
        w.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    w.release()
    # expected from an independent read of the same video
    cap, decoded = cv2.VideoCapture(str(video)), []
    while (r := cap.read())[0]:
        decoded.append(cv2.cvtColor(r[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(decoded) == 3

    teacher = PatchTeacher()
    cache = _build(tmp_path / "cache", VideoSource(video), teacher, dtype="float16",
                   progress=True)  # the tqdm bar path, once
    assert cache.has_inputs and cache.embeddings.dtype == np.float16 and cache.complete
    assert cache.keys == ["frame_000000", "frame_000001", "frame_000002"]
    for i, img in enumerate(decoded):
        x = image(img)
        np.testing.assert_array_equal(cache.input_image(i), x)
        assert cache.input_image(i).shape == (S, S, 3)
        want = teacher.embed_one(x).numpy()
        np.testing.assert_allclose(cache[i][1].astype(np.float32), want, rtol=1e-3, atol=2e-3)
        np.testing.assert_array_equal(cache[i][1], want.astype(np.float16))


def test_unreadable_frame_leaves_row_unfilled(tmp_path, folder, expected, caplog):
    (folder / "000010_bad.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        cache = _build(tmp_path / "cache", ImageFolderSource(folder), PatchTeacher())
    assert len(cache) == 6 and not cache.complete
    assert cache.manifest["unreadable"] == ["000010_bad.jpg"]
    assert cache.manifest["filled"] == [[0, 2], [3, 6]]
    assert "1 row(s) left unfilled" in caplog.text
    with pytest.raises(RowNotFilledError):
        cache[cache.index_of("000010_bad.jpg")]
    np.testing.assert_array_equal(cache[3][1], expected["000018.jpg"])


def test_bad_encoder_or_preprocess_output(tmp_path, folder):
    src = ImageFolderSource(folder)
    with pytest.raises(CacheError, match=r"encode_fn returned shape \(2, 256, 32, 32\)"):
        _build(tmp_path / "a", src, lambda b, s: np.zeros((len(b), 256, 32, 32), np.float32))
    with pytest.raises(CacheError, match="non-finite"):
        _build(tmp_path / "b", src, lambda b, s: np.full((len(b), 256, 64, 64), np.nan,
                                                         np.float32))
    with pytest.raises(CacheError, match="preprocess_fn must return uint8"):
        TeacherCache.build(tmp_path / "c", src, PatchTeacher(), 2, "t", progress=False,
                           preprocess_fn=lambda im: (image(im).astype(np.float32), (768, 1024)))
    # a size that leaves image content outside it: the rows would be normalised wrongly
    with pytest.raises(CacheError, match=r"size \(700, 1024\).*zero outside"):
        TeacherCache.build(tmp_path / "d", src, PatchTeacher(), 2, "t", progress=False,
                           preprocess_fn=lambda im: (image(im), (700, 1024)))
    with pytest.raises(CacheError, match="not a teacher cache"):
        TeacherCache.open(tmp_path / "nothing")


def test_format_1_cache_is_refused_with_advice(tmp_path, folder):
    """A cache written before the sizes moved into it (format 1: no sizes.npy, the sizes in a
    side file) cannot give each row's size: opening or resuming it says what to do."""
    out = tmp_path / "cache"
    _build(out, ImageFolderSource(folder), PatchTeacher())
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "sizes.npy").unlink()
    for attempt in (lambda: TeacherCache.open(out),
                    lambda: _build(out, ImageFolderSource(folder), PatchTeacher(0))):
        with pytest.raises(CacheError, match=r"format 1, which records no image sizes.*delete"):
            attempt()


def test_format_1_cache_with_its_sizes_file_is_upgraded_in_place(tmp_path, folder):
    """Teacher embeddings are the expensive part: a format-1 cache whose side file
    (distill_input_sizes.json, keyed by source frame) covers every filled row becomes format 2 on
    open, with those sizes, and its embeddings untouched."""
    out = tmp_path / "cache"
    built = _build(out, ImageFolderSource(folder), PatchTeacher())
    before = {k: emb.copy() for k, emb in built}
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "sizes.npy").unlink()
    # the sizes format 1 recorded, by hand: longest side to 1024, the other scaled and rounded
    side = {}
    for k in before:
        h, w = cv2.imread(str(folder / k)).shape[:2]
        scale = 1024 / max(h, w)
        side[k] = [int(h * scale + 0.5), int(w * scale + 0.5)]
    assert side["000000.jpg"] == [768, 1024]  # the 640x480 camera frames
    (out / "distill_input_sizes.json").write_text(json.dumps(side))
    cache = TeacherCache.open(out)
    assert json.loads((out / "manifest.json").read_text())["format_version"] == 2
    for i, (k, emb) in enumerate(cache):
        assert list(cache.sizes[i]) == side[k]
        np.testing.assert_array_equal(emb, before[k])
    # a side file missing a filled row's frame cannot be trusted: refused as before
    manifest["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "sizes.npy").unlink()
    del side["000000.jpg"]
    (out / "distill_input_sizes.json").write_text(json.dumps(side))
    with pytest.raises(CacheError, match=r"format 1"):
        TeacherCache.open(out)


# ------------------------------------------------------------------ teacher cache, killed rank

CACHE_FRAMES = [f"{i:06d}.jpg" for i in range(0, 48, 6)]  # 8 frames: 4 per rank
KILL_RANK, KILL_AFTER = 1, 2


def patch_embed(batch):
    """PatchTeacher's embeddings, image by image (exact)."""
    teacher = PatchTeacher()
    return torch.stack([teacher.embed_one(b) for b in batch])


def _cache_worker(rank, world, init_file, out, folder, log_dir, kill):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    calls = []
    seen = open(os.path.join(log_dir, f"encoded.{os.getpid()}.txt"), "w")

    def encode(batch, sizes):
        if kill and rank == KILL_RANK and len(calls) == KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)  # k items encoded and recorded; die now
        calls.append(len(batch))
        for b in batch:
            seen.write(hashlib.sha1(b.tobytes()).hexdigest() + "\n")
        seen.flush()
        return patch_embed(batch)

    def agree(ok):
        t = torch.tensor([float(ok)])
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    TeacherCache.build(out, ImageFolderSource(folder), encode, 1, "patch", progress=False,
                       preprocess_fn=preprocess, shard=(rank, world), agree=agree)
    dist.destroy_process_group()


def _spawn_build(tmp_path, tag, out, folder, kill, world=2):
    log_dir = tmp_path / tag
    log_dir.mkdir()
    init = tmp_path / f"init_{tag}"
    ctx = mp.start_processes(_cache_worker, args=(world, str(init), str(out), str(folder),
                                                  str(log_dir), kill),
                             nprocs=world, join=False, start_method="spawn")
    try:
        while not ctx.join(timeout=60):
            pass
    except ProcessException:  # the killed rank (spawn then ends the other one)
        if not kill:
            raise
    else:
        assert not kill, "the rank that should have been killed finished"
    return [line for p in sorted(log_dir.glob("encoded.*.txt"))
            for line in p.read_text().split()]


def test_killed_rank_loses_no_finished_rows(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    images = {}
    for name in CACHE_FRAMES:
        shutil.copy(shared_path("data", "sequence", name), folder / name)
        images[name] = image(cv2.cvtColor(cv2.imread(str(folder / name)),
                                               cv2.COLOR_BGR2RGB))
    key_of = {hashlib.sha1(x.tobytes()).hexdigest(): k for k, x in images.items()}
    out = tmp_path / "cache"

    first = [key_of[h] for h in _spawn_build(tmp_path, "crash", out, folder, kill=True)]
    records = {p.name: json.loads(p.read_text()) for p in out.glob("shard.*.json")}
    keys = json.loads((out / "keys.json").read_text())
    recorded = {keys[i] for rec in records.values() for a, b in rec["filled"]
                for i in range(a, b)}
    killed = records.get(f"shard.{KILL_RANK}.json", {"filled": []})
    # rank 1 owns rows 1, 3, 5, 7; it encoded and recorded 2 of them before the kill
    assert sum(b - a for a, b in killed["filled"]) == KILL_AFTER
    assert recorded <= set(first) and len(recorded) >= KILL_AFTER

    second = [key_of[h] for h in _spawn_build(tmp_path, "rerun", out, folder, kill=False)]
    lost = set(first) - recorded  # encoded in the first run, not recorded when it ended
    print(f"\nfirst run encoded {len(first)} of {len(keys)} items ({len(recorded)} recorded); "
          f"the rerun encoded {len(second)}: {len(lost)} recomputed, "
          f"{len(recorded & set(second))} of the recorded ones")
    assert sorted(second) == sorted(set(keys) - recorded)  # exactly what was missing, once
    assert not recorded & set(second)
    assert len(lost) <= 1  # at most the batch the surviving rank was in when it was ended

    cache = TeacherCache.open(out)
    assert cache.complete and not list(out.glob("shard.*.json"))
    for i, k in enumerate(cache.keys):  # equal to a one-process computation, row by row
        np.testing.assert_array_equal(cache[i][1], patch_embed(images[k][None])[0].numpy())
