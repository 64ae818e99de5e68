"""Every configurable default of mobilesam_ros, in one place.

Each dataclass here is the single owner of its fields' defaults: the core's constructors, the
command line (cli/), the node's parameter table (ros/params.py, which maps ROS parameter names
onto these fields) and config/mobilesam.yaml (checked by test/ros/test_params.py) all take them
from here. Units are in the field names or docstrings; pixels are original-image px.

This module imports only the standard library: the node reads its CPU policy from it before
anything may import torch (see core/runtime/cpu_policy.py), and nothing here knows ROS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from mobilesam_ros.core.errors import ConfigError

__all__ = ["MODES", "BACKENDS", "PRECISION_CHOICES", "OMP_WAIT_POLICIES", "CpuPolicy", "ModelConfig",
           "DetectorConfig", "V2_DETECTOR_SETTINGS", "FilterConfig", "CLI_FILTERS", "PipelineConfig",
           "NodeConfig", "SegEveryConfig", "SegAnyConfig", "ImageConfig", "OverlayConfig", "DepthConfig",
           "Extract3DConfig", "TrackerConfig", "FollowConfig", "Settings", "EvalConfig", "name_settings",
           "setting_name"]

MODES = ("segevery", "segany", "both")
BACKENDS = ("auto", "torch", "onnx")
PRECISION_CHOICES = ("fp32", "fp16", "bf16")  # runtime/torch_backend.PRECISIONS, without importing torch
OMP_WAIT_POLICIES = ("passive", "active", "env")


# ----------------------------------------------------------------------------- model and runtime
@dataclass(frozen=True)
class CpuPolicy:
    """How this process shares the CPU (applied by core/runtime/cpu_policy.py).

    threads: intra-op threads of torch and of every ONNX Runtime session; 0 = the library's
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


@dataclass
class ModelConfig:
    """Which weights and which runtime (built by core/runtime/factory.build_backend).

    checkpoint: official mobile_sam.pt (flat) or a MobileSAMv2 encoder file; with
    decoder_checkpoint (MobileSAMv2 Prompt_guided_Mask_Decoder.pt) the v2 pair is loaded.
    backend "onnx" runs onnx_encoder/onnx_decoder (written by `export`) on `providers`; with no
    graphs given they are exported once into the cache (runtime/onnx_cache.py, under onnx_cache_dir).
    backend "auto": ONNX Runtime on CPU (graphs given or cached; torch with a warning if they cannot
    be exported), torch on a CUDA device unless `providers` names a GPU provider.
    precision: compute precision (fp32 | fp16 | bf16). Backend torch: autocast with fp32 norms.
    Backend onnx: the graphs are fp32; fp16 only with TensorrtExecutionProvider (fp16 engines),
    otherwise refused (runtime/ort_providers.check_precision); auto picks torch then.
    tf32: let CUDA matmuls and cuDNN convolutions of the fp32 torch backend use TF32 (Ampere and
    later, Jetson Orin included). Off by default: TF32 rounds every input of those products to a
    10-bit mantissa (relative error up to 2^-11, about 5e-4, against fp32's 2^-24), so fp32 outputs
    leave the fp32 golden tolerances; for speed on a GPU choose precision fp16 instead (checked
    against the goldens). No effect on CPU or on the 16-bit precisions.
    cpu: threading of the ONNX Runtime sessions (the process-wide part is the entry point's job).
    sessions: ONNX Runtime sessions per graph (encoder, decoder, detector) for concurrent calls,
    made only when calls overlap (runtime/session_pool.py); the node sets it to the worker threads
    it runs (NodeConfig.workers, at most one per camera). Not a parameter of its own.
    """

    checkpoint: str = ""
    decoder_checkpoint: str = ""
    backend: str = "auto"
    onnx_encoder: str = ""
    onnx_decoder: str = ""
    providers: tuple = field(default_factory=lambda: ("CPUExecutionProvider",))
    device: str = "cpu"
    precision: str = "fp32"
    tf32: bool = False
    onnx_cache_dir: str = ""
    cpu: CpuPolicy = field(default_factory=CpuPolicy)
    sessions: int = 1


@dataclass(frozen=True)
class DetectorConfig:
    """The SegEvery box proposer (core/engine/detector.YoloV8OnnxDetector); the defaults are
    MobileSAMv2's (its Inference.py with ObjectAwareModel.pt, and the 20 px border snap of its
    PromptModelPredictor).

    model: YOLOv8-style ONNX file; "" = no detector (SegEvery uses the point grid).
    conf: keep boxes whose best class score is > conf. iou: NMS suppresses boxes with IoU > iou.
    max_det: at most this many boxes per frame (best first).
    border_snap_px: box edges within this many network-input px of the border snap onto it (0 = off).
    class_names: a text file naming the detector's classes, one per line (line k = class k); ""
        = the names in the detector ONNX's metadata (Ultralytics exports carry `names`), if any.
    classes: SegEvery keeps only the detector boxes of these classes, before decoding (names, or
        ids written as numbers); () = all classes.
    """

    model: str = ""
    conf: float = 0.4
    iou: float = 0.9
    max_det: int = 300
    border_snap_px: float = 20.0
    class_names: str = ""
    classes: tuple = ()


# MobileSAMv2 runs its detector at 1024 px; the node leaves imgsz to the model (its fixed input
# size or its metadata), so the input size is not a DetectorConfig field.
V2_IMGSZ = 1024
#: The settings MobileSAMv2's Inference.py uses with ObjectAwareModel.pt: ``**V2_DETECTOR_SETTINGS``.
V2_DETECTOR_SETTINGS: Mapping[str, object] = {
    "imgsz": V2_IMGSZ, "conf": DetectorConfig.conf, "iou": DetectorConfig.iou,
    "max_det": DetectorConfig.max_det, "border_snap_px": DetectorConfig.border_snap_px,
}


@dataclass(frozen=True)
class FilterConfig:
    """Post-filters on SegEvery instances (the defaults keep everything up to max_instances).

    pred_iou_thresh, stability_thresh: drop masks scoring below these. min_area: drop masks with
    fewer pixels. mask_nms_thresh: drop a mask overlapping a better one by more than this IoU
    (1.0 = off). max_instances: keep at most this many, best predicted IoU first.
    """

    pred_iou_thresh: float = 0.0
    stability_thresh: float = 0.0
    min_area: int = 0
    mask_nms_thresh: float = 1.0
    max_instances: int = 100


# `segevery` on the command line writes a file, not a message a subscriber must take in one
# piece: it keeps more instances than the node by default.
CLI_FILTERS = FilterConfig(max_instances=1000)


@dataclass
class PipelineConfig:
    """What core/engine/model.load_model loads: the model, the optional detector, the point
    grid used without one (points per side), and how many frames' embeddings stay cached."""

    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    grid_points_per_side: int = 16
    cache_size: int = 8


# ----------------------------------------------------------------------------- the node's limits
@dataclass(frozen=True)
class NodeConfig:
    """Structure of the node. mode: segevery (all instances every frame), segany (encode frames
    and answer prompts) or both. autostart: configure and activate without a lifecycle manager.
    tracking_enabled: SegEvery ids are track ids (else 1..N per frame). follow_clicks: a click
    also starts following its object. cameras: the camera names (empty: one unnamed camera).
    workers: how many cameras' items may run at once (ros/worker.py; one camera runs one item at
    a time, so at most len(cameras) are used)."""

    mode: str = "segevery"
    autostart: bool = False
    tracking_enabled: bool = True
    follow_clicks: bool = False
    cameras: tuple = ()
    workers: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} not one of {MODES}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        check_camera_names(self.cameras)

    @property
    def camera_keys(self) -> tuple[str, ...]:
        """The camera of each port: the names, or ("",) for the one unnamed camera."""
        return self.cameras or ("",)


def check_camera_names(names) -> None:
    """Camera names become topic name tokens (`<name>/image`, `~/<name>/instances`): each must
    start with a letter and hold only letters, digits and underscores, and appear once."""
    for name in names:
        if not isinstance(name, str) or not name[:1].isalpha() or not name.replace("_", "").isalnum() \
                or not name.isascii():
            raise ConfigError(f"camera name {name!r}: use letters, digits and '_', starting with a letter")
    if len(set(names)) != len(names):
        raise ConfigError(f"camera names must be unique, got {list(names)}")


@dataclass(frozen=True)
class SegEveryConfig:
    """Which frames SegEvery processes: every every_n-th received frame, at most max_rate_hz
    per second (0 = no limit)."""

    every_n: int = 1
    max_rate_hz: float = 0.0


@dataclass(frozen=True)
class SegAnyConfig:
    """Bounds on prompt work. stamp_tolerance_s: a prompt decodes against the cached frame nearest
    its stamp within this many seconds. max_objects / max_points: a prompt with more objects, or an
    object with more points, is refused whole. prompt_queue: prompts waiting for the worker (the
    oldest is dropped). max_batch_s: seconds one prompt may decode before it is abandoned."""

    stamp_tolerance_s: float = 0.05
    max_objects: int = 100
    max_points: int = 64
    prompt_queue: int = 4
    max_batch_s: float = 5.0


@dataclass(frozen=True)
class ImageConfig:
    """Input images. max_pixels: frames with more pixels are refused before they are allocated
    (8 MP: 4K UHD fits). reliable: subscribe with reliable QoS instead of best effort."""

    max_pixels: int = 8_388_608
    reliable: bool = False


@dataclass(frozen=True)
class OverlayConfig:
    """alpha: mask opacity in the overlay image, 0..1."""

    alpha: float = 0.5


@dataclass(frozen=True)
class DepthConfig:
    """Instances in 3D, around Extract3DConfig. enabled: use `depth` + `camera_info`.
    stamp_tolerance_s: a frame uses the buffered depth image nearest its stamp within this many
    seconds. buffer_size: depth images kept by stamp (and at most this many frames waiting for
    their depth). max_wait_s: a frame whose results are ready before its depth has arrived keeps
    its 3D outputs waiting this many seconds for it (0 = no wait); its 2D outputs are not delayed.
    points_stride: point cloud decimation (every Nth depth row and column)."""

    enabled: bool = False
    stamp_tolerance_s: float = 0.05
    buffer_size: int = 30
    max_wait_s: float = 0.5
    points_stride: int = 2


@dataclass(frozen=True)
class Extract3DConfig:
    """Robustness knobs of core/ops/geometry3d.extract_instances_3d.

    erode_px: mask-edge pixels dropped for the position and for finding the object's depth range
        (pixels at the colour resolution, scaled to the depth resolution; 0 = none). Edges are
        where masks bleed onto the background and where depth has flying pixels.
    gap_m: the object's depth range is the run of its (eroded) mask's sorted depths that contains
        the median and has no jump larger than this (metres); depths beyond a jump are outliers.
    edge_margin_m: pixels of the whole mask within this distance (metres) of that range are
        gated in too (the eroded rim belongs to the object when its depth continues it).
    box_percentile: the box spans the [p, 100 - p] percentiles (nearest rank) of the gated points
        per axis (%): 0 = min/max (noise widens the box), larger values cut a curved surface's
        sparse rim (a sphere's silhouette) off the box.
    min_points: fewer gated points than this and the instance has no 3D result (valid = False).
    min_depth_m, max_depth_m: depths outside this range are invalid (sensor range), metres.
    aspect_tolerance: relative difference of width/height aspect between the colour frame and the
        depth image (or the CameraInfo) above which the depth is refused, not rescaled.
    """

    erode_px: int = 2
    gap_m: float = 0.05
    edge_margin_m: float = 0.03
    box_percentile: float = 0.25
    min_points: int = 20
    min_depth_m: float = 0.05
    max_depth_m: float = 20.0
    aspect_tolerance: float = 0.01


@dataclass(frozen=True)
class TrackerConfig:
    """Every SegEvery tracking threshold (core/engine/tracking.Tracker).

    iou_thresh: least mask IoU (track mask at its predicted or last-seen place vs instance) for a
        match.
    confirm_hits: matched frames (including the first) before a track is confirmed; 1 = at once.
    max_age_s: seconds a confirmed track survives without a match (coasting), from its last match.
    grid_cells: masks are compared on a grid with at most this many samples along the longer side.
    velocity_smoothing: weight of the newest velocity measurement in the exponential average of a
        track's box-centre velocity (px/s); 0 = no motion model (masks compared where last seen).
    box_weight, class_weight: tie-breakers added to the mask IoU in the assignment score, so equal
        mask IoUs go to the better box overlap and then to the same detector class.
    max_tracks: bound on live tracks; beyond it the coasting tracks matched longest ago go first.
    """

    iou_thresh: float = 0.2
    confirm_hits: int = 3
    max_age_s: float = 1.0
    grid_cells: int = 128
    velocity_smoothing: float = 0.5
    box_weight: float = 0.01
    class_weight: float = 0.001
    max_tracks: int = 1000

    def __post_init__(self) -> None:
        checks = ((0.0 < self.iou_thresh <= 1.0, "iou_thresh must be in (0, 1]"),
                  (self.confirm_hits >= 1, "confirm_hits must be >= 1"),
                  (self.max_age_s >= 0.0, "max_age_s must be >= 0"),
                  (self.grid_cells >= 8, "grid_cells must be >= 8"),
                  (0.0 <= self.velocity_smoothing <= 1.0, "velocity_smoothing must be in [0, 1]"),
                  (self.box_weight >= 0.0 and self.class_weight >= 0.0, "weights must be >= 0"),
                  (self.max_tracks >= 1, "max_tracks must be >= 1"))
        for ok, why in checks:
            if not ok:
                raise ConfigError(f"TrackerConfig: {why}")


@dataclass(frozen=True)
class FollowConfig:
    """Limits of click-to-track (core/engine/follow.FollowSet).

    max_objects: objects followed at once (isaac_ros_segment_anything2 allows 10).
    min_pred_iou: a re-prompted mask whose predicted IoU is below this is bad.
    max_area_change: a mask whose area is more than this factor larger or smaller than the last
        good one is bad (a jump to the background or a collapse).
    lost_timeout_s: an object with no good mask for this many seconds of stamps is dropped.
    reacquire_iou: least box IoU between a lost object's last good box and another instance for
        FollowSet.reacquire to take it.
    """

    max_objects: int = 10
    min_pred_iou: float = 0.5
    max_area_change: float = 3.0
    lost_timeout_s: float = 2.0
    reacquire_iou: float = 0.5

    def __post_init__(self) -> None:
        if self.max_objects < 1 or not 0.0 <= self.min_pred_iou <= 1.0 or self.max_area_change < 1.0 \
                or self.lost_timeout_s < 0.0 or not 0.0 < self.reacquire_iou <= 1.0:
            raise ConfigError(f"invalid FollowConfig {self}")


DETECTION_PROMPTS = ("box", "point")


@dataclass(frozen=True)
class DetectionsConfig:
    """Detections in (vision_msgs/Detection2DArray from any detector) as SegAny objects.

    prompt: "box" (the detection's box) or "point" (its centre, one positive point, the best of
        SAM's three candidates by predicted IoU). follow: follow every detection (click-to-track);
        a detection overlapping a followed object's box by IoU >= follow_iou updates that object.
    follow_iou: that box IoU. reliable: subscribe with a reliable QoS (else best effort).
    """

    prompt: str = "box"
    follow: bool = False
    follow_iou: float = 0.5
    reliable: bool = True

    def __post_init__(self) -> None:
        if self.prompt not in DETECTION_PROMPTS or not 0.0 < self.follow_iou <= 1.0:
            raise ConfigError(f"invalid DetectionsConfig {self}")


# ----------------------------------------------------------------------------- the running snapshot
@dataclass(frozen=True)
class Settings:
    """Every setting read while frames and prompts are processed, as one typed, immutable snapshot.

    The node builds it from its parameters at configure and again in its parameter callback after
    a change (ros/params.py), and hands the new snapshot to every camera stream: nothing reads a
    parameter per frame, and a frame is processed under one consistent set of values.
    """

    node: NodeConfig = field(default_factory=NodeConfig)
    segevery: SegEveryConfig = field(default_factory=SegEveryConfig)
    segany: SegAnyConfig = field(default_factory=SegAnyConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    follow: FollowConfig = field(default_factory=FollowConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    extract3d: Extract3DConfig = field(default_factory=Extract3DConfig)
    detections: DetectionsConfig = field(default_factory=DetectionsConfig)


# ----------------------------------------------------------------------------- names for messages
# What the users of an adapter call a config field (the node: its parameter names, in ros/params.py;
# the CLI: its option `--onnx-cache-dir`). The core names settings in its messages through
# `setting_name`, so an error tells the user what to change in their own terms without the core
# knowing any ROS parameter. Each adapter registers its names once, at import.
_SETTING_NAMES: dict = {}


def name_settings(names: Mapping) -> None:
    """Register {(owner dataclass, field name): what the user sets} (later registrations add)."""
    for (owner, fld), name in names.items():
        _SETTING_NAMES.setdefault((owner.__name__, fld), []).append(str(name))


def setting_name(owner: type, fld: str) -> str:
    """How the user sets `owner.fld`: the registered names joined by " / ", else "Owner.fld"."""
    return " / ".join(_SETTING_NAMES.get((owner.__name__, fld), ())) or f"{owner.__name__}.{fld}"


# ----------------------------------------------------------------------------- eval and label
@dataclass(frozen=True)
class EvalConfig:
    """Defaults of `mobilesam eval segany|segevery` and `mobilesam label` (core/eval/).

    seed: seeds prompt sampling (per image: seed + image index) and the bootstrap.
    bootstrap: resamples of the bootstrap 95% interval of each mIoU.
    max_objects: reference masks per image that prompts are sampled from (best predicted IoU
        first; ground truth: the largest first).
    grid: points per side of the grid SegEvery (SAM's automatic mask generator; 32 = SAM's).
    grid_pred_iou_thresh, grid_stability_thresh: the grid's mask filters (SAM's generator's
        defaults; a detector's or the user's prompts are not filtered by score).
    ar_conf, ar_max_det: the detector's confidence floor and box budget for `eval segevery`: low
        enough and large enough that AR@1000 can differ from AR@100 (0.001 is Ultralytics'
        validation floor; proposals are scored this way, not at the interactive conf 0.4 / 300 boxes).
    label_fps: frame rate assumed for an image folder when tracking in `label` (stamps = index / fps).
    """

    seed: int = 0
    bootstrap: int = 1000
    max_objects: int = 16
    grid: int = 32
    grid_pred_iou_thresh: float = 0.88
    grid_stability_thresh: float = 0.95
    ar_conf: float = 0.001
    ar_max_det: int = 1000
    label_fps: float = 10.0

    def __post_init__(self) -> None:
        checks = ((self.bootstrap >= 1, "bootstrap must be >= 1"),
                  (self.max_objects >= 1, "max_objects must be >= 1"),
                  (self.grid >= 1, "grid must be >= 1"),
                  (0.0 <= self.ar_conf <= 1.0, "ar_conf must be in [0, 1]"),
                  (self.ar_max_det >= 1, "ar_max_det must be >= 1"),
                  (self.label_fps > 0.0, "label_fps must be > 0"))
        for ok, why in checks:
            if not ok:
                raise ConfigError(why)
