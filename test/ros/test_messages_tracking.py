"""Track fields of InstanceMask: filled from core TrackAssignment, constants equal the core's."""
import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_track_constants_equal_the_core():
    from mobilesam_ros.core.engine import tracking
    from mobilesam_ros.msg import InstanceMask

    assert InstanceMask.TRACK_TENTATIVE == tracking.TRACK_TENTATIVE
    assert InstanceMask.TRACK_CONFIRMED == tracking.TRACK_CONFIRMED
    assert InstanceMask.TRACK_LOST == tracking.TRACK_COASTING  # kept, but not seen this frame
    assert InstanceMask.TRACK_NONE == 0 not in (tracking.TRACK_TENTATIVE, tracking.TRACK_CONFIRMED,
                                                tracking.TRACK_COASTING)


def test_instances_to_msg_fills_the_track_fields():
    from std_msgs.msg import Header

    from mobilesam_ros.core.structures.instances import Instances
    from mobilesam_ros.core.engine.tracking import TrackAssignment
    from mobilesam_ros.msg import InstanceMask
    from mobilesam_ros.ros.messages import instances_to_msg

    m = np.zeros((2, 8, 8), bool)
    m[0, :2, :2] = m[1, 4:, 4:] = True
    inst = Instances.from_masks(m, np.ones(2)).pack_bits()
    tracks = TrackAssignment(ids=np.array([7, 12], np.uint32), states=np.array([2, 1], np.uint8),
                             hits=np.array([5, 1], np.uint32),
                             first_seen_ns=np.array([1_700_000_000_123_456_789, 1_700_000_002_000_000_000]),
                             age_s=np.array([2.5, 0.0]))
    out = instances_to_msg(inst, Header(), "segevery", [7, 12], tracks)
    a, b = out.instances
    assert (a.id, a.track_state, a.track_hits) == (7, InstanceMask.TRACK_CONFIRMED, 5)
    assert (a.first_seen.sec, a.first_seen.nanosec) == (1_700_000_000, 123_456_789)
    assert a.track_age == pytest.approx(2.5)
    assert (b.id, b.track_state, b.track_hits, b.first_seen.sec, b.first_seen.nanosec) == \
        (12, InstanceMask.TRACK_TENTATIVE, 1, 1_700_000_002, 0)
    untracked = instances_to_msg(inst, Header(), "segany", [3, 4]).instances[0]
    assert (untracked.track_state, untracked.track_hits, untracked.track_age,
            untracked.first_seen.sec) == (InstanceMask.TRACK_NONE, 0, 0.0, 0)
