"""Frame sources over real frames: image folder, MJPG video and ROS 2 bags (sqlite3 and MCAP)."""
import logging
import shutil
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import shared_path

from mobilesam_ros.distill.data import (
    CorruptImageError, EmptySourceError, ImageFolderSource, RosbagSource, SourceError,
    UnsupportedEncodingError, VideoSource, message_to_rgb, open_source, split_keys)

N_SEQ = 48


@pytest.fixture(scope="module")
def seq_dir():
    return shared_path("data", "sequence")


@pytest.fixture(scope="module")
def seq_rgb(seq_dir):
    """The 48 frames as cv2 reads them, RGB."""
    paths = sorted(seq_dir.glob("*.jpg"))
    assert len(paths) == N_SEQ
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


# --------------------------------------------------------------------------------- image folders


def test_folder_over_real_sequence(seq_dir, seq_rgb):
    src = ImageFolderSource(seq_dir)
    assert src.keys() == [f"{i:06d}.jpg" for i in range(N_SEQ)]  # README.md is not an image
    frames = list(src)
    assert [f.key for f in frames] == src.keys() and len(src) == N_SEQ
    for f, want in zip(frames, seq_rgb):
        assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
        np.testing.assert_array_equal(f.image, want)
    assert src.skipped == []
    assert isinstance(open_source(seq_dir), ImageFolderSource)


def test_folder_recursion_extensions_hidden(tmp_path, seq_dir, seq_rgb):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    shutil.copy(seq_dir / "000003.jpg", tmp_path / "z.jpg")
    cv2.imwrite(str(tmp_path / "b" / "c" / "a.PNG"), cv2.cvtColor(seq_rgb[7], cv2.COLOR_RGB2BGR))
    shutil.copy(seq_dir / "000004.jpg", tmp_path / ".git" / "x.jpg")
    shutil.copy(seq_dir / "000005.jpg", tmp_path / ".swap.jpg")
    (tmp_path / "notes.txt").write_text("not an image")

    src = ImageFolderSource(tmp_path)
    assert src.keys() == ["b/c/a.PNG", "z.jpg"]
    frames = {f.key: f.image for f in src}
    np.testing.assert_array_equal(frames["b/c/a.PNG"], seq_rgb[7])  # png: lossless
    np.testing.assert_array_equal(frames["z.jpg"], seq_rgb[3])
    assert ImageFolderSource(tmp_path, recursive=False).keys() == ["z.jpg"]
    assert ImageFolderSource(tmp_path, extensions=("png",)).keys() == ["b/c/a.PNG"]
    # only= decodes a subset, in key order
    assert [f.key for f in src.frames(only={"z.jpg"})] == ["z.jpg"]


def test_folder_skips_corrupt_images_with_warning(tmp_path, seq_dir, caplog):
    for i in (0, 1, 2):
        shutil.copy(seq_dir / f"00000{i}.jpg", tmp_path / f"{i}.jpg")
    (tmp_path / "1b_bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg" * 10)
    (tmp_path / "9_empty.png").write_bytes(b"")
    src = ImageFolderSource(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mobilesam_ros.distill.data"):
        keys = [f.key for f in src]
    assert keys == ["0.jpg", "1.jpg", "2.jpg"]
    assert src.skipped == ["1b_bad.jpg", "9_empty.png"]
    assert "skipped 2 unreadable frame(s) of 5" in caplog.text
    assert "1b_bad.jpg" in caplog.text


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(EmptySourceError, match=r"no images with extensions .*\.bmp"):
        ImageFolderSource(tmp_path)
    with pytest.raises(EmptySourceError):
        open_source(tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        ImageFolderSource(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "nope")


# --------------------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def video_path(tmp_path_factory, seq_rgb):
    path = tmp_path_factory.mktemp("video") / "seq.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    assert w.isOpened()
    for im in seq_rgb:
        w.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    w.release()
    return path


def _mad(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_video_reads_back_all_frames(video_path, seq_rgb):
    src = open_source(video_path)
    assert isinstance(src, VideoSource)
    frames = list(src)
    assert [f.key for f in frames] == [f"frame_{i:06d}" for i in range(N_SEQ)] == src.keys()
    own = [_mad(f.image, want) for f, want in zip(frames, seq_rgb)]
    assert all(f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert max(own) < 5.0, own  # MJPG is lossy; colours must not be swapped (that gives ~20+)
    # Order: each decoded frame sits closer to its own source frame than to the next one.
    shifted = [_mad(frames[i].image, seq_rgb[i + 1]) for i in range(N_SEQ - 1)]
    assert sum(own[:-1]) < sum(shifted)


def test_video_stride_limit_and_subset(video_path, seq_rgb):
    src = VideoSource(video_path, every_n=5, max_frames=4)
    assert src.keys() == ["frame_000000", "frame_000005", "frame_000010", "frame_000015"]
    for f in src:
        assert _mad(f.image, seq_rgb[int(f.key[-6:])]) < 5.0
    assert [f.key for f in src.frames(only={"frame_000010"})] == ["frame_000010"]
    with pytest.raises(ValueError, match="every_n"):
        VideoSource(video_path, every_n=0)


def test_unreadable_video_and_unknown_paths(tmp_path, seq_dir):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"RIFF garbage" * 100)
    with pytest.raises(SourceError, match="broken.avi"):
        open_source(bad)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(SourceError, match="don't know how to read frames"):
        open_source(tmp_path / "x.txt")
    with pytest.raises(SourceError, match="put it in a folder"):
        open_source(seq_dir / "000000.jpg")


# ------------------------------------------------------------------------------------ ROS 2 bags

RAW, COMP = "/camera/image_raw", "/camera/image_raw/compressed"
STAMPS = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(5)]


def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


def _write_bag(path, storage, topics):
    """topics: {name: (msgtype, [(stamp_ns, msg), ...])} -> a rosbag2 directory."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts = _typestore()
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {name: w.add_connection(name, mt, typestore=ts) for name, (mt, _) in topics.items()}
        # interleave in log-time order, as a recorder would
        msgs = sorted((t, name, m) for name, (_, ms) in topics.items() for t, m in ms)
        for t, name, m in msgs:
            w.write(conns[name], t, ts.serialize_cdr(m, topics[name][0]))
    return path


def _header(ts, stamp_ns):
    return ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                      nanosec=stamp_ns % 10**9),
        frame_id="camera_optical_frame")


def _image(ts, stamp_ns, pixels, encoding, step=None, bigendian=0):
    """pixels: (H, W, C) or (H, W) array in the encoding's own layout; rows padded to `step`."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8)
    step = step or row.shape[1]
    buf = np.full((h, step), 0xAB, np.uint8)  # padding bytes must never leak into pixels
    buf[:, :row.shape[1]] = row
    return ts.types["sensor_msgs/msg/Image"](
        header=_header(ts, stamp_ns), height=h, width=w, encoding=encoding,
        is_bigendian=bigendian, step=step, data=buf.reshape(-1))


def _compressed(ts, stamp_ns, data, fmt="jpeg"):
    return ts.types["sensor_msgs/msg/CompressedImage"](
        header=_header(ts, stamp_ns), format=fmt, data=np.frombuffer(data, np.uint8).copy())


def _gray3(rgb):
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def bag(request, tmp_path_factory, seq_rgb):
    """Two image topics + a non-image topic, plus the pixels each message must decode to."""
    ts = _typestore()
    f = seq_rgb
    gray16 = cv2.cvtColor(f[4], cv2.COLOR_RGB2GRAY).astype(">u2") * 257  # 257*k -> k exactly
    raw = [
        _image(ts, STAMPS[0], f[0], "rgb8", step=640 * 3 + 13),  # odd row padding
        _image(ts, STAMPS[1], cv2.cvtColor(f[1], cv2.COLOR_RGB2BGR), "bgr8"),
        _image(ts, STAMPS[2], cv2.cvtColor(f[2], cv2.COLOR_RGB2GRAY), "mono8", step=648),
        _image(ts, STAMPS[3], cv2.cvtColor(f[3], cv2.COLOR_RGB2BGRA), "bgra8"),
        _image(ts, STAMPS[4], gray16.astype(">u2"), "mono16", step=640 * 2 + 6, bigendian=1),
    ]
    want_raw = [f[0], f[1], _gray3(f[2]), f[3], _gray3(f[4])]
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f[10 + i], cv2.COLOR_RGB2BGR))[1].tobytes()
             for i in range(3)]
    # the last two share a stamp: the second key gets '#1'
    comp_stamps = [STAMPS[0] + 5, STAMPS[1] + 5, STAMPS[1] + 5]
    comp = [_compressed(ts, s, j) for s, j in zip(comp_stamps, jpegs)]
    want_comp = [cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR),
                              cv2.COLOR_BGR2RGB) for j in jpegs]
    chatter = ts.types["std_msgs/msg/String"](data="hello")
    path = _write_bag(tmp_path_factory.mktemp("bag") / f"bag_{request.param}", request.param, {
        RAW: ("sensor_msgs/msg/Image", [(s + 1000, m) for s, m in zip(STAMPS, raw)]),
        COMP: ("sensor_msgs/msg/CompressedImage",
               [(STAMPS[i] + 2000, m) for i, m in enumerate(comp)]),
        "/chatter": ("std_msgs/msg/String", [(STAMPS[0], chatter)]),
    })
    comp_keys = [f"{COMP}@{comp_stamps[0]}", f"{COMP}@{comp_stamps[1]}",
                 f"{COMP}@{comp_stamps[1]}#1"]
    return SimpleNamespace(path=path, storage=request.param, want_raw=want_raw,
                           want_comp=want_comp, comp_keys=comp_keys)


def test_bag_raw_topic_exact_pixels(bag):
    src = open_source(bag.path, topic=RAW)
    assert isinstance(src, RosbagSource) and src.msgtype == "sensor_msgs/msg/Image"
    frames = list(src)
    assert [f.key for f in frames] == [f"{RAW}@{s}" for s in STAMPS] == src.keys()
    for f, want in zip(frames, bag.want_raw):
        assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
        assert f.image.flags.c_contiguous and f.image.flags.writeable
        np.testing.assert_array_equal(f.image, want, err_msg=f.key)
    assert src.skipped == []


def test_bag_compressed_topic_and_duplicate_stamps(bag):
    src = RosbagSource(bag.path, topic=COMP)
    frames = list(src)
    assert [f.key for f in frames] == bag.comp_keys
    for f, want in zip(frames, bag.want_comp):
        np.testing.assert_array_equal(f.image, want)


def test_bag_topic_selection_errors(bag):
    with pytest.raises(SourceError, match="several image topics") as e:
        RosbagSource(bag.path)
    assert RAW in str(e.value) and COMP in str(e.value) and "topic=" in str(e.value)
    with pytest.raises(SourceError, match="has type std_msgs/msg/String"):
        RosbagSource(bag.path, topic="/chatter")
    with pytest.raises(SourceError, match="is not in the bag.*image_raw/compressed"):
        RosbagSource(bag.path, topic="/nope")


def test_bag_stride_and_single_storage_file(bag):
    src = RosbagSource(bag.path, topic=RAW, every_n=2, max_frames=2)
    assert src.keys() == [f"{RAW}@{STAMPS[0]}", f"{RAW}@{STAMPS[2]}"]
    np.testing.assert_array_equal(list(src)[1].image, bag.want_raw[2])
    ext = {"sqlite3": ".db3", "mcap": ".mcap"}[bag.storage]
    (storage_file,) = bag.path.glob("*" + ext)
    single = open_source(storage_file, topic=COMP)  # the bare .db3/.mcap, no metadata.yaml
    assert single.keys() == bag.comp_keys


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_single_topic_autoselect_and_corrupt_message(tmp_path, seq_rgb, storage, caplog):
    ts = _typestore()
    good = cv2.imencode(".png", cv2.cvtColor(seq_rgb[20], cv2.COLOR_RGB2BGR))[1].tobytes()
    msgs = [_compressed(ts, 10, good, "png"), _compressed(ts, 20, b"\x89PNG broken"),
            _compressed(ts, 30, good, "png")]
    path = _write_bag(tmp_path / "b", storage, {
        "/cam/compressed": ("sensor_msgs/msg/CompressedImage", [(t, m) for t, m in
                                                               zip((10, 20, 30), msgs)]),
        "/chatter": ("std_msgs/msg/String", [(5, ts.types["std_msgs/msg/String"](data="x"))])})
    src = open_source(path)  # the only image topic is picked
    assert src.topic == "/cam/compressed"
    with caplog.at_level(logging.WARNING, logger="mobilesam_ros.distill.data"):
        frames = list(src)
    assert [f.key for f in frames] == ["/cam/compressed@10", "/cam/compressed@30"]
    np.testing.assert_array_equal(frames[0].image, seq_rgb[20])  # png: lossless
    assert src.skipped == ["/cam/compressed@20"] and "skipped 1 unreadable" in caplog.text


def test_bag_without_image_topics_and_unsupported_encoding(tmp_path, seq_rgb):
    ts = _typestore()
    path = _write_bag(tmp_path / "s", "sqlite3", {
        "/chatter": ("std_msgs/msg/String", [(5, ts.types["std_msgs/msg/String"](data="x"))])})
    with pytest.raises(SourceError, match="no image topics.*/chatter"):
        open_source(path)
    bayer = _image(ts, 7, cv2.cvtColor(seq_rgb[0], cv2.COLOR_RGB2GRAY), "bayer_rggb8")
    path = _write_bag(tmp_path / "u", "mcap", {"/cam": ("sensor_msgs/msg/Image", [(7, bayer)])})
    with pytest.raises(UnsupportedEncodingError, match="bayer_rggb8.*supported:.*rgb8"):
        list(open_source(path))


def test_bag_without_rosbags_installed_says_how_to_get_it(bag, monkeypatch):
    monkeypatch.setitem(sys.modules, "rosbags.rosbag2", None)  # import of it now fails
    with pytest.raises(ImportError, match=r"pip install rosbags==0\.11\.9"):
        open_source(bag.path, topic=RAW)


def test_message_conversion_edge_cases(seq_rgb):
    """rclpy-like messages (bytes data) go through core.io.image_codec; malformed buffers are
    CorruptImageError (skipped), unknown encodings and compressedDepth UnsupportedEncodingError."""
    gray = cv2.cvtColor(seq_rgb[0], cv2.COLOR_RGB2GRAY)[:4, :5]
    v = gray.astype("<u2") * 257
    le = SimpleNamespace(height=4, width=5, encoding="mono16", is_bigendian=0, step=10,
                         data=v.tobytes())
    np.testing.assert_array_equal(message_to_rgb(le, False)[..., 0], gray)
    lo = SimpleNamespace(**{**vars(le), "data": (gray.astype("<u2") + 1000).tobytes()})
    stretched = message_to_rgb(lo, False, mono16="minmax")[..., 0]
    assert stretched.min() == 0 and stretched.max() == 255
    with pytest.raises(CorruptImageError, match="step 8 <"):
        message_to_rgb(SimpleNamespace(**{**vars(le), "step": 8}), False)
    with pytest.raises(CorruptImageError, match="needs"):
        message_to_rgb(SimpleNamespace(**{**vars(le), "data": v.tobytes()[:-3]}), False)
    with pytest.raises(UnsupportedEncodingError, match="32FC1"):
        message_to_rgb(SimpleNamespace(**{**vars(le), "encoding": "32FC1"}), False)
    png = cv2.imencode(".png", gray)[1].tobytes()
    depth = SimpleNamespace(format="16UC1; compressedDepth png", data=b"\0" * 12 + png)
    with pytest.raises(UnsupportedEncodingError, match="compressedDepth"):
        message_to_rgb(depth, True)
    with pytest.raises(CorruptImageError, match="could not decode"):
        message_to_rgb(SimpleNamespace(format="jpeg", data=b"\xff\xd8 nope"), True)
    # An unpadded rgb8 frame decodes as a view of the message; the frame must not alias it.
    rgb = np.ascontiguousarray(seq_rgb[0][:4, :5])
    buf = rgb.reshape(-1).copy()
    msg = SimpleNamespace(height=4, width=5, encoding="rgb8", is_bigendian=0, step=15, data=buf)
    out = message_to_rgb(msg, False)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable and not np.may_share_memory(out, buf)


# ------------------------------------------------------------------------------------- splitting


def test_split_keys_deterministic_disjoint_and_stable():
    keys = [f"{i:06d}.jpg" for i in range(2000)]
    train, val = split_keys(keys, 0.1, seed=3)
    assert (train, val) == split_keys(keys, 0.1, seed=3)
    assert set(train).isdisjoint(val) and sorted(train + val) == keys
    assert train == sorted(train) and val == sorted(val)  # input order kept
    assert 150 < len(val) < 250
    assert split_keys(keys, 0.1, seed=4)[1] != val
    # adding keys never moves existing ones across the split
    train2, val2 = split_keys(keys + [f"new_{i}" for i in range(500)], 0.1, seed=3)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    assert split_keys(keys, 0.0)[1] == [] and split_keys(keys, 1.0)[0] == []
    with pytest.raises(ValueError):
        split_keys(keys, 1.5)
