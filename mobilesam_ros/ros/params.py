"""The node's parameters: declared up front with descriptions, ranges and read-only flags.

One table (`PARAMS`) is the single source of truth: the node declares from it, validates changes
against it, and `config/mobilesam.yaml` documents the same defaults. Thresholds and rates can change
at run time; model and device choices are read-only (reconfigure the lifecycle node to change them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = False
    range: Optional[tuple] = None      # (from, to) inclusive, for numbers
    choices: Optional[tuple] = None    # allowed values, for strings


PARAMS: tuple[Param, ...] = (
    Param("mode", "segevery", "segevery: all instances every frame; segany: encode frames into the "
          "embedding cache and answer prompts; both: do both", choices=("segevery", "segany", "both")),
    Param("model.checkpoint", "", "MobileSAM checkpoint: official mobile_sam.pt (flat state_dict) or a "
          "MobileSAMv2 encoder file ({'model': ...}); distilled students in mobile_sam.pt format load too",
          read_only=True),
    Param("model.decoder_checkpoint", "", "optional MobileSAMv2 prompt-guided decoder file "
          "(Prompt_guided_Mask_Decoder.pt); empty: use the decoder inside model.checkpoint", read_only=True),
    Param("model.backend", "torch", "inference backend", read_only=True, choices=("torch", "onnx")),
    Param("model.onnx_encoder", "", "ONNX image encoder (backend onnx; `python -m mobilesam_ros export`)",
          read_only=True),
    Param("model.onnx_decoder", "", "ONNX prompt encoder + mask decoder (backend onnx)", read_only=True),
    Param("model.providers", ["CPUExecutionProvider"], "ONNX Runtime execution providers in priority "
          "order, e.g. [TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider]",
          read_only=True),
    Param("model.device", "cpu", "torch device: cpu, cuda or cuda:N (backend torch)", read_only=True),
    Param("model.fp16", False, "half precision on CUDA (backend torch)", read_only=True),
    Param("model.threads", 0, "torch CPU threads; 0 = torch's default", read_only=True, range=(0, 256)),
    Param("detector.model", "", "YOLOv8-style ONNX object detector proposing SegEvery boxes "
          "(MobileSAMv2's ObjectAwareModel converted with tools/export_object_aware_model.py); "
          "empty: use the point grid (segevery.grid_points_per_side)", read_only=True),
    Param("detector.conf", 0.4, "detector confidence threshold", range=(0.0, 1.0)),
    Param("detector.iou", 0.9, "detector NMS IoU threshold", range=(0.0, 1.0)),
    Param("detector.max_det", 300, "maximum detector boxes per frame", range=(1, 1000)),
    Param("segevery.grid_points_per_side", 16, "point grid density when no detector is set "
          "(SAM's automatic mask generator; slow on CPU)", range=(1, 64)),
    Param("segevery.every_n", 1, "process every Nth received frame", range=(1, 1000)),
    Param("segevery.max_rate_hz", 0.0, "at most this many processed frames per second; 0 = no limit",
          range=(0.0, 1000.0)),
    Param("filter.pred_iou_thresh", 0.0, "drop masks whose predicted IoU is below this", range=(0.0, 1.0)),
    Param("filter.stability_thresh", 0.0, "drop masks whose stability score is below this",
          range=(0.0, 1.0)),
    Param("filter.min_area", 0, "drop masks smaller than this many pixels", range=(0, 1 << 30)),
    Param("filter.mask_nms_thresh", 1.0, "drop a mask overlapping a better one by more than this IoU; "
          "1.0 = keep all", range=(0.0, 1.0)),
    Param("filter.max_instances", 100, "keep at most this many instances (best scores first)",
          range=(1, 1000)),
    Param("segany.cache_size", 8, "frames whose embeddings stay cached for prompts", read_only=True,
          range=(1, 256)),
    Param("segany.stamp_tolerance", 0.05, "a prompt decodes against the cached frame nearest to its "
          "stamp within this many seconds", range=(0.0, 3600.0)),
    Param("segany.max_objects", 100, "a Prompt with more objects is refused whole (one warning); "
          "bounds the work and the answer of one message", range=(1, 65535)),
    Param("segany.max_points", 64, "a PromptObject with more points is refused (the whole Prompt, one "
          "warning)", range=(1, 4096)),
    Param("segany.prompt_queue", 4, "Prompt / click messages waiting for the worker; the oldest is "
          "dropped (and counted) when a new one arrives on a full queue", read_only=True, range=(1, 256)),
    Param("segany.max_batch_s", 5.0, "time budget of one Prompt message: checked between decoder "
          "chunks, a message still decoding after this many seconds is abandoned unanswered (one "
          "warning) and the next frame gets its turn", range=(0.01, 3600.0)),
    Param("image.max_pixels", 8_388_608, "refuse frames (Image, or CompressedImage by the size in its "
          "PNG/JPEG header) with more pixels than this, before allocating them; default 8 MP (4K UHD "
          "fits)", range=(1, 268_435_456)),
    Param("image.reliable", False, "subscribe to images with a reliable QoS instead of SensorDataQoS "
          "(best effort); reliable does not match best-effort camera drivers", read_only=True),
    Param("overlay.alpha", 0.5, "mask opacity in the overlay image", range=(0.0, 1.0)),
    Param("autostart", False, "configure and activate the lifecycle node by itself at start-up "
          "(for use without a lifecycle manager)", read_only=True),
)
_BY_NAME = {p.name: p for p in PARAMS}


def descriptor(p: Param) -> ParameterDescriptor:
    text = p.description + (f" (one of: {', '.join(p.choices)})" if p.choices else "")
    d = ParameterDescriptor(description=text, read_only=p.read_only)
    if p.range is not None:
        if isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]))]
        else:
            d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    return d


def declare_all(node) -> None:
    for p in PARAMS:
        node.declare_parameter(p.name, p.default, descriptor(p))


def check_choices(params) -> SetParametersResult:
    """on-set-parameters callback: enforce `choices` (ranges and read-only are rclpy's job)."""
    for prm in params:
        spec = _BY_NAME.get(prm.name)
        if spec is not None and spec.choices and prm.value not in spec.choices:
            return SetParametersResult(successful=False,
                                       reason=f"{prm.name}={prm.value!r} not one of {list(spec.choices)}")
    return SetParametersResult(successful=True)


def read_all(node) -> dict[str, Any]:
    """Current values of every declared parameter of PARAMS, by name."""
    return {p.name: node.get_parameter(p.name).value for p in PARAMS}
