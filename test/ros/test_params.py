"""config/mobilesam.yaml documents exactly the defaults of ros/params.py (the one owner), and every
limit the Reliability section of the README lists is a declared parameter with a range."""
from pathlib import Path

import yaml

from mobilesam_ros.ros.params import PARAMS

ROOT = Path(__file__).resolve().parents[2]


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_config_yaml_agrees_with_params():
    cfg = yaml.safe_load((ROOT / "config" / "mobilesam.yaml").read_text())["/**"]["ros__parameters"]
    got = dict(_flatten(cfg))
    want = {p.name: p.default for p in PARAMS}
    assert set(got) == set(want)
    # autostart is the one deliberate difference: the launch config starts the node by itself
    assert {k: v for k, v in got.items() if v != want[k]} == {"autostart": True}


def test_limits_are_declared_with_ranges_and_documented():
    readme = (ROOT / "README.md").read_text()
    by_name = {p.name: p for p in PARAMS}
    for name in ("image.max_pixels", "segany.max_objects", "segany.max_points", "segany.prompt_queue",
                 "segany.max_batch_s"):
        p = by_name[name]
        assert p.range is not None and p.range[0] <= p.default <= p.range[1] and p.description
        assert f"`{name}`" in readme
    # label image values are index + 1: they must fit mono16
    assert by_name["segany.max_objects"].range[1] <= 65535
