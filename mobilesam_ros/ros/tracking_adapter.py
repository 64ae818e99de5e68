"""SegEvery tracking in the node: the `tracking.*` parameters -> core.engine.tracking.Tracker, one per
node process (ids are never reused while the process lives, across lifecycle transitions too)."""
from __future__ import annotations

from typing import Optional

from mobilesam_ros.core.structures.instances import Instances
from mobilesam_ros.core.config import TrackerConfig
from mobilesam_ros.core.engine.tracking import TrackAssignment, Tracker
from mobilesam_ros.ros import params as P




class SegEveryTracking:
    """Reads the parameters on every frame, so thresholds change at run time (another
    tracking.grid_cells starts the tracks over; ids still count on)."""

    def __init__(self, node) -> None:
        self._node = node
        self._tracker = Tracker(self._config())

    def _config(self) -> TrackerConfig:
        return P.build(TrackerConfig, P.node_values(self._node))

    def update(self, inst: Instances, stamp_ns: int) -> Optional[TrackAssignment]:
        """The tracks of this SegEvery frame's instances (in their order), or None when
        tracking.enabled is false (ids are then 1..N per frame)."""
        if not self._node.get_parameter("tracking.enabled").value:
            self._tracker.reset()  # switched back on later: no motion or ages across the pause
            return None
        cfg = self._config()
        if cfg != self._tracker.config:
            self._tracker.set_config(cfg)
        return self._tracker.update(inst, stamp_ns)
