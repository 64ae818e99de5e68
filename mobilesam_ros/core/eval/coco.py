"""COCO ground truth and metrics through pycocotools: RLE masks, YOLO-seg labels as COCO
instances, and mask average recall / precision (AR@K, AP) with the COCO definitions.

Coordinates are original-image pixels (x right, y down; a polygon vertex (x, y) is a point on
the pixel grid, as in COCO). Masks are (H, W) bool. pycocotools prints while it loads and
evaluates; those prints are swallowed here so a command's stdout stays its own.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mobilesam_ros.core.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: COCO's IoU thresholds for AP and AR: 0.50:0.05:0.95.
IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())


class GroundTruthError(UsageError):
    """Ground truth that cannot be read (missing file, bad JSON, bad label line)."""


# ----------------------------------------------------------------------------- RLE
def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool mask -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-able)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> (H, W) bool."""
    r = dict(rle)
    if isinstance(r["counts"], list):
        r = mask_utils.frPyObjects(r, *r["size"])
    elif isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r).astype(bool)


def rasterize_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (each a flat [x1, y1, x2, y2, ...] list in px, >= 3 vertices) -> the union
    of their rasters, (H, W) bool, with COCO's own rasteriser (what COCOeval scores against)."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), bool)
    rles = mask_utils.frPyObjects(polys, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


# ----------------------------------------------------------------------------- ground truth
def _image_files(images_dir: Path) -> list[str]:
    if not images_dir.is_dir():
        raise GroundTruthError(f"image folder {images_dir} does not exist")
    files = sorted(p.relative_to(images_dir).as_posix() for p in images_dir.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise GroundTruthError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {images_dir}")
    return files


def _image_hw(path: Path) -> tuple[int, int]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise GroundTruthError(f"cannot read image {path}")
    return int(img.shape[0]), int(img.shape[1])


def parse_yolo_seg_line(line: str, height: int, width: int, where: str) -> tuple[int, list[float]]:
    """One YOLO-seg label line `cls x1 y1 x2 y2 ...` (coordinates normalised to the image width
    and height) -> (class id, flat polygon in px)."""
    parts = line.split()
    try:
        cls = int(parts[0])
        xy = np.asarray([float(v) for v in parts[1:]], np.float64)
    except (ValueError, IndexError):
        raise GroundTruthError(f"{where}: not a YOLO-seg line: {line.strip()[:60]!r}") from None
    if xy.size < 6 or xy.size % 2:
        raise GroundTruthError(f"{where}: a polygon needs >= 3 x,y pairs, got {xy.size} numbers")
    xy = xy.reshape(-1, 2) * np.array([width, height], np.float64)
    return cls, xy.reshape(-1).tolist()


def yolo_seg_to_coco(labels_dir: str | Path, images_dir: str | Path) -> dict[str, Any]:
    """YOLO-seg labels (`<stem>.txt` per image, one polygon per line) -> a COCO instances dict.

    Images: every image under `images_dir` (sorted relative paths = `file_name`, id = position
    + 1); an image without a label file is a background image (no annotations); a label file
    without an image is ignored. Categories: YOLO class c -> category id c + 1. Each annotation's
    area and bbox are those of its rasterised polygon.
    """
    labels_dir, images_dir = Path(labels_dir), Path(images_dir)
    if not labels_dir.is_dir():
        raise GroundTruthError(f"label folder {labels_dir} does not exist")
    images, anns, cats = [], [], set()
    for idx, name in enumerate(_image_files(images_dir)):
        h, w = _image_hw(images_dir / name)
        images.append({"id": idx + 1, "file_name": name, "height": h, "width": w})
        txt = labels_dir / Path(name).with_suffix(".txt")
        if not txt.is_file():
            continue
        for ln, line in enumerate(txt.read_text().splitlines(), 1):
            if not line.strip():
                continue
            cls, poly = parse_yolo_seg_line(line, h, w, f"{txt}:{ln}")
            rle = mask_utils.frPyObjects([poly], h, w)[0]
            cats.add(cls)
            anns.append({"id": len(anns) + 1, "image_id": idx + 1, "category_id": cls + 1,
                         "segmentation": [poly], "area": float(mask_utils.area(rle)),
                         "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    categories = [{"id": c + 1, "name": f"class_{c}"} for c in sorted(cats)]
    return {"images": images, "annotations": anns, "categories": categories}


def load_ground_truth(gt: str | Path, images_dir: str | Path) -> dict[str, Any]:
    """A COCO instances JSON file, or a YOLO-seg labels folder (with `images_dir`), as a COCO
    instances dict. A JSON file's images are kept when their `file_name` exists under
    `images_dir` (its base name is tried too), so a subset of a large set can be scored."""
    gt, images_dir = Path(gt), Path(images_dir)
    if gt.is_dir():
        return yolo_seg_to_coco(gt, images_dir)
    if not gt.is_file():
        raise GroundTruthError(f"ground truth {gt} does not exist")
    try:
        data = json.loads(gt.read_text())
        data["images"], data["annotations"]
    except (ValueError, KeyError, TypeError) as e:
        raise GroundTruthError(f"{gt} is not a COCO instances JSON file: {e}") from None
    present = set(_image_files(images_dir))
    keep = []
    for img in data["images"]:
        for name in (img["file_name"], Path(img["file_name"]).name):
            if name in present:
                keep.append({**img, "file_name": name})
                break
    if not keep:
        raise GroundTruthError(f"none of the {len(data['images'])} images of {gt} is in {images_dir}")
    ids = {img["id"] for img in keep}
    return {**data, "images": keep, "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
            "categories": data.get("categories", [])}


def annotation_mask(coco: COCO, ann: Mapping[str, Any]) -> np.ndarray:
    """The (H, W) bool mask of one ground-truth annotation (polygons or RLE)."""
    return coco.annToMask(dict(ann)).astype(bool)


def coco_from_dict(data: Mapping[str, Any]) -> COCO:
    """A pycocotools COCO index over an in-memory instances dict (quietly)."""
    c = COCO()
    c.dataset = dict(data)
    c.dataset.setdefault("categories", [])
    c.dataset.setdefault("info", {})  # pycocotools 2.0.10's loadRes copies it
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


# ----------------------------------------------------------------------------- AR / AP
@dataclass(frozen=True)
class MaskScores:
    """COCO mask metrics over all IoU thresholds 0.50:0.95, all areas, class-agnostic.

    ar: {K: average recall with at most K masks per image}; ap: average precision with at most
    100 masks per image (COCO's AP; the largest K when 100 is not among them). nan: no ground truth.
    """

    ar: dict[int, float]
    ap: float


def mask_ar_ap(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]],
               max_dets: Sequence[int] = (10, 100, 1000)) -> MaskScores:
    """Score `results` (COCO result dicts: image_id, segmentation RLE, score; category_id is
    ignored) against the ground truth dict `gt` with pycocotools' COCOeval (iouType "segm").

    Class-agnostic (useCats 0), as MobileSAMv2 scores SegEvery: its masks carry no class. Every
    image of `gt` counts, those without results included (they add misses).
    """
    max_dets = sorted(int(k) for k in max_dets)
    coco_gt = coco_from_dict(gt)
    if not coco_gt.getAnnIds():
        return MaskScores({k: float("nan") for k in max_dets}, float("nan"))
    if not results:
        return MaskScores({k: 0.0 for k in max_dets}, 0.0)
    res = [dict(r, category_id=r.get("category_id", 1)) for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.useCats = 0
        ev.params.maxDets = max_dets
        ev.params.imgIds = sorted(coco_gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
    a_all = ev.params.areaRngLbl.index("all")
    recall = ev.eval["recall"]        # (T, K, A, M): T IoU thresholds, K categories (1), A areas
    precision = ev.eval["precision"]  # (T, R, K, A, M): R = 101 recall points

    def mean_valid(x: np.ndarray) -> float:
        v = x[x > -1]
        return float(v.mean()) if v.size else float("nan")

    ar = {k: mean_valid(recall[:, :, a_all, m]) for m, k in enumerate(max_dets)}
    m_ap = max_dets.index(100) if 100 in max_dets else len(max_dets) - 1
    return MaskScores(ar, mean_valid(precision[:, :, :, a_all, m_ap]))
