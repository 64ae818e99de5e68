"""One default per parameter: config/mobilesam.yaml and the launch file's arguments agree with the
parameter table the node declares from (ros/params.py); every limit the README's Reliability
section lists is a declared parameter with a range."""
import os

import yaml
from conftest import ROOT

import launch_runner
from mobilesam_ros.ros.params import PARAMS

DEFAULTS = {p.name: p.default for p in PARAMS}


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_yaml_lists_every_parameter_with_the_declared_default():
    with open(os.path.join(ROOT, "config", "mobilesam.yaml")) as f:
        values = _flatten(yaml.safe_load(f)["/**"]["ros__parameters"])
    assert set(values) == set(DEFAULTS)
    # autostart is the one deliberate difference: the launch configuration starts itself
    assert {k: v for k, v in values.items() if v != DEFAULTS[k]} == {"autostart": True}


def test_launch_argument_defaults_equal_the_parameter_defaults():
    ld = launch_runner.load(os.path.join(ROOT, "launch", "mobilesam.launch.py"))
    node = next(e for e in ld.entities if isinstance(e, launch_runner.Node))
    mapping = next(p for p in node.parameters if isinstance(p, dict))
    args = {e.name: e.default_value for e in ld.entities if isinstance(e, launch_runner.DeclareLaunchArgument)}
    for param, sub in mapping.items():
        if param == "autostart":
            continue
        assert launch_runner._typed(args[sub.variable_name]) == DEFAULTS[param], param


def test_limits_are_declared_with_ranges_and_documented():
    readme = open(os.path.join(ROOT, "README.md")).read()
    by_name = {p.name: p for p in PARAMS}
    for name in ("image.max_pixels", "segany.max_objects", "segany.max_points", "segany.prompt_queue",
                 "segany.max_batch_s"):
        p = by_name[name]
        assert p.range is not None and p.range[0] <= p.default <= p.range[1] and p.description
        assert f"`{name}`" in readme
    # label image values are index + 1: they must fit mono16
    assert by_name["segany.max_objects"].range[1] <= 65535
