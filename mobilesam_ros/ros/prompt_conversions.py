"""Prompt messages -> validated core ObjectPrompts for the frame they were resolved to.

The frame is resolved once, by the camera port (`CameraStream.resolve`); these functions only
convert and validate against its size."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilesam_ros.core.config import SegAnyConfig
from mobilesam_ros.core.io.image_codec import MASK_ENCODINGS, ImageMessageError, image_msg_to_array
from mobilesam_ros.core.structures.prompts import ObjectPrompt, PromptError, make_prompt

__all__ = ["PromptObjects", "check_prompt_size", "prompt_msg_to_prompts", "click_to_prompts"]


@dataclass(frozen=True)
class PromptObjects:
    """A prompt message as core prompts, in message order: ids (uint32 PromptObject ids) and
    follow (the objects asking to be followed)."""

    prompts: list
    ids: list
    follow: list


def _mask_input(img) -> np.ndarray | None:
    if img.width == 0 and img.height == 0:
        return None
    if img.encoding != "32FC1" or (img.height, img.width) != (256, 256):
        raise PromptError(f"mask_input must be a 32FC1 256x256 image, got {img.encoding} {img.width}x{img.height}")
    try:
        return image_msg_to_array(img, encodings=MASK_ENCODINGS).reshape(1, 256, 256)
    except ImageMessageError as exc:
        raise PromptError(f"mask_input: {exc}") from exc


def check_prompt_size(msg, limits: SegAnyConfig) -> None:
    """Refuse a Prompt over segany.max_objects before its frame is even looked up."""
    if len(msg.objects) > limits.max_objects:
        raise PromptError(f"{len(msg.objects)} objects, over the limit of {limits.max_objects} (segany.max_objects)")


def prompt_msg_to_prompts(msg, image_size: tuple[int, int], limits: SegAnyConfig) -> PromptObjects:
    """mobilesam_ros/Prompt -> PromptObjects for a frame of (H, W) = image_size px.

    Raises PromptError naming the offending object for any invalid object, a message over
    segany.max_objects or an object over segany.max_points (the whole message is skipped: partial
    answers would silently drop objects).
    """
    check_prompt_size(msg, limits)
    prompts, ids, follow = [], [], []
    for k, obj in enumerate(msg.objects):
        if len(obj.points) > limits.max_points:
            raise PromptError(f"object {k} (id {obj.id}): {len(obj.points)} points, over the limit of "
                              f"{limits.max_points} (segany.max_points)")
        try:
            pts = np.array([[p.x, p.y] for p in obj.points], np.float64).reshape(-1, 2)
            prompts.append(make_prompt(
                points=pts if len(pts) else None, labels=list(obj.labels) if len(obj.labels) else None,
                box=np.asarray(obj.box, np.float32) if obj.has_box else None,
                mask_input=_mask_input(obj.mask_input), multimask=obj.multimask, image_size=image_size))
        except PromptError as exc:
            raise PromptError(f"object {k} (id {obj.id}): {exc}") from exc
        ids.append(int(obj.id))
        follow.append(bool(obj.follow))
    return PromptObjects(prompts, ids, follow)


def click_to_prompts(msg, image_size: tuple[int, int], object_id: int, follow: bool) -> PromptObjects:
    """geometry_msgs/PointStamped (x, y = pixel column, row) -> one positive-point, multimask
    prompt under `object_id`, followed when `follow`."""
    p = make_prompt(points=[[msg.point.x, msg.point.y]], labels=[1], multimask=True, image_size=image_size)
    return PromptObjects([p], [int(object_id)], [bool(follow)])
