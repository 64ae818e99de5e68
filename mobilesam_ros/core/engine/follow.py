"""SegAny click-to-track (ROS-free): objects started by a prompt are followed from frame to frame.

On every newly encoded frame each followed object is re-prompted from its last good state: a box
around its previous mask (original px, xyxy) and its previous 256x256 low-res logits as the mask
input. All followed objects share that token layout, so :meth:`SamPredictor.predict_batch`
decodes them in one batch (chunks of ``decode_chunk``). A result is *bad* when the decoder's
predicted IoU is below ``min_pred_iou``, the mask is empty, or its area changed by more than a
factor ``max_area_change`` from the last good mask; a bad result is not kept (the next frame
re-prompts from the last good state again) and its object is reported lost. An object bad for longer than
``lost_timeout_s`` seconds of stamps is dropped. At most ``max_objects`` are followed. A lost
object can be re-acquired from other instances of the frame (SegEvery's, in the node's mode
`both`): :meth:`FollowSet.reacquire`. When stamps go backwards (a looping bag, a simulator reset),
the objects last seen after the new frame's stamp are dropped, as the tracker starts over: the
scene they were in is gone, and their ages would go negative (:meth:`FollowSet.rewind`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from mobilesam_ros.core.config import FollowConfig
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.ops.postprocess import masks_to_boxes
from mobilesam_ros.core.structures.prompts import ObjectPrompt
from mobilesam_ros.core.engine.tracking import box_iou_matrix

if TYPE_CHECKING:  # torch loads with the predictor; the node must import this before its CPU policy is set
    from mobilesam_ros.core.engine.predictor import Prediction, SamPredictor

__all__ = ["FollowConfig", "FollowedObject", "FollowSet", "FollowResult", "ObjectLabel", "follow_step"]


@dataclass(frozen=True)
class ObjectLabel:
    """What the prompt that started a followed object said it is, kept while it is followed:
    class_id (-1 none), class_name ("" none), source_id (the prompt's own id, e.g. a vision_msgs
    Detection2D.id; "" none), score (the detector's score; NaN none)."""

    class_id: int = -1
    class_name: str = ""
    source_id: str = ""
    score: float = float("nan")


@dataclass
class FollowedObject:
    """One followed object's last good state. logits: (1, 256, 256) float32 low-res logits (None
    after a re-acquisition: the box alone prompts); box: (4,) float32 xyxy px of its mask, x2/y2
    one past the last pixel; stamps in ns; label: what its prompt said it is."""

    id: int
    logits: Optional[np.ndarray]
    box: np.ndarray
    area: int
    first_ns: int
    good_ns: int
    hits: int = 1
    lost: bool = False
    label: ObjectLabel = ObjectLabel()


@dataclass(frozen=True)
class FollowResult:
    """One frame of followed objects: `instances` (the good ones, in `ids` order), `ids` (M,),
    `hits` (M,), `first_seen_ns` (M,); `lost` the ids without a good mask this frame; `dropped` the
    ids given up this frame (lost for longer than lost_timeout_s); `rewound` the ids dropped because
    the stamps went back (last seen after this frame, at `rewound_from_ns` the latest); `labels`
    (M,) the good ones' labels."""

    instances: Instances
    ids: list[int]
    hits: list[int]
    first_seen_ns: list[int]
    lost: list[int]
    dropped: list[int]
    rewound: list[int] = field(default_factory=list)
    rewound_from_ns: int = 0
    labels: list[ObjectLabel] = field(default_factory=list)


def _box_of(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 xyxy of a (H, W) bool mask, x2/y2 one past the last pixel (a prompt box)."""
    b = masks_to_boxes(mask[None])[0].astype(np.float32)
    return b + np.array([0, 0, 1, 1], np.float32)


class FollowSet:
    """The followed objects, by id. Add and remove between frames; :func:`follow_step` per frame.
    Not thread-safe: the node's worker thread owns it."""

    def __init__(self, config: FollowConfig = FollowConfig()) -> None:
        self.config = config
        self._objects: dict[int, FollowedObject] = {}

    def __len__(self) -> int:
        return len(self._objects)

    @property
    def ids(self) -> list[int]:
        return list(self._objects)

    def admit(self, ids: Sequence[int]) -> list[bool]:
        """Which of `ids` (in order) `start`/`add` would take under max_objects: followed ids
        always (an update), new ids while room is left. Ask before decoding them: only the
        admitted ones are worth a decode."""
        room = self.config.max_objects - len(self._objects)
        out, new = [], set()
        for i in (int(i) for i in ids):
            ok = i in self._objects or i in new or len(new) < room
            if ok and i not in self._objects:
                new.add(i)
            out.append(ok)
        return out

    def start(self, ids: Sequence[int], logits: np.ndarray, boxes: np.ndarray, areas: Sequence[int],
              stamp_ns: int, labels: Optional[Sequence[ObjectLabel]] = None) -> list[int]:
        """Follow objects from their first decode on the frame stamped stamp_ns: `logits` (N, 1,
        256, 256) low-res logits, `boxes` (N, 4) xyxy px with x2/y2 one past the last pixel of the
        mask, `areas` (N,) mask pixels, `labels` (N,) what each is (default: nothing known). An
        existing id is replaced (update, label included). Returns the ids refused: empty masks,
        and those beyond max_objects (new ids only)."""
        refused = []
        labels = [ObjectLabel()] * len(ids) if labels is None else labels
        for i, lg, box, area, label in zip(ids, logits, boxes, areas, labels):
            i = int(i)
            if int(area) <= 0 or not self.admit([i])[0]:
                refused.append(i)
                continue
            self._objects[i] = FollowedObject(i, np.asarray(lg[:1], np.float32),
                                              np.asarray(box, np.float32), int(area),
                                              int(stamp_ns), int(stamp_ns), label=label)
        return refused

    def add(self, ids: Sequence[int], preds: Sequence[Prediction], stamp_ns: int) -> list[int]:
        """`start` from full decodes (`preds[i]` of `ids[i]`, C = 1 candidate with its mask, as
        predict_batch(select_best=True) gives)."""
        masks = [p.masks[0] for p in preds]
        boxes = [_box_of(m) if m.any() else np.zeros(4, np.float32) for m in masks]
        return self.start(ids, [p.low_res_logits for p in preds], boxes, [int(m.sum()) for m in masks], stamp_ns)

    def rewind(self, stamp_ns: int) -> tuple[list[int], int]:
        """Drop the objects last seen (good) after stamp_ns: the stamps went back (a looping bag,
        a simulator reset), so the scene they were in is gone. Objects started on this frame or
        an older one stay. Returns (their ids, the latest of their last good stamps, 0 if none)."""
        gone = [o for o in self._objects.values() if o.good_ns > stamp_ns]
        for o in gone:
            del self._objects[o.id]
        return [o.id for o in gone], max((o.good_ns for o in gone), default=0)

    def remove(self, ids: Sequence[int]) -> list[int]:
        """Stop following `ids`; returns those that were followed."""
        return [int(i) for i in ids if self._objects.pop(int(i), None) is not None]

    def get(self, i: int) -> FollowedObject:
        """The state of followed object i (KeyError if not followed)."""
        return self._objects[int(i)]

    def reacquire(self, candidates: Instances) -> list[int]:
        """Lost objects take the instance of `candidates` (e.g. this frame's SegEvery instances)
        whose box overlaps their last good box most, at box IoU >= config.reacquire_iou, each
        instance at most once (optimal assignment). A re-acquired object is re-prompted on the next
        frame from that instance's box alone (its old logits describe its old place); it stays
        lost, with its timeout running, until that gives a good mask. Returns the ids re-acquired."""
        lost = [o for o in self._objects.values() if o.lost]
        if not lost or not len(candidates):
            return []
        inclusive = np.array([0, 0, 1, 1], np.float32)  # candidates' boxes: SAM's x2/y2 inside
        iou = box_iou_matrix(np.stack([o.box - inclusive for o in lost]), candidates.boxes)
        rows, cols = linear_sum_assignment(iou, maximize=True)
        out = []
        for r, c in zip(rows, cols):
            if iou[r, c] >= self.config.reacquire_iou:
                o = lost[r]
                o.box, o.logits, o.area = candidates.boxes[c] + inclusive, None, int(candidates.areas[c])
                out.append(o.id)
        return out

    def prompts(self) -> list[ObjectPrompt]:
        """The re-prompts, in `ids` order: last good box + last good low-res logits (the box alone
        after a re-acquisition: another token layout, so a second decoder batch)."""
        return [ObjectPrompt(box=o.box, mask_input=o.logits) for o in self._objects.values()]

    def update(self, preds: Sequence[Prediction], stamp_ns: int, image_hw: tuple[int, int]) -> FollowResult:
        """Take the re-prompt results (`preds` in `ids` order) of the frame stamped stamp_ns.
        Objects last seen after stamp_ns are dropped first (`rewind`; their preds are ignored)."""
        cfg = self.config
        objects = list(self._objects.values())
        rewound, rewound_from = self.rewind(stamp_ns)
        good_masks, ids, hits, first, lost, dropped, scores, stab, labels = [], [], [], [], [], [], [], [], []
        for o, p in zip(objects, preds):
            if o.id in rewound:
                continue
            mask, iou = p.masks[0], float(p.iou[0])
            area = int(mask.sum())
            ratio = area / max(o.area, 1)
            ok = area > 0 and iou >= cfg.min_pred_iou and 1.0 / cfg.max_area_change <= ratio <= cfg.max_area_change
            if ok:
                o.logits, o.box, o.area = p.low_res_logits[:1].astype(np.float32), _box_of(mask), area
                o.good_ns, o.hits, o.lost = int(stamp_ns), o.hits + 1, False
                good_masks.append(mask)
                ids.append(o.id)
                hits.append(o.hits)
                first.append(o.first_ns)
                scores.append(iou)
                stab.append(np.nan if p.stability is None else float(p.stability[0]))
                labels.append(o.label)
            elif (stamp_ns - o.good_ns) * 1e-9 > cfg.lost_timeout_s:
                dropped.append(o.id)
                del self._objects[o.id]
            else:
                o.lost = True
                lost.append(o.id)
        inst = (Instances.from_masks(np.stack(good_masks), np.array(scores), stability=np.array(stab)).pack_bits()
                if good_masks else Instances.empty(image_hw).pack_bits())
        return FollowResult(inst, ids, hits, first, lost, dropped, rewound, rewound_from, labels)


def follow_step(predictor: SamPredictor, followed: FollowSet, frame: CachedFrame) -> Optional[FollowResult]:
    """Re-prompt every followed object on `frame` (encoded, original px) in one batched decode and
    update them; None when nothing is followed. Objects from after the frame's stamp (the stamps
    went back) are dropped before the decode (`FollowSet.rewind`): the result names them."""
    if not len(followed):
        return None
    rewound, rewound_from = followed.rewind(frame.stamp_ns)
    preds = predictor.predict_on(frame, followed.prompts()) if len(followed) else []
    res = followed.update(preds, frame.stamp_ns, frame.original_size)
    return replace(res, rewound=rewound + res.rewound, rewound_from_ns=max(rewound_from, res.rewound_from_ns))
