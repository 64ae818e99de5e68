"""The core knows nothing of ROS: importing every module under mobilesam_ros.core loads no ROS
package, no core source names a node parameter, and core/config.py (read before the node's CPU
policy is applied) loads neither torch nor numpy."""
import os
import re
import subprocess
import sys
import tokenize

from conftest import ROOT

CORE = os.path.join(ROOT, "mobilesam_ros", "core")

IMPORT_ALL = """
import importlib, pkgutil, sys
import mobilesam_ros.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, core.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names))
print(" ".join(sorted(sys.modules)))
"""

ROS_ROOTS = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "builtin_interfaces", "launch", "launch_ros",
             "ament_index_python"}


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_importing_every_core_module_loads_no_ros_module():
    n, modules = _run(IMPORT_ALL)
    top = {m.split(".")[0] for m in modules.split()}
    assert int(n) >= 30  # every layer's modules were imported, not an empty walk
    ros = {m for m in top if m in ROS_ROOTS or m.endswith("_msgs") or m.endswith("_srvs")}
    assert not ros, f"mobilesam_ros.core imports ROS packages: {sorted(ros)}"
    assert not [m for m in modules.split() if m.startswith(("mobilesam_ros.msg", "mobilesam_ros.srv",
                                                             "mobilesam_ros.ros"))]


def test_core_config_loads_only_the_standard_library():
    _, modules = _run("import sys; import mobilesam_ros.core.config; print(0); print(' '.join(sys.modules))")
    assert not {"torch", "numpy", "onnxruntime", "cv2"} & set(modules.split())


def _core_texts():
    """(path, text of every string literal and comment) of each core module: where a parameter
    name would appear (code like `cfg.model.providers` is attribute access, not a name)."""
    for root, _, files in os.walk(CORE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                with open(path, "rb") as fh:
                    toks = tokenize.tokenize(fh.readline)
                    text = "\n".join(t.string for t in toks if t.type in (tokenize.STRING, tokenize.COMMENT))
                yield os.path.relpath(path, ROOT), text


def test_no_core_source_names_a_node_parameter():
    # the node's parameter names as the node spells them: <group>.<name> (ros/params.py is the only
    # place that maps them onto core fields). Read from the YAML so the core needs no ROS to test.
    import yaml

    with open(os.path.join(ROOT, "config", "mobilesam.yaml")) as f:
        groups = {k: v for k, v in yaml.safe_load(f)["/**"]["ros__parameters"].items() if isinstance(v, dict)}
    names = [f"{g}.{k}" for g, v in groups.items() for k in v]
    assert "model.checkpoint" in names and "filter.min_area" in names
    # a name as a whole word (not `image.max_pixels_x`), or a string opening with a group and a dot
    pattern = re.compile(r"\b(%s)\b|^[a-z]?[\"'](%s)\." % ("|".join(map(re.escape, names)),
                                                          "|".join(map(re.escape, groups))), re.M)
    hits = [(path, m.group(0)) for path, text in _core_texts() for m in pattern.finditer(text)]
    assert not hits, hits
    # the test can fail: the pattern finds a parameter name in the text it would be given
    assert pattern.search('raise ValueError("check model.checkpoint")') and pattern.search('f"filter.{x}"')
