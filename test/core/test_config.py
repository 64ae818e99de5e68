"""core/config.py: the node's structure settings."""
import pytest

from mobilesam_ros.core.config import ConfigError, NodeConfig


def test_camera_keys_one_unnamed_camera_or_the_names():
    assert NodeConfig().camera_keys == ("",)  # unprefixed topics: `image`, `~/instances`
    assert NodeConfig(cameras=("front", "rear_2")).camera_keys == ("front", "rear_2")


@pytest.mark.parametrize("cameras", [("front", "front"), ("2nd",), ("a-b",), ("",), ("kamera_ü",)])
def test_bad_camera_names_are_refused(cameras):
    with pytest.raises(ConfigError, match="camera name"):
        NodeConfig(cameras=cameras)
