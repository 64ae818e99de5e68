"""The RViz config for a launched node: the bundled rviz/mobilesam.rviz (written for a node named
`mobilesam` with one unnamed camera) pointed at another node name and at the first named camera.

No rclpy: the launch file calls it (launch argument `rviz:=true`) before anything runs.
"""
from __future__ import annotations

import os
import tempfile
from typing import Sequence

import yaml

from mobilesam_ros.core.io.atomic import atomic_write_text

TEMPLATE_NODE = "mobilesam"  # the node name rviz/mobilesam.rviz is written for

__all__ = ["parse_cameras", "rviz_config", "rviz_config_path", "write_rviz_config"]


def parse_cameras(text: str) -> list[str]:
    """The `cameras` launch argument as a list: "[front, rear]" -> ["front", "rear"]; "" or "[]"
    -> []. Raises ValueError for anything but a list of names (the node checks the names)."""
    value = yaml.safe_load(text) if text.strip() else []
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"cameras:={text!r}: expected a list of names, e.g. \"[front, rear]\"")
    return value


def rviz_config(template: str, node_name: str = TEMPLATE_NODE, cameras: Sequence[str] = ()) -> str:
    """`template` (the text of rviz/mobilesam.rviz) with its displays on node `node_name`'s outputs
    of the first camera (`/<node>/<camera>/overlay`, ...; `/<node>/overlay` with no named camera)
    and its Publish Point tool on that camera's `clicked_point` input."""
    first = f"{cameras[0]}/" if cameras else ""
    text = template.replace(f"Value: /{TEMPLATE_NODE}/", f"Value: /{node_name}/{first}")
    return text.replace("Value: /clicked_point", f"Value: /{first}clicked_point")


def rviz_config_path(node_name: str) -> str:
    """Where `write_rviz_config` writes node_name's config: one file per node name and user in
    the temporary directory, replaced by each launch (a file per launch would pile up)."""
    folder = os.path.join(tempfile.gettempdir(), f"mobilesam_ros-{os.getuid()}")
    return os.path.join(folder, f"{node_name}.rviz")


def write_rviz_config(template_path: str, node_name: str, cameras: Sequence[str]) -> str:
    """Write `rviz_config` of the file at template_path to `rviz_config_path(node_name)`; returns
    that path (rviz2 -d <path>). Replaced whole (`atomic_write_text`): an RViz of another launch
    reading it meanwhile sees the old config or the new one, never half of one."""
    with open(template_path) as f:
        text = rviz_config(f.read(), node_name, cameras)
    path = rviz_config_path(node_name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write_text(path, text)
    return path
