"""Where the project's caches live on disk (exported ONNX graphs, TensorRT engines): one root,
with one folder per kind of cache below it."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root(explicit: str = "") -> Path:
    """explicit, else $MOBILESAM_CACHE_DIR, else $XDG_CACHE_HOME/mobilesam_ros (~/.cache/...)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("MOBILESAM_CACHE_DIR"):
        return Path(os.environ["MOBILESAM_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "mobilesam_ros"
