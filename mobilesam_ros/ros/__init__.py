"""The rclpy adapter: lifecycle node, conversions between ROS messages and core arrays."""
