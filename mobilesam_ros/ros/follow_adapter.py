"""SegAny click-to-track in the node: the `follow.*` parameters, ~/followed and ~/remove_objects
around core.engine.follow.FollowSet.

Objects start from a Prompt whose PromptObject has `follow` set (or from an RViz click with
follow.clicks), after their normal answer. On every newly encoded frame (modes segany and both) all
followed objects are re-prompted in one batched decode and published on ~/followed
(InstanceMaskArray, mode segany, ids = the objects' ids, track fields filled). The worker thread
steps and adds; the ~/remove_objects service runs on the executor: a lock keeps them apart.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

import numpy as np

from mobilesam_ros.core.config import FollowConfig
from mobilesam_ros.core.engine.follow import FollowSet, follow_step
from mobilesam_ros.core.structures.prompts import ObjectPrompt
from mobilesam_ros.core.structures.frame import CachedFrame
from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.engine.tracking import TRACK_COASTING, TRACK_CONFIRMED, TrackAssignment
from mobilesam_ros.msg import InstanceMaskArray
from mobilesam_ros.ros import params as P
from mobilesam_ros.ros.messages import instances_to_msg

CLICK_ID_BASE = 1 << 31  # click-started objects get ids from here up: clear of prompt ids in use


class FollowAdapter:
    def __init__(self, node, warn: Callable[[str, str], None]) -> None:
        from mobilesam_ros.srv import RemoveObjects

        self._node, self._warn = node, warn
        self._set = FollowSet(self._config())
        self._lock = threading.Lock()
        self._next_click_id = CLICK_ID_BASE
        self._srv = node.create_service(RemoveObjects, "~/remove_objects", self._on_remove)

    def _config(self) -> FollowConfig:
        return P.build(FollowConfig, P.node_values(self._node))

    def answer_ids(self, kind: str, ids: Sequence[int]) -> list[int]:
        """Ids to answer a prompt with: a click followed under follow.clicks gets a fresh id (the
        one it will be followed under); everything else keeps its ids."""
        if kind == "click" and self._node.get_parameter("follow.clicks").value:
            self._next_click_id += 1
            return [self._next_click_id - 1]
        return [int(i) for i in ids]

    def add(self, pipeline, kind: str, msg, stamp_ns: int, objects: Sequence[ObjectPrompt],
            ids: Sequence[int], answer: Instances, check: Optional[Callable[[int, int], None]] = None) -> None:
        """Start following the objects of an answered prompt that asked for it. follow.max_objects
        applies first: only the objects that will be followed are decoded again, for their low-res
        logits (their boxes and areas are the `answer`'s, in `objects` order), under the answer's
        `check` (segany.max_batch_s, shutdown): it raises Abandoned and nothing starts."""
        if kind == "click":
            flags = [bool(self._node.get_parameter("follow.clicks").value)] * len(objects)
        else:
            flags = [bool(o.follow) for o in msg.objects]
        chosen = [k for k, f in enumerate(flags) if f]
        if not chosen:
            return
        with self._lock:
            self._set.config = self._config()
            admitted = self._set.admit([ids[k] for k in chosen])
        over = [int(ids[k]) for k, ok in zip(chosen, admitted) if not ok]
        take = [k for k, ok in zip(chosen, admitted) if ok]
        refused = []
        if take:
            # the answer's Instances hold no low-res logits: decode the followed objects once more
            # (single best candidate, no full-size masks)
            preds = pipeline.predictor.predict_batch([objects[k] for k in take], stamp_ns, return_masks=False,
                                                     check=check)
            boxes = answer.boxes[take] + np.array([0, 0, 1, 1], np.float32)  # SAM's x2/y2 inside -> past
            with self._lock:
                refused = self._set.start([ids[k] for k in take], [p.low_res_logits for p in preds], boxes,
                                          answer.areas[take], stamp_ns)
        if over or refused:
            self._warn("follow_refused", f"not following ids {over + refused}: "
                       + (f"follow.max_objects = {self._set.config.max_objects} reached" if over else "")
                       + (" and " if over and refused else "") + ("empty mask" if refused else ""))

    def step(self, pipeline, frame: CachedFrame, publisher,
             segevery: Optional[Instances] = None) -> Optional[tuple[Instances, list[int]]]:
        """Re-prompt every followed object on `frame` (just encoded; its meta is the image's
        Header) and publish them; lost ones may be re-acquired from this frame's SegEvery
        instances (mode both). Returns the found objects' (instances, ids) as published (for
        their 3D), None when nothing was published."""
        stamp_ns, header = frame.stamp_ns, frame.meta
        with self._lock:
            if not len(self._set):
                return None
            self._set.config = self._config()
            res = follow_step(pipeline.predictor, self._set, stamp_ns)
            lost = [self._set.get(i) for i in res.lost]
            again = self._set.reacquire(segevery) if segevery is not None and lost else []
        if again:
            self._node.get_logger().info(f"re-acquired followed ids {again} from SegEvery instances",
                                         throttle_duration_sec=5.0)
        if res.rewound:
            self._node.get_logger().warning(
                f"stamps went back from {res.rewound_from_ns * 1e-9:.3f} s to {stamp_ns * 1e-9:.3f} s (a looping "
                f"bag, a simulator reset?): stopped following ids {res.rewound}")
        if res.dropped:
            self._node.get_logger().info(f"stopped following ids {res.dropped}: no good mask for "
                                         f"{self._set.config.lost_timeout_s} s")
        if publisher is None:
            return None
        # lost objects are published too, flagged, with empty masks: consumers see them go
        h, w = res.instances.image_hw
        inst = Instances.concatenate([res.instances, Instances.from_masks(
            np.zeros((len(lost), h, w), bool), np.zeros(len(lost), np.float32)).pack_bits()])
        ids = res.ids + [o.id for o in lost]
        first = np.array(res.first_seen_ns + [o.first_ns for o in lost], np.int64)
        states = [TRACK_CONFIRMED] * len(res.ids) + [TRACK_COASTING] * len(lost)  # = msg TRACK_LOST
        tracks = TrackAssignment(ids=np.array(ids, np.uint32), states=np.array(states, np.uint8),
                                 hits=np.array(res.hits + [o.hits for o in lost], np.uint32),
                                 first_seen_ns=first, age_s=(stamp_ns - first) * 1e-9)
        publisher.publish(instances_to_msg(inst, header, InstanceMaskArray.MODE_SEGANY, ids, tracks))
        return res.instances, list(res.ids)

    def _on_remove(self, request, response):
        with self._lock:
            response.removed = self._set.remove(list(request.ids))
        return response

    @property
    def followed_ids(self) -> list[int]:
        with self._lock:
            return self._set.ids

    def clear(self) -> Optional[list[int]]:
        """Forget every followed object (their frames are gone with the model)."""
        with self._lock:
            return self._set.remove(self._set.ids)
