"""ros2 launch mobilesam_ros mobilesam.launch.py checkpoint:=/path/mobile_sam.pt image:=/camera/image_raw

Starts the mobilesam lifecycle node with config/mobilesam.yaml; the arguments below override the
main parameters. With autostart:=true (default) the node configures and activates itself; set it
false to drive it from a lifecycle manager (Nav2's lifecycle_manager, `ros2 lifecycle set`).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

ARGS = [
    # (name, default, description, choices)
    ("mode", "segevery", "segevery | segany | both", ["segevery", "segany", "both"]),
    ("checkpoint", "", "MobileSAM checkpoint (mobile_sam.pt) or MobileSAMv2 encoder file", None),
    ("decoder_checkpoint", "", "optional MobileSAMv2 prompt-guided decoder file", None),
    ("detector", "", "YOLOv8-style ONNX box proposer for SegEvery (empty: point grid)", None),
    ("backend", "auto", "auto (ONNX Runtime on CPU, torch on CUDA) | torch | onnx", ["auto", "torch", "onnx"]),
    ("threads", "0", "torch + ONNX Runtime intra-op threads (0 = physical cores)", None),
    ("omp_wait_policy", "passive", "OpenMP workers sleep (passive) or spin (active) when idle; env: as "
     "OMP_WAIT_POLICY says", ["passive", "active", "env"]),
    ("device", "cpu", "torch device: cpu | cuda | cuda:N", None),
    ("image", "image", "input sensor_msgs/Image topic (remapped onto the node's `image`)", None),
    ("autostart", "true", "configure + activate without a lifecycle manager", ["true", "false"]),
    ("node_name", "mobilesam", "node name", None),
]


def generate_launch_description():
    config = os.path.join(get_package_share_directory("mobilesam_ros"), "config", "mobilesam.yaml")
    declared = [DeclareLaunchArgument(n, default_value=d, description=t, choices=c) for n, d, t, c in ARGS]
    node = LifecycleNode(
        package="mobilesam_ros",
        executable="mobilesam_node",
        name=LaunchConfiguration("node_name"),
        namespace="",
        output="screen",
        parameters=[config, {
            "mode": LaunchConfiguration("mode"),
            "model.checkpoint": LaunchConfiguration("checkpoint"),
            "model.decoder_checkpoint": LaunchConfiguration("decoder_checkpoint"),
            "detector.model": LaunchConfiguration("detector"),
            "model.backend": LaunchConfiguration("backend"),
            "model.device": LaunchConfiguration("device"),
            "cpu.threads": LaunchConfiguration("threads"),
            "cpu.omp_wait_policy": LaunchConfiguration("omp_wait_policy"),
            "autostart": LaunchConfiguration("autostart"),
        }],
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"])],
    )
    return LaunchDescription(declared + [node])
