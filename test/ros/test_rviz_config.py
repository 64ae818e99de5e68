"""The RViz config a launch with rviz:=true writes: every display on a topic the node (named as
launched) publishes for its first camera, the Publish Point tool on that camera's clicked_point."""
import os
import tempfile

import pytest
import yaml
from conftest import ROOT

import launch_runner
from mobilesam_ros.ros.rviz_config import parse_cameras, rviz_config
from mobilesam_ros.ros.topics import CameraTopics

TEMPLATE = os.path.join(ROOT, "rviz", "mobilesam.rviz")
LAUNCH = os.path.join(ROOT, "launch", "mobilesam.launch.py")


def _topics(text):
    """(display topics, Publish Point topic) of an RViz config."""
    cfg = yaml.safe_load(text)["Visualization Manager"]
    shown = {d["Topic"]["Value"] for d in cfg["Displays"] if "Topic" in d}
    (tool,) = [t for t in cfg["Tools"] if t["Class"] == "rviz_default_plugins/PublishPoint"]
    return shown, tool["Topic"]["Value"]


def _resolved(node, topics: CameraTopics, base, private=True):
    """The absolute name of a node's private output or relative input (node in namespace /)."""
    name = topics.output(base) if private else topics.input(base)
    return name.replace("~", f"/{node}") if private else f"/{name}"


@pytest.mark.parametrize("node,cameras", [("mobilesam", []), ("seg", []), ("seg", ["front", "rear"])])
def test_config_shows_the_first_camera(node, cameras):
    with open(TEMPLATE) as f:
        shown, click = _topics(rviz_config(f.read(), node, cameras))
    cam = CameraTopics(cameras[0] if cameras else "")
    assert shown == {_resolved(node, cam, b) for b in ("overlay", "label_image", "markers", "points")}
    assert click == _resolved(node, cam, "clicked_point", private=False)


def test_the_bundled_config_is_the_default_node():
    with open(TEMPLATE) as f:
        text = f.read()
    assert rviz_config(text) == text


@pytest.mark.parametrize("text,names", [("[front, rear]", ["front", "rear"]), ("[]", []), ("", []),
                                        ("['a']", ["a"])])
def test_parse_cameras(text, names):
    assert parse_cameras(text) == names


@pytest.mark.parametrize("text", ["front", "{a: 1}", "[1, 2]"])
def test_parse_cameras_refuses_what_is_no_list_of_names(text):
    with pytest.raises(ValueError, match="list of names"):
        parse_cameras(text)


def test_launch_starts_rviz_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # not the machine's /tmp
    ld = launch_runner.load(LAUNCH)
    found, _ = launch_runner.nodes(ld, {"node_name": "seg", "cameras": "[front, rear]"})
    assert [n.executable for n in found] == ["mobilesam_node"]
    found, _ = launch_runner.nodes(ld, {"node_name": "seg", "cameras": "[front, rear]", "rviz": "true"})
    rviz = [n for n in found if n.package == "rviz2"]
    assert len(rviz) == 1 and rviz[0].arguments[0] == "-d"
    path = rviz[0].arguments[1]
    assert path == str(tmp_path / f"mobilesam_ros-{os.getuid()}" / "seg.rviz")
    with open(path) as f:
        shown, click = _topics(f.read())
    assert "/seg/front/overlay" in shown and click == "/front/clicked_point"
    # a second launch of that node replaces its file (one per node name, none left behind)
    folder = os.path.dirname(path)
    found, _ = launch_runner.nodes(ld, {"node_name": "seg", "cameras": "[rear]", "rviz": "true"})
    assert [n.arguments[1] for n in found if n.package == "rviz2"] == [path]
    with open(path) as f:
        shown, click = _topics(f.read())
    assert "/seg/rear/overlay" in shown and "/seg/front/overlay" not in shown
    assert click == "/rear/clicked_point"
    assert os.listdir(folder) == ["seg.rviz"]
    with pytest.raises(ValueError, match="rviz"):
        launch_runner.nodes(ld, {"rviz": "yes"})
