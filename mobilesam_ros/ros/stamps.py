"""ROS stamps <-> the core's integer nanoseconds (the key of every stamp-matched buffer)."""
from __future__ import annotations

__all__ = ["stamp_to_ns", "header_ns"]


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """A ROS (sec, nanosec) stamp as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def header_ns(header) -> int:
    """A std_msgs/Header's stamp as integer nanoseconds."""
    return stamp_to_ns(header.stamp.sec, header.stamp.nanosec)
