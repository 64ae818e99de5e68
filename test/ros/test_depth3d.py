"""3D is off unless `depth.enabled` is set or the `depth` topic is remapped (real rclpy nodes,
in-process, in the test's isolated domain)."""
import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("args,enabled,expected", [
    ([], False, False),
    (["--ros-args", "-r", "depth:=/camera/aligned_depth_to_color/image_raw"], False, True),
    (["--ros-args", "-r", "image:=/camera/color/image_raw"], False, False),   # another topic
    ([], True, True),
])
def test_depth_requested_by_remap_or_parameter(ros_env, args, enabled, expected):
    import rclpy

    from mobilesam_ros.ros.depth3d import depth_requested

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        node = rclpy.create_node("mobilesam", context=ctx, cli_args=args)
        node.declare_parameter("depth.enabled", enabled)
        assert depth_requested(node) is expected
        node.destroy_node()
    finally:
        ctx.try_shutdown()
