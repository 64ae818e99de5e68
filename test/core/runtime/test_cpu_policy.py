"""The CPU policy is set at entry points only, and libgomp itself confirms what it runs with."""
import os
import subprocess
import sys

import pytest

from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, ort_session_options

CHILD = """
import sys
from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, apply_process_policy, describe
print(describe(apply_process_policy(CpuPolicy(threads=1, omp_wait_policy=sys.argv[1]))))
import torch
torch.ones(256, 256) @ torch.ones(256, 256)  # start the OpenMP pool
"""


def _run(code: str, *args: str, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({"OMP_DISPLAY_ENV": "TRUE", **(env_extra or {})})
    return subprocess.run([sys.executable, "-P", "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("policy,libgomp_says", [("passive", "PASSIVE"), ("active", "ACTIVE")])
def test_libgomp_runs_with_the_chosen_wait_policy(policy, libgomp_says):
    res = _run(CHILD, policy)
    assert res.returncode == 0, res.stderr
    # OMP_DISPLAY_ENV makes libgomp print the values it initialised with: an independent witness
    assert f"OMP_WAIT_POLICY = '{libgomp_says}'" in res.stderr, res.stderr
    assert "torch_threads=1" in res.stdout


def test_env_policy_leaves_the_environment_in_charge():
    res = _run(CHILD, "env", env_extra={"OMP_WAIT_POLICY": "ACTIVE"})
    assert res.returncode == 0, res.stderr
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in res.stderr


def test_too_late_is_reported_not_silently_ignored():
    code = ("import torch; torch.ones(64,64)@torch.ones(64,64)\n"
            "from mobilesam_ros.core.runtime.cpu_policy import CpuPolicy, apply_before_torch\n"
            "print(apply_before_torch(CpuPolicy(omp_wait_policy='active')))")
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert "too late" in res.stdout and "OMP_WAIT_POLICY = 'ACTIVE'" not in res.stderr


def test_library_objects_leave_process_settings_alone():
    """Building backends and decoders must not change torch's thread count or glibc's malloc."""
    code = """
import torch
torch.set_num_threads(1)
from mobilesam_ros.core.runtime.torch_backend import TorchBackend
from mobilesam_ros.core.runtime import fast_decoder
from mobilesam_ros.core.modeling.sam import build_mobile_sam
TorchBackend(build_mobile_sam())
print(torch.get_num_threads(), fast_decoder._MALLOC_TUNED)
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "False"]


@pytest.mark.ros
def test_node_module_loads_no_openmp_runtime_before_configure():
    """The node applies cpu.* at its first configure, so importing it must not load torch (or any
    module that does): torch's libgomp reads OMP_WAIT_POLICY once, when it is loaded."""
    res = _run("import sys, mobilesam_ros.ros.node\nprint(sorted(m for m in ('torch', 'onnxruntime') "
               "if m in sys.modules))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
    assert "OMP_WAIT_POLICY" not in res.stderr  # no OpenMP runtime initialised yet


def test_cli_applies_the_policy_before_torch_loads(tmp_path):
    res = subprocess.run([sys.executable, "-P", "-m", "mobilesam_ros", "segany", "--checkpoint",
                          str(tmp_path / "missing.pt"), "--image", "x.jpg", "--point", "1,1,1", "--output", str(tmp_path / "o.npz"),
                          "--omp-wait-policy", "passive", "--backend", "torch"],
                         env={**{k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"},
                              "OMP_DISPLAY_ENV": "TRUE"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2  # the missing checkpoint, after the policy was applied
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in res.stderr, res.stderr


def test_onnx_runtime_sessions_do_not_spin_by_default():
    opts = ort_session_options(CpuPolicy(threads=3))
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 3
    spinning = ort_session_options(CpuPolicy(ort_spinning=True))
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="omp_wait_policy"):
        CpuPolicy(omp_wait_policy="spin")
    with pytest.raises(ValueError, match="threads"):
        CpuPolicy(threads=-1)
