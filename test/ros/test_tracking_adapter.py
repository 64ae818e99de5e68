"""ros/tracking_adapter.py on a real rclpy node with the declared parameters: tracking.enabled
switches ids between track ids and 1..N, threshold changes reach the tracker at run time."""
import numpy as np
import pytest

pytestmark = pytest.mark.ros


@pytest.fixture
def node(ros_env):
    import rclpy

    from mobilesam_ros.ros import params as P

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    n = rclpy.create_node("tracking_adapter_test", context=ctx)
    P.declare_all(n)
    try:
        yield n
    finally:
        n.destroy_node()
        ctx.try_shutdown()


def square(x):
    from mobilesam_ros.core.structures.instances import Instances

    m = np.zeros((1, 60, 80), bool)
    m[0, 10:30, x:x + 20] = True
    return Instances.from_masks(m, np.ones(1)).pack_bits()


def test_enabled_switch_and_live_thresholds(node):
    from rclpy.parameter import Parameter

    from mobilesam_ros.core.config import TrackerConfig
    from mobilesam_ros.ros.params import PARAMS
    from mobilesam_ros.ros.tracking_adapter import SegEveryTracking

    # every TrackerConfig threshold but the assignment tie-breakers is a tracking.* parameter
    owned = {p.field for p in PARAMS if p.owner is TrackerConfig and p.name.startswith("tracking.")}
    assert owned == set(TrackerConfig.__dataclass_fields__) - {"box_weight", "class_weight"}
    ad = SegEveryTracking(node)
    ids = [int(ad.update(square(10 + k), k * 100_000_000).ids[0]) for k in range(3)]
    assert ids == [1, 1, 1]
    node.set_parameters([Parameter("tracking.enabled", value=False)])
    assert ad.update(square(13), 300_000_000) is None
    node.set_parameters([Parameter("tracking.enabled", value=True),
                         Parameter("tracking.confirm_hits", value=1)])
    out = ad.update(square(14), 400_000_000)
    # the pause forgot the tracks: a new id (never 1 again), confirmed at once with confirm_hits 1
    assert int(out.ids[0]) == 2 and int(out.states[0]) == 2 and ad._tracker.config.confirm_hits == 1
