"""The RViz config for a launched node: the bundled rviz/mobilesam.rviz (written for a node named
`mobilesam` with one unnamed camera) pointed at another node name and at the first named camera.

No rclpy: the launch file calls it (launch argument `rviz:=true`) before anything runs.
"""
from __future__ import annotations

import os
import tempfile
from typing import Sequence

import yaml

TEMPLATE_NODE = "mobilesam"  # the node name rviz/mobilesam.rviz is written for

__all__ = ["parse_cameras", "rviz_config", "write_rviz_config"]


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


def write_rviz_config(template_path: str, node_name: str, cameras: Sequence[str]) -> str:
    """Write `rviz_config` of the file at template_path to a new temporary file; returns its path
    (rviz2 -d <path>)."""
    with open(template_path) as f:
        text = rviz_config(f.read(), node_name, cameras)
    fd, path = tempfile.mkstemp(prefix=f"{node_name}_", suffix=".rviz")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
