"""Seeded fuzz of the real node (CI size): every hostile class, a few messages each, then a valid
frame that must be answered; the node stays alive with its peak RSS under the documented bound.
`python tools/fuzz_node.py --n 1000` runs the same classes 1000 times each."""
import pytest
from conftest import DATA
from nodeutil import node_argv, read_rgb

import hostile
from fuzz import FuzzClient, run
from test_node_reliability import PEAK_RSS_BOUND_MB

pytestmark = [pytest.mark.ros]
N_PER_CLASS = 3
SEED = 12


def test_fuzz_every_class(ros_process, ros_probe):
    proc = ros_process(node_argv(mode="both", **{"image.reliable": True}), name="node")
    client = FuzzClient(ros_probe, proc, read_rgb(str(DATA / "sequence" / "000000.jpg")))
    results = run(client, N_PER_CLASS, SEED, timeout=60.0, frame_every=5)
    assert [r.name for r in results] == list(hostile.CLASSES)
    assert proc.poll() is None
    assert max(r.peak_rss_mb for r in results) < PEAK_RSS_BOUND_MB, results
