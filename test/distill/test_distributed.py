"""Distillation on 2 CPU processes (gloo) against the single-process run as the reference.

* torchrun (`python -m torch.distributed.run`) runs `python -m mobilesam_ros distill` on 2 ranks
  for 2 steps of global batch 2 on real frames; the same run in one process (this test process,
  1 thread) is the reference: per-step losses and final weights agree within a measured tolerance,
  and the written file loads strictly as an official checkpoint.
* (slow) A 2-rank run stopped after step 1 resumes on 1 process: its step 2 is the 2-rank run's.

The student is fresh (BatchNorm trained), so the 2-rank run only matches because BatchNorm is
synchronised (`distributed.SyncBatchNorm2d`): with per-rank statistics the first step's loss
already differs (each rank would normalise one frame by its own statistics).
"""
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import shared_path

from mobilesam_ros.core.io.checkpoints import load_mobile_sam
from mobilesam_ros.distill.config import DistillConfig, DistillInputError
from mobilesam_ros.distill.distributed import DistEnv, check_global_batch, local_rows
from mobilesam_ros.distill.state import TRAIN_STATE, load_train_state
from mobilesam_ros.distill.teacher_cache import TeacherCache
from mobilesam_ros.distill.train import distill

# Four different scenes, landscape and portrait (other padding): per-image BatchNorm statistics
# differ between them, which is what makes the comparison sensitive to how BatchNorm is run.
FRAMES = ["bus.jpg", "cars.jpg", "groceries.jpg", "zidane.jpg"]
STEPS = 2
# Tolerances, from runs of this very configuration on this 2-core CPU (torch 2.13, 1 thread per
# process), as relative differences to the 1-process, 1-thread reference (weights: after 2 steps;
# step 3 from the same runs with --steps 3, whose first two steps are these):
#                               loss step 1   step 2    step 3    final weights
#   1 process, 2 threads          4.2e-6      9.8e-5    1.7e-3    6.1e-4     <- round-off floor
#   2 processes, synced BN        3.0e-6      7.5e-5    7.8e-4    5.1e-4
#   2 processes, per-rank BN      1.2e-3      1.8e-2    3.1e-1    1.9e-2     <- what BN sync fixes
# Step 1 is a plain forward (same weights): only summation order differs. After it, AdamW
# amplifies round-off (it normalises each gradient component, so components that are ~0 move by
# about +-lr whichever way they round), which sets the floor of the later steps. The tolerances
# sit ~7x above the floor and ~4x or more below the per-rank-BN differences.
LOSS_RTOL = [3e-5, 1e-3]
WEIGHT_RTOL = 5e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    for name in FRAMES:
        shutil.copy(shared_path("data", "images", name), d / name)
    return d


def options(root, frames_dir, cache_dir):
    """The run both sides make: fresh student, 2 steps of global batch 2, cheap validation.
    (2 steps keep the test near a minute; a 3rd step is compared in the table above.)"""
    return dict(teacher=str(shared_path("fixtures", "mobile_sam_seed2.pt")), data=str(frames_dir),
                out=str(root / "student.pt"), cache_dir=str(cache_dir), steps=STEPS,
                batch_size=2, lr=1e-3, warmup_steps=1, val_fraction=0.0, train_eval_frames=1,
                val_every=STEPS, checkpoint_every=1, bn="train", progress=False)


def losses(work_dir):
    return [r["loss"] for r in load_train_state(work_dir / TRAIN_STATE)["history"]["steps"]]


def rel_weight_diff(a, b):
    keys = [k for k, v in a.items() if v.is_floating_point()]
    diff = sum(float((a[k] - b[k]).double().square().sum()) for k in keys)
    return (diff / sum(float(a[k].double().square().sum()) for k in keys)) ** 0.5


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, frames_dir):
    """torchrun, 2 ranks, the real CLI; builds the shared teacher cache in parallel."""
    root = tmp_path_factory.mktemp("ddp2")
    cache = root / "teacher_cache"
    o = options(root, frames_dir, cache)
    argv = ["--teacher", o["teacher"], "--data", o["data"], "--out", o["out"], "--cache-dir",
            str(cache), "--steps", str(STEPS), "--batch-size", "2", "--lr", "1e-3",
            "--warmup-steps", "1", "--val-fraction", "0", "--train-eval-frames", "1",
            "--val-every", str(STEPS), "--checkpoint-every", "1", "--bn", "train",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # cwd outside the checkout: `-m` puts the cwd on sys.path, and the installed package (with
    # its generated messages) must be the one imported.
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "mobilesam_ros", "distill", *argv],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, cache, res


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, frames_dir, two_process_run):
    """The reference: the same run in this process (reusing the cache the 2 ranks built)."""
    root = tmp_path_factory.mktemp("ddp1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return distill(DistillConfig(**options(root, frames_dir, two_process_run[1])))
    finally:
        torch.set_num_threads(threads)


def test_global_batch_split_and_refusal():
    env = DistEnv(rank=1, world_size=2, local_rank=1)
    assert check_global_batch(4, env) == 2
    with pytest.raises(DistillInputError, match="batch size 3 is the global batch"):
        check_global_batch(3, env)
    assert local_rows([7, 8, 9, 10], env) == ([9, 10], 1.0)
    # an epoch's last, smaller batch: weights make the DDP average the mean over its 3 samples
    assert local_rows([7, 8, 9], DistEnv(0, 2, 0)) == ([7, 8], 2 * 2 / 3)
    assert local_rows([7, 8, 9], env) == ([9], 1 * 2 / 3)
    assert local_rows([7], env) == ([7], 0.0)  # no sample left: a zero-weight stand-in


def test_two_processes_match_one(two_process_run, one_process_run):
    root, cache_dir, res = two_process_run
    work2 = root / "student_distill"
    ref = one_process_run
    two, one = losses(work2), [r["loss"] for r in ref.step_log]
    print(f"\nlosses 1 process {one}\n       2 processes {two}")
    rel = [abs(a - b) / abs(b) for a, b in zip(two, one)]
    print(f"relative loss differences {rel}")
    assert len(two) == len(one) == STEPS
    assert one[-1] < 0.8 * one[0]  # the curve moves: the comparison is not of constants
    assert all(r <= tol for r, tol in zip(rel, LOSS_RTOL)), (rel, LOSS_RTOL)

    s2 = load_train_state(work2 / TRAIN_STATE)
    s1 = load_train_state(ref.work_dir / TRAIN_STATE)
    assert (s2["step"], s2["samples"], s2["world_size"]) == (STEPS, 2 * STEPS, 2)
    assert (s1["step"], s1["samples"], s1["world_size"]) == (STEPS, 2 * STEPS, 1)
    wd = rel_weight_diff(s1["student"], s2["student"])
    print(f"relative final-weight difference {wd:.3g}")
    assert wd < WEIGHT_RTOL

    # the output of rank 0 is an official mobile_sam.pt holding the trained student
    sam = load_mobile_sam(root / "student.pt")
    written = torch.load(root / "student.pt", weights_only=True)
    assert all(torch.equal(written["image_encoder." + k], v)
               for k, v in s2["student"].items())
    assert sam.image_encoder is not None
    # the cache the 2 ranks built in parallel is complete, with one record (the manifest)
    cache = TeacherCache.open(cache_dir)
    assert cache.complete and not list(cache_dir.glob("shard.*.json"))
    # rank 1 logged nothing but problems; rank 0 printed the summary once
    assert res.stdout.count("wrote ") == 1


# ------------------------------------------------------------------ resume on another world size


def _train_worker(rank, world, port, cfg_dict, stop_at):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))

    def stop(step, loss):
        if step == stop_at:
            raise KeyboardInterrupt

    try:
        distill(DistillConfig(**cfg_dict), on_step=stop)
    except KeyboardInterrupt:
        pass


@pytest.mark.slow
def test_resume_two_processes_on_one(tmp_path, frames_dir, two_process_run, one_process_run):
    cfg = options(tmp_path, frames_dir, two_process_run[1])
    mp.start_processes(_train_worker, args=(2, free_port(), cfg, 1), nprocs=2,
                       start_method="spawn")
    work = tmp_path / "student_distill"
    saved = load_train_state(work / TRAIN_STATE)
    assert (saved["step"], saved["samples"], saved["world_size"]) == (1, 2, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = distill(DistillConfig(**{**cfg, "resume": True}))
    finally:
        torch.set_num_threads(threads)
    ref = one_process_run
    got, want = [r["loss"] for r in resumed.step_log], [r["loss"] for r in ref.step_log]
    print(f"\nresumed 2 -> 1: {got}\nreference:      {want}")
    rel = [abs(a - b) / abs(b) for a, b in zip(got, want)]
    print(f"relative loss differences {rel}")
    assert len(got) == STEPS and all(r <= tol for r, tol in zip(rel, LOSS_RTOL)), rel
    # Against the uninterrupted 2-rank run: the same weights and optimizer state, the same next
    # batch, so the resumed step's loss differs only by the summation order of one forward on 1
    # vs 2 processes (measured 1.3e-5 relative; 1e-7 when resuming a step later; a BatchNorm
    # or data-position error gives >= 1e-3).
    uninterrupted = losses(two_process_run[0] / "student_distill")
    assert got[:-1] == uninterrupted[:-1]  # recorded by the 2 ranks before the stop
    assert abs(got[-1] - uninterrupted[-1]) <= 1e-4 * abs(uninterrupted[-1])
    wd = rel_weight_diff(load_train_state(ref.work_dir / TRAIN_STATE)["student"],
                         load_train_state(work / TRAIN_STATE)["student"])
    print(f"relative final-weight difference {wd:.3g}")
    assert wd < WEIGHT_RTOL
    load_mobile_sam(resumed.out)
