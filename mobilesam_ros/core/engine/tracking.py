"""SegEvery tracks: stable instance ids across frames (ROS-free).

Each frame's instances are associated with the existing tracks by mask IoU, with box IoU and the
detector class as small tie-breakers, in one optimal assignment (Hungarian,
``scipy.optimize.linear_sum_assignment``). A track's mask is moved by its constant-velocity
prediction before it is compared, so fast objects and skipped frames still overlap; the better of
the predicted and the last-seen place counts. Masks too small for the grid (fewer than
``MIN_CELLS`` samples) are compared by box IoU instead.

Lifecycle (all durations in seconds from the frames' stamps, never frame counts, so it holds under
``every_n``, ``max_rate_hz`` and dropped frames):

* TENTATIVE: created from an unmatched instance; confirmed after ``confirm_hits`` matched frames.
  A tentative track that misses a frame is deleted (one-frame flickers never become objects).
* CONFIRMED: matched in this frame.
* COASTING: confirmed but unmatched; kept (and predicted) for ``max_age_s`` after its last match,
  then deleted. A coasting track that matches again keeps its id.

Ids start at 1 and are never reused within one :class:`Tracker` (not even after :meth:`reset`).

Masks are compared on a coarse grid: every ``s``-th row and column (``s`` a power of two chosen so
the longer image side has at most ``grid_cells`` samples), bit-packed, and intersected with
popcounts only for pairs whose (predicted) boxes overlap. Pixel frame: the original image, x =
column, y = row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from mobilesam_ros.core.config import TrackerConfig
from mobilesam_ros.core.structures.instances import Instances

__all__ = ["TRACK_TENTATIVE", "TRACK_CONFIRMED", "TRACK_COASTING", "TrackerConfig", "TrackAssignment",
           "Tracker", "grid_stride", "coarse_masks", "mask_iou_matrix", "box_iou_matrix"]

# Equal to the TRACK_* constants of msg/InstanceMask.msg (a ROS test checks they agree; the message
# calls 3 TRACK_LOST: a click-to-track object published without a good mask this frame).
TRACK_TENTATIVE = 1
TRACK_CONFIRMED = 2
TRACK_COASTING = 3

# A mask with fewer samples on the coarse grid is compared by box IoU: a few cells give no IoU.
MIN_CELLS = 4


@dataclass(frozen=True)
class TrackAssignment:
    """Per instance of one frame, in the instances' order (all (N,) arrays).

    ids: uint32 track id (>= 1). states: uint8 TRACK_TENTATIVE or TRACK_CONFIRMED.
    hits: uint32 frames this track was matched in, this one included.
    first_seen_ns: int64 stamp (ns) of the frame that created the track.
    age_s: float64 seconds from first_seen_ns to this frame's stamp.
    """

    ids: np.ndarray
    states: np.ndarray
    hits: np.ndarray
    first_seen_ns: np.ndarray
    age_s: np.ndarray


@dataclass
class _Track:
    id: int
    coarse: np.ndarray            # (h, w) uint8 0/1 coarse mask at the last match (cheap to shift)
    box: np.ndarray               # (4,) float64 xyxy px at the last match
    class_id: int
    first_ns: int
    last_ns: int
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px/s, x and y
    state: int = TRACK_TENTATIVE


# ---------------------------------------------------------------------------------- coarse masks
def grid_stride(image_hw: tuple[int, int], grid_cells: int) -> int:
    """The smallest power of two s with ceil(max(H, W) / s) <= grid_cells."""
    s = 1
    while -(-max(image_hw) // s) > grid_cells:
        s *= 2
    return s


def coarse_masks(inst: Instances, s: int) -> np.ndarray:
    """(N, h, ceil(w / 8)) uint8: the masks sampled at rows / columns s//2 + k*s, bit-packed.

    h = len(range(s//2, H, s)), w = len(range(s//2, W, s)). Works on packed masks without
    unpacking the image: rows are sliced, columns picked from the packed bytes with a lookup table.
    """
    h_img, w_img = inst.image_hw
    wc = len(range(s // 2, w_img, s))
    nbytes = (wc + 7) // 8
    if len(inst) == 0:
        return np.zeros((0, len(range(s // 2, h_img, s)), nbytes), np.uint8)
    if not inst.packed:
        return np.packbits(inst.masks[:, s // 2::s, s // 2::s], axis=-1)
    rows = inst.masks[:, s // 2::s, :]
    if s == 1:
        return np.ascontiguousarray(rows)
    if s >= 8:
        c = s // 2
        picked = rows[:, :, c // 8::s // 8]
        out = np.packbits((picked >> (7 - c % 8)) & 1, axis=-1)
    else:
        # s in {2, 4}: each byte gives k = 8 // s samples (columns s//2 + i*s of its 8, MSB first);
        # s bytes make one output byte. Whole-array bit operations, not a 256-entry lookup: a
        # gather over every byte is ~15x slower.
        pad = (-rows.shape[-1]) % s
        if pad:
            rows = np.concatenate([rows, np.zeros(rows.shape[:-1] + (pad,), np.uint8)], axis=-1)
        k = 8 // s
        codes = np.zeros(rows.shape, np.uint8)
        for i in range(k):
            codes |= ((rows >> (7 - (s // 2 + i * s))) & 1) << (k - 1 - i)
        codes = codes.reshape(codes.shape[:-1] + (-1, s))
        out = np.zeros(codes.shape[:-1], np.uint8)
        for i in range(s):
            out |= codes[..., i] << (k * (s - 1 - i))
    if out.shape[-1] < nbytes:
        out = np.concatenate([out, np.zeros(out.shape[:-1] + (nbytes - out.shape[-1],), np.uint8)], axis=-1)
    return np.ascontiguousarray(out[..., :nbytes])


if hasattr(np, "bitwise_count"):
    def _popcount(x: np.ndarray) -> np.ndarray:
        """Set bits per row of a 2-D uint8 array."""
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
else:  # numpy < 2.0
    _POP8 = np.array([bin(i).count("1") for i in range(256)], np.int64)

    def _popcount(x: np.ndarray) -> np.ndarray:
        """Set bits per row of a 2-D uint8 array."""
        return _POP8[x].sum(axis=-1)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of xyxy boxes (A, 4) and (B, 4); x2, y2 inclusive as SAM's tight boxes, so a
    box covers (x2 - x1 + 1) * (y2 - y1 + 1) pixels."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = lambda x: np.clip(x[:, 2] - x[:, 0] + 1, 0, None) * np.clip(x[:, 3] - x[:, 1] + 1, 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) bool: xyxy boxes (x2, y2 inclusive) share at least one pixel."""
    return ((a[:, None, 0] <= b[None, :, 2]) & (b[None, :, 0] <= a[:, None, 2])
            & (a[:, None, 1] <= b[None, :, 3]) & (b[None, :, 1] <= a[:, None, 3]))


def mask_iou_matrix(a: np.ndarray, b: np.ndarray, candidates: Optional[np.ndarray] = None) -> np.ndarray:
    """(A, B) IoU of packed masks a (A, ...) and b (B, ...) uint8 of one shape.

    candidates: optional (A, B) bool; only those pairs are intersected (others get 0), e.g. the
    pairs whose boxes overlap. Two empty masks have IoU 0.
    """
    a2 = a.reshape(len(a), -1)
    b2 = b.reshape(len(b), -1)
    out = np.zeros((len(a2), len(b2)))
    if candidates is None:
        candidates = np.ones(out.shape, bool)
    ia, ib = np.nonzero(candidates)
    if ia.size == 0:
        return out
    inter = _popcount(a2[ia] & b2[ib])
    union = _popcount(a2)[ia] + _popcount(b2)[ib] - inter
    out[ia, ib] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


def _shifted(m: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """An (h, w) coarse mask moved by (dx, dy) cells, zero-filled at the edges."""
    if dx == 0 and dy == 0:
        return m
    h, w = m.shape
    out = np.zeros_like(m)
    if abs(dx) < w and abs(dy) < h:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            m[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


# ---------------------------------------------------------------------------------- the tracker
class Tracker:
    """Multi-object tracker over SegEvery instances; call :meth:`update` once per processed frame.

    Not thread-safe: one caller (the node's worker thread) drives it.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_ns: Optional[int] = None
        self._image_hw: Optional[tuple[int, int]] = None

    @property
    def tracks(self) -> int:
        """Live tracks (tentative, confirmed and coasting)."""
        return len(self._tracks)

    def set_config(self, config: TrackerConfig) -> None:
        """New thresholds from the next frame on; live tracks and ids are kept, except that another
        grid_cells starts over (the tracks' coarse masks are on the old grid)."""
        if config.grid_cells != self.config.grid_cells:
            self.reset()
        self.config = config

    def reset(self) -> None:
        """Forget every track; ids keep counting up (never reused)."""
        self._tracks = []
        self._last_ns = None
        self._image_hw = None

    def update(self, inst: Instances, stamp_ns: int) -> TrackAssignment:
        """Associate the instances of the frame stamped `stamp_ns` (ns) and return their tracks.

        A stamp older than the previous frame's (a bag played again) or another image size starts
        over (:meth:`reset`): motion and ages across such a jump mean nothing.
        """
        cfg = self.config
        stamp_ns = int(stamp_ns)
        if (self._last_ns is not None and stamp_ns < self._last_ns) or \
                (self._image_hw is not None and self._image_hw != tuple(inst.image_hw)):
            self.reset()
        self._last_ns, self._image_hw = stamp_ns, tuple(inst.image_hw)
        max_age_ns = cfg.max_age_s * 1e9
        self._tracks = [t for t in self._tracks if stamp_ns - t.last_ns <= max_age_ns]

        s = grid_stride(inst.image_hw, cfg.grid_cells)
        wc = len(range(s // 2, inst.image_hw[1], s))
        det_coarse = coarse_masks(inst, s)
        det_cells = np.unpackbits(det_coarse, axis=-1, count=wc)  # (N, h, w) 0/1, what tracks keep
        det_boxes = inst.boxes.astype(np.float64)
        n, tracks = len(inst), self._tracks
        matches: list[tuple[int, int]] = []
        if n and tracks:
            dt = np.array([(stamp_ns - t.last_ns) * 1e-9 for t in tracks])
            shift = np.stack([t.velocity for t in tracks]) * dt[:, None]        # (T, 2) px
            pred_boxes = np.stack([t.box for t in tracks]) + np.tile(shift, 2)
            cells = np.rint(shift / s).astype(int)
            pred = np.packbits(np.stack([_shifted(t.coarse, cx, cy) for t, (cx, cy) in zip(tracks, cells)]),
                               axis=-1)
            last_boxes = pred_boxes - np.tile(shift, 2)
            last = np.packbits(np.stack([t.coarse for t in tracks]), axis=-1)
            # a coarse cell of slack: a sampled mask can touch a box it lies just outside of
            slack = np.array([-s, -s, s, s], np.float64)
            # the better of the predicted and the last-seen place: a velocity spoiled by one bad
            # mask (a part appearing, an occluder) must not lose an object that stands still
            boxes_iou = box_iou_matrix(pred_boxes, det_boxes)
            miou = np.maximum(mask_iou_matrix(pred, det_coarse, _overlap(pred_boxes + slack, det_boxes)),
                              mask_iou_matrix(last, det_coarse, _overlap(last_boxes + slack, det_boxes)))
            tiny = (_popcount(last.reshape(len(tracks), -1))[:, None] < MIN_CELLS) \
                | (_popcount(det_coarse.reshape(n, -1))[None, :] < MIN_CELLS)
            miou = np.where(tiny, np.maximum(boxes_iou, box_iou_matrix(last_boxes, det_boxes)), miou)
            same_cls = (np.array([t.class_id for t in tracks])[:, None] == inst.class_ids[None, :]) \
                & (inst.class_ids[None, :] >= 0)
            score = np.where(miou >= cfg.iou_thresh,
                             miou + cfg.box_weight * boxes_iou + cfg.class_weight * same_cls, 0.0)
            rows, cols = linear_sum_assignment(score, maximize=True)
            matches = [(int(r), int(c)) for r, c in zip(rows, cols) if score[r, c] > 0]

        det_track: list[Optional[_Track]] = [None] * n
        matched_tracks = set()
        velocities = self._measured_velocities([tracks[ti] for ti, _ in matches],
                                               det_boxes[[dj for _, dj in matches]], stamp_ns)
        for (ti, dj), v in zip(matches, velocities):
            t = tracks[ti]
            t.coarse, t.box, t.velocity = det_cells[dj].copy(), det_boxes[dj].copy(), v
            t.class_id, t.last_ns, t.hits = int(inst.class_ids[dj]), stamp_ns, t.hits + 1
            if t.state == TRACK_COASTING or t.hits >= cfg.confirm_hits:
                t.state = TRACK_CONFIRMED
            det_track[dj] = t
            matched_tracks.add(ti)
        kept = []
        for ti, t in enumerate(tracks):
            if ti in matched_tracks:
                kept.append(t)
            elif t.state != TRACK_TENTATIVE:
                t.state = TRACK_COASTING
                kept.append(t)
        for dj in range(n):  # new tracks in instance order: the first frame numbers them 1..N
            if det_track[dj] is None:
                t = _Track(id=self._next_id, coarse=det_cells[dj].copy(), box=det_boxes[dj].copy(),
                           class_id=int(inst.class_ids[dj]), first_ns=stamp_ns, last_ns=stamp_ns,
                           state=TRACK_CONFIRMED if cfg.confirm_hits <= 1 else TRACK_TENTATIVE)
                self._next_id += 1
                det_track[dj] = t
                kept.append(t)
        if len(kept) > cfg.max_tracks:
            seen_now = [t for t in kept if t.last_ns == stamp_ns]
            coasting = sorted((t for t in kept if t.last_ns != stamp_ns), key=lambda t: -t.last_ns)
            kept = seen_now + coasting[:max(0, cfg.max_tracks - len(seen_now))]
        self._tracks = kept
        return TrackAssignment(
            ids=np.array([t.id for t in det_track], np.uint32),
            states=np.array([t.state for t in det_track], np.uint8),
            hits=np.array([t.hits for t in det_track], np.uint32),
            first_seen_ns=np.array([t.first_ns for t in det_track], np.int64),
            age_s=np.array([(stamp_ns - t.first_ns) * 1e-9 for t in det_track], np.float64))

    def _measured_velocities(self, tracks: list[_Track], boxes: np.ndarray, stamp_ns: int) -> np.ndarray:
        """(M, 2) px/s new velocities of matched `tracks` whose new boxes are `boxes` (M, 4):
        box-centre displacement over the time since each track's last match, exponentially
        averaged; the first measurement replaces the zero start instead of being averaged."""
        if not tracks:
            return np.zeros((0, 2))
        old = np.stack([t.velocity for t in tracks])
        a = self.config.velocity_smoothing
        dt = np.array([(stamp_ns - t.last_ns) * 1e-9 for t in tracks])
        prev = np.stack([t.box for t in tracks])
        moved = ((boxes[:, :2] + boxes[:, 2:]) - (prev[:, :2] + prev[:, 2:])) / 2.0
        measured = moved / np.maximum(dt, 1e-9)[:, None]
        first = np.array([t.hits == 1 for t in tracks])[:, None]
        new = np.where(first, measured, a * measured + (1 - a) * old)
        # a repeated stamp (dt = 0) measures nothing; smoothing 0 switches the motion model off
        return np.where((dt[:, None] > 0) & (a > 0), new, old)
