"""ONNX graphs exported on first use, cached outside the source tree, keyed by the checkpoint.

Backend `auto` runs ONNX Runtime on CPU (its encoder is about 2x torch's there) without
asking users to run `export` themselves. An entry is a folder
  <cache root>/onnx/<key>/{encoder.onnx, decoder.onnx, manifest.json}
with key = sha256 over the checkpoint file(s), this exporter's version, the opset and torch's
version, so new weights or a new exporter never reuse old graphs. The manifest records the graphs'
sha256 and their measured agreement with torch; an entry whose manifest is missing, unreadable or
does not match the files is rebuilt, never trusted. A new entry is exported into a temporary
folder, checked against torch (the golden tolerances), and renamed into place, so a crash or a
concurrent exporter never leaves a half-written entry under the final name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from mobilesam_ros.core.io.atomic import atomic_write_json
from mobilesam_ros.core.io.checkpoints import CheckpointError
from mobilesam_ros.core.io.weights import sha256_of

LOG = logging.getLogger("mobilesam_ros")
EXPORTER_VERSION = 2  # bump when export.py changes what it writes (2: LayerNormalization, frozen sizes)
FILES = ("encoder.onnx", "decoder.onnx")
MANIFEST = "manifest.json"


class ExportUnavailable(RuntimeError):
    """The graphs cannot be produced here (no exporter, export failed or disagrees with torch)."""


def cache_root(explicit: str = "") -> Path:
    """explicit, else $MOBILESAM_CACHE_DIR, else $XDG_CACHE_HOME/mobilesam_ros (~/.cache/...)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("MOBILESAM_CACHE_DIR"):
        return Path(os.environ["MOBILESAM_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "mobilesam_ros"


def entry_key(checkpoints: Sequence[str]) -> str:
    import torch

    from mobilesam_ros.core.runtime.export import OPSET

    h = hashlib.sha256()
    for path in checkpoints:
        h.update(sha256_of(path).encode())
    h.update(f"exporter={EXPORTER_VERSION};opset={OPSET};torch={torch.__version__}".encode())
    return h.hexdigest()[:32]


def _valid(entry: Path) -> bool:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        return all(sha256_of(str(entry / f)) == manifest["sha256"][f] for f in FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_graphs(checkpoints: Sequence[str], load_sam: Callable[[], object],
                  root: str = "") -> tuple[str, str]:
    """(encoder.onnx, decoder.onnx) for these checkpoint file(s), exported now if not cached.

    load_sam: builds the torch Sam of those checkpoints (called only when exporting).
    Raises ExportUnavailable when the graphs cannot be written or fail the check against torch.
    """
    entry = cache_root(root) / "onnx" / entry_key(checkpoints)
    if _valid(entry):
        return str(entry / FILES[0]), str(entry / FILES[1])
    if entry.exists():
        LOG.warning("ONNX cache entry %s is incomplete or corrupt: rebuilding it", entry)
        shutil.rmtree(entry, ignore_errors=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    LOG.info("exporting ONNX graphs for %s into %s (once per checkpoint; about a minute)",
             ", ".join(checkpoints), entry)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=entry.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the entry from other users of a shared cache
    try:
        _export_into(tmp, load_sam)
        try:
            os.rename(tmp, entry)
        except OSError:  # another process finished the same entry first: use it if it is sound
            if not _valid(entry):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOG.info("ONNX graphs ready in %.0f s: %s", time.perf_counter() - t0, entry)
    return str(entry / FILES[0]), str(entry / FILES[1])


def _export_into(folder: Path, load_sam: Callable[[], object]) -> None:
    try:
        from mobilesam_ros.core.runtime.export import check_export, export_decoder, export_encoder, export_matches

        sam = load_sam()
        enc = export_encoder(sam, str(folder / FILES[0]))
        dec = export_decoder(sam, str(folder / FILES[1]))
        err = check_export(sam, enc, dec)
    except CheckpointError:
        raise  # a bad checkpoint is the user's error under any backend: never a fallback
    except ImportError as exc:
        raise ExportUnavailable(f"cannot export ONNX graphs: {exc}") from exc
    except Exception as exc:  # noqa: BLE001  the exporter raises many types; the caller falls back
        raise ExportUnavailable(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    if not export_matches(err):
        raise ExportUnavailable(f"exported graphs disagree with torch beyond the golden tolerances: {err}")
    manifest = {"sha256": {f: sha256_of(str(folder / f)) for f in FILES}, "check_vs_torch": err,
                "exporter_version": EXPORTER_VERSION}
    atomic_write_json(folder / MANIFEST, manifest, indent=2)
