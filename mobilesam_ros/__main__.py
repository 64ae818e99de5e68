"""python -m mobilesam_ros {segany,segevery,export,distill,eval,label}: the ROS-free command line."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from mobilesam_ros.cli import distill, evaluate, export, label, segany, segevery

    ap = argparse.ArgumentParser(prog="python -m mobilesam_ros", description="MobileSAM / MobileSAMv2 "
                                 "segmentation without ROS: SegAny, SegEvery, ONNX export, distillation, evaluation, labelling.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in (segany, segevery, export, distill, evaluate, label):
        mod.add_parser(sub)
    return ap


def main(argv=None) -> int:
    from mobilesam_ros.cli.common import fail

    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "omp_wait_policy"):  # before anything imports torch (see core/runtime/cpu_policy.py)
            from mobilesam_ros.cli.common import cpu_policy
            from mobilesam_ros.core.runtime.cpu_policy import apply_process_policy

            apply_process_policy(cpu_policy(args))
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001  one clear line and an exit code scripts can trust
        return fail(exc)


if __name__ == "__main__":
    sys.exit(main())
