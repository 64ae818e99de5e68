"""Test helper process: subscribe to `in` and republish every message unchanged on `out`.

Usage: python echo_node.py <package>.msg/<Type> [<package>.msg/<Type> ...]
For each type T it echoes `in_<T>` -> `out_<T>` (reliable, depth 10).
"""
import importlib
import sys

import rclpy
from rclpy.executors import ExternalShutdownException


def _load(spec: str):
    module, name = spec.split("/")
    return getattr(importlib.import_module(module), name)


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("echo")
    keep = []
    for spec in sys.argv[1:]:
        msg_type = _load(spec)
        pub = node.create_publisher(msg_type, f"out_{msg_type.__name__}", 10)
        keep.append(node.create_subscription(msg_type, f"in_{msg_type.__name__}", pub.publish, 10))
    node.get_logger().info("echo ready")
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
