"""Load a real launch/*.launch.py with the stand-in launch modules (test/launch_shim) and turn its
Node actions into argv lists (executable + --ros-args ...), as `ros2 launch` would run them.

Values substituted into parameter dicts are YAML-typed, as launch_ros does ('true' -> bool).
"""
import importlib.util
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# Always the stand-in, even where real launch/launch_ros exist (their classes use other attribute
# names): purge anything imported, put the shim first.
for _m in [m for m in sys.modules if m in ("launch", "launch_ros") or m.startswith(("launch.", "launch_ros."))]:
    del sys.modules[_m]
sys.path.insert(0, os.path.join(HERE, "launch_shim"))
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, TextSubstitution  # noqa: E402
from launch_ros.actions import Node  # noqa: E402


def load(path):
    spec = importlib.util.spec_from_file_location("launch_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_launch_description()


def _sub(v, args):
    if isinstance(v, LaunchConfiguration):
        if v.variable_name in args:
            return args[v.variable_name]
        if v.default is not None:
            return _sub(v.default, args)
        raise KeyError(f"launch argument {v.variable_name!r} not set")
    if isinstance(v, TextSubstitution):
        return v.text
    if isinstance(v, PathJoinSubstitution):
        return os.path.join(*[_sub(s, args) for s in v.substitutions])
    if isinstance(v, (list, tuple)):
        return "".join(str(_sub(x, args)) for x in v)
    return v


def _typed(v):
    if isinstance(v, str):
        parsed = yaml.safe_load(v) if v else ""
        return v if parsed is None else parsed
    return v


class _Context:
    """What an OpaqueFunction sees: the launch arguments' values (launch.LaunchContext's field)."""

    def __init__(self, args):
        self.launch_configurations = dict(args)


def nodes(ld, overrides=None):
    """(the Node actions, those of OpaqueFunctions included, and the launch arguments' values),
    after the arguments' choices are checked as `ros2 launch` checks them."""
    args = {e.name: e.default_value for e in ld.entities
            if isinstance(e, DeclareLaunchArgument) and e.default_value is not None}
    args.update(overrides or {})
    for e in ld.entities:
        if isinstance(e, DeclareLaunchArgument) and e.choices and args.get(e.name) not in e.choices:
            raise ValueError(f"{e.name}={args.get(e.name)!r} not in {e.choices}")
    found = []
    for e in ld.entities:
        if isinstance(e, OpaqueFunction):
            found += [a for a in e.function(_Context(args), *e.args, **e.kwargs) or [] if isinstance(a, Node)]
        elif isinstance(e, Node):
            found.append(e)
    return found, args


def node_commands(ld, overrides=None, tmpdir="."):
    from ament_index_python.packages import get_package_prefix

    found, args = nodes(ld, overrides)
    cmds = []
    for i, n in enumerate(found):
        exe = os.path.join(get_package_prefix(n.package), "lib", n.package, n.executable)
        argv = [sys.executable, exe] + [str(_sub(a, args)) for a in n.arguments] + ["--ros-args"]
        if n.name:
            argv += ["-r", f"__node:={_sub(n.name, args)}"]
        if n.namespace:
            argv += ["-r", f"__ns:={_sub(n.namespace, args)}"]
        for j, p in enumerate(n.parameters):
            if isinstance(p, dict):
                f = os.path.join(tmpdir, f"params_{i}_{j}.yaml")
                with open(f, "w") as fh:
                    yaml.safe_dump({"/**": {"ros__parameters": {k: _typed(_sub(v, args)) for k, v in p.items()}}}, fh)
                argv += ["--params-file", f]
            else:
                argv += ["--params-file", str(_sub(p, args))]
        for a, b in n.remappings:
            argv += ["-r", f"{_sub(a, args)}:={_sub(b, args)}"]
        cmds.append((n, argv))
    return cmds
