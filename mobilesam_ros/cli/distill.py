"""`python -m mobilesam_ros distill`: argparse front end of `distill.train.distill`.

Exit codes (`cli.common.fail`): 0 done; 2 bad input (missing/unreadable file, wrong checkpoint,
bad option, a work directory in the way), printed as one line `mobilesam_ros: error: ...`; 1 a
bug (with its traceback); 130 interrupted (the training state was saved; rerun with --resume).
"""
from __future__ import annotations

import argparse
import logging
import sys

_EPILOG = """\
examples:
  distil SAM ViT-H into TinyViT-5M on a folder of camera images:
    python -m mobilesam_ros distill --teacher sam_vit_h_4b8939.pth --data frames/ --out student.pt
  fine-tune MobileSAM on a recorded bag (one image topic of several):
    python -m mobilesam_ros distill --teacher sam_vit_h_4b8939.pth --data run.mcap \\
        --topic /camera/image_raw/compressed --init mobile_sam.pt --out student.pt --epochs 4
  continue an interrupted run (same options, same --work-dir):
    python -m mobilesam_ros distill ... --resume
  4 GPUs on this machine (--batch-size is the global batch, 16 / 4 = 4 frames per GPU):
    torchrun --standalone --nproc_per_node 4 -m mobilesam_ros distill ... --batch-size 16
  2 machines x 8 GPUs (run on each; the work/cache directory on a filesystem both see):
    torchrun --nnodes 2 --node_rank 0|1 --nproc_per_node 8 --rdzv_backend c10d \
        --rdzv_endpoint host0:29500 -m mobilesam_ros distill ... --batch-size 64

The teacher's embeddings are computed once into <work-dir>/teacher_cache (memory-mapped, reused
by later runs with the same teacher and frames). The output is an official mobile_sam.pt
(TinyViT-5M image_encoder.* + the decoder's prompt_encoder.*/mask_decoder.*).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `distill` subcommand; returns its parser (`run` is its handler)."""
    p = subparsers.add_parser(
        "distill", help="distil a SAM image encoder into TinyViT-5M on your own images",
        description="Decoupled distillation (MobileSAM): train a TinyViT-5M image encoder to "
                    "reproduce a teacher encoder's image embeddings (MSE), keeping SAM's prompt "
                    "encoder and mask decoder unchanged.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--teacher", required=True, metavar="CKPT",
                    help="teacher checkpoint: official SAM sam_vit_{b,l,h}_*.pth, MobileSAM "
                         "mobile_sam.pt, a student written by this command, or a MobileSAMv2 / "
                         "bare TinyViT encoder file (then --decoder is needed)")
    io.add_argument("--data", required=True, metavar="PATH",
                    help="image folder (recursive), video file, or ROS 2 bag (directory with "
                         "metadata.yaml, or a .db3/.mcap file)")
    io.add_argument("--topic", metavar="T",
                    help="bag only: sensor_msgs/Image or CompressedImage topic (needed when the "
                         "bag has several image topics)")
    io.add_argument("--every-n", type=int, default=1, metavar="N",
                    help="video/bag only: use every N-th frame (default 1)")
    io.add_argument("--max-frames", type=int, metavar="N",
                    help="video/bag only: use at most N frames")
    io.add_argument("--decoder", metavar="CKPT",
                    help="prompt encoder + mask decoder for validation and the output file "
                         "(mobile_sam.pt, SAM .pth or MobileSAMv2 decoder file); default: the "
                         "teacher's")
    io.add_argument("--out", required=True, metavar="FILE",
                    help="student checkpoint to write (official mobile_sam.pt format)")
    io.add_argument("--work-dir", metavar="DIR",
                    help="teacher cache, training state, logs, loss.png "
                         "(default: <out without suffix>_distill/)")
    io.add_argument("--cache-dir", metavar="DIR",
                    help="teacher-embedding cache (default: <work-dir>/teacher_cache)")

    tr = p.add_argument_group("training")
    tr.add_argument("--init", metavar="CKPT",
                    help="start the student from this TinyViT checkpoint (mobile_sam.pt, a "
                         "student, a MobileSAMv2 encoder file) instead of a fresh seeded one")
    length = tr.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=8, help="passes over the training frames "
                        "(default 8)")
    length.add_argument("--steps", type=int, help="total optimizer steps (instead of --epochs)")
    tr.add_argument("--batch-size", type=int, default=2, help="frames per step (default 2)")
    tr.add_argument("--lr", type=float, default=1e-3,
                    help="peak AdamW learning rate, cosine-decayed (default 1e-3; lower it, e.g. "
                         "1e-4, to fine-tune an --init checkpoint)")
    tr.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    tr.add_argument("--warmup-steps", type=int,
                    help="linear warm-up steps (default 5%% of the steps, at most 500)")
    tr.add_argument("--bn", choices=("auto", "train", "frozen"), default="auto",
                    help="BatchNorm statistics: train them, or keep them frozen (auto: frozen "
                         "with --init, trained otherwise)")
    tr.add_argument("--hflip", action="store_true",
                    help="also train on mirrored frames (the teacher encodes the mirrored images; "
                         "doubles the cache)")
    tr.add_argument("--seed", type=int, default=0, help="student init and data order seed")
    tr.add_argument("--teacher-batch-size", type=int, default=1,
                    help="frames per teacher forward pass while building the cache")
    tr.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                    help="dtype of the stored teacher embeddings (float16 halves the cache)")

    va = p.add_argument_group("validation")
    va.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of frames held out (by a hash of the frame key; default 0.1)")
    va.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    va.add_argument("--val-every", type=int, metavar="STEPS",
                    help="steps between validations (default: once per epoch)")
    va.add_argument("--val-frames", type=int, default=16,
                    help="held-out frames per validation (evenly spaced subset; default 16)")
    va.add_argument("--train-eval-frames", type=int, default=8, metavar="N",
                    help="training frames re-measured in eval mode per validation (default 8; "
                         "also the BatchNorm calibration frames of a fresh student)")

    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", default="auto",
                    help="auto (CUDA if available), cpu, cuda, cuda:N (default auto)")
    rt.add_argument("--no-amp", dest="amp", action="store_false",
                    help="disable fp16 mixed precision on CUDA")
    rt.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                    help="steps between training-state saves (default: once per epoch)")
    rt.add_argument("--resume", action="store_true",
                    help="continue the run saved in --work-dir (same options required)")
    rt.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars")
    rt.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(run=run, func=run)  # __main__ dispatches on `run`
    return p


def config_from_args(args: argparse.Namespace):
    """The DistillConfig an argparse namespace of this subcommand describes."""
    from mobilesam_ros.distill.train import DistillConfig

    return DistillConfig(
        teacher=args.teacher, data=args.data, out=args.out, work_dir=args.work_dir,
        cache_dir=args.cache_dir, topic=args.topic, every_n=args.every_n,
        max_frames=args.max_frames, decoder=args.decoder, init=args.init, epochs=args.epochs,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, bn=args.bn,
        val_fraction=args.val_fraction, split_seed=args.split_seed, val_every=args.val_every,
        val_frames=args.val_frames,
        train_eval_frames=args.train_eval_frames, checkpoint_every=args.checkpoint_every, hflip=args.hflip,
        teacher_batch_size=args.teacher_batch_size, cache_dtype=args.cache_dtype,
        device=args.device, amp=args.amp, seed=args.seed, resume=args.resume,
        progress=args.progress)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code (0, or 130 interrupted). Errors propagate to
    `__main__`, which reports them through `cli.common.fail`."""
    import os

    rank = int(os.environ.get("RANK", "0"))  # torchrun: ranks other than 0 report only problems
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    logging.basicConfig(level=level if rank == 0 else max(level, logging.WARNING),
                        format=f"%(levelname)s{f' [rank {rank}]' if rank else ''} "
                               "%(name)s: %(message)s")
    from mobilesam_ros.distill.train import distill

    try:
        result = distill(config_from_args(args))
    except KeyboardInterrupt:
        print("mobilesam_ros distill: interrupted; rerun with --resume to continue",
              file=sys.stderr)
        return 130
    if result.rank != 0:
        return 0
    f = result.final
    iou = f.get("val_mask_iou")
    print(f"wrote {result.out} ({result.steps} steps); held-out embedding MSE "
          f"{result.initial.get('val_mse', float('nan')):.4g} -> {f.get('val_mse', float('nan')):.4g}"
          + (f", mask IoU vs teacher {result.initial.get('val_mask_iou'):.3f} -> {iou:.3f}"
             if iou is not None else "")
          + f"; logs in {result.work_dir}")
    return 0
