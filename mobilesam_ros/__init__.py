"""mobilesam_ros: MobileSAM / MobileSAMv2 segmentation for ROS 2.

`mobilesam_ros.core` is ROS-free (numpy, torch, onnxruntime); `mobilesam_ros.ros` is the thin rclpy
adapter; `mobilesam_ros.msg` is generated from `msg/` by the colcon build.
"""

__version__ = "0.1.0"
