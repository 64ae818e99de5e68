"""Where the official weights come from, and fetching them when the network allows.

Nothing here runs at import or inside the node: only `make demo` / the CLI ask for a download,
and a download that fails leaves a message naming the file, the URL and where to put it.
The official repository publishes no checksum; the first successful download records the file's
sha256 beside it (`<file>.sha256`) and every later use verifies against that record, and the file
must load strictly as a MobileSAM checkpoint before it is accepted.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from typing import Optional

from mobilesam_ros.core.io.atomic import atomic_path, atomic_write_text


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    what: str


MOBILE_SAM = WeightFile("mobile_sam.pt",
                        "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                        "MobileSAM (TinyViT-5M encoder + SAM decoder), 40.7 MB")


class WeightsMissing(RuntimeError):
    pass


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed (checkpoints can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def verify_recorded(path: str) -> None:
    """Raise if `path` no longer matches the sha256 recorded at download time."""
    rec = path + ".sha256"
    if os.path.exists(rec):
        want = open(rec).read().split()[0]
        got = sha256_of(path)
        if got != want:
            raise WeightsMissing(f"{path}: sha256 {got} differs from the one recorded at download "
                                 f"({want}); the file changed or is corrupt: delete it and fetch again")


def ensure(weight: WeightFile, directory: str, download: bool = True, timeout_s: float = 20.0) -> str:
    """Path of `weight` in `directory`, downloading it first when allowed; WeightsMissing says how
    to get it by hand when it is absent and cannot be fetched."""
    path = os.path.join(directory, weight.name)
    if os.path.exists(path):
        verify_recorded(path)
        return path
    how = (f"{weight.what} is missing: download {weight.url} and put it at {os.path.abspath(path)} "
           "(the checkpoints are not redistributed with this package)")
    if not download:
        raise WeightsMissing(how)
    os.makedirs(directory, exist_ok=True)
    try:
        with atomic_path(path) as tmp:  # only a file that loads gets the real name
            with urllib.request.urlopen(weight.url, timeout=timeout_s) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
            _check_loads(str(tmp))
    except Exception as exc:  # noqa: BLE001  any network/format failure ends in the same advice
        raise WeightsMissing(f"{how}\n(automatic download failed: {type(exc).__name__}: {exc})") from exc
    atomic_write_text(path + ".sha256", f"{sha256_of(path)}  {weight.name}\n")
    return path


def _check_loads(path: str) -> None:
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam

    load_mobile_sam(path)


def default_dir() -> str:
    """`weights/` of the source checkout, or $MOBILESAM_WEIGHTS."""
    here = os.path.dirname(os.path.realpath(__file__))
    return os.environ.get("MOBILESAM_WEIGHTS", os.path.join(here, "..", "..", "weights"))


def find(weight: WeightFile, explicit: Optional[str] = None, download: bool = True) -> str:
    if explicit:
        if not os.path.exists(explicit):
            raise WeightsMissing(f"checkpoint not found: {explicit}")
        return explicit
    return ensure(weight, os.path.normpath(default_dir()), download)
