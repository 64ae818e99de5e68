"""Synthetic tracking sequences with ground truth, MOT metrics and a naive baseline (evaluation only;
the product never imports this).

* :func:`make_sequence`: COCO128-seg instance cut-outs (polygons from the YOLO-seg labels) moving
  along known trajectories (constant velocity plus a sinusoidal sway) over a background image, at a
  random depth each (nearer ones occlude farther ones), entering and leaving through the borders.
  Ground truth per processed frame: the visible part of every object that shows at least
  `min_visible` of itself. Detections: ground truth with dropped detections (more likely when
  occluded), boundary noise (erosion / dilation), a position jitter, and false-positive blobs.
  Processed frames are a random subset of the camera's (frame skipping), stamped in seconds.
* :func:`evaluate`: CLEAR-MOT (ID switches, FN, FP, MOTA) and IDF1, computed from full-resolution
  masks with IoU >= 0.5 as a match, independently of the tracker's coarse masks.
* :class:`GreedyMatcher`: per frame, greedy IoU matching against the previous frame only (naive).
* :class:`SortMatcher`: a fair independent baseline, SORT-style: box IoU against each track's
  constant-velocity predicted box, one optimal (Hungarian) assignment per frame, and unmatched
  tracks coasting for `max_age_s` like the tracker's. (The tracker itself with motion prediction
  off is the other fair baseline: `TrackerConfig(velocity_smoothing=0.0)`.)
* :data:`REENTRY`: objects that leave the view through a border and come back through it (they
  turn around just outside): an id must survive the time out of view.

Units: pixels of the sequence's canvas (x = column, y = row), seconds, nanosecond stamps.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.engine.tracking import TrackerConfig, coarse_masks, grid_stride, mask_iou_matrix

COCO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "coco128-seg")


@dataclass(frozen=True)
class Level:
    """One difficulty level of :func:`make_sequence`.

    objects: objects over the sequence; frames: camera frames (at `fps`); speed_px_s: range of
    object speeds; size_px: range of the longer side of a cut-out; drop_prob: chance a visible
    object gets no detection (plus up to `occluded_drop` more when mostly hidden); noise_px: largest
    erosion / dilation radius of a detected mask; jitter_px: largest shift of a detected mask;
    fp_per_frame: mean false-positive blobs per frame; skip_prob: chance a camera frame is not
    processed (every_n, max_rate_hz, latest-frame drops); inside_frac: share of the objects present
    from the first frame (the others enter through a border during the first 60 % of the sequence);
    bounce_px: when set, an object that leaves the canvas turns around once it is this many px
    (plus its own size) beyond the border, and comes back in where it left (exit and re-entry).
    """

    name: str
    objects: int
    frames: int
    speed_px_s: tuple[float, float]
    size_px: tuple[int, int]
    drop_prob: float
    noise_px: int
    jitter_px: int
    fp_per_frame: float
    skip_prob: float
    occluded_drop: float = 0.4
    inside_frac: float = 1 / 3
    fps: float = 15.0
    canvas_hw: tuple[int, int] = (240, 320)
    bounce_px: Optional[float] = None  # set: objects turn around this far beyond the border (re-entry)


LEVELS: tuple[Level, ...] = (
    Level("easy", objects=6, frames=60, speed_px_s=(15, 45), size_px=(40, 80), drop_prob=0.03,
          noise_px=1, jitter_px=1, fp_per_frame=0.0, skip_prob=0.0),
    Level("medium", objects=10, frames=60, speed_px_s=(30, 90), size_px=(35, 80), drop_prob=0.1,
          noise_px=2, jitter_px=2, fp_per_frame=0.2, skip_prob=0.2),
    Level("hard", objects=14, frames=60, speed_px_s=(45, 140), size_px=(30, 80), drop_prob=0.2,
          noise_px=3, jitter_px=3, fp_per_frame=0.5, skip_prob=0.4),
    Level("extreme", objects=18, frames=60, speed_px_s=(60, 200), size_px=(25, 70), drop_prob=0.3,
          noise_px=3, jitter_px=4, fp_per_frame=1.0, skip_prob=0.6),
)


@dataclass
class Frame:
    """One processed frame: ground truth and detections, each ids (K,) and (K, H, W) bool masks.
    Detection ids are the ground-truth object (-1 = false positive) for inspection only; a matcher
    must not look at them."""

    stamp_ns: int
    gt_ids: np.ndarray
    gt_masks: np.ndarray
    det_src: np.ndarray
    det_masks: np.ndarray


@dataclass
class Sequence:
    level: Level
    seed: int
    frames: list[Frame] = field(default_factory=list)
    background: Optional[np.ndarray] = None   # (H, W, 3) uint8

    def detections(self, k: int) -> Instances:
        """Frame k's detections as packed Instances (scores: 1; class ids: -1)."""
        f = self.frames[k]
        return Instances.from_masks(f.det_masks, np.ones(len(f.det_masks), np.float32)).pack_bits()


# ------------------------------------------------------------------------------------ cut-outs
def load_cutouts(coco_dir: str = COCO, min_area_frac: float = 0.02, limit: int = 300) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rgb crop (h, w, 3) uint8, mask (h, w) bool) of COCO128-seg instances covering at least
    `min_area_frac` of their image, from the YOLO-seg polygons (`cls x1 y1 x2 y2 ...`, normalised)."""
    out = []
    for lbl in sorted(glob.glob(os.path.join(coco_dir, "labels", "train2017", "*.txt"))):
        img_path = lbl.replace("labels", "images").replace(".txt", ".jpg")
        if not os.path.isfile(img_path):
            continue  # two label files have no image (see ../shared/data/README.md)
        img = None
        for line in open(lbl):
            vals = line.split()
            if len(vals) < 7:
                continue
            if img is None:
                img = cv2.cvtColor(cv2.imread(img_path), cv2.COLOR_BGR2RGB)
            h, w = img.shape[:2]
            pts = np.array(vals[1:], np.float64).reshape(-1, 2) * [w, h]
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
            if mask.sum() < min_area_frac * h * w:
                continue
            ys, xs = np.nonzero(mask)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            out.append((img[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].astype(bool)))
            if len(out) >= limit:
                return out
    if not out:
        raise FileNotFoundError(f"no COCO128-seg instances under {coco_dir}")
    return out


_CUTOUTS: dict[str, list] = {}


def cutouts() -> list[tuple[np.ndarray, np.ndarray]]:
    if "coco" not in _CUTOUTS:
        _CUTOUTS["coco"] = load_cutouts()
    return _CUTOUTS["coco"]


# Exit and re-entry: every object is in view at the start, leaves through a border and comes back
# through it after about 2 * (size + bounce_px) / speed s, ~0.6-1.5 s here (tracks coast 1 s).
REENTRY = Level("exit-reenter", objects=6, frames=90, speed_px_s=(90, 160), size_px=(40, 70), drop_prob=0.05,
                noise_px=1, jitter_px=1, fp_per_frame=0.0, skip_prob=0.2, inside_frac=1.0, bounce_px=10.0)


# ------------------------------------------------------------------------------------ sequences
@dataclass
class _Object:
    rgb: np.ndarray
    mask: np.ndarray
    start: np.ndarray       # (2,) px, top-left at birth
    velocity: np.ndarray    # (2,) px/s
    sway: float             # px, amplitude perpendicular to the motion
    sway_hz: float
    birth_s: float
    depth: float            # smaller = nearer


def _objects(level: Level, rng: np.random.Generator, duration_s: float) -> list[_Object]:
    h, w = level.canvas_hw
    pool = cutouts()
    objs = []
    for i in range(level.objects):
        rgb, mask = pool[int(rng.integers(len(pool)))]
        side = rng.uniform(*level.size_px)
        scale = side / max(mask.shape)
        size = (max(4, int(round(mask.shape[1] * scale))), max(4, int(round(mask.shape[0] * scale))))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        speed = rng.uniform(*level.speed_px_s)
        birth = 0.0 if i < round(level.objects * level.inside_frac) else rng.uniform(0, 0.6 * duration_s)
        angle = rng.uniform(0, 2 * np.pi)
        v = speed * np.array([np.cos(angle), np.sin(angle)])
        if birth == 0.0:
            start = np.array([rng.uniform(0, w - size[0]), rng.uniform(0, h - size[1])])
        else:  # just outside the border it crosses first, heading in
            edge = int(rng.integers(4))
            start = np.array([rng.uniform(0, w - size[0]), rng.uniform(0, h - size[1])])
            if edge == 0:
                start[0], v[0] = -size[0] + 1, abs(v[0]) + speed / 3
            elif edge == 1:
                start[0], v[0] = w - 1, -abs(v[0]) - speed / 3
            elif edge == 2:
                start[1], v[1] = -size[1] + 1, abs(v[1]) + speed / 3
            else:
                start[1], v[1] = h - 1, -abs(v[1]) - speed / 3
        objs.append(_Object(rgb, m, start, v, sway=rng.uniform(0, 8), sway_hz=rng.uniform(0.2, 1.0),
                            birth_s=birth, depth=rng.uniform()))
    return objs


def _position(o: _Object, t: float, level: Optional[Level] = None) -> tuple[int, int]:
    """Top-left (x, y) px of object o at time t (s); with level.bounce_px, reflected at
    -(size + bounce_px) and (canvas + bounce_px) per axis (it turns around out of view)."""
    dt = t - o.birth_s
    v = o.velocity
    normal = np.array([-v[1], v[0]]) / max(np.hypot(*v), 1e-9)
    p = o.start + v * dt + normal * o.sway * np.sin(2 * np.pi * o.sway_hz * dt)
    if level is not None and level.bounce_px is not None:
        for axis, (side, size) in enumerate(((level.canvas_hw[1], o.mask.shape[1]),
                                             (level.canvas_hw[0], o.mask.shape[0]))):
            lo, hi = -size - level.bounce_px, side + level.bounce_px
            span = hi - lo
            u = (p[axis] - lo) % (2 * span)  # a triangle wave between lo and hi
            p[axis] = lo + (u if u <= span else 2 * span - u)
    return int(round(p[0])), int(round(p[1]))


def _paste(canvas_hw, mask: np.ndarray, x: int, y: int) -> np.ndarray:
    """(H, W) bool: `mask` placed with its top-left at (x, y), clipped to the canvas."""
    h, w = canvas_hw
    out = np.zeros((h, w), bool)
    mh, mw = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, w), min(y + mh, h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def _noisy(mask: np.ndarray, level: Level, rng: np.random.Generator) -> np.ndarray:
    """A detector's version of a visible mask: eroded or dilated boundary, shifted by a few px."""
    m = mask.astype(np.uint8)
    r = int(rng.integers(-level.noise_px, level.noise_px + 1)) if level.noise_px else 0
    if r:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
        m2 = cv2.dilate(m, k) if r > 0 else cv2.erode(m, k)
        m = m2 if m2.any() else m
    dx, dy = (rng.integers(-level.jitter_px, level.jitter_px + 1, 2) if level.jitter_px else (0, 0))
    return _paste(m.shape, m.astype(bool), int(dx), int(dy))  # shifted, not wrapped around


def make_sequence(level: Level, seed: int, min_visible: float = 0.3, render: bool = False) -> Sequence:
    """A seeded sequence of `level` (see the module docstring). render: also keep a background
    image so :func:`render_frame` can draw the processed frames."""
    rng = np.random.default_rng(seed)
    h, w = level.canvas_hw
    duration = level.frames / level.fps
    objs = _objects(level, rng, duration)
    seq = Sequence(level, seed)
    if render:
        bg = cutouts()[int(rng.integers(len(cutouts())))][0]
        seq.background = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    order = np.argsort([o.depth for o in objs])  # nearest first
    for k in range(level.frames):
        # the first frame is always processed; the others with probability 1 - skip_prob
        if k and rng.uniform() < level.skip_prob:
            continue
        t = k / level.fps
        covered = np.zeros((h, w), bool)
        gt_ids, gt_masks, det_src, det_masks = [], [], [], []
        for i in order:
            o = objs[i]
            if t < o.birth_s:
                continue
            full = _paste((h, w), o.mask, *_position(o, t, level))
            area_full = int(o.mask.sum())
            visible = full & ~covered
            covered |= full
            frac = visible.sum() / max(area_full, 1)
            if frac < min_visible:
                continue
            gt_ids.append(i)
            gt_masks.append(visible)
            if rng.uniform() < level.drop_prob + level.occluded_drop * (1.0 - frac):
                continue
            det_src.append(i)
            det_masks.append(_noisy(visible, level, rng))
        for _ in range(rng.poisson(level.fp_per_frame)):
            blob = np.zeros((h, w), np.uint8)
            c = (int(rng.integers(w)), int(rng.integers(h)))
            ax = (int(rng.integers(6, 20)), int(rng.integers(6, 20)))
            cv2.ellipse(blob, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            det_src.append(-1)
            det_masks.append(blob.astype(bool))
        stack = lambda ms: np.array(ms, bool).reshape(-1, h, w)
        seq.frames.append(Frame(int(round(t * 1e9)), np.array(gt_ids, np.int64), stack(gt_masks),
                                np.array(det_src, np.int64), stack(det_masks)))
    seq._objects = objs  # for render_frame
    return seq


def render_frame(seq: Sequence, k: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of processed frame k: the cut-outs pasted over the background, farthest
    first (needs make_sequence(render=True))."""
    if seq.background is None:
        raise ValueError("make_sequence(render=True) keeps the background")
    img = seq.background.copy()
    t = seq.frames[k].stamp_ns * 1e-9
    for o in sorted(seq._objects, key=lambda o: -o.depth):
        if t < o.birth_s:
            continue
        x, y = _position(o, t, seq.level)
        full = _paste(img.shape[:2], o.mask, x, y)
        src = np.zeros_like(img)
        mh, mw = o.mask.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + mw, img.shape[1]), min(y + mh, img.shape[0])
        if x1 > x0 and y1 > y0:
            src[y0:y1, x0:x1] = o.rgb[y0 - y:y1 - y, x0 - x:x1 - x]
        img[full] = src[full]
    return img


# ------------------------------------------------------------------------------------ baseline
class GreedyMatcher:
    """The naive baseline: each detection takes the id of the previous frame's detection it
    overlaps most (greedy, best IoU first, IoU >= iou_thresh, same coarse-grid IoU as the
    tracker); everything else gets a new id. No memory beyond one frame, no motion model."""

    def __init__(self, iou_thresh: float = TrackerConfig.iou_thresh,
                 grid_cells: int = TrackerConfig.grid_cells) -> None:
        self.iou_thresh, self.grid_cells = iou_thresh, grid_cells
        self._prev: Optional[tuple[np.ndarray, np.ndarray]] = None  # (coarse masks, ids)
        self._next_id = 1

    def update(self, inst: Instances, stamp_ns: int) -> np.ndarray:
        """(N,) ids of the instances, in their order."""
        coarse = coarse_masks(inst, grid_stride(inst.image_hw, self.grid_cells))
        ids = np.zeros(len(inst), np.int64)
        if self._prev is not None and len(inst) and len(self._prev[1]):
            iou = mask_iou_matrix(self._prev[0], coarse)
            taken_prev, taken_det = set(), set()
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                p, d = np.unravel_index(flat, iou.shape)
                if iou[p, d] < self.iou_thresh:
                    break
                if p in taken_prev or d in taken_det:
                    continue
                taken_prev.add(p)
                taken_det.add(d)
                ids[d] = self._prev[1][p]
        for d in np.flatnonzero(ids == 0):
            ids[d] = self._next_id
            self._next_id += 1
        self._prev = (coarse, ids)
        return ids


class SortMatcher:
    """A SORT-style baseline (Bewley et al. 2016, without its Kalman covariance): each track keeps
    its last box (x1, y1, x2, y2 px, from the mask) and a constant velocity (px/s, from its last two
    matches); per frame every track's box is moved to the frame's stamp, box IoU against the
    detections' boxes, one optimal assignment (Hungarian, scipy linear_sum_assignment) at IoU >=
    iou_thresh; unmatched tracks coast (keep predicting) for max_age_s seconds of stamps, then go;
    unmatched detections start tracks. Boxes only: no masks, no appearance."""

    def __init__(self, iou_thresh: float = 0.3, max_age_s: float = TrackerConfig.max_age_s) -> None:
        self.iou_thresh, self.max_age_s = iou_thresh, max_age_s
        self._tracks: list[dict] = []  # {"id", "box" (4,), "v" (2,), "ns", "hits"}
        self._next_id = 1

    def update(self, inst: Instances, stamp_ns: int) -> np.ndarray:
        """(N,) ids of the instances, in their order."""
        from mobilesam_ros.core.engine.tracking import box_iou_matrix

        self._tracks = [t for t in self._tracks if (stamp_ns - t["ns"]) * 1e-9 <= self.max_age_s]
        boxes = inst.boxes.astype(np.float64)
        ids = np.zeros(len(inst), np.int64)
        if self._tracks and len(inst):
            pred = np.stack([t["box"] + np.tile(t["v"] * (stamp_ns - t["ns"]) * 1e-9, 2) for t in self._tracks])
            iou = box_iou_matrix(pred, boxes)
            for r, c in zip(*linear_sum_assignment(iou, maximize=True)):
                if iou[r, c] < self.iou_thresh:
                    continue
                t = self._tracks[r]
                dt = max((stamp_ns - t["ns"]) * 1e-9, 1e-9)
                centre = lambda b: np.array([b[0] + b[2], b[1] + b[3]]) / 2
                v = (centre(boxes[c]) - centre(t["box"])) / dt
                t["v"] = v if t["hits"] == 1 else 0.5 * v + 0.5 * t["v"]  # smoothed, as a Kalman gain would
                t["box"], t["ns"], t["hits"] = boxes[c], stamp_ns, t["hits"] + 1
                ids[c] = t["id"]
        for d in np.flatnonzero(ids == 0):
            ids[d] = self._next_id
            self._tracks.append({"id": self._next_id, "box": boxes[d], "v": np.zeros(2), "ns": stamp_ns, "hits": 1})
            self._next_id += 1
        return ids


# ------------------------------------------------------------------------------------ metrics
def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of dense bool masks (A, H, W) and (B, H, W)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    af = a.reshape(len(a), -1).astype(np.float32)
    bf = b.reshape(len(b), -1).astype(np.float32)
    inter = af @ bf.T
    union = af.sum(1)[:, None] + bf.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def evaluate(gt: list[tuple[np.ndarray, np.ndarray]], hyp: list[tuple[np.ndarray, np.ndarray]],
             iou_thresh: float = 0.5) -> dict:
    """MOT metrics of hypotheses against ground truth, frame by frame.

    gt, hyp: per frame (ids (K,), masks (K, H, W) bool). A hypothesis matches an object when their
    mask IoU >= iou_thresh. CLEAR-MOT: an object keeps last frame's hypothesis while it still
    matches; the rest are matched by maximum total IoU (Hungarian); an ID switch is an object
    matched to another hypothesis id than at its previous match. MOTA = 1 - (FN + FP + IDSW) / GT.
    IDF1 = 2 IDTP / (GT + hypotheses), IDTP from the best one-to-one pairing of object and
    hypothesis ids by the number of frames they match in.
    """
    last: dict[int, int] = {}
    fn = fp = idsw = n_gt = n_hyp = 0
    pair_frames: dict[tuple[int, int], int] = {}
    for (gids, gm), (hids, hm) in zip(gt, hyp):
        gids, hids = [int(i) for i in gids], [int(i) for i in hids]
        n_gt += len(gids)
        n_hyp += len(hids)
        iou = _iou(gm, hm)
        for gi, hi in zip(*np.nonzero(iou >= iou_thresh)):
            key = (gids[gi], hids[hi])
            pair_frames[key] = pair_frames.get(key, 0) + 1
        match: dict[int, int] = {}
        for gi, g in enumerate(gids):  # keep last frame's correspondences that still hold
            if g in last and last[g] in hids:
                hi = hids.index(last[g])
                if iou[gi, hi] >= iou_thresh and hi not in match.values():
                    match[gi] = hi
        free_g = [gi for gi in range(len(gids)) if gi not in match]
        free_h = [hi for hi in range(len(hids)) if hi not in match.values()]
        if free_g and free_h:
            sub = iou[np.ix_(free_g, free_h)]
            rows, cols = linear_sum_assignment(np.where(sub >= iou_thresh, sub, 0.0), maximize=True)
            for r, c in zip(rows, cols):
                if sub[r, c] >= iou_thresh:
                    match[free_g[r]] = free_h[c]
        for gi, hi in match.items():
            g, h = gids[gi], hids[hi]
            if g in last and last[g] != h:
                idsw += 1
            last[g] = h
        fn += len(gids) - len(match)
        fp += len(hids) - len(match)
    idtp = 0
    if pair_frames:
        gs = sorted({g for g, _ in pair_frames})
        hs = sorted({h for _, h in pair_frames})
        m = np.zeros((len(gs), len(hs)))
        for (g, h), c in pair_frames.items():
            m[gs.index(g), hs.index(h)] = c
        r, c = linear_sum_assignment(m, maximize=True)
        idtp = int(m[r, c].sum())
    return {"gt": n_gt, "hyp": n_hyp, "fn": fn, "fp": fp, "idsw": idsw,
            "mota": 1.0 - (fn + fp + idsw) / max(n_gt, 1),
            "idf1": 2.0 * idtp / max(n_gt + n_hyp, 1), "idtp": idtp}


def run_matcher(seq: Sequence, matcher) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hypotheses (ids, masks) per frame from `matcher.update(instances, stamp_ns)`, which returns
    the ids or an object with `.ids` (core.engine.tracking.Tracker)."""
    out = []
    for k, f in enumerate(seq.frames):
        res = matcher.update(seq.detections(k), f.stamp_ns)
        ids = np.asarray(getattr(res, "ids", res), np.int64)
        out.append((ids, f.det_masks))
    return out


def ground_truth(seq: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(f.gt_ids, f.gt_masks) for f in seq.frames]
