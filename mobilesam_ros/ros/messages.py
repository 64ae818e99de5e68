"""core Instances -> the package's ROS messages (instance array, label image, overlay).

All outputs copy the source image's header (stamp and frame_id): never now().
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, RegionOfInterest

from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.engine.tracking import TrackAssignment
from mobilesam_ros.core.ops.overlay import draw_overlay
from mobilesam_ros.msg import InstanceMask, InstanceMaskArray
from mobilesam_ros.core.io.image_codec import fill_image_msg


def array_to_image_msg(arr: np.ndarray, encoding: str, header) -> Image:
    """(H, W[, C]) array -> sensor_msgs/Image with `encoding` (core/io/image_codec.py encodes) and
    a copy of `header`."""
    return fill_image_msg(Image(header=header), arr, encoding)


def label_image(inst: Instances) -> np.ndarray:
    """(H, W) uint16: pixel = k + 1 for the instance k (its index in the InstanceMaskArray) covering
    it (best score on overlap), 0 = none. Indices, not ids: ids are any uint32 and would wrap in 16
    bits; the array message maps index -> id. At most 65535 instances (segany.max_objects)."""
    return inst.to_label_image(np.uint16)


def instances_to_msg(inst: Instances, header, mode: str, ids: Optional[Sequence[int]] = None,
                     tracks: Optional[TrackAssignment] = None, class_names: Optional[Sequence[str]] = None,
                     detection_ids: Optional[Sequence[str]] = None) -> InstanceMaskArray:
    """Instances -> InstanceMaskArray; ids default to 1..N (SegEvery), SegAny passes prompt ids.
    tracks: SegEvery tracks of the instances (fills track_state, track_hits, first_seen,
    track_age; ids should then be tracks.ids); None leaves them TRACK_NONE / 0.
    class_names, detection_ids: per instance (InstanceMask.class_name / detection_id); None = ""."""
    ids = list(range(1, len(inst) + 1)) if ids is None else [int(i) for i in ids]
    h, w = inst.image_hw
    out = InstanceMaskArray(header=header, image_width=int(w), image_height=int(h), mode=mode)
    for i, (x0, y0, crop) in enumerate(inst.crops()):
        crop8 = crop.astype(np.uint8) * 255
        det = float(inst.det_scores[i])
        out.instances.append(InstanceMask(
            id=ids[i], score=float(inst.scores[i]),
            stability_score=float(np.nan_to_num(inst.stability[i], nan=0.0)),
            area=int(inst.areas[i]), class_id=int(inst.class_ids[i]),
            detection_score=0.0 if np.isnan(det) else det,
            bbox=RegionOfInterest(x_offset=x0, y_offset=y0, height=int(crop.shape[0]),
                                  width=int(crop.shape[1]), do_rectify=False),
            mask=array_to_image_msg(crop8.reshape(crop.shape), "mono8", header),
            class_name=class_names[i] if class_names is not None else "",
            detection_id=detection_ids[i] if detection_ids is not None else ""))
    if tracks is not None:
        for m, state, hits, first, age in zip(out.instances, tracks.states, tracks.hits,
                                              tracks.first_seen_ns, tracks.age_s):
            m.track_state, m.track_hits, m.track_age = int(state), int(hits), float(age)
            m.first_seen = Time(sec=int(first) // 1_000_000_000, nanosec=int(first) % 1_000_000_000)
    return out


def overlay_image(image: np.ndarray, inst: Instances, labels: np.ndarray, ids: Sequence[int],
                  alpha: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB overlay: masks coloured by id (stable across frames), boxes, ids, scores.
    labels: the index label image of `label_image`."""
    by_id = np.concatenate([[0], np.asarray(ids, np.int64)])[labels]
    return draw_overlay(image, by_id, inst.boxes, ids, inst.scores, alpha)
