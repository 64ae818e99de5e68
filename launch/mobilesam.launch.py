"""ros2 launch mobilesam_ros mobilesam.launch.py checkpoint:=/path/mobile_sam.pt image:=/camera/image_raw

Starts the mobilesam lifecycle node with config/mobilesam.yaml; the arguments below override the
main parameters. With autostart:=true (default) the node configures and activates itself; set it
false to drive it from a lifecycle manager (Nav2's lifecycle_manager, `ros2 lifecycle set`).
With rviz:=true, RViz starts too, showing the node's outputs of its first camera.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from mobilesam_ros.ros.params import PARAMS

SPECS = {p.name: p for p in PARAMS}

# (launch argument, the node parameter it sets, description): the default and the choices are the
# parameter's own (core/config.py through ros/params.py), never repeated here
ARGS = [
    ("mode", "mode", "segevery | segany | both"),
    ("checkpoint", "model.checkpoint", "MobileSAM checkpoint (mobile_sam.pt) or MobileSAMv2 encoder file"),
    ("decoder_checkpoint", "model.decoder_checkpoint", "optional MobileSAMv2 prompt-guided decoder file"),
    ("detector", "detector.model", "YOLOv8-style ONNX box proposer for SegEvery (empty: point grid)"),
    ("backend", "model.backend", "auto (ONNX Runtime on CPU, torch on CUDA) | torch | onnx"),
    ("threads", "cpu.threads", "torch + ONNX Runtime intra-op threads (0 = physical cores)"),
    ("omp_wait_policy", "cpu.omp_wait_policy", "OpenMP workers sleep (passive) or spin (active) when "
     "idle; env: as OMP_WAIT_POLICY says"),
    ("device", "model.device", "torch device: cpu | cuda | cuda:N"),
    ("autostart", "autostart", "configure + activate without a lifecycle manager"),
    ("workers", "workers", "with several cameras: how many cameras' frames run at once"),
]
# launched, the node starts itself unless told otherwise (the parameter's default is false)
LAUNCH_DEFAULTS = {"autostart": "true"}
OTHER_ARGS = [
    ("cameras", "[]", "camera names served by the one node, e.g. \"[front, rear]\": camera NAME reads "
     "NAME/image, NAME/prompt, ... and publishes ~/NAME/instances, ...; [] = one camera on image, ..."),
    ("image", "image", "input sensor_msgs/Image topic (remapped onto the node's `image`; one camera)"),
    ("node_name", "mobilesam", "node name"),
]
RVIZ = DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                             description="also start RViz (rviz/mobilesam.rviz) on this node's first camera")


def _argument(name: str, param: str, description: str) -> DeclareLaunchArgument:
    spec = SPECS[param]
    if isinstance(spec.default, bool):
        default, choices = str(spec.default).lower(), ["true", "false"]
    else:
        default, choices = str(spec.default), list(spec.choices) if spec.choices else None
    return DeclareLaunchArgument(name, default_value=LAUNCH_DEFAULTS.get(name, default),
                                 description=description, choices=choices)


def _rviz(context):
    """RViz on the node's first camera (the config's topics rewritten for node_name and cameras)."""
    if LaunchConfiguration("rviz").perform(context) != "true":
        return []
    from mobilesam_ros.ros.rviz_config import parse_cameras, write_rviz_config

    template = os.path.join(get_package_share_directory("mobilesam_ros"), "rviz", "mobilesam.rviz")
    path = write_rviz_config(template, LaunchConfiguration("node_name").perform(context),
                             parse_cameras(LaunchConfiguration("cameras").perform(context)))
    return [Node(package="rviz2", executable="rviz2", arguments=["-d", path], output="screen")]


def generate_launch_description():
    config = os.path.join(get_package_share_directory("mobilesam_ros"), "config", "mobilesam.yaml")
    declared = [_argument(*a) for a in ARGS]
    declared += [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in OTHER_ARGS] + [RVIZ]
    node = LifecycleNode(
        package="mobilesam_ros",
        executable="mobilesam_node",
        name=LaunchConfiguration("node_name"),
        namespace="",
        output="screen",
        # `cameras` goes as a command-line parameter: `-p cameras:=[]` leaves it unset (ROS cannot
        # type an empty list), where a parameter file entry would need a type
        arguments=["--ros-args", "-p", ["cameras:=", LaunchConfiguration("cameras")]],
        parameters=[config, {p: LaunchConfiguration(n) for n, p, _ in ARGS}],
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"])],
    )
    return LaunchDescription(declared + [node, OpaqueFunction(function=_rviz)])
