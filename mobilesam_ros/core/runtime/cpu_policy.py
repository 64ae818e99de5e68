"""How this process uses a CPU it shares with other nodes: thread counts, OpenMP waiting, malloc.

A robot's CPU is shared. torch's OpenMP workers and ONNX Runtime's intra-op pool both *spin* at
barriers by default; once busy threads outnumber cores a spinning worker burns the time slice its
partner needs, and a 1-point decode beside two 2-thread torch neighbours took 13x its quiet time on
a 2-core CPU (the fair share is about 3x). The policy here (passive OpenMP waiting, no ONNX Runtime
spinning) gives up a few percent on a quiet machine for that.

The policy is process-wide, so only entry points apply it (the node at its first configure, the
command line, benchmarks), never a library constructor. Order matters: libgomp reads
OMP_WAIT_POLICY once, when torch loads it, so `apply_before_torch` must run before the first
`import torch` of the process; thread counts and malloc tuning can follow at any time.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from mobilesam_ros.core.errors import ConfigError

OMP_WAIT_POLICIES = ("passive", "active", "env")


@dataclass(frozen=True)
class CpuPolicy:
    """threads: intra-op threads of torch and of every ONNX Runtime session; 0 = the library's
    default (the number of physical cores).
    omp_wait_policy: "passive" (idle OpenMP workers sleep), "active" (they spin: fastest on a
    quiet, dedicated CPU), or "env" (leave OMP_WAIT_POLICY to the environment).
    ort_spinning: let ONNX Runtime's intra-op threads spin between ops.
    keep_freed_memory: glibc keeps freed multi-MB blocks mapped for reuse (see
    runtime.fast_decoder.keep_freed_memory_mapped; the largest single speed-up of 1-prompt decodes).
    """

    threads: int = 0
    omp_wait_policy: str = "passive"
    ort_spinning: bool = False
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        if self.omp_wait_policy not in OMP_WAIT_POLICIES:
            raise ConfigError(f"omp_wait_policy {self.omp_wait_policy!r} not one of {OMP_WAIT_POLICIES}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")


def torch_loaded() -> bool:
    """True once torch (and with it its own bundled libgomp, which reads OMP_WAIT_POLICY when it
    loads) is imported. Other libraries' OpenMP copies (scipy's, OpenCV's) do not fix torch's."""
    return "torch" in sys.modules


def apply_before_torch(policy: CpuPolicy) -> str:
    """Set OMP_WAIT_POLICY for the OpenMP runtime torch will load. Returns the policy in effect
    ("PASSIVE", "ACTIVE", or the environment's value / "default"); if torch is already loaded
    with another value, returns that and says so in the text ("... (too late: ...)")."""
    current = os.environ.get("OMP_WAIT_POLICY", "")
    want = current if policy.omp_wait_policy == "env" else policy.omp_wait_policy.upper()
    if not want:
        return "default"
    if want.upper() == current.upper():
        return want.upper()
    if torch_loaded():
        return (f"{current.upper() or 'default'} (too late for {want}: torch was already loaded; "
                f"set OMP_WAIT_POLICY={want} in the environment)")
    os.environ["OMP_WAIT_POLICY"] = want
    return want


def apply_process_policy(policy: CpuPolicy) -> dict[str, object]:
    """The whole policy for this process: OpenMP waiting (if still possible), torch intra-op
    threads, malloc reuse. Returns what is in effect, for one log line."""
    wait = apply_before_torch(policy)
    import torch

    from mobilesam_ros.core.runtime.fast_decoder import keep_freed_memory_mapped

    if policy.threads > 0:
        torch.set_num_threads(policy.threads)
    malloc = keep_freed_memory_mapped() if policy.keep_freed_memory else False
    return {"omp_wait_policy": wait, "torch_threads": torch.get_num_threads(),
            "ort_threads": policy.threads or "default", "ort_spinning": policy.ort_spinning,
            "keep_freed_memory": malloc}


def describe(applied: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in applied.items())


def ort_session_options(policy: CpuPolicy):
    """onnxruntime.SessionOptions with all graph optimisations and this policy's threading."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if policy.threads > 0:
        opts.intra_op_num_threads = policy.threads
    opts.inter_op_num_threads = 1
    spin = "1" if policy.ort_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return opts
