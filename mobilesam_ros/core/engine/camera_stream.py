"""One camera's stream over the shared model: every frame and prompt of a camera goes through it.

ROS-free. A stream owns what is per camera — its embedding cache (through its own SamPredictor
over the shared backend), its SegEvery tracks, its followed objects and its frame-rate gate — and
nothing else: the encoder, decoder and detector are the process's one SegmentationModel. The node
makes one stream per camera and only converts messages (ros/camera_port.py).

A frame enters once (`step`) and leaves as one `FrameResult` whose every part points back to the
same CachedFrame; a prompt is resolved to its CachedFrame once (`resolve`) and answered on it
(`answer`). Nothing below looks a frame up by stamp again.

Threads: `step`, `answer` and `resolve` run on a worker thread, one at a time per stream (other
streams' calls run beside them on the shared model); `update`,
`admit`, `remove_followed` and `followed_ids` may be called from ROS callbacks.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np

import logging

from mobilesam_ros.core.config import DetectorConfig, Settings, setting_name
from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError
from mobilesam_ros.core.engine.follow import FollowResult, FollowSet, ObjectLabel, follow_step
from mobilesam_ros.core.engine.model import SegmentationModel
from mobilesam_ros.core.engine.segany import decode_prompts
from mobilesam_ros.core.engine.segevery import decode_boxes
from mobilesam_ros.core.engine.tracking import (TRACK_COASTING, TRACK_CONFIRMED, TrackAssignment, Tracker,
                                               box_iou_matrix)
from mobilesam_ros.core.ops.filters import filter_instances
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.structures.detections import Detections
from mobilesam_ros.core.structures.prompts import ObjectPrompt

__all__ = ["CameraStream", "FrameResult", "Followed", "PromptResult"]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Followed:
    """The followed objects on one frame: `instances` (good masks first, then the lost objects
    with empty masks; class_ids / det_scores from their labels), `tracks` (their ids, CONFIRMED or
    COASTING = lost, hits, first seen, age), `labels` (what each one's prompt said it is, in
    `instances` order), `reacquired` / `dropped`: ids re-acquired from SegEvery / given up on this
    frame; `rewound`: ids dropped because the stamps went back, from `rewound_from_ns` (a looping
    bag, a reset)."""

    instances: Instances
    tracks: TrackAssignment
    labels: list
    reacquired: list
    dropped: list
    rewound: list
    rewound_from_ns: int


@dataclass(frozen=True)
class FrameResult:
    """Everything one camera frame produced. frame: the encoded frame (stamp, image, meta);
    instances: SegEvery's filtered instances (None in mode segany); tracks: their track ids and
    states (None when tracking is off or in mode segany); followed: the followed objects
    (None when nothing is followed)."""

    frame: CachedFrame
    instances: Optional[Instances]
    tracks: Optional[TrackAssignment]
    followed: Optional[Followed]

    @property
    def ids(self) -> list:
        """Ids of `instances`: track ids, or 1..N without tracking."""
        if self.tracks is not None:
            return [int(i) for i in self.tracks.ids]
        return list(range(1, 1 + (0 if self.instances is None else len(self.instances))))


@dataclass(frozen=True)
class PromptResult:
    """A prompt message's answer: instances (one per object, in order; `.frame` = the frame they
    were decoded on), ids (the objects' ids), refused: ids asked to be followed but not taken."""

    instances: Instances
    ids: list
    refused: list


class CameraStream:
    """One camera over the shared `model`, with `cache_size` encoded frames kept for prompts.
    tracker: the camera's Tracker when it must outlive the stream (the node keeps one per camera
    for the whole process, so a track id is never given twice, across lifecycle transitions too)."""

    def __init__(self, name: str, model: SegmentationModel, settings: Settings, cache_size: int,
                 tracker: Optional[Tracker] = None) -> None:
        self.name = name
        self.model = model
        self.predictor = model.new_predictor(cache_size)
        self.settings = settings
        self._tracker = Tracker(settings.tracker) if tracker is None else tracker
        self._follow = FollowSet(settings.follow)
        self._lock = threading.Lock()   # the follow set: the worker and the remove service
        self._frames_seen = 0
        self._last_admitted = -float("inf")
        self._amg = None
        self._filter_key: tuple = ()          # the DetectorConfig.classes value _filter_ids was made from
        self._filter_ids: frozenset = frozenset()

    # ------------------------------------------------------------------ settings and input gate
    def update(self, settings: Settings) -> None:
        """Use `settings` from the next frame or prompt on (one reference swap: a frame in progress
        keeps the snapshot it started with)."""
        self.settings = settings

    def admit(self, now_s: float) -> bool:
        """Whether the frame arriving now (monotonic seconds) is processed: every
        SegEveryConfig.every_n-th frame, at most SegEveryConfig.max_rate_hz per second (0 = no limit)."""
        cfg = self.settings.segevery
        self._frames_seen += 1
        if self._frames_seen % cfg.every_n:
            return False
        if cfg.max_rate_hz > 0 and now_s - self._last_admitted < 1.0 / cfg.max_rate_hz:
            return False
        self._last_admitted = now_s
        return True

    @property
    def cached_frames(self) -> int:
        return len(self.predictor.cache)

    # ------------------------------------------------------------------ frames
    def step(self, image: np.ndarray, stamp_ns: int, meta: Any = None) -> FrameResult:
        """Encode an (H, W, 3) uint8 RGB frame once (cached under stamp_ns with `meta`), then, by
        mode: SegEvery (detector or grid boxes, decode, filter, track) and the followed objects."""
        s = self.settings
        frame = self.predictor.set_image(image, stamp_ns, meta)
        inst = tracks = None
        if s.node.mode in ("segevery", "both"):
            inst = filter_instances(self._segment_every(frame), s.filters)
            tracks = self._track(inst)
        return FrameResult(frame, inst, tracks, self._follow_step(frame, inst))

    def _segment_every(self, frame: CachedFrame) -> Instances:
        det = self.model.detect(frame.image, self.settings.detector.conf, self.settings.detector.iou)
        if det is not None:
            det = self._keep_classes(det)  # before decoding: a filtered box costs no decoder time
            return decode_boxes(self.predictor, det.boxes, frame, det.class_ids, det.scores)
        if self._amg is None:
            from mobilesam_ros.core.engine.amg import AutomaticMaskGenerator

            self._amg = AutomaticMaskGenerator(self.predictor, points_per_side=self.model.grid_points_per_side)
        return self._amg.generate(frame.image, frame.stamp_ns, frame=frame).instances

    def _keep_classes(self, det: Detections) -> Detections:
        """The boxes of the classes DetectorConfig.classes names (all when it is empty). Labels
        naming no class of the model's table select nothing: one warning per new filter value."""
        classes = self.settings.detector.classes
        if not classes:
            return det
        if classes != self._filter_key:
            self._filter_ids, unknown = self.model.class_names.ids_of(classes)
            self._filter_key = classes
            if unknown:
                _log.warning(f"{self.name + ' ' if self.name else ''}{setting_name(DetectorConfig, 'classes')}: "
                             f"{unknown} name no class of the detector ({len(self.model.class_names)} "
                             f"names known); they select nothing")
        return det.select(np.isin(det.class_ids, list(self._filter_ids)))

    def _track(self, inst: Instances) -> Optional[TrackAssignment]:
        s = self.settings
        if not s.node.tracking_enabled:
            self._tracker.reset()  # switched back on later: no motion or ages across the pause
            return None
        if s.tracker != self._tracker.config:
            self._tracker.set_config(s.tracker)
        return self._tracker.update(inst, inst.frame.stamp_ns)

    def _follow_step(self, frame: CachedFrame, segevery: Optional[Instances]) -> Optional[Followed]:
        with self._lock:
            if not len(self._follow):
                return None
            self._follow.config = self.settings.follow
            res = follow_step(self.predictor, self._follow, frame)
            lost = [self._follow.get(i) for i in res.lost]
            again = self._follow.reacquire(segevery) if segevery is not None and lost else []
        return Followed(*_followed_instances(res, lost, frame), again, res.dropped, res.rewound, res.rewound_from_ns)

    # ------------------------------------------------------------------ prompts
    def resolve(self, stamp_ns: Optional[int], tolerance_ns: int, latest_if_missing: bool = False) -> CachedFrame:
        """The cached frame a prompt stamped stamp_ns refers to (nearest within tolerance_ns; None:
        the latest). latest_if_missing: no frame near the stamp -> the latest (RViz clicks carry
        the click time, not an image stamp). FrameNotCachedError when there is none."""
        try:
            return self.predictor.frame(stamp_ns, tolerance_ns)
        except FrameNotCachedError:
            if not latest_if_missing:
                raise
            return self.predictor.frame(None)

    def answer(self, prompts: Sequence[ObjectPrompt], frame: CachedFrame, ids: Sequence[int],
               follow: Sequence[bool] = (), check: Optional[Callable[[int, int], None]] = None,
               labels: Optional[Sequence[ObjectLabel]] = None) -> PromptResult:
        """One instance per prompt object, decoded on `frame` under the time/abandon `check`
        (called between decoder chunks; it may raise). Objects flagged in `follow` are followed
        from then on, with their `labels` (per object; default: nothing known):
        FollowConfig.max_objects applies first (`FollowSet.admit`), and the admitted ones start
        from this very decode (their low-res logits are kept), so following costs no second
        decode and no time beyond the answer's."""
        ids = [int(i) for i in ids]
        wanted = [k for k, f in enumerate(follow) if f]
        with self._lock:
            self._follow.config = self.settings.follow
            admitted = self._follow.admit([ids[k] for k in wanted])
        take = [k for k, ok in zip(wanted, admitted) if ok]
        refused = [ids[k] for k, ok in zip(wanted, admitted) if not ok]
        ans = decode_prompts(self.predictor, prompts, frame, check=check, keep_logits=take)
        inst = ans.instances
        if take:
            boxes = inst.boxes[take] + np.array([0, 0, 1, 1], np.float32)  # SAM's x2/y2 inside -> one past
            with self._lock:
                refused += self._follow.start([ids[k] for k in take], [ans.low_res[k] for k in take], boxes,
                                              inst.areas[take], frame.stamp_ns,
                                              None if labels is None else [labels[k] for k in take])
        return PromptResult(inst, ids, refused)

    # ------------------------------------------------------------------ followed objects
    def remove_followed(self, ids: Sequence[int]) -> list:
        """Stop following `ids`; returns those that were followed."""
        with self._lock:
            return self._follow.remove(ids)

    def match_followed(self, boxes: np.ndarray, min_iou: float) -> list:
        """For each (N, 4) xyxy box (px, x2/y2 one past the last pixel, as the followed objects'
        boxes), the id of the followed object whose last good box
        overlaps it most with box IoU >= min_iou, else None; each followed object matches at most
        one box (the best-overlapping first), so two detections never update one object."""
        with self._lock:
            objs = [self._follow.get(i) for i in self._follow.ids]
        out: list = [None] * len(boxes)
        if not objs or not len(boxes):
            return out
        past = np.array([0, 0, 1, 1], np.float32)  # box_iou_matrix counts x2/y2 in: one past -> last
        iou = box_iou_matrix(np.asarray(boxes, np.float32) - past, np.stack([o.box for o in objs]) - past)
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            k, j = divmod(int(flat), len(objs))
            if iou[k, j] < min_iou:
                break
            if out[k] is None and objs[j].id not in out:
                out[k] = objs[j].id
        return out

    @property
    def followed_ids(self) -> list:
        with self._lock:
            return self._follow.ids

    def clear(self) -> None:
        """Forget the cached frames, tracks and followed objects (the model is being released)."""
        with self._lock:
            self._follow.remove(self._follow.ids)
        self._tracker.reset()
        self.predictor.cache.clear()
        self._amg = None


def _followed_instances(res: FollowResult, lost: list, frame: CachedFrame
                        ) -> tuple[Instances, TrackAssignment, list]:
    """Good followed masks, then the lost objects with empty masks (consumers see them go), with
    their labels' class ids and scores; their track fields (lost = COASTING, the message's
    TRACK_LOST); their labels."""
    h, w = frame.original_size
    inst = Instances.concatenate([res.instances, Instances.from_masks(
        np.zeros((len(lost), h, w), bool), np.zeros(len(lost), np.float32)).pack_bits()])
    labels = res.labels + [o.label for o in lost]
    first = np.array(res.first_seen_ns + [o.first_ns for o in lost], np.int64)
    tracks = TrackAssignment(ids=np.array(res.ids + [o.id for o in lost], np.uint32),
                             states=np.array([TRACK_CONFIRMED] * len(res.ids) + [TRACK_COASTING] * len(lost), np.uint8),
                             hits=np.array(res.hits + [o.hits for o in lost], np.uint32),
                             first_seen_ns=first, age_s=(frame.stamp_ns - first) * 1e-9)
    return replace(inst, frame=frame, class_ids=np.array([lb.class_id for lb in labels], np.int32).reshape(-1),
                   det_scores=np.array([lb.score for lb in labels], np.float32).reshape(-1)), tracks, labels
