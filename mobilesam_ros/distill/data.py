"""Frame sources for distillation: image folders, video files and ROS 2 bags, all as RGB uint8.

Every source yields `Frame(key, image)` with `image` an (H, W, 3) uint8 array in RGB channel order
(the camera's pixel frame: row 0 is the top of the image, as stored). Keys are deterministic and
unique within a source, so a teacher-embedding cache built once can be matched to the same frames
again at training time:

- `ImageFolderSource`: the file's path relative to the folder, POSIX separators (`a/000001.jpg`);
- `VideoSource`: `frame_000123`, the 0-based index in the decoded stream (before `every_n`);
- `RosbagSource`: `<topic>@<header.stamp in ns>`; a repeated stamp gets `#1`, `#2`, ... (bag
  order).

Unreadable images (corrupt file, undecodable payload) are skipped with a logged warning and listed
in `source.skipped`; an unsupported pixel encoding raises, because it concerns the whole topic and
silently skipping every frame would produce an empty cache. `rosbags` is imported lazily, so the
folder and video sources work without it.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mobilesam_ros.core.errors import MissingDependencyError
from mobilesam_ros.core.io.image_codec import (MONO16_MODES, ImageMessageError,
                                            UnsupportedImageEncodingError, compressed_msg_to_rgb,
                                            image_msg_to_rgb)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
BAG_EXTENSIONS: tuple[str, ...] = (".db3", ".mcap")
IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
# Beyond this many, per-frame skip warnings are folded into the end-of-pass summary: a broken bag
# can hold thousands of bad frames and the log should stay readable.
_MAX_SKIP_WARNINGS = 10


class SourceError(RuntimeError):
    """A source cannot be opened or read (bad path, wrong kind of file, missing topic)."""


class EmptySourceError(SourceError):
    """A source holds no frames."""


class UnsupportedEncodingError(SourceError):
    """An image message uses a pixel encoding this module does not convert."""


class CorruptImageError(ValueError):
    """One image cannot be decoded; sources skip it with a warning."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One image: `key` unique within its source, `image` (H, W, 3) uint8 RGB, C-contiguous."""

    key: str
    image: np.ndarray


@dataclass
class FrameSource:
    """Base of all sources: `keys()` lists frames cheaply, iteration decodes them.

    `frames(only=...)` decodes only the frames whose key is in `only`, which is what a resumed
    cache build needs (skipping a frame costs a grab or a stat, not a decode).
    """

    path: Path
    skipped: list[str] = field(default_factory=list, init=False, repr=False)
    # Folder sources re-read single frames cheaply at training time; video and bags do not,
    # which is why the teacher cache stores preprocessed inputs for them by default.
    random_access: bool = field(default=False, init=False)

    def keys(self) -> list[str]:
        """All frame keys in iteration order (no pixel decoding)."""
        raise NotImplementedError

    def frames(self, only: Container[str] | None = None) -> Iterator[Frame]:
        """Yield decoded frames in key order, restricted to `only` when given."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance (kind, path, options) for cache manifests."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def _begin_pass(self) -> None:
        self.skipped = []

    def _skip(self, key: str, why: str) -> None:
        self.skipped.append(key)
        if len(self.skipped) <= _MAX_SKIP_WARNINGS:
            log.warning("%s: skipping unreadable frame %s: %s", self.path, key, why)

    def _end_pass(self, seen: int) -> None:
        if self.skipped:
            log.warning("%s: skipped %d unreadable frame(s) of %d", self.path, len(self.skipped),
                        seen)

    def _decode_pass(self, items: Iterable[tuple[str, Any]], decode: Callable[[Any], np.ndarray],
                     only: Container[str] | None) -> Iterator[Frame]:
        """One pass over (key, payload): decode the wanted ones, skip (and count) corrupt ones."""
        self._begin_pass()
        seen = 0
        for key, payload in items:
            if only is not None and key not in only:
                continue
            seen += 1
            try:
                image = decode(payload)
            except CorruptImageError as e:
                self._skip(key, str(e))
                continue
            yield Frame(key, image)
        self._end_pass(seen)


# --------------------------------------------------------------------------------------------------
# image folders


@dataclass
class ImageFolderSource(FrameSource):
    """Image files under `path`, sorted by relative POSIX path; key = that relative path.

    Extensions match case-insensitively. Hidden files and folders (leading '.') are ignored, so a
    dataset inside a git checkout or with editor swap files behaves.
    """

    extensions: Sequence[str] = IMAGE_EXTENSIONS
    recursive: bool = True
    _files: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.random_access = True
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist or is not a directory")
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in self.extensions}
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")] if self.recursive else []
            rel = Path(dirpath).relative_to(self.path)
            found += [(rel / f).as_posix() for f in filenames
                      if not f.startswith(".") and Path(f).suffix.lower() in exts]
        if not found:
            raise EmptySourceError(f"no images with extensions {sorted(exts)} in {self.path}"
                                   + (" (recursive)" if self.recursive else ""))
        self._files = sorted(found)

    def __len__(self) -> int:
        return len(self._files)

    def keys(self) -> list[str]:
        return list(self._files)

    def read(self, key: str) -> np.ndarray:
        """Decode one image by key -> (H, W, 3) uint8 RGB; raises CorruptImageError."""
        p = self.path / key
        try:
            # fromfile+imdecode instead of imread: same decoder, but an OSError is reported
            # instead of a bare None and non-ASCII paths work everywhere.
            buf = np.fromfile(p, dtype=np.uint8)
        except OSError as e:
            raise CorruptImageError(f"cannot read {p}: {e}") from e
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if bgr is None:
            raise CorruptImageError(f"cannot decode {p} ({buf.size} bytes)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def frames(self, only: Container[str] | None = None) -> Iterator[Frame]:
        return self._decode_pass(((k, k) for k in self._files), self.read, only)

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "path": str(self.path.resolve()),
                "extensions": list(self.extensions), "recursive": self.recursive}


# --------------------------------------------------------------------------------------------------
# video files


def _check_stride(every_n: int, max_frames: int | None) -> None:
    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, got {every_n}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")


@dataclass
class VideoSource(FrameSource):
    """Frames of a video file (cv2.VideoCapture), every `every_n`-th, at most `max_frames`.

    Key = `frame_%06d` of the 0-based index in the decoded stream, so keys of a strided pass match
    those of a full pass.
    """

    every_n: int = 1
    max_frames: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        _check_stride(self.every_n, self.max_frames)
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist")
        cap = self._open()
        try:
            if not cap.grab():
                raise EmptySourceError(f"video {self.path} has no decodable frames")
        finally:
            cap.release()

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video {self.path} (not a video, or no backend for it)")
        return cap

    def _walk(self, only: Container[str] | None, decode: bool) -> Iterator[tuple[str, Any]]:
        """(key, frame-or-None) for the selected frames; decodes only when asked."""
        cap = self._open()
        try:
            index = taken = 0
            while self.max_frames is None or taken < self.max_frames:
                if not cap.grab():
                    break
                if index % self.every_n == 0:
                    taken += 1
                    key = f"frame_{index:06d}"
                    if only is None or key in only:
                        if not decode:
                            yield key, None
                        else:
                            ok, bgr = cap.retrieve()
                            yield key, (bgr if ok else None)
                index += 1
        finally:
            cap.release()

    def keys(self) -> list[str]:
        # A grab pass: CAP_PROP_FRAME_COUNT is an estimate for many containers.
        return [k for k, _ in self._walk(None, decode=False)]

    def frames(self, only: Container[str] | None = None) -> Iterator[Frame]:
        self._begin_pass()
        seen = 0
        for key, bgr in self._walk(only, decode=True):
            seen += 1
            if bgr is None:
                self._skip(key, "retrieve() failed")
                continue
            if bgr.ndim == 2:
                yield Frame(key, cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB))
            else:
                yield Frame(key, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self._end_pass(seen)

    def describe(self) -> dict[str, Any]:
        return {"kind": "video", "path": str(self.path.resolve()), "every_n": self.every_n,
                "max_frames": self.max_frames}


# --------------------------------------------------------------------------------------------------
# ROS 2 image messages: decoded by core.io.image_codec, the node's decoder, so a bag and a live topic
# give the same pixels.


def message_to_rgb(msg: Any, compressed: bool, mono16: str = "range") -> np.ndarray:
    """A `sensor_msgs/msg/Image` or `CompressedImage` -> (H, W, 3) uint8 RGB, never aliasing `msg`.

    Raises UnsupportedEncodingError for encodings/formats image_codec does not decode (concerns the
    whole topic) and CorruptImageError for one undecodable message.
    """
    try:
        image = compressed_msg_to_rgb(msg) if compressed else image_msg_to_rgb(msg, mono16)
    except UnsupportedImageEncodingError as e:
        raise UnsupportedEncodingError(str(e)) from e
    except ImageMessageError as e:
        raise CorruptImageError(str(e)) from e
    # image_codec may return a view of the message buffer (rgb8 without row padding); frames
    # outlive their messages and callers may write into them.
    data = msg.data
    if not image.flags.writeable or (isinstance(data, np.ndarray)
                                     and np.may_share_memory(image, data)):
        image = image.copy()
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------------------------------
# ROS 2 bags


def _import_rosbags() -> tuple[Any, Any, Any]:
    try:
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("reading ROS 2 bags needs rosbags: pip install "
                                     "rosbags==0.11.9") from e
    return Reader, Stores, get_typestore


def _bag_reader_path(path: Path) -> Path:
    """What rosbags' Reader should open: the bag dir (with metadata.yaml) or one storage file."""
    if path.is_file():
        if path.suffix not in BAG_EXTENSIONS:
            raise SourceError(f"{path} is not a ROS 2 bag file ({', '.join(BAG_EXTENSIONS)})")
        return path
    if (path / "metadata.yaml").is_file():
        return path
    files = sorted(p for ext in BAG_EXTENSIONS for p in path.glob("*" + ext))
    if len(files) == 1:
        return files[0]
    if not files:
        raise SourceError(f"{path} is not a ROS 2 bag: no metadata.yaml, *.db3 or *.mcap")
    # Without metadata.yaml the order of split files is a guess; refuse rather than guess.
    raise SourceError(f"{path} has no metadata.yaml and several storage files "
                      f"({', '.join(p.name for p in files)}); open one of them directly")


@dataclass
class RosbagSource(FrameSource):
    """Images of one topic of a ROS 2 bag (sqlite3 or MCAP), every `every_n`-th message.

    `path` is the bag directory or a single .db3/.mcap file. With `topic=None` the bag must hold
    exactly one `sensor_msgs/msg/Image` or `CompressedImage` topic. Messages are read in bag
    (receive-time) order; key = `<topic>@<header.stamp ns>`.
    """

    topic: str | None = None
    every_n: int = 1
    max_frames: int | None = None
    mono16: str = "range"
    msgtype: str = field(default="", init=False)
    _reader_path: Path = field(default=Path(), init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        _check_stride(self.every_n, self.max_frames)
        if not self.path.exists():
            raise SourceError(f"bag {self.path} does not exist")
        if self.mono16 not in MONO16_MODES:
            raise ValueError(f"mono16 must be one of {MONO16_MODES}, got {self.mono16!r}")
        self._reader_path = _bag_reader_path(self.path)
        Reader, Stores, get_typestore = _import_rosbags()
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        with self._open_reader(Reader) as reader:
            image_topics = {c.topic: c.msgtype for c in reader.connections
                            if c.msgtype in (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)}
            counts = {t: i.msgcount for t, i in reader.topics.items()}
            listing = ", ".join(f"{t} ({image_topics[t].rsplit('/', 1)[-1]}, {counts.get(t, 0)} "
                                f"msgs)" for t in sorted(image_topics)) or "none"
            if self.topic is None:
                if len(image_topics) != 1:
                    what = "no image topics" if not image_topics else "several image topics"
                    raise SourceError(f"bag {self.path} has {what}; pass topic=... "
                                      f"(image topics: {listing}; all topics: "
                                      f"{', '.join(sorted(counts)) or 'none'})")
                self.topic = next(iter(image_topics))
            elif self.topic not in image_topics:
                types = sorted({c.msgtype for c in reader.connections if c.topic == self.topic})
                found = f"has type {', '.join(types)}" if types else "is not in the bag"
                raise SourceError(f"topic {self.topic} {found}; image topics in {self.path}: "
                                  f"{listing}")
            self.msgtype = image_topics[self.topic]
            # Peek instead of trusting msgcount, which is metadata, not the messages themselves.
            conns = [c for c in reader.connections if c.topic == self.topic]
            peek = reader.messages(connections=conns)
            try:
                empty = next(peek, None) is None
            finally:
                peek.close()
            if empty:
                raise EmptySourceError(f"topic {self.topic} in bag {self.path} has no messages")

    def _open_reader(self, Reader: Any = None) -> Any:
        if Reader is None:
            Reader = _import_rosbags()[0]
        try:
            return Reader(self._reader_path)
        except Exception as e:  # rosbags raises its own ReaderError, FileNotFoundError, ...
            raise SourceError(f"cannot open bag {self.path}: {e}") from e

    def _walk(self) -> Iterator[tuple[str, Any]]:
        """(key, deserialized message) of the selected messages, in bag order."""
        seen_keys: dict[str, int] = {}
        with self._open_reader() as reader:
            conns = [c for c in reader.connections if c.topic == self.topic]
            taken = 0
            for index, (conn, _t, raw) in enumerate(reader.messages(connections=conns)):
                if self.max_frames is not None and taken >= self.max_frames:
                    break
                if index % self.every_n:
                    continue
                taken += 1
                msg = self._typestore.deserialize_cdr(raw, conn.msgtype)
                stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                key = f"{self.topic}@{stamp}"
                # Cameras with a stuck or zero clock repeat stamps; keys must stay unique.
                dup = seen_keys.get(key, 0)
                seen_keys[key] = dup + 1
                yield (f"{key}#{dup}" if dup else key), msg

    def keys(self) -> list[str]:
        return [k for k, _ in self._walk()]

    def frames(self, only: Container[str] | None = None) -> Iterator[Frame]:
        compressed = self.msgtype == COMPRESSED_MSGTYPE
        return self._decode_pass(self._walk(), lambda m: message_to_rgb(m, compressed, self.mono16), only)

    def describe(self) -> dict[str, Any]:
        return {"kind": "rosbag", "path": str(self.path.resolve()), "topic": self.topic,
                "msgtype": self.msgtype, "every_n": self.every_n, "max_frames": self.max_frames,
                "mono16": self.mono16}


# --------------------------------------------------------------------------------------------------
# dispatch and splitting


def open_source(path: str | os.PathLike[str], **kwargs: Any) -> FrameSource:
    """The source for `path`, chosen by what it is; `kwargs` go to that source's constructor.

    A .db3/.mcap file, or a directory holding metadata.yaml or a .db3/.mcap file -> RosbagSource;
    any other directory -> ImageFolderSource; a file with a video extension -> VideoSource.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    if p.is_dir():
        if (p / "metadata.yaml").is_file() or any(
                any(p.glob("*" + ext)) for ext in BAG_EXTENSIONS):
            return RosbagSource(p, **kwargs)
        return ImageFolderSource(p, **kwargs)
    suffix = p.suffix.lower()
    if suffix in BAG_EXTENSIONS:
        return RosbagSource(p, **kwargs)
    if suffix in VIDEO_EXTENSIONS:
        return VideoSource(p, **kwargs)
    hint = " (a single image: put it in a folder)" if suffix in IMAGE_EXTENSIONS else ""
    raise SourceError(f"don't know how to read frames from {p}{hint}; expected an image folder, "
                      f"a video ({', '.join(VIDEO_EXTENSIONS)}) or a ROS 2 bag "
                      f"(directory with metadata.yaml, {', '.join(BAG_EXTENSIONS)})")


def split_keys(keys: Iterable[str], val_fraction: float, seed: int = 0
               ) -> tuple[list[str], list[str]]:
    """Deterministic (train, val) split by a hash of (seed, key); input order is kept.

    A key's side depends only on the key and the seed, never on the other keys, so adding frames
    to a dataset does not move existing ones across the split. The val share is `val_fraction` in
    expectation, not exactly. Neighbouring video/bag frames are near-duplicates that land on both
    sides; hold out whole sequences instead when that matters.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    train: list[str] = []
    val: list[str] = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
        (val if u < val_fraction else train).append(key)
    return train, val
