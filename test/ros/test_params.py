"""One default per parameter: every node parameter is a field of a core/config.py dataclass and
the node declares that field's default; config/mobilesam.yaml and the launch file's arguments agree
with them; every limit the README's Reliability section lists is a declared parameter with a range."""
import dataclasses
import os

import pytest
import yaml
from conftest import ROOT

import launch_runner
from mobilesam_ros.core.config import NodeConfig, Settings
from mobilesam_ros.ros.params import CAMERAS, LIST_PARAMS, PARAMS, field_default

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
    # `cameras` is declared apart (ROS cannot type its empty default): [] in the YAML leaves it unset
    assert values.pop("cameras") == list(field_default(NodeConfig, "cameras")) == []
    assert values.pop("detector.classes") == []  # declared apart too (string lists, see LIST_PARAMS)
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


# Fields of core/config.py that are not node parameters, and why.
NOT_PARAMETERS = {
    ("ModelConfig", "cpu"),                 # nested: the cpu.* parameters (CpuPolicy)
    ("ModelConfig", "sessions"),            # set by the node from `workers` and the cameras
    ("PipelineConfig", "model"),            # nested: the model.* parameters
    ("PipelineConfig", "detector"),         # nested: the detector.* parameters
    ("DetectorConfig", "border_snap_px"),   # MobileSAMv2's rule, always on in the node
    ("TrackerConfig", "box_weight"),        # assignment tie-breakers, not tuning knobs
    ("TrackerConfig", "class_weight"),
} | {("Settings", f.name) for f in dataclasses.fields(Settings)}  \
  | {("EvalConfig", f) for f in ("seed", "bootstrap", "max_objects", "grid", "grid_pred_iou_thresh",
                                 "grid_stability_thresh", "ar_conf", "ar_max_det", "label_fps")}  # CLI eval/label only


def _config_dataclasses():
    import mobilesam_ros.core.config as config

    return [c for c in vars(config).values()
            if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == config.__name__]


def test_every_parameter_is_one_core_config_field():
    owned = [(p.owner, p.field) for p in PARAMS + LIST_PARAMS]
    assert len(set(owned)) == len(owned), "two parameters set the same field"
    classes = _config_dataclasses()
    for owner, field in owned:
        assert owner in classes, owner
        assert field in {f.name for f in dataclasses.fields(owner)}, (owner, field)
    # and every field of core/config.py is a parameter, unless listed above with its reason
    every = {(c.__name__, f.name) for c in classes for f in dataclasses.fields(c)}
    assert every - {(o.__name__, f) for o, f in owned} == NOT_PARAMETERS


@pytest.mark.ros
def test_the_node_declares_each_owner_fields_default(ros_env):
    import rclpy

    from mobilesam_ros.ros.node import MobileSamNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    node = MobileSamNode("params_test", context=ctx)
    try:
        declared = {name: node.get_parameter(name).value for name in node._parameters
                    if name not in ("use_sim_time", "start_type_description_service")  # rclpy's own
                    and name not in {p.name for p in LIST_PARAMS}}
        cameras = node.get_parameter_or("cameras")  # declared without a value: ROS cannot type []
        descriptors = {name: node.describe_parameter(name) for name in declared}
    finally:
        node.destroy_node()
        ctx.try_shutdown()
    by_name = {p.name: p for p in PARAMS}
    assert set(declared) == set(by_name)
    for name, value in declared.items():
        p = by_name[name]
        want = getattr(p.owner(), p.field)  # the dataclass instance's own default
        assert value == (list(want) if isinstance(want, tuple) else want), name
        assert type(value) is type(want) or isinstance(want, tuple), name  # 0.0 stays a double
        assert descriptors[name].read_only == p.read_only, name
    # structural parameters cannot change under a running node
    assert descriptors["mode"].read_only
    assert "cameras" in node._parameters and cameras.value is None
    assert "detector.classes" in node._parameters


def test_core_configs_from_parameter_values():
    """params.build maps parameter names onto fields: a changed value lands in its field only."""
    from mobilesam_ros.core.config import CpuPolicy, Extract3DConfig, FilterConfig
    from mobilesam_ros.ros.params import build, pipeline_config

    values = dict(DEFAULTS, **{"filter.min_area": 50, "depth.max_m": 4.5, "model.providers": ["A", "B"],
                               "cpu.threads": 3, "detector.conf": 0.7, "segany.cache_size": 2})
    assert build(FilterConfig, values) == FilterConfig(min_area=50)
    assert build(Extract3DConfig, values) == Extract3DConfig(max_depth_m=4.5)
    cfg = pipeline_config(values)
    assert cfg.model.providers == ("A", "B") and cfg.model.cpu == CpuPolicy(threads=3)
    assert (cfg.detector.conf, cfg.detector.iou, cfg.cache_size) == (0.7, 0.9, 2)


def test_library_defaults_are_the_owner_fields():
    """Defaults the issue found written twice with other values now come from their owner."""
    import inspect

    from mobilesam_ros.core.config import PipelineConfig, SegAnyConfig
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.ros.worker import LatestFrameWorker

    assert inspect.signature(SamPredictor).parameters["cache_size"].default == PipelineConfig.cache_size
    assert inspect.signature(LatestFrameWorker).parameters["prompt_queue"].default == SegAnyConfig.prompt_queue


def test_no_parameter_is_read_outside_params(tmp_path):
    """Settings are read once into a snapshot (params.read_settings): no other module of the
    package calls get_parameter."""
    import pathlib

    pkg = pathlib.Path(ROOT) / "mobilesam_ros"
    readers = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
               if "get_parameter" in p.read_text() and p.name != "params.py"]
    assert readers == []


# ---------------------------------------------------------------- start-up values are checked
def _bad_values(p):
    """Values just outside each declared choice set / range, computed from the table."""
    if p.choices is not None:
        return [p.choices[0] + "x", p.choices[0].upper(), ""]
    lo, hi = p.range
    if isinstance(p.default, float):
        d = max(1e-3, 1e-3 * (hi - lo))  # far beyond rclpy's float tolerance
        return [lo - d, hi + d]
    return [lo - 1, hi + 1]


CHECKED = [p for p in PARAMS if p.choices is not None or p.range is not None]
BAD = [pytest.param(p, v, id=f"{p.name}={v!r}") for p in CHECKED for v in _bad_values(p)]


def _in_process_node(ros_env, overrides):
    """A MobileSamNode built in this process with `overrides` {name: value} as start-up values;
    returns (its errors, the result of its configure)."""
    import rclpy
    from rclpy.parameter import Parameter

    from mobilesam_ros.ros.node import MobileSamNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        node = MobileSamNode("params_check", context=ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        try:
            return list(node._param_errors), node.trigger_configure()
        finally:
            node.destroy_node()
    finally:
        ctx.try_shutdown()


def test_every_checked_parameter_has_values_outside_it():
    assert {p.name for p in CHECKED} >= {"mode", "model.backend", "model.precision", "cpu.omp_wait_policy",
                                         "cpu.threads", "detector.conf", "segany.max_batch_s"}
    assert all(p.default in p.choices if p.choices else p.range[0] <= p.default <= p.range[1] for p in CHECKED)


@pytest.mark.ros
@pytest.mark.parametrize("p, value", BAD)
def test_a_start_up_value_outside_choices_or_range_fails_configure(ros_env, p, value):
    """In-process, every parameter with choices or a range: configure fails before loading
    anything, naming the parameter, the value and what is allowed (the checkpoint is empty as
    well, so the text must be this check's, not the loader's)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    errors, result = _in_process_node(ros_env, {p.name: value})
    assert result == TransitionCallbackReturn.FAILURE
    assert len(errors) == 1, errors
    text = errors[0]
    assert text.startswith(f"parameter {p.name}:") and repr(value) in text, text
    allowed = [repr(c) for c in p.choices] if p.choices else [str(p.range[0]), str(p.range[1])]
    assert all(a in text for a in allowed), text


@pytest.mark.ros
def test_the_range_ends_and_the_defaults_are_accepted(ros_env):
    """The other side of the check: no error for the defaults, nor for every range end and
    every choice (all set at once on one node)."""
    assert _in_process_node(ros_env, {})[0] == []
    for end in (0, 1):
        values = {p.name: (p.choices[end % len(p.choices)] if p.choices else p.range[end]) for p in CHECKED}
        values = {k: float(v) if isinstance(DEFAULTS[k], float) else v for k, v in values.items()}
        assert _in_process_node(ros_env, values)[0] == [], values


@pytest.mark.ros
@pytest.mark.parametrize("name, value, allowed", [
    ("mode", "segeverything", "['segevery', 'segany', 'both']"),
    ("detector.conf", 1.5, "[0.0, 1.0]"),
])
def test_the_node_process_refuses_to_activate_with_a_bad_start_up_value(ros_process, name, value, allowed):
    """A real node process (autostart, a valid checkpoint): one error line naming the parameter,
    the value and the allowed ones; it never activates, and keeps running (unconfigured)."""
    from conftest import read_log, wait_for
    from nodeutil import node_argv

    proc = ros_process(node_argv(**{name: value, "model.backend": "torch"}), name="node")
    assert wait_for(lambda: "configure failed" in read_log(proc) or proc.poll() is not None, 60), read_log(proc)
    log = read_log(proc)
    line = next(l for l in log.splitlines() if "configure failed" in l)
    assert f"parameter {name}: {value!r}" in line and allowed in line, log
    assert "active:" not in log and "model ready" not in log
    assert proc.poll() is None, log


def test_core_messages_name_settings_as_the_node_sets_them():
    """The core names settings through core/config.setting_name; the node's parameter table
    registers its names, so an unwritable ONNX cache names model.onnx_cache_dir in the node."""
    from mobilesam_ros.core.config import ModelConfig, setting_name
    from mobilesam_ros.core.runtime.onnx_cache import CacheUnwritable

    import mobilesam_ros.ros.params  # noqa: F401  registers the names at import

    assert "model.onnx_cache_dir" in setting_name(ModelConfig, "onnx_cache_dir")
    text = str(CacheUnwritable(__import__("pathlib").Path("/ro/cache"), PermissionError(13, "Permission denied")))
    assert "/ro/cache" in text and "model.onnx_cache_dir" in text and "model.onnx_encoder" in text


@pytest.mark.ros
@pytest.mark.parametrize("value,ok", [(["front", "rear"], True), ("front", False), (3, False)])
def test_cameras_of_another_type_is_a_start_up_error(ros_env, value, ok):
    """`cameras:=front` (a string, not a list) must not kill the constructor: configure reports it."""
    import rclpy
    from rclpy.parameter import Parameter

    from mobilesam_ros.ros.node import MobileSamNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        node = MobileSamNode("cameras_type", context=ctx, parameter_overrides=[Parameter("cameras", value=value)])
        errors = node._param_errors
        node.destroy_node()
    finally:
        ctx.try_shutdown()
    assert (errors == []) is ok, errors
    assert ok or any("parameter cameras" in e and "not a list of names" in e for e in errors), errors
