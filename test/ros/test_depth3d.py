"""3D is off unless `depth.enabled` is set or the camera's `depth` topic is remapped (real rclpy
nodes, in-process, in the test's isolated domain); a named camera's own `<name>/depth` counts."""
import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("args,enabled,camera,expected", [
    ([], False, "", False),
    (["--ros-args", "-r", "depth:=/camera/aligned_depth_to_color/image_raw"], False, "", True),
    (["--ros-args", "-r", "image:=/camera/color/image_raw"], False, "", False),   # another topic
    ([], True, "", True),
    (["--ros-args", "-r", "front/depth:=/front_cam/depth"], False, "front", True),
    (["--ros-args", "-r", "front/depth:=/front_cam/depth"], False, "rear", False),  # another camera's
    (["--ros-args", "-r", "depth:=/cam/depth"], False, "front", False),
])
def test_depth_requested_by_remap_or_parameter(ros_env, args, enabled, camera, expected):
    import rclpy

    from mobilesam_ros.core.config import DepthConfig, Settings
    from mobilesam_ros.ros.depth3d import depth_requested
    from mobilesam_ros.ros.topics import CameraTopics

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        node = rclpy.create_node("mobilesam", context=ctx, cli_args=args)
        settings = Settings(depth=DepthConfig(enabled=enabled))
        assert depth_requested(node, settings, CameraTopics(camera)) is expected
        node.destroy_node()
    finally:
        ctx.try_shutdown()
