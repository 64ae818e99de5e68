"""Command-line subcommands of `python -m mobilesam_ros` (ROS-free)."""
