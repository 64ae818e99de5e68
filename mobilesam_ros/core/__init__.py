"""ROS-free core: models, checkpoints, predictor (SegAny), SegEvery, backends. Never imports rclpy."""
