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

Several processes (two nodes of one launch file) share the cache: the export of one key runs under
an exclusive `flock` on `<cache root>/onnx/.<key>.lock`, so one process exports and the others wait
for it (no time limit: the kernel releases the lock when the exporter exits or is killed) and then
reuse its entry. The temporary folder `.export-<key>-*` of an export whose lock nobody holds (its
process was killed) is stale and removed by the next export. Lock files are never deleted (deleting
one would let two processes hold "the" lock at once); they are empty.
A cache folder that cannot be written raises CacheUnwritable, naming the folder and the parameter.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from mobilesam_ros.core.config import ModelConfig, setting_name
from mobilesam_ros.core.errors import UsageError
from mobilesam_ros.core.io.atomic import atomic_write_json
from mobilesam_ros.core.io.checkpoints import CheckpointError
from mobilesam_ros.core.io.weights import sha256_of
from mobilesam_ros.core.runtime.cache_root import cache_root

LOG = logging.getLogger("mobilesam_ros")
EXPORTER_VERSION = 2  # bump when export.py changes what it writes (2: LayerNormalization, frozen sizes)
FILES = ("encoder.onnx", "decoder.onnx")
MANIFEST = "manifest.json"
TMP_PREFIX = ".export-"  # + <key>- + mkdtemp's random suffix


class ExportUnavailable(RuntimeError):
    """The graphs cannot be produced here (no exporter, export failed or disagrees with torch)."""


class CacheUnwritable(ExportUnavailable, UsageError):
    """The cache folder cannot be created or written (e.g. a read-only home of a system service).

    An ExportUnavailable (backend auto falls back to torch) and a UsageError (the CLI prints it as
    one line: the user fixes it with a parameter)."""

    def __init__(self, folder: Path, exc: OSError):
        super().__init__(
            f"ONNX cache folder {folder} cannot be written ({type(exc).__name__}: {exc.strerror or exc}); "
            f"set {setting_name(ModelConfig, 'onnx_cache_dir')} (or $MOBILESAM_CACHE_DIR) to a writable folder, "
            f"or give {setting_name(ModelConfig, 'onnx_encoder')} and {setting_name(ModelConfig, 'onnx_decoder')}")


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
    Raises ExportUnavailable when the graphs cannot be written (CacheUnwritable: the folder) or fail
    the check against torch. Waits while another process exports the same key.
    """
    key = entry_key(checkpoints)
    folder = cache_root(root) / "onnx"
    entry = folder / key
    if _valid(entry):  # a read-only cache holding the entry needs no lock
        return str(entry / FILES[0]), str(entry / FILES[1])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheUnwritable(folder, exc) from exc
    with _key_lock(folder, key):
        _remove_stale_temporaries(folder, key)
        if _valid(entry):  # exported by the process this one waited for
            LOG.info("ONNX graphs exported by another process: %s", entry)
        else:
            _export_entry(entry, checkpoints, load_sam)
    return str(entry / FILES[0]), str(entry / FILES[1])


@contextlib.contextmanager
def _key_lock(folder: Path, key: str) -> Iterator[None]:
    """Holds the exclusive lock of `key` (blocking, with one log line if another process has it)."""
    path = folder / f".{key}.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access
    except OSError as exc:
        raise CacheUnwritable(folder, exc) from exc
    try:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                LOG.info("another process is exporting the ONNX graphs into %s: waiting for it (lock %s)",
                         folder / key, path)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. ENOLCK: a network filesystem without locks
            raise CacheUnwritable(folder, exc) from exc
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temporaries(folder: Path, key: str) -> None:
    """Removes `.export-<k>-*` folders whose key lock nobody holds (their exporter died).

    Called under the lock of `key`: its own temporaries are stale by definition; another key's
    are removed only while this process holds that key's lock too (taken without waiting)."""
    for tmp in sorted(folder.glob(TMP_PREFIX + "*")):
        owner = tmp.name[len(TMP_PREFIX):].split("-", 1)[0]
        if owner == key:
            _remove_stale(tmp)
            continue
        try:
            fd = os.open(folder / f".{owner}.lock", os.O_RDONLY)
        except OSError:  # no lock file: not one of ours (or from before locks); leave it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove_stale(tmp)
        except BlockingIOError:
            pass  # its exporter is alive
        finally:
            os.close(fd)


def _remove_stale(tmp: Path) -> None:
    LOG.warning("removing %s: left by an ONNX export whose process is gone", tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def _export_entry(entry: Path, checkpoints: Sequence[str], load_sam: Callable[[], object]) -> None:
    """Exports into a temporary folder and renames it to `entry` (under the key's lock)."""
    if entry.exists():
        LOG.warning("ONNX cache entry %s is incomplete or corrupt: rebuilding it", entry)
        shutil.rmtree(entry, ignore_errors=True)
    LOG.info("exporting ONNX graphs for %s into %s (once per checkpoint; about a minute)",
             ", ".join(checkpoints), entry)
    t0 = time.perf_counter()
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{entry.name}-", dir=entry.parent))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the entry from other users of a shared cache
    except OSError as exc:
        raise CacheUnwritable(entry.parent, exc) from exc
    try:
        _export_into(tmp, load_sam)
        try:
            os.rename(tmp, entry)
        except OSError as exc:  # e.g. a corrupt entry that could not be removed
            raise CacheUnwritable(entry.parent, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOG.info("ONNX graphs ready in %.0f s: %s", time.perf_counter() - t0, entry)


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
