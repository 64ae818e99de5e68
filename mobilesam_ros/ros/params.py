"""The node's parameters: ROS names, descriptions, ranges and read-only flags over core/config.py.

Every entry of the table (`PARAMS`) names the core dataclass field it sets (its owner); the
default is read from that field, never written here. The node declares from the table, validates
changes against it, and builds its core configs from the values (`build`, `pipeline_config`);
`config/mobilesam.yaml` and the launch file repeat the same defaults (test/ros/test_params.py).
Thresholds and rates can change at run time; structural choices (mode, model, device, queue and
cache sizes) are read-only: set them when the node starts (`--ros-args -p`, YAML, launch).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from mobilesam_ros.core.config import (DETECTION_PROMPTS, MODES, BACKENDS, OMP_WAIT_POLICIES, PRECISION_CHOICES,
                                       CpuPolicy, DepthConfig, DetectionsConfig, DetectorConfig, Extract3DConfig, FilterConfig,
                                       FollowConfig, ImageConfig, ModelConfig, NodeConfig, OverlayConfig,
                                       PipelineConfig, SegAnyConfig, SegEveryConfig, Settings, TrackerConfig,
                                       name_settings)

C = TypeVar("C")


def field_default(owner: type, field: str) -> Any:
    """The default of dataclass `owner`'s `field`, as a ROS parameter value (tuples -> lists)."""
    f = next((f for f in dataclasses.fields(owner) if f.name == field), None)
    if f is None:
        raise AttributeError(f"{owner.__name__} has no field {field!r}")
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Param:
    name: str          # the ROS parameter name
    owner: type        # the core/config.py dataclass whose field holds the default
    field: str         # that field
    description: str
    read_only: bool = False
    range: Optional[tuple] = None      # (from, to) inclusive, for numbers
    choices: Optional[tuple] = None    # allowed values, for strings

    @property
    def default(self) -> Any:
        return field_default(self.owner, self.field)


PARAMS: tuple[Param, ...] = (
    Param("mode", NodeConfig, "mode",
          "segevery: all instances every frame; segany: encode frames into the "
          "embedding cache and answer prompts; both: do both (fixed at start-up: segany and both "
          "subscribe to prompts when the node activates)", read_only=True, choices=MODES),
    Param("model.checkpoint", ModelConfig, "checkpoint",
          "MobileSAM checkpoint: official mobile_sam.pt (flat state_dict) or a "
          "MobileSAMv2 encoder file ({'model': ...}); distilled students in mobile_sam.pt format load too",
          read_only=True),
    Param("model.decoder_checkpoint", ModelConfig, "decoder_checkpoint",
          "optional MobileSAMv2 prompt-guided decoder file "
          "(Prompt_guided_Mask_Decoder.pt); empty: use the decoder inside model.checkpoint", read_only=True),
    Param("model.backend", ModelConfig, "backend",
          "inference backend. auto: ONNX Runtime on CPU (graphs exported once "
          "into model.onnx_cache_dir, torch with a warning if that fails), torch on CUDA unless "
          "model.providers names a GPU provider", read_only=True, choices=BACKENDS),
    Param("model.onnx_encoder", ModelConfig, "onnx_encoder",
          "ONNX image encoder (backends onnx/auto; `python -m mobilesam_ros "
          "export`); empty: exported from model.checkpoint into the cache", read_only=True),
    Param("model.onnx_decoder", ModelConfig, "onnx_decoder",
          "ONNX prompt encoder + mask decoder (with model.onnx_encoder)",
          read_only=True),
    Param("model.onnx_cache_dir", ModelConfig, "onnx_cache_dir",
          "folder for ONNX graphs exported on first use, one entry per "
          "checkpoint hash; empty: $MOBILESAM_CACHE_DIR or ~/.cache/mobilesam_ros. If it cannot be "
          "written: backend auto runs torch with one warning, backend onnx fails configure", read_only=True),
    Param("model.providers", ModelConfig, "providers",
          "ONNX Runtime execution providers in priority "
          "order, e.g. [TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider]",
          read_only=True),
    Param("model.device", ModelConfig, "device",
          "torch device: cpu, cuda or cuda:N (backend torch); cuda:N also picks the GPU of "
          "ONNX Runtime's CUDA/TensorRT providers (device_id N)", read_only=True),
    Param("model.precision", ModelConfig, "precision",
          "compute precision of backend torch: 16-bit matmuls and convolutions "
          "under autocast, LayerNorms and softmax in fp32 (fp16 for CUDA GPUs incl. Jetson; bf16 where "
          "supported; both are slow on CPUs without native 16-bit units). Backend onnx: fp32, or fp16 "
          "with TensorrtExecutionProvider (fp16 engines); anything else is refused at start-up", read_only=True,
          choices=PRECISION_CHOICES),
    Param("model.tf32", ModelConfig, "tf32",
          "let CUDA matmuls and cuDNN convolutions of backend torch in fp32 use TF32 (faster on "
          "Ampere and later, Jetson Orin too; inputs rounded to a 10-bit mantissa, so outputs leave the "
          "fp32 golden tolerances). Off: true fp32; for speed use model.precision fp16", read_only=True),
    Param("cpu.threads", CpuPolicy, "threads",
          "intra-op threads of torch and of every ONNX Runtime session; 0 = the "
          "libraries' default (physical cores)", read_only=True, range=(0, 256)),
    Param("cpu.omp_wait_policy", CpuPolicy, "omp_wait_policy",
          "OpenMP wait policy, applied at the first configure "
          "before torch loads. passive: idle workers sleep (fair beside other busy nodes); active: "
          "they spin (fastest on a dedicated CPU); env: leave OMP_WAIT_POLICY to the environment",
          read_only=True, choices=OMP_WAIT_POLICIES),
    Param("cpu.ort_spinning", CpuPolicy, "ort_spinning",
          "let ONNX Runtime's intra-op threads spin between ops (faster "
          "on a dedicated CPU, starves neighbours on a shared one)", read_only=True),
    Param("cpu.keep_freed_memory", CpuPolicy, "keep_freed_memory",
          "keep freed multi-MB heap blocks mapped for reuse (glibc "
          "mallopt; about 1.4x faster 1-prompt decodes, no extra peak memory)", read_only=True),
    Param("detector.model", DetectorConfig, "model",
          "YOLOv8-style ONNX object detector proposing SegEvery boxes "
          "(MobileSAMv2's ObjectAwareModel converted with tools/export_object_aware_model.py); "
          "empty: use the point grid (segevery.grid_points_per_side)", read_only=True),
    Param("detector.conf", DetectorConfig, "conf",
          "detector confidence threshold", range=(0.0, 1.0)),
    Param("detector.iou", DetectorConfig, "iou",
          "detector NMS IoU threshold", range=(0.0, 1.0)),
    Param("detector.max_det", DetectorConfig, "max_det",
          "maximum detector boxes per frame", range=(1, 1000)),
    Param("segevery.grid_points_per_side", PipelineConfig, "grid_points_per_side",
          "point grid density when no detector is set "
          "(SAM's automatic mask generator; slow on CPU)", range=(1, 64)),
    Param("segevery.every_n", SegEveryConfig, "every_n",
          "process every Nth received frame", range=(1, 1000)),
    Param("segevery.max_rate_hz", SegEveryConfig, "max_rate_hz",
          "at most this many processed frames per second; 0 = no limit",
          range=(0.0, 1000.0)),
    Param("filter.pred_iou_thresh", FilterConfig, "pred_iou_thresh",
          "drop masks whose predicted IoU is below this", range=(0.0, 1.0)),
    Param("filter.stability_thresh", FilterConfig, "stability_thresh",
          "drop masks whose stability score is below this",
          range=(0.0, 1.0)),
    Param("filter.min_area", FilterConfig, "min_area",
          "drop masks smaller than this many pixels", range=(0, 1 << 30)),
    Param("filter.mask_nms_thresh", FilterConfig, "mask_nms_thresh",
          "drop a mask overlapping a better one by more than this IoU; "
          "1.0 = keep all", range=(0.0, 1.0)),
    Param("filter.max_instances", FilterConfig, "max_instances",
          "keep at most this many instances (best scores first)",
          range=(1, 1000)),
    Param("segany.cache_size", PipelineConfig, "cache_size",
          "frames whose embeddings stay cached for prompts", read_only=True,
          range=(1, 256)),
    Param("segany.stamp_tolerance", SegAnyConfig, "stamp_tolerance_s",
          "a prompt decodes against the cached frame nearest to its "
          "stamp within this many seconds", range=(0.0, 3600.0)),
    Param("segany.max_objects", SegAnyConfig, "max_objects",
          "a Prompt with more objects is refused whole (one warning); "
          "bounds the work and the answer of one message", range=(1, 65535)),
    Param("segany.max_points", SegAnyConfig, "max_points",
          "a PromptObject with more points is refused (the whole Prompt, one "
          "warning)", range=(1, 4096)),
    Param("segany.prompt_queue", SegAnyConfig, "prompt_queue",
          "Prompt / click messages waiting for the worker; the oldest is "
          "dropped (and counted) when a new one arrives on a full queue", read_only=True, range=(1, 256)),
    Param("segany.max_batch_s", SegAnyConfig, "max_batch_s",
          "time budget of one Prompt message: checked between decoder "
          "chunks, a message still decoding after this many seconds is abandoned unanswered (one "
          "warning) and the next frame gets its turn", range=(0.01, 3600.0)),
    Param("image.max_pixels", ImageConfig, "max_pixels",
          "refuse frames (Image, or CompressedImage by the size in its "
          "PNG/JPEG header) with more pixels than this, before allocating them; default 8 MP (4K UHD "
          "fits); depth images (3D) too, on arrival", range=(1, 268_435_456)),
    Param("image.reliable", ImageConfig, "reliable",
          "subscribe to images with a reliable QoS instead of SensorDataQoS "
          "(best effort); reliable does not match best-effort camera drivers", read_only=True),
    Param("overlay.alpha", OverlayConfig, "alpha",
          "mask opacity in the overlay image", range=(0.0, 1.0)),
    Param("autostart", NodeConfig, "autostart",
          "configure and activate the lifecycle node by itself at start-up "
          "(for use without a lifecycle manager)", read_only=True),
    Param("workers", NodeConfig, "workers",
          "with several cameras, how many cameras' frames or prompts run at once, each on its own "
          "ONNX Runtime sessions (one camera's run one at a time, so at most the number of cameras "
          "are used); 1 = one model call at a time: on a 2-core CPU as many frames/s as 2, at half "
          "the latency and 1.2 GB less memory; more may pay on a GPU or a many-core CPU (not "
          "measured)", read_only=True, range=(1, 64)),
)
# Instances in 3D (ros/depth3d.py, core/ops/geometry3d.py): on with depth.enabled or a remapped `depth`
PARAMS += (
    Param("depth.enabled", DepthConfig, "enabled",
          "compute instances in 3D from `depth` (registered to the colour "
          "camera) and `camera_info`; 3D is also on whenever `depth` is remapped", read_only=True),
    Param("depth.stamp_tolerance", DepthConfig, "stamp_tolerance_s",
          "a segmented frame uses the buffered depth image nearest to "
          "its stamp within this many seconds", range=(0.0, 3600.0)),
    Param("depth.buffer_size", DepthConfig, "buffer_size",
          "depth images kept by stamp for the frame being segmented; must "
          "span the segmentation latency (30 = 1 s at 30 Hz); also the most frames whose 3D "
          "waits for its depth (depth.max_wait_s)", read_only=True, range=(1, 1000)),
    Param("depth.max_wait_s", DepthConfig, "max_wait_s",
          "a frame whose results are ready before its depth image "
          "(within depth.stamp_tolerance) has arrived keeps its 3D outputs waiting up to this many "
          "seconds for it, then drops them with one warning (0 = no wait); 2D outputs never wait",
          range=(0.0, 60.0)),
    Param("depth.erode_px", Extract3DConfig, "erode_px",
          "mask-edge pixels (colour resolution) left out of the "
          "position and of the depth range estimate: masks bleed and depth has flying pixels there",
          range=(0, 50)),
    Param("depth.gap_m", Extract3DConfig, "gap_m",
          "depths separated by a jump larger than this (metres) from the "
          "depth cluster around an instance's median depth are outliers", range=(0.001, 10.0)),
    Param("depth.edge_margin_m", Extract3DConfig, "edge_margin_m",
          "mask pixels within this distance (metres) of "
          "the instance's depth range count too (the rim continuing the surface)", range=(0.0, 10.0)),
    Param("depth.box_percentile", Extract3DConfig, "box_percentile",
          "the 3D box spans the [p, 100-p] percentiles "
          "of the points per axis (0 = min/max)", range=(0.0, 49.0)),
    Param("depth.min_points", Extract3DConfig, "min_points",
          "instances with fewer valid depth points get no 3D "
          "result", range=(1, 1 << 30)),
    Param("depth.min_m", Extract3DConfig, "min_depth_m",
          "depths below this (metres) are invalid",
          range=(0.0, 1000.0)),
    Param("depth.max_m", Extract3DConfig, "max_depth_m",
          "depths above this (metres) are invalid; also catches "
          "32FC1 depth that holds millimetres", range=(0.0, 1000.0)),
    Param("depth.aspect_tolerance", Extract3DConfig, "aspect_tolerance",
          "depth whose width/height aspect differs "
          "from the colour image's (or CameraInfo's) by more than this fraction is refused; same "
          "aspect, other size: masks and K are scaled", range=(0.0, 1.0)),
    Param("depth.points_stride", DepthConfig, "points_stride",
          "~/points keeps the points on every Nth depth row and column "
          "(decimation; only computed while ~/points has subscribers)", range=(1, 64)),
)
# SegEvery tracks (core/engine/camera_stream.py, core/engine/tracking.py)
PARAMS += (
    Param("tracking.enabled", NodeConfig, "tracking_enabled",
          "SegEvery keeps instance ids across frames: InstanceMask.id is "
          "the track id, with track_state, track_hits, first_seen and track_age; false: ids 1..N "
          "per frame"),
    Param("tracking.iou_thresh", TrackerConfig, "iou_thresh",
          "least mask IoU between a track (moved by its "
          "predicted motion, or where last seen) and an instance for the instance to keep its id",
          range=(0.01, 1.0)),
    Param("tracking.confirm_hits", TrackerConfig, "confirm_hits",
          "processed frames a new id must be matched in "
          "before it is TRACK_CONFIRMED (1 = at once)", range=(1, 1000)),
    Param("tracking.max_age_s", TrackerConfig, "max_age_s",
          "seconds (of stamps, not frames) a confirmed object "
          "may go unseen and still keep its id", range=(0.0, 3600.0)),
    Param("tracking.velocity_smoothing", TrackerConfig, "velocity_smoothing",
          "weight of the newest "
          "measurement in each track's averaged velocity (px/s); 0 = no motion prediction",
          range=(0.0, 1.0)),
    Param("tracking.grid_cells", TrackerConfig, "grid_cells",
          "masks are compared on a grid of at most this "
          "many samples along the longer image side (a change starts the tracks over)",
          range=(8, 4096)),
    Param("tracking.max_tracks", TrackerConfig, "max_tracks",
          "live tracks kept at most (unseen ones matched "
          "longest ago go first)", range=(1, 1000000)),
)
# SegAny click-to-track (core/engine/camera_stream.py, core/engine/follow.py)
PARAMS += (
    Param("follow.max_objects", FollowConfig, "max_objects",
          "objects followed at once (PromptObject.follow, "
          "clicks with follow.clicks), per camera; more are refused with a warning (the followed "
          "ones start from the answer's own decode: following costs no second decode)",
          range=(1, 1000)),
    Param("follow.min_pred_iou", FollowConfig, "min_pred_iou",
          "a followed object's re-prompted mask whose "
          "predicted IoU is below this is not good (not published, not kept)", range=(0.0, 1.0)),
    Param("follow.max_area_change", FollowConfig, "max_area_change",
          "a followed object's mask whose area "
          "grew or shrank by more than this factor since its last good mask is not good",
          range=(1.0, 1e6)),
    Param("follow.lost_timeout_s", FollowConfig, "lost_timeout_s",
          "a followed object with no good mask for "
          "this many seconds (of stamps) is dropped", range=(0.0, 3600.0)),
    Param("follow.reacquire_iou", FollowConfig, "reacquire_iou",
          "mode both: a lost followed object takes "
          "the SegEvery instance whose box overlaps its last good box at least this much (box IoU) "
          "and is re-prompted from that box", range=(0.01, 1.0)),
    Param("follow.clicks", NodeConfig, "follow_clicks",
          "an RViz click (clicked_point) also starts following its object, "
          "under an id from 2147483648 up (the id its answer carries)"),
)
# vision_msgs (ros/vision_msgs_port.py, ros/detection_conversions.py) and class names; every
# camera uses the same values
PARAMS += (
    Param("detections.prompt", DetectionsConfig, "prompt",
          "how a detection of the `detections` input (vision_msgs/Detection2DArray) prompts SAM: box "
          "= its box; point = its box centre as one positive point, the best of SAM's 3 candidate "
          "masks by predicted IoU", choices=DETECTION_PROMPTS),
    Param("detections.follow", DetectionsConfig, "follow",
          "follow every detection of the `detections` input (click-to-track, on ~/followed, "
          "follow.max_objects applies); a detection whose box overlaps a followed object's box by "
          "IoU >= detections.follow_iou updates that object instead of adding one"),
    Param("detections.follow_iou", DetectionsConfig, "follow_iou",
          "least box IoU between a detection and a followed object's last box for the detection to "
          "update that object (detections.follow)", range=(0.01, 1.0)),
    Param("detections.reliable", DetectionsConfig, "reliable",
          "subscribe to `detections` with a reliable QoS (each array matters, and they are small); "
          "false: best effort", read_only=True),
    Param("detector.class_names", DetectorConfig, "class_names",
          "text file of the detector's class names, one per line (line k = class k); empty: the "
          "names in the detector ONNX's metadata (Ultralytics exports carry them), if any",
          read_only=True),
)
_BY_NAME = {p.name: p for p in PARAMS}
# the core's messages name a setting the way the node's users set it (core/config.setting_name)
name_settings({(p.owner, p.field): p.name for p in PARAMS})
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMS}


def descriptor(p: Param) -> ParameterDescriptor:
    text = p.description + (f" (one of: {', '.join(p.choices)})" if p.choices else "")
    if p.read_only:
        text += " (read-only: set it when the node starts)"
    d = ParameterDescriptor(description=text, read_only=p.read_only)
    if p.range is not None:
        if isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]))]
        else:
            d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    return d


# `cameras` is declared apart from PARAMS: ROS cannot type an empty list, so it is declared as a
# string array without a value; unset, `cameras: []` in a YAML file and `cameras:=[]` all leave it
# uninitialised, which means NodeConfig.cameras' default (one camera, the unprefixed topic names).
CAMERAS = Param("cameras", NodeConfig, "cameras",
                "camera names served by this one node and its one loaded model, e.g. [front, rear]: "
                "camera <name> reads <name>/image, <name>/prompt, ... and publishes ~/<name>/instances, "
                "...; unset or empty: one camera on image, prompt, ... and ~/instances, ...",
                read_only=True)


# Like `cameras`, a string list declared without a value (unset or [] = all classes).
DETECTOR_CLASSES = Param("detector.classes", DetectorConfig, "classes",
                         "SegEvery keeps only the detector boxes of these classes, before decoding "
                         "(saves decoder time): class names, or ids written as numbers (\"0\"); names "
                         "the detector does not know select nothing (one warning); unset or [] = all "
                         "classes. At run time `ros2 param set` cannot send an empty list: [''] = all")
LIST_PARAMS = (CAMERAS, DETECTOR_CLASSES)


def problem(p: Param, value: Any) -> Optional[str]:
    """Why `value` is not a valid value of parameter `p` (its type, choices or range), or None.
    The text names the parameter, the value and what is allowed."""
    default = p.default
    kind = float if isinstance(default, float) else type(default)
    if kind is float and type(value) is int:
        value = float(value)  # checked as the number it is; rclpy refuses it by type below
    if type(value) is not kind:
        return f"parameter {p.name}: {value!r} is not of type {kind.__name__} (default {default!r})"
    if p.choices is not None and value not in p.choices:
        return f"parameter {p.name}: {value!r} is not one of {list(p.choices)}"
    if p.range is not None and not p.range[0] <= value <= p.range[1]:
        return f"parameter {p.name}: {value!r} is outside the allowed range [{p.range[0]}, {p.range[1]}]"
    return None


def declare_all(node) -> list[str]:
    """Declare every parameter of PARAMS on `node`. Returns the start-up values that are not
    valid (wrong type, not one of the choices, out of range), one text each (`problem`): the
    node's configure fails with them. A value rclpy refuses at declaration (type, range) is
    declared with its default instead, so that the node comes up and says why, rather than
    dying in its constructor."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    errors = []
    for p in PARAMS:
        try:
            value = node.declare_parameter(p.name, p.default, descriptor(p)).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            override = getattr(node, "_parameter_overrides", {}).get(p.name)
            value = override.value if override is not None else None
            errors.append(problem(p, value) or f"parameter {p.name}: {exc}")
            node.declare_parameter(p.name, p.default, descriptor(p), ignore_override=True)
            continue
        why = problem(p, value)
        if why:
            errors.append(why)
    return errors + [e for p in LIST_PARAMS for e in _declare_list(node, p)]


def _declare_list(node, p: Param) -> list[str]:
    """Declare `p` as a string array without a value (see CAMERAS); a value of another type
    (`cameras:=front` instead of `[front]`) is reported like any bad start-up value."""
    from rclpy.exceptions import InvalidParameterTypeException

    try:
        node.declare_parameter(p.name, Parameter.Type.STRING_ARRAY, descriptor(p))
    except InvalidParameterTypeException:
        override = getattr(node, "_parameter_overrides", {}).get(p.name)
        value = override.value if override is not None else None
        node.declare_parameter(p.name, Parameter.Type.STRING_ARRAY, descriptor(p), ignore_override=True)
        return [f"parameter {p.name}: {value!r} is not a list of names (e.g. {p.name}:=\"[a, b]\")"]
    return []


def check_choices(params) -> SetParametersResult:
    """on-set-parameters callback: enforce `choices` at run time (ranges and read-only are rclpy's
    job; start-up values are checked by `declare_all`)."""
    for prm in params:
        spec = _BY_NAME.get(prm.name)
        if spec is not None and spec.choices and prm.value not in spec.choices:
            return SetParametersResult(successful=False,
                                       reason=f"{prm.name}={prm.value!r} not one of {list(spec.choices)}")
    return SetParametersResult(successful=True)


def read_all(node) -> dict[str, Any]:
    """Current values of every declared parameter of PARAMS, by name (and detector.classes)."""
    return {**{p.name: node.get_parameter(p.name).value for p in PARAMS},
            DETECTOR_CLASSES.name: _string_list(node, DETECTOR_CLASSES)}


def autostart(node) -> bool:
    """The `autostart` parameter (read once, in the node's constructor)."""
    return bool(node.get_parameter("autostart").value)


def camera_names(node) -> tuple[str, ...]:
    """The `cameras` parameter: () when unset or empty (one camera, unprefixed topics)."""
    return _string_list(node, CAMERAS)


def _string_list(node, p: Param) -> tuple[str, ...]:
    """A list parameter of LIST_PARAMS: () when unset or empty; blank entries dropped ([''] = [])."""
    try:
        value = node.get_parameter(p.name).value
    except ParameterUninitializedException:
        return ()
    return tuple(v for v in (value or ()) if v.strip())


def settings(values: Mapping[str, Any], cameras: tuple = ()) -> Settings:
    """The typed snapshot of every run-time setting (core/config.Settings) from parameter values
    (read_all). Raises core.errors.ConfigError for values a config refuses."""
    return Settings(node=build(NodeConfig, values, cameras=tuple(cameras)),
                    segevery=build(SegEveryConfig, values), segany=build(SegAnyConfig, values),
                    filters=build(FilterConfig, values),
                    detector=build(DetectorConfig, values, classes=tuple(values.get(DETECTOR_CLASSES.name, ()))),
                    tracker=build(TrackerConfig, values), follow=build(FollowConfig, values),
                    image=build(ImageConfig, values), overlay=build(OverlayConfig, values),
                    depth=build(DepthConfig, values), extract3d=build(Extract3DConfig, values),
                    detections=build(DetectionsConfig, values))


def read_settings(node) -> Settings:
    """The node's current parameters as one Settings snapshot."""
    return settings(read_all(node), camera_names(node))


def build(owner: Callable[..., C], values: Mapping[str, Any] | Callable[[str], Any], **fields: Any) -> C:
    """An `owner` config (a core/config.py dataclass) from parameter values: every PARAMS entry
    owned by it sets its field (lists back to tuples); `fields` sets the rest (nested configs).
    values: {name: value} (read_all) or a function name -> value (a node's get_parameter)."""
    value_of = values.__getitem__ if isinstance(values, Mapping) else values
    kwargs = {}
    for p in PARAMS:
        if p.owner is owner:
            v = value_of(p.name)
            kwargs[p.field] = tuple(v) if isinstance(p.default, list) else v
    return owner(**kwargs, **fields)


def pipeline_config(values: Mapping[str, Any]) -> PipelineConfig:
    """What the node loads at configure, from its parameter values (read_all)."""
    model = build(ModelConfig, values, cpu=build(CpuPolicy, values))
    return build(PipelineConfig, values, model=model, detector=build(DetectorConfig, values))
