"""Prompt messages -> validated core ObjectPrompts against the frame they refer to."""
from __future__ import annotations

import numpy as np

from mobilesam_ros.core.engine.embedding_cache import FrameNotCachedError, stamp_to_ns
from mobilesam_ros.core.structures.prompts import ObjectPrompt, PromptError, make_prompt
from mobilesam_ros.core.io.image_codec import MASK_ENCODINGS, ImageMessageError, image_msg_to_array


def _mask_input(img) -> np.ndarray | None:
    if img.width == 0 and img.height == 0:
        return None
    if img.encoding != "32FC1" or (img.height, img.width) != (256, 256):
        raise PromptError(f"mask_input must be a 32FC1 256x256 image, got {img.encoding} {img.width}x{img.height}")
    try:
        return image_msg_to_array(img, encodings=MASK_ENCODINGS).reshape(1, 256, 256)
    except ImageMessageError as exc:
        raise PromptError(f"mask_input: {exc}") from exc


def prompt_msg_to_prompts(msg, pipeline, tolerance_ns: int, max_objects: int = 65535,
                          max_points: int = 4096) -> tuple[int, list[ObjectPrompt], list[int]]:
    """mobilesam_ros/Prompt -> (stamp_ns of the cached frame, prompts, ids).

    Raises FrameNotCachedError when no cached frame is near the prompt's stamp, PromptError naming
    the offending object for any invalid object or a message over max_objects / an object over
    max_points (the whole message is skipped: partial answers would silently drop objects).
    """
    if len(msg.objects) > max_objects:
        raise PromptError(f"{len(msg.objects)} objects, over the limit of {max_objects} (segany.max_objects)")
    stamp = pipeline.nearest_stamp(stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), tolerance_ns)
    size = pipeline.frame_size(stamp)
    prompts, ids = [], []
    for k, obj in enumerate(msg.objects):
        if len(obj.points) > max_points:
            raise PromptError(f"object {k} (id {obj.id}): {len(obj.points)} points, over the limit of "
                              f"{max_points} (segany.max_points)")
        try:
            pts = np.array([[p.x, p.y] for p in obj.points], np.float64).reshape(-1, 2)
            prompts.append(make_prompt(
                points=pts if len(pts) else None, labels=list(obj.labels) if len(obj.labels) else None,
                box=np.asarray(obj.box, np.float32) if obj.has_box else None,
                mask_input=_mask_input(obj.mask_input), multimask=obj.multimask, image_size=size))
        except PromptError as exc:
            raise PromptError(f"object {k} (id {obj.id}): {exc}") from exc
        ids.append(int(obj.id))
    return stamp, prompts, ids


def click_to_prompts(msg, pipeline, tolerance_ns: int) -> tuple[int, list[ObjectPrompt], list[int]]:
    """geometry_msgs/PointStamped (x, y = pixel column, row) -> one positive-point prompt, id 1.

    RViz stamps clicks with the current time, not an image stamp, so a click whose stamp matches no
    cached frame goes to the latest frame instead of being refused.
    """
    stamp_ns = stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
    try:
        stamp = pipeline.nearest_stamp(stamp_ns if stamp_ns else None, tolerance_ns)
    except FrameNotCachedError:
        stamp = pipeline.nearest_stamp(None, 0)
    p = make_prompt(points=[[msg.point.x, msg.point.y]], labels=[1], multimask=True, image_size=pipeline.frame_size(stamp))
    return stamp, [p], [1]
