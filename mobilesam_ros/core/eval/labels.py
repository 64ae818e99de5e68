"""Resumable COCO instances files for `mobilesam label`.

Each labelled frame is appended to a journal beside the output (`<out>.partial.jsonl`, one JSON
line per frame, flushed and fsync'ed before the next frame starts), so a run killed at any point
loses at most the frame in flight: a restart reads the journal (a torn last line is dropped and
cut off), skips the frames it holds, and labels the rest. `finish` writes the COCO file
atomically (io/atomic.py) and removes the journal. A finished output is read back the same way,
so re-running over a source that has grown labels only the new frames.

COCO layout: image id = the frame's 0-based index in its source + 1 (stable across runs),
`file_name` = the frame's key (relative path, `frame_000123`, `<topic>@<stamp ns>`); annotations
carry compressed RLE `segmentation`, `bbox` [x, y, w, h] and `area` of the mask, `score`
(predicted IoU), `category_id` and `"attributes": {"track_id": N}` (0 = not tracked); ids are
assigned in image order when the file is written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from pycocotools import mask as mask_utils

from mobilesam_ros.core.errors import UsageError
from mobilesam_ros.core.eval.coco import encode_rle
from mobilesam_ros.core.io.atomic import atomic_write_json
from mobilesam_ros.core.structures.instances import Instances


class LabelFileError(UsageError):
    """An existing output or journal that is not a label file of this tool."""


def frame_record(key: str, index: int, inst: Instances, track_ids: Sequence[int],
                 category_ids: Sequence[int]) -> dict[str, Any]:
    """One frame's journal record: its key, source index, size and annotations (no ids yet)."""
    h, w = inst.image_hw
    anns = []
    for i in range(len(inst)):
        rle = encode_rle(inst.mask(i))
        coco_rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        anns.append({"category_id": int(category_ids[i]), "segmentation": rle,
                     "area": float(mask_utils.area(coco_rle)),
                     "bbox": [float(v) for v in mask_utils.toBbox(coco_rle)],
                     "score": float(inst.scores[i]), "iscrowd": 0,
                     "attributes": {"track_id": int(track_ids[i])}})
    return {"key": key, "index": int(index), "width": int(w), "height": int(h), "annotations": anns}


class LabelWriter:
    """Collects frame records for `out`, resuming from its journal and from a finished `out`."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.journal = self.out.with_name(self.out.name + ".partial.jsonl")
        self.records: dict[str, dict[str, Any]] = {}
        self.categories: list[dict[str, Any]] = []
        if self.out.exists():
            self._load_finished()
        if self.journal.exists():
            self._load_journal()

    @property
    def done(self) -> set[str]:
        """Keys of the frames already labelled."""
        return set(self.records)

    def max_track_id(self) -> int:
        """The largest track id written so far (a resumed run numbers new tracks above it)."""
        return max((a["attributes"]["track_id"] for r in self.records.values()
                    for a in r["annotations"]), default=0)

    def _load_finished(self) -> None:
        try:
            data = json.loads(self.out.read_text())
            by_id = {img["id"]: {"key": img["file_name"], "index": img["id"] - 1, "width": img["width"],
                                 "height": img["height"], "annotations": []} for img in data["images"]}
            for a in data["annotations"]:
                ann = {k: v for k, v in a.items() if k not in ("id", "image_id")}
                by_id[a["image_id"]]["annotations"].append(ann)
            self.categories = list(data.get("categories", []))
        except (ValueError, KeyError, TypeError) as e:
            raise LabelFileError(f"{self.out} exists and is not a label file of this tool ({e}); "
                                 "move it away or pick another --out") from None
        self.records.update({r["key"]: r for r in by_id.values()})

    def _load_journal(self) -> None:
        good = 0
        with open(self.journal, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    rec["key"], rec["annotations"]
                except (ValueError, KeyError, TypeError):
                    break  # a torn last line: the run was killed while writing it
                if not line.endswith(b"\n"):
                    break
                self.records[rec["key"]] = rec
                good += len(line)
        with open(self.journal, "rb+") as f:  # drop the torn tail so appends start on a line
            f.truncate(good)

    def add(self, record: Mapping[str, Any]) -> None:
        """Append one frame's record to the journal, durably (flush + fsync)."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = dict(record)

    def to_coco(self, categories: Sequence[Mapping[str, Any]], info: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
        """The COCO instances dict of every record, images in source order."""
        images, anns = [], []
        for rec in sorted(self.records.values(), key=lambda r: r["index"]):
            image_id = rec["index"] + 1
            images.append({"id": image_id, "file_name": rec["key"], "width": rec["width"],
                           "height": rec["height"]})
            for a in rec["annotations"]:
                anns.append({"id": len(anns) + 1, "image_id": image_id, **a})
        cats = {int(c["id"]): dict(c) for c in [*self.categories, *categories]}
        return {"info": dict(info or {}), "images": images, "annotations": anns,
                "categories": [cats[k] for k in sorted(cats)]}

    def finish(self, categories: Sequence[Mapping[str, Any]], info: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
        """Write the COCO file atomically, then drop the journal; returns the dict written."""
        data = self.to_coco(categories, info)
        atomic_write_json(self.out, data, indent=None)
        if self.journal.exists():
            self.journal.unlink()
        return data
