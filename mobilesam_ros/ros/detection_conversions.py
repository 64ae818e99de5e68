"""vision_msgs <-> the node's own terms: Detection2DArray in -> SegAny prompt objects; the node's
InstanceMaskArray / Instance3DArray out -> Detection2DArray / Detection3DArray.

No vision_msgs import at module level (the node runs without the package: ros/vision_msgs_port.py
decides); the message classes are imported where a message is built. Pixel frame of every 2D box:
the colour image's, x = column, y = row, continuous coordinates (pixel k spans [k, k + 1)), so a
box's centre is x_offset + width / 2 of the mask's RegionOfInterest.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from mobilesam_ros.core.config import DetectionsConfig, SegAnyConfig
from mobilesam_ros.core.engine.class_names import ClassNames
from mobilesam_ros.core.engine.follow import ObjectLabel
from mobilesam_ros.core.structures.prompts import PromptError, make_prompt

__all__ = ["DetectionPrompts", "serialized_count", "check_detections_size", "detection_boxes", "detections_to_prompts",
           "hypothesis_of", "hypotheses_of", "instance_hypothesis", "instances_to_detections",
           "instances3d_to_detections"]


@dataclass(frozen=True)
class DetectionPrompts:
    """A Detection2DArray as core prompts, in message order: `prompts` (ObjectPrompt), `boxes`
    (N, 4) float32 xyxy px of the detections (clipped to the image), and per detection its string
    `detection_ids`, `class_ids` (int, -1 = none / not in the table), `class_names` and `scores`
    (the best hypothesis' score, 0 without one)."""

    prompts: list
    boxes: np.ndarray
    detection_ids: list
    class_ids: list
    class_names: list
    scores: list

    def object_labels(self) -> list[ObjectLabel]:
        """Per detection what it says it is, kept by the objects it starts following."""
        return [ObjectLabel(int(c), n, d, float(s)) for c, n, d, s in
                zip(self.class_ids, self.class_names, self.detection_ids, self.scores)]


def serialized_count(raw: bytes) -> Optional[int]:
    """The number of detections in a serialized (CDR) Detection2DArray, read from its bytes without
    deserializing it (a 10,000-detection array costs rclpy ~10^5 Python objects; this costs
    nothing), or None when the bytes are too short to tell. Layout after the 4-byte encapsulation
    header (byte 1: 1 = little endian): Header = int32 sec, uint32 nanosec, string frame_id (uint32
    length incl. its NUL, the bytes), then the detections' uint32 sequence length, aligned to 4."""
    if len(raw) < 16:
        return None
    order = "<" if raw[1] & 1 else ">"
    (n_frame,) = struct.unpack_from(order + "I", raw, 12)
    at = 16 + n_frame
    at += (-(at - 4)) % 4  # CDR aligns relative to the end of the encapsulation header
    if at + 4 > len(raw):
        return None
    return struct.unpack_from(order + "I", raw, at)[0]


def check_detections_size(msg, limits: SegAnyConfig) -> None:
    """Refuse an array over segany.max_objects before its frame is even looked up (as a Prompt)."""
    if len(msg.detections) > limits.max_objects:
        raise PromptError(f"{len(msg.detections)} detections, over the limit of {limits.max_objects} "
                          f"(segany.max_objects)")


def detection_boxes(msg) -> np.ndarray:
    """(N, 4) float64 xyxy px of the detections' BoundingBox2D (centre +- size / 2; the rotation
    theta is ignored: SAM takes axis-aligned boxes). PromptError naming the first detection with a
    non-finite centre or size, or a negative size."""
    out = np.empty((len(msg.detections), 4), np.float64)
    for k, d in enumerate(msg.detections):
        b = d.bbox
        cx, cy, w, h = b.center.position.x, b.center.position.y, b.size_x, b.size_y
        if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w < 0 or h < 0:
            raise PromptError(f"detection {k} (id {d.id!r}): bbox centre ({cx}, {cy}) size {w} x {h} is "
                              f"not a box (NaN, inf or a negative size)")
        out[k] = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    return out


def hypothesis_of(det, names: ClassNames) -> tuple[int, str, float]:
    """(class id, class name, score) of a Detection2D's best-scoring hypothesis (the first on a
    tie); (-1, "", 0.0) without one. ClassNames.resolve maps its class_id string."""
    if not len(det.results):
        return -1, "", 0.0
    best = max(det.results, key=lambda r: r.hypothesis.score if math.isfinite(r.hypothesis.score) else -math.inf)
    k, name = names.resolve(best.hypothesis.class_id)
    score = float(best.hypothesis.score)
    return k, name, score if math.isfinite(score) else 0.0


def detections_to_prompts(msg, image_size: tuple[int, int], limits: SegAnyConfig, cfg: DetectionsConfig,
                          names: ClassNames) -> DetectionPrompts:
    """vision_msgs/Detection2DArray -> one prompt per detection for a frame of (H, W) = image_size:
    its box (cfg.prompt "box"), or its box centre as one positive point with SAM's three
    candidates, the best by predicted IoU kept (cfg.prompt "point"). PromptError (the whole array
    is skipped, as a Prompt) for an array over segany.max_objects, a detection that is not a box,
    or one outside the image."""
    check_detections_size(msg, limits)
    boxes = detection_boxes(msg)
    prompts, clipped, det_ids, class_ids, class_names, scores = [], [], [], [], [], []
    for k, (d, box) in enumerate(zip(msg.detections, boxes)):
        try:
            if cfg.prompt == "point":
                centre = [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]
                p = make_prompt(points=centre, labels=[1], multimask=True, image_size=image_size)
                h, w = image_size
                clipped.append(np.clip(box, 0, [w, h, w, h]))
            else:
                p = make_prompt(box=box, image_size=image_size)
                clipped.append(p.box)
        except PromptError as exc:
            raise PromptError(f"detection {k} (id {d.id!r}): {exc}") from exc
        prompts.append(p)
        c, name, score = hypothesis_of(d, names)
        det_ids.append(str(d.id))
        class_ids.append(c)
        class_names.append(name)
        scores.append(score)
    return DetectionPrompts(prompts, np.asarray(clipped, np.float32).reshape(-1, 4), det_ids, class_ids,
                            class_names, scores)


def _hypothesis(class_name: str, class_id: int, score: float):
    from vision_msgs.msg import ObjectHypothesis, ObjectHypothesisWithPose

    label = class_name or (str(class_id) if class_id >= 0 else "")
    return ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=label, score=float(score)))


def instance_hypothesis(m) -> tuple[str, int, float]:
    """(class name, class id, score) an InstanceMask is published with: the score is the
    detector's confidence when a detector box or detection prompted it (detection_score > 0),
    else SAM's predicted IoU of the mask."""
    score = m.detection_score if m.detection_score > 0 else m.score
    return m.class_name, int(m.class_id), float(score)


def instances_to_detections(arr) -> object:
    """An InstanceMaskArray (the node's ~/instances or ~/followed message) -> Detection2DArray with
    its header: per instance with a mask (lost followed objects have none and are left out), the
    mask's box (its RegionOfInterest: centre x_offset + width / 2, size width x height, theta 0),
    one hypothesis (class_id: the class name, else the class id as a number, else ""; score:
    instance_hypothesis) and id = the instance id as a decimal string."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, Point2D, Pose2D

    out = Detection2DArray(header=arr.header)
    for m in arr.instances:
        r = m.bbox
        if r.width == 0 or r.height == 0:
            continue
        centre = Pose2D(position=Point2D(x=r.x_offset + r.width / 2.0, y=r.y_offset + r.height / 2.0), theta=0.0)
        out.detections.append(Detection2D(
            header=arr.header, results=[_hypothesis(*instance_hypothesis(m))],
            bbox=BoundingBox2D(center=centre, size_x=float(r.width), size_y=float(r.height)), id=str(m.id)))
    return out


def instances3d_to_detections(arr3d, hypotheses: Mapping[int, tuple]) -> object:
    """An Instance3DArray (~/instances_3d) -> Detection3DArray with its header (the camera optical
    frame): per instance its 3D box (BoundingBox3D centre = Instance3D.box_center, identity
    orientation: the box is axis-aligned in the optical frame; size = Instance3D.size, metres), the
    same id as a decimal string, and the 2D instance's hypothesis (`hypotheses`: {id: (class name,
    class id, score)}, instance_hypothesis; an id missing there gets none)."""
    from geometry_msgs.msg import Pose
    from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray

    out = Detection3DArray(header=arr3d.header)
    for m in arr3d.instances:
        pose = Pose()
        pose.position = m.box_center
        pose.orientation.w = 1.0
        hyp = hypotheses.get(int(m.id))
        out.detections.append(Detection3D(
            header=arr3d.header, results=[_hypothesis(*hyp)] if hyp else [],
            bbox=BoundingBox3D(center=pose, size=m.size), id=str(m.id)))
    return out


def hypotheses_of(arr) -> dict:
    """{instance id: instance_hypothesis} of an InstanceMaskArray (for its 3D detections)."""
    return {int(m.id): instance_hypothesis(m) for m in arr.instances}
