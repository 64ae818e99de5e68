"""The command line takes its defaults from the dataclasses that own them (core/config.py, and
distill's DistillConfig): no argparse default is a second copy that can drift."""
import argparse
import dataclasses

from mobilesam_ros.__main__ import build_parser
from mobilesam_ros.cli.common import model_config
from mobilesam_ros.core.config import CLI_FILTERS, CpuPolicy, DetectorConfig, ModelConfig

REQUIRED = {"segany": ["--checkpoint", "c.pt", "--image", "i.jpg", "--output", "o.npz"],
            "segevery": ["--checkpoint", "c.pt", "--image", "i.jpg", "--grid", "4", "--output", "o.npz"],
            "export": ["--checkpoint", "c.pt", "--out-dir", "d"],
            "distill": ["--teacher", "t.pt", "--data", "d", "--out", "s.pt"]}
MODEL_ARGS = {"decoder_checkpoint": "decoder_checkpoint", "backend": "backend", "onnx_encoder": "onnx_encoder",
              "onnx_decoder": "onnx_decoder", "onnx_cache_dir": "onnx_cache_dir", "device": "device",
              "precision": "precision"}


def _defaults(command: str) -> argparse.Namespace:
    return build_parser().parse_args([command, *REQUIRED[command]])


def test_model_and_cpu_arguments_default_to_model_config():
    model, cpu = ModelConfig(), CpuPolicy()
    for command in ("segany", "segevery", "export"):
        args = _defaults(command)
        for dest, field in MODEL_ARGS.items():
            assert getattr(args, dest) == getattr(model, field), (command, dest)
        assert tuple(args.providers.split(",")) == model.providers
        for field in ("threads", "omp_wait_policy", "ort_spinning", "keep_freed_memory"):
            assert getattr(args, field) == getattr(cpu, field), (command, field)
        assert model_config(args) == ModelConfig(checkpoint="c.pt")


def test_model_options_reach_their_fields():
    args = build_parser().parse_args(["export", *REQUIRED["export"], "--backend", "onnx", "--device", "cuda:1",
                                      "--providers", "CUDAExecutionProvider,CPUExecutionProvider",
                                      "--threads", "3", "--ort-spinning", "--onnx-cache-dir", "/c"])
    assert model_config(args) == ModelConfig(
        checkpoint="c.pt", backend="onnx", device="cuda:1", onnx_cache_dir="/c",
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"), cpu=CpuPolicy(threads=3, ort_spinning=True))


def test_segevery_detector_and_filter_arguments():
    args = _defaults("segevery")
    det = DetectorConfig()
    assert (args.conf, args.iou) == (det.conf, det.iou) == (0.4, 0.9)  # MobileSAMv2's Inference.py
    assert (args.pred_iou_thresh, args.stability_thresh, args.min_area, args.mask_nms, args.max_instances) == (
        CLI_FILTERS.pred_iou_thresh, CLI_FILTERS.stability_thresh, CLI_FILTERS.min_area,
        CLI_FILTERS.mask_nms_thresh, CLI_FILTERS.max_instances)


def test_distill_arguments_default_to_distill_config():
    from mobilesam_ros.distill.config import DistillConfig

    args = vars(_defaults("distill"))
    fields = {f.name: f.default for f in dataclasses.fields(DistillConfig) if f.default is not dataclasses.MISSING}
    shared = set(fields) & set(args)
    assert len(shared) >= 20  # the options really are compared, not skipped
    assert {k: args[k] for k in shared} == {k: fields[k] for k in shared}


def test_eval_and_label_arguments_default_to_eval_config():
    from mobilesam_ros.core.config import EvalConfig

    d, det = EvalConfig(), DetectorConfig()
    p = build_parser()
    a = p.parse_args(["eval", "segany", "--teacher", "t.pt", "--student", "s.pt", "--data", "d"])
    assert (a.seed, a.bootstrap, a.max_objects, a.grid, a.pred_iou_thresh, a.stability_thresh) == (
        d.seed, d.bootstrap, d.max_objects, d.grid, d.grid_pred_iou_thresh, d.grid_stability_thresh)
    assert (a.backend, a.device, a.precision) == (ModelConfig().backend, ModelConfig().device, ModelConfig().precision)
    a = p.parse_args(["eval", "segevery", "--checkpoint", "c.pt", "--gt", "g", "--images", "i"])
    assert (a.conf, a.max_det, a.iou, a.grid) == (d.ar_conf, d.ar_max_det, det.iou, d.grid)
    assert a.conf < det.conf and a.max_det > 100  # so AR@1000 can differ from AR@100
    a = p.parse_args(["label", "--checkpoint", "c.pt", "--input", "i", "--out", "o.json"])
    assert (a.conf, a.iou, a.fps, a.grid, a.max_instances) == (det.conf, det.iou, d.label_fps, d.grid,
                                                               CLI_FILTERS.max_instances)
    assert (a.pred_iou_thresh, a.stability_thresh) == (d.grid_pred_iou_thresh, d.grid_stability_thresh)
