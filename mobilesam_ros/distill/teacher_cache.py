"""On-disk cache of teacher image embeddings for decoupled distillation (MobileSAM).

The teacher runs once per frame; its (256, 64, 64) embedding goes into row i of a memory-mapped
`embeddings.npy` (N, 256, 64, 64), row order = `source.keys()` order, and the (h, w) of the
resized image inside the padded teacher input into row i of `sizes.npy` (the model input is zero
outside it, so whoever reads a row needs it). Optionally the preprocessed teacher input (resized
longest side + padded, (1024, 1024, 3) uint8 RGB, *before* mean/std normalisation) goes into row
i of `inputs.npy`, so training never decodes a video or a bag again.

Layout of a cache directory (format 2). A format-1 cache (sizes kept in the side file
`distill_input_sizes.json`) is upgraded in place on first open when that file covers every filled
row, since its embeddings cost a teacher pass each; otherwise it is refused with advice.

- `embeddings.npy`  (N, C, h, w) float32 or float16, opened with np.lib.format.open_memmap;
- `sizes.npy`       (N, 2) int32, (h, w) in input pixels of each row's resized image;
- `inputs.npy`      (N, S, S, 3) uint8, only when inputs are stored;
- `keys.json`       the N frame keys, row order;
- `manifest.json`   teacher id, checkpoint path + sha256, preprocessing version, shapes, dtype,
                    count, filled rows as [start, stop) ranges, frames that could not be read.

A build is resumable: rows are flushed to disk before the manifest marks them filled (the manifest
is replaced atomically), so after a crash or Ctrl-C a rerun encodes only the unmarked rows. A cache
built for another teacher, checkpoint, preprocessing or frame list is never reused: build raises.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilesam_ros.core.io.atomic import atomic_write_json
from mobilesam_ros.core.io.weights import sha256_of
from mobilesam_ros.distill.data import EmptySourceError, Frame, FrameSource

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no build lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: per-row image sizes (sizes.npy)
EMBEDDINGS_FILE = "embeddings.npy"
SIZES_FILE = "sizes.npy"
INPUTS_FILE = "inputs.npy"
KEYS_FILE = "keys.json"
MANIFEST_FILE = "manifest.json"
_LOCK_FILE = ".build.lock"
_SHARD_PREFIX = "shard."
DEFAULT_PREPROCESSING_VERSION = "sam-resize-longest-1024-pad-v1"

PreprocessFn = Callable[[np.ndarray], tuple[np.ndarray, tuple[int, int]]]
"""(H, W, 3) uint8 RGB frame -> ((S, S, 3) uint8 RGB teacher input, resized + zero-padded
bottom/right; (h, w) of the resized image inside it, input px)."""
EncodeFn = Callable[[np.ndarray, np.ndarray], Any]
"""((B, S, S, 3) uint8 RGB batch, (B, 2) int32 (h, w) sizes) -> (B, C, h, w) embeddings (numpy
or torch); normalises the batch itself."""


class CacheError(RuntimeError):
    """The cache directory is unusable for this request (format, frames, disk, bad outputs)."""


class TeacherMismatchError(CacheError):
    """The cache was built by a different teacher (id or checkpoint) and must not be reused."""


class RowNotFilledError(LookupError):
    """The requested row has no embedding yet (build interrupted, or its frame was unreadable)."""


def _to_ranges(mask: np.ndarray) -> list[list[int]]:
    """Boolean row mask -> sorted [start, stop) ranges of True rows."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _from_ranges(ranges: Sequence[Sequence[int]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


V1_SIZES_FILE = "distill_input_sizes.json"  # format 1's side file: {source frame key: [h, w]}
_V1_HFLIP_SUFFIX = "|hflip"  # a mirrored row has its source frame's size


def upgrade_format_1(root: Path) -> bool:
    """Turn a format-1 cache into format 2 in place when its side file gives the size of every
    filled row (rows never filled get (0, 0) and are encoded with their size later). Returns
    whether it upgraded; the manifest is replaced last and atomically, so a crash leaves format 1."""
    manifest_path = root / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    side = root / V1_SIZES_FILE
    if manifest.get("format_version") != 1 or not side.is_file():
        return False
    known = json.loads(side.read_text())
    keys = json.loads((root / KEYS_FILE).read_text())
    filled = _from_ranges(manifest.get("filled", []), len(keys))
    sizes = np.zeros((len(keys), 2), np.int32)
    for i, key in enumerate(keys):
        hw = known.get(key[:-len(_V1_HFLIP_SUFFIX)] if key.endswith(_V1_HFLIP_SUFFIX) else key)
        if hw is not None:
            sizes[i] = hw
        elif filled[i]:
            return False  # a filled row of unknown size: cannot be trained on correctly
    tmp = root / (SIZES_FILE + ".tmp.npy")
    np.save(tmp, sizes)
    os.replace(tmp, root / SIZES_FILE)
    atomic_write_json(manifest_path, {**manifest, "format_version": FORMAT_VERSION, "updated": _now()})
    log.info("upgraded teacher cache %s from format 1 to %d (sizes from %s)", root, FORMAT_VERSION, side.name)
    return True


def _format_advice(root: Path, found: Any) -> str:
    if found == 1:
        return (f"{root} is a teacher cache of format 1, which records no image sizes (they were "
                f"kept in {V1_SIZES_FILE}, missing or incomplete here); this version needs format "
                f"{FORMAT_VERSION}: delete "
                f"{root} (or pass another cache directory) and the teacher pass rebuilds it")
    return f"{root}: cache format {found!r}, this code reads {FORMAT_VERSION}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Exclusive, non-blocking: two builds writing the same memmap would corrupt it silently."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(root / _LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"another build is writing {root}") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _as_numpy(out: Any) -> np.ndarray:
    if hasattr(out, "detach"):  # torch.Tensor, without importing torch here
        out = out.detach().cpu().numpy()
    return np.asarray(out)


def _agreed(agree: Callable[[bool], bool], step: Callable[[], None], what: str) -> None:
    """Run this rank's part of a build phase, then learn whether every rank's part succeeded:
    a failing rank re-raises its own error, the others raise CacheError instead of waiting."""
    try:
        step()
    except BaseException:
        agree(False)
        raise
    if not agree(True):
        raise CacheError(f"another rank failed while {what}; see its log")


class TeacherCache:
    """A built (or partly built) cache, read-only: `cache[i] -> (key, embedding view)`.

    Use `TeacherCache.open(dir)` or `TeacherCache.build(...)`. Views are rows of read-only
    memmaps: (C, h, w) embeddings in the manifest's dtype, (S, S, 3) uint8 inputs. Pickling keeps
    only the directory (DataLoader workers reopen the memmaps instead of copying them).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], keys: list[str]) -> None:
        self.root = root
        self.manifest = manifest
        self._keys = keys
        self._index: dict[str, int] | None = None
        self.embeddings: np.ndarray = np.load(root / EMBEDDINGS_FILE, mmap_mode="r")
        self.sizes: np.ndarray = np.load(root / SIZES_FILE, mmap_mode="r")
        """(N, 2) int32 (h, w) of each row's resized image inside its input, input px (0 if
        the row is not filled)."""
        self.inputs: np.ndarray | None = (np.load(root / INPUTS_FILE, mmap_mode="r")
                                          if manifest["store_inputs"] else None)
        self.filled: np.ndarray = _from_ranges(manifest["filled"], len(keys))
        expected = (len(keys), *manifest["embedding_shape"])
        if self.embeddings.shape != expected or self.embeddings.dtype != manifest["dtype"]:
            raise CacheError(f"{root / EMBEDDINGS_FILE} is {self.embeddings.dtype}"
                             f"{self.embeddings.shape}, manifest says "
                             f"{manifest['dtype']}{expected}")
        if self.sizes.shape != (len(keys), 2) or self.sizes.dtype != np.int32:
            raise CacheError(f"{root / SIZES_FILE} is {self.sizes.dtype}{self.sizes.shape}, "
                             f"expected int32{(len(keys), 2)}")
        if self.inputs is not None:
            s = manifest["input_size"]
            if self.inputs.shape != (len(keys), s, s, 3) or self.inputs.dtype != np.uint8:
                raise CacheError(f"{root / INPUTS_FILE} is {self.inputs.dtype}{self.inputs.shape},"
                                 f" expected uint8{(len(keys), s, s, 3)}")

    # ---------------------------------------------------------------------------------- reading

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> TeacherCache:
        """Open an existing cache directory read-only (it may be partly filled)."""
        root = Path(root)
        if not (root / MANIFEST_FILE).is_file():
            raise CacheError(f"{root} is not a teacher cache (no {MANIFEST_FILE})")
        upgrade_format_1(root)
        manifest = json.loads((root / MANIFEST_FILE).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CacheError(_format_advice(root, manifest.get("format_version")))
        keys = json.loads((root / KEYS_FILE).read_text())
        if len(keys) != manifest["count"]:
            raise CacheError(f"{root}: {KEYS_FILE} has {len(keys)} keys, manifest count is "
                             f"{manifest['count']}")
        return cls(root, manifest, keys)

    def __len__(self) -> int:
        """Number of rows (filled or not); see `indices` for the filled ones."""
        return len(self._keys)

    def _row(self, i: int) -> int:
        n = len(self._keys)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"row {i} out of range for a cache of {n} rows")
        if not self.filled[j]:
            raise RowNotFilledError(f"row {j} ({self._keys[j]}) of {self.root} has no embedding; "
                                    "resume the build, or iterate over cache.indices")
        return j

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        """(key, (C, h, w) embedding view) of filled row i."""
        j = self._row(i)
        return self._keys[j], self.embeddings[j]

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """(key, embedding) of the filled rows, in row order."""
        for j in self.indices:
            yield self._keys[j], self.embeddings[j]

    def image_size(self, i: int) -> tuple[int, int]:
        """(h, w) of filled row i's resized image inside its input, input px."""
        h, w = self.sizes[self._row(i)]
        return int(h), int(w)

    def input_image(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 RGB teacher input of filled row i (resized + padded, not normalised)."""
        if self.inputs is None:
            raise CacheError(f"{self.root} stores no inputs; re-read frame "
                             f"{self._keys[int(i)]!r} from the source")
        return self.inputs[self._row(i)]

    @property
    def keys(self) -> list[str]:
        """Frame keys in row order (a copy)."""
        return list(self._keys)

    @property
    def indices(self) -> np.ndarray:
        """Filled row numbers, ascending (int64)."""
        return np.flatnonzero(self.filled)

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    @property
    def teacher_id(self) -> str:
        return str(self.manifest["teacher_id"])

    @property
    def has_inputs(self) -> bool:
        return self.inputs is not None

    def index_of(self, key: str) -> int:
        """Row of `key` (filled or not); KeyError if the key is not in the cache."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self._keys)}
        return self._index[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(TeacherCache.open(state["root"]).__dict__)

    def __repr__(self) -> str:
        return (f"TeacherCache({str(self.root)!r}, teacher={self.teacher_id!r}, "
                f"rows={len(self)}, filled={int(self.filled.sum())}, inputs={self.has_inputs})")

    # ---------------------------------------------------------------------------------- building

    @classmethod
    def build(cls, out_dir: str | os.PathLike[str], source: FrameSource, encode_fn: EncodeFn,
              batch_size: int, teacher_id: str, progress: bool = True, *,
              preprocess_fn: PreprocessFn,
              teacher_checkpoint: str | os.PathLike[str] | None = None,
              preprocessing_version: str = DEFAULT_PREPROCESSING_VERSION,
              store_inputs: bool | None = None,
              dtype: str | np.dtype = "float32",
              embedding_shape: Sequence[int] = (256, 64, 64),
              input_size: int = 1024,
              shard: tuple[int, int] = (0, 1),
              agree: Callable[[bool], bool] | None = None) -> TeacherCache:
        """Encode every frame of `source` once into `out_dir`, or finish an interrupted build.

        Each frame goes through `preprocess_fn` ((H, W, 3) uint8 RGB -> ((input_size, input_size,
        3) uint8, (h, w) of the resized image inside it)), then batches of up to `batch_size` go
        through `encode_fn` (((B, S, S, 3) uint8, (B, 2) int32 sizes) -> (B, *embedding_shape),
        numpy or torch; mean/std normalisation is the encoder's job). Each row keeps its
        embedding, its size and (optionally) its input.
        `teacher_id` names the teacher; `teacher_checkpoint` (optional) is hashed and recorded.
        `store_inputs=None` stores inputs for sources without cheap random access (video, bags).
        `dtype` is float32 or float16. Frames that cannot be decoded leave their row unfilled and
        are listed in the manifest under `unreadable`.

        Parallel build: `shard=(rank, world)` in each of `world` processes sharing `out_dir`
        (same source, same arguments). Rank 0 creates or checks the directory; each rank encodes
        every world-th missing row and, after each batch, flushes the rows and then atomically
        rewrites its own record `shard.<rank>.json` (filled ranges, unreadable frames), so a
        killed rank loses at most its current batch; rank 0 folds the records into the manifest
        at the end and at the start of the next build (any world size). `agree(ok) -> bool` is a
        collective "did every rank succeed" (e.g. an all-reduce); it lets one rank's error stop
        the others instead of leaving them waiting.

        Raises TeacherMismatchError when `out_dir` holds a cache of another teacher/checkpoint,
        CacheError when it holds one of other frames/preprocessing/dtype or the disk is too small.
        """
        root = Path(out_dir)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float16):
            raise ValueError(f"dtype must be float32 or float16, got {dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        emb_shape = tuple(int(d) for d in embedding_shape)
        keys = source.keys()
        if not keys:
            raise EmptySourceError(f"source {source.path} has no frames")
        if len(set(keys)) != len(keys):
            raise CacheError(f"source {source.path} yields duplicate keys; rows need unique keys")
        if store_inputs is None:
            store_inputs = not source.random_access
        checkpoint = None
        if teacher_checkpoint is not None:
            ckpt = Path(teacher_checkpoint)
            checkpoint = {"path": str(ckpt.resolve()), "sha256": sha256_of(ckpt)}

        rank, world = shard
        if not 0 <= rank < world or (world > 1 and agree is None):
            raise ValueError(f"shard {shard}: need 0 <= rank < world and, with world > 1, agree")
        agree = agree or (lambda ok: ok)
        wanted = {
            "format_version": FORMAT_VERSION, "teacher_id": teacher_id,
            "teacher_checkpoint": checkpoint, "preprocessing_version": preprocessing_version,
            "input_size": int(input_size), "embedding_shape": list(emb_shape),
            "dtype": dtype.name, "count": len(keys), "store_inputs": bool(store_inputs),
        }
        root.mkdir(parents=True, exist_ok=True)
        # Rank 0 alone creates/checks the directory and folds the ranks' shard records into the
        # manifest; the lock keeps another job's build out for the whole build.
        with (_build_lock(root) if rank == 0 else contextlib.nullcontext()):
            _agreed(agree, lambda: cls._prepare(root, wanted, keys, source) if rank == 0 else None,
                    "preparing the cache")
            manifest = json.loads((root / MANIFEST_FILE).read_text())
            filled = _from_ranges(manifest["filled"], len(keys))
            # Every rank derives the same todo list from the same manifest: shards are disjoint.
            todo = [k for k, f in zip(keys, filled) if not f][rank::world]

            def fill() -> None:
                if rank and json.loads((root / KEYS_FILE).read_text()) != keys:
                    raise CacheError(f"{root}: rank {rank} sees other frames than rank 0")
                if not todo:
                    log.info("%s: all rows of this shard already filled", root)
                    return
                emb = np.lib.format.open_memmap(root / EMBEDDINGS_FILE, mode="r+")
                sizes = np.lib.format.open_memmap(root / SIZES_FILE, mode="r+")
                inp = (np.lib.format.open_memmap(root / INPUTS_FILE, mode="r+")
                       if manifest["store_inputs"] else None)
                cls._check_disk(root, len(todo), emb, inp)
                record = (root / MANIFEST_FILE) if world == 1 else (
                    root / f"{_SHARD_PREFIX}{rank}.json")
                cls._fill(root, manifest, keys, filled, todo, source, encode_fn, preprocess_fn,
                          batch_size, emb, sizes, inp, progress, record)
                del emb, sizes, inp  # close the writable maps before reopening read-only

            _agreed(agree, fill, "encoding its shard")
            if world > 1:
                _agreed(agree, lambda: cls._merge_shards(root, manifest, keys) if rank == 0
                        else None, "merging the shard records")
        cache = cls.open(root)
        if not cache.indices.size:
            raise CacheError(f"no frame of {source.path} could be encoded into {root}")
        return cache

    @classmethod
    def _prepare(cls, root: Path, wanted: dict[str, Any], keys: list[str],
                 source: FrameSource) -> None:
        """Create the directory's files, or check that they may be resumed and fold in the shard
        records a killed parallel build left."""
        if (root / MANIFEST_FILE).is_file():
            manifest = cls._check_resumable(root, wanted, keys)
            cls._merge_shards(root, manifest, keys)
        else:
            for stale in root.glob(_SHARD_PREFIX + "*.json"):  # of a failed creation
                stale.unlink()
            cls._create(root, wanted, keys, source)

    @staticmethod
    def _merge_shards(root: Path, manifest: dict[str, Any], keys: list[str]) -> None:
        """Fold every `shard.<rank>.json` into the manifest (atomically), then delete them."""
        records = sorted(root.glob(_SHARD_PREFIX + "*.json"))
        if not records:
            return
        filled = _from_ranges(manifest["filled"], len(keys))
        unreadable = list(manifest.get("unreadable", []))
        row_of = {k: i for i, k in enumerate(keys)}
        for path in records:
            rec = json.loads(path.read_text())
            filled |= _from_ranges(rec["filled"], len(keys))
            unreadable += [k for k in rec.get("unreadable", []) if k not in unreadable]
        manifest.update(filled=_to_ranges(filled), n_filled=int(filled.sum()),
                        unreadable=[k for k in unreadable if not filled[row_of[k]]],
                        updated=_now())
        atomic_write_json(root / MANIFEST_FILE, manifest)
        for path in records:  # only once the manifest holds what they said
            path.unlink()

    @staticmethod
    def _check_resumable(root: Path, wanted: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        upgrade_format_1(root)
        have = json.loads((root / MANIFEST_FILE).read_text())
        advice = "use another output directory, or delete this one to rebuild"
        if have.get("format_version") != wanted["format_version"]:
            raise CacheError(_format_advice(root, have.get("format_version")))
        if have.get("teacher_id") != wanted["teacher_id"]:
            raise TeacherMismatchError(
                f"{root} holds embeddings of teacher {have.get('teacher_id')!r}, not "
                f"{wanted['teacher_id']!r}; {advice}")
        old, new = have.get("teacher_checkpoint"), wanted["teacher_checkpoint"]
        if new is not None and (old is None or old["sha256"] != new["sha256"]):
            raise TeacherMismatchError(
                f"{root} was built from checkpoint {old and old['path']!r} "
                f"(sha256 {old and old['sha256'][:12]}), not {new['path']!r} "
                f"(sha256 {new['sha256'][:12]}); {advice}")
        for field in ("format_version", "preprocessing_version", "input_size", "embedding_shape",
                      "dtype"):
            if have.get(field) != wanted[field]:
                raise CacheError(f"{root}: {field} is {have.get(field)!r}, this build asks for "
                                 f"{wanted[field]!r}; {advice}")
        if not have.get("store_inputs") and wanted["store_inputs"]:
            raise CacheError(f"{root} was built without stored inputs; filled rows cannot get "
                             f"them afterwards; {advice}")
        if json.loads((root / KEYS_FILE).read_text()) != keys:
            raise CacheError(f"{root} was built from other frames (keys differ from the source's; "
                             f"different path, topic, every_n or max_frames?); {advice}")
        return have

    @staticmethod
    def _create(root: Path, wanted: dict[str, Any], keys: list[str], source: FrameSource
                ) -> None:
        # The manifest is written last: a directory without one is a failed creation and is
        # simply overwritten by the next build.
        n, s = len(keys), wanted["input_size"]
        emb = np.lib.format.open_memmap(root / EMBEDDINGS_FILE, mode="w+", dtype=wanted["dtype"],
                                        shape=(n, *wanted["embedding_shape"]))
        sizes = np.lib.format.open_memmap(root / SIZES_FILE, mode="w+", dtype=np.int32,
                                          shape=(n, 2))
        inp = None
        if wanted["store_inputs"]:
            inp = np.lib.format.open_memmap(root / INPUTS_FILE, mode="w+", dtype=np.uint8,
                                            shape=(n, s, s, 3))
        elif (root / INPUTS_FILE).exists():
            (root / INPUTS_FILE).unlink()
        atomic_write_json(root / KEYS_FILE, keys)
        manifest = {**wanted, "source": source.describe(), "filled": [], "n_filled": 0,
                    "unreadable": [], "created": _now(), "updated": _now()}
        del emb, sizes, inp  # sparse files of the right size; ranks open their own maps
        atomic_write_json(root / MANIFEST_FILE, manifest)

    @staticmethod
    def _check_disk(root: Path, rows: int, emb: np.ndarray, inp: np.ndarray | None) -> None:
        # The memmaps are sparse files: creating them always succeeds, and running out of disk
        # later kills the process with SIGBUS on a page write instead of raising.
        need = rows * (emb[0].nbytes + (inp[0].nbytes if inp is not None else 0))
        free = shutil.disk_usage(root).free
        if free < need:
            raise CacheError(f"{root}: {rows} rows need up to {need / 2**30:.2f} GiB, only "
                             f"{free / 2**30:.2f} GiB free")

    @staticmethod
    def _fill(root: Path, manifest: dict[str, Any], keys: list[str], filled: np.ndarray,
              todo: list[str], source: FrameSource, encode_fn: EncodeFn,
              preprocess_fn: PreprocessFn, batch_size: int, emb: np.ndarray, sizes: np.ndarray,
              inp: np.ndarray | None, progress: bool, record: Path) -> None:
        from tqdm import tqdm

        row_of = {k: i for i, k in enumerate(keys)}
        todo_set = set(todo)
        size = int(manifest["input_size"])
        emb_shape = tuple(manifest["embedding_shape"])
        batch_rows: list[int] = []
        batch_inputs: list[np.ndarray] = []
        batch_sizes: list[tuple[int, int]] = []
        written: set[str] = set()

        def save(unreadable: list[str] | None = None) -> None:
            # `record` is the manifest itself in one process, the rank's shard record otherwise.
            manifest["filled"] = _to_ranges(filled)
            manifest["n_filled"] = int(filled.sum())
            if unreadable is not None:
                manifest["unreadable"] = unreadable
            manifest["updated"] = _now()
            atomic_write_json(record, manifest if record.name == MANIFEST_FILE else {
                k: manifest.get(k, []) for k in ("filled", "unreadable", "updated")})

        def flush_batch() -> None:
            batch_hw = np.asarray(batch_sizes, np.int32).reshape(-1, 2)
            out = _as_numpy(encode_fn(np.stack(batch_inputs), batch_hw))
            if out.shape != (len(batch_rows), *emb_shape):
                raise CacheError(f"encode_fn returned shape {out.shape} for a batch of "
                                 f"{len(batch_rows)}, expected {(len(batch_rows), *emb_shape)}")
            out = out.astype(emb.dtype, copy=False)
            if not np.isfinite(out).all():  # NaN from the teacher, or float16 overflow
                bad = [keys[r] for r, e in zip(batch_rows, out) if not np.isfinite(e).all()]
                raise CacheError(f"non-finite {emb.dtype} embeddings for {bad}")
            for j, r in enumerate(batch_rows):
                emb[r] = out[j]
                sizes[r] = batch_hw[j]
                if inp is not None:
                    inp[r] = batch_inputs[j]
            # Data reaches the disk before the manifest claims it does.
            emb.flush()
            sizes.flush()
            if inp is not None:
                inp.flush()
            filled[batch_rows] = True
            save()
            bar.update(len(batch_rows))
            batch_rows.clear()
            batch_inputs.clear()
            batch_sizes.clear()

        frame: Frame
        done = int(filled.sum())  # in a parallel build: the rows before this run's shards
        bar = tqdm(total=done + len(todo), initial=done, unit="frame",
                   desc=f"teacher {manifest['teacher_id']}", disable=not progress)
        try:
            for frame in source.frames(only=todo_set):
                r = row_of.get(frame.key)
                if r is None or frame.key not in todo_set:
                    raise CacheError(f"source yielded unexpected key {frame.key!r}; is it "
                                     "deterministic?")
                x, hw = preprocess_fn(frame.image)
                if not (isinstance(x, np.ndarray) and x.dtype == np.uint8
                        and x.shape == (size, size, 3)):
                    raise CacheError(f"preprocess_fn must return uint8 {(size, size, 3)}, got "
                                     f"{getattr(x, 'dtype', type(x))}{getattr(x, 'shape', '')}")
                h, w = (int(v) for v in hw)
                if not (0 < h <= size and 0 < w <= size) or x[h:].any() or x[:, w:].any():
                    raise CacheError(f"preprocess_fn returned size {(h, w)} for {frame.key!r}; "
                                     f"the input must be zero outside it (within {size})")
                batch_rows.append(r)
                batch_inputs.append(x)
                batch_sizes.append((h, w))
                written.add(frame.key)
                if len(batch_rows) == batch_size:
                    flush_batch()
            if batch_rows:
                flush_batch()
        except BaseException:
            log.warning("%s: build interrupted with %d of %d rows filled; rerun to resume", root,
                        int(filled.sum()), len(keys))
            raise
        finally:
            bar.close()
        skipped = [k for k in source.skipped if k in todo_set]
        skipped_set = set(skipped)
        missing = [k for k in todo if k not in written and k not in skipped_set]
        if missing:  # e.g. a video whose stream ends earlier on this pass than on the key pass
            log.warning("%s: %d frame(s) listed by the source were never yielded: %s%s", root,
                        len(missing), missing[:5], " ..." if len(missing) > 5 else "")
        if skipped or missing:
            log.warning("%s: %d row(s) left unfilled (unreadable frames)", root,
                        len(skipped) + len(missing))
        save(unreadable=skipped + missing)
