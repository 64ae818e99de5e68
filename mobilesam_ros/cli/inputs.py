"""Frame inputs of `eval segany` and `label`: an image folder, a video file or a ROS 2 bag, as
distill/data.py reads them (same keys: relative path, `frame_%06d`, `<topic>@<stamp ns>`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mobilesam_ros.distill.data import FrameSource, RosbagSource, open_source


def open_input(spec: str, topic: Optional[str] = None) -> FrameSource:
    """`spec` = folder | video | bag | bag:topic (the `:topic` suffix picks one image topic of a
    bag; `topic` does the same). Raises SourceError / FileNotFoundError (exit 2)."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        bag, _, suffix = spec.rpartition(":")
        if Path(bag).exists() and suffix.startswith("/"):
            return RosbagSource(Path(bag), topic=suffix)
    if topic:
        return RosbagSource(path, topic=topic)
    return open_source(path)


def stamp_ns(key: str, index: int, fps: float) -> int:
    """A frame's time for the tracker: the header stamp of a bag key (`<topic>@<ns>[#k]`), else
    index / fps (folders and videos)."""
    if "@" in key:
        tail = key.rpartition("@")[2].split("#")[0]
        if tail.isdigit():
            return int(tail)
    return int(round(index * 1e9 / fps))
