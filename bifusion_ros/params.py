"""The ``bifusion`` node's parameters as a ROS-free table.

:data:`PARAMS` is the single source of truth: the node declares exactly these parameters (with a
``rcl_interfaces/ParameterDescriptor`` built from each row: description, range, read-only flag),
``config/realsense.yaml`` holds their defaults (``python -m bifusion_ros.params`` prints that file) and the
launch files parse their arguments with :func:`parse_string_list` / :func:`parse_bool`.

Output topics are *private* names (``~/cloud``): with the node named ``bifusion`` in the root namespace they
resolve to ``/bifusion/cloud``, ``/bifusion/markers``, ``/bifusion/instances``, ``/bifusion/alpha`` and, with
the map on, ``/bifusion/map_cloud`` and ``/bifusion/map_markers`` (service ``/bifusion/reset_map``)
(:func:`resolve_topic`); remap them or set the parameter to an absolute name to move them. Diagnostics go to
the absolute ``/diagnostics`` (what ``diagnostic_aggregator`` and ``rqt_robot_monitor`` read).

Empty string arrays cannot be written in a ROS 2 parameter YAML file (the rcl parser cannot type ``[]``),
so a parameter whose default is an empty list (``classes``) appears in the generated YAML only as a comment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bifusion_core.io.class_list import check_class_names, parse_class_list
from bifusion_core.mapping.config import OVERLAP_KINDS
from bifusion_core.pipeline.session import MISSING_TF_POLICIES

__all__ = [
    "NODE_NAME",
    "ParamSpec",
    "PARAMS",
    "UNKNOWN_LABEL",
    "spec",
    "defaults",
    "validate",
    "coerce",
    "resolve_topic",
    "parse_string_list",
    "parse_bool",
    "yaml_parameters",
    "render_yaml",
    "bifusion_overrides",
    "map_config",
]

NODE_NAME = "bifusion"
"""The node's name (also the key of ``config/realsense.yaml``)."""

UNKNOWN_LABEL = 0xFFFFFFFF
"""``label`` value (UINT32 max) written into the published cloud for points without a class (semantic -1)."""



@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: parameter name.
        default: default value; its Python type is the parameter type (``bool``, ``int``, ``float``, ``str``,
            ``list`` of ``str``).
        description: what ``ros2 param describe`` shows.
        range: ``(from, to)`` inclusive bounds for ``int`` / ``float`` parameters (declared as
            ``IntegerRange`` / ``FloatingPointRange`` with step 0 = any value in between).
        choices: the allowed values of a string parameter (listed in ``additional_constraints``).
        read_only: True for parameters only read at start-up (topics, model, synchroniser); changing
            them needs a restart.
        unit: unit of a numeric value, for the description.
    """

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    unit: str = ""

    @property
    def type(self) -> type:
        """``bool``, ``int``, ``float``, ``str`` or ``list`` (of strings)."""
        return list if isinstance(self.default, (list, tuple)) else type(self.default)

    @property
    def constraints(self) -> str:
        """Human-readable constraints (``ParameterDescriptor.additional_constraints``)."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.range is not None:
            lo, hi = self.range
            parts.append(f"{lo} <= value <= {hi}" + (f" ({self.unit})" if self.unit else ""))
        if self.read_only:
            parts.append("read-only: set at start-up")
        return "; ".join(parts)


PARAMS: tuple[ParamSpec, ...] = (
    # ------------------------------------------------------------------ inputs
    ParamSpec("color_topic", "/camera/camera/color/image_raw",
              "Colour image topic (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8 or mono8).", read_only=True),
    ParamSpec("depth_topic", "/camera/camera/aligned_depth_to_color/image_raw",
              "Depth image aligned to the colour camera (sensor_msgs/Image 16UC1 in depth_scale units, or 32FC1 "
              "metres), same size as the colour image.", read_only=True),
    ParamSpec("camera_info_topic", "/camera/camera/aligned_depth_to_color/camera_info",
              "sensor_msgs/CameraInfo of the aligned depth (= colour) camera.", read_only=True),
    ParamSpec("sync_slop", 0.05,
              "Largest stamp spread (s) of a colour/depth/camera-info set paired by the "
              "message_filters ApproximateTimeSynchronizer.", range=(0.0, 1.0), read_only=True, unit="s"),
    ParamSpec("sync_queue_size", 10,
              "Messages queued per input of the synchroniser.", range=(1, 100), read_only=True),
    ParamSpec("mask_topic", "",
              "2D instance masks of a segmenter node (sensor_msgs/Image mono8, mono16, 16UC1 or 32SC1 ids, 0 = no "
              "mask; the colour image's size, stamped like it), matched to frames by stamp; empty = off (VCCS "
              "superpoints alone). A mask of another encoding or size is skipped and counted, its frame processed.",
              read_only=True),
    ParamSpec("mask_timeout", 0.1,
              "How long (s) a frame waits for its mask before it is processed without one.",
              range=(0.0, 5.0), read_only=True, unit="s"),
    ParamSpec("superpoints_from_masks", False,
              "With masks: one superpoint per mask (ESAM's rule), VCCS only for the points no mask covers; "
              "false: VCCS superpoints cut along the mask borders.", read_only=True),
    ParamSpec("depth_scale", 0.001,
              "Metres per unit of a 16UC1 depth image (RealSense: 0.001 = millimetres); 32FC1 depth is metres.",
              range=(1e-6, 1.0), unit="m"),
    # ------------------------------------------------------------------ TF
    ParamSpec("world_frame", "map",
              "Frame the cloud, markers and instances are published in; the camera pose is looked up as "
              "world_frame <- camera frame at the image stamp."),
    ParamSpec("camera_frame", "",
              "Camera (optical) frame of the images for the TF lookup; empty = the colour image's header.frame_id."),
    ParamSpec("tf_timeout", 0.1,
              "How long (s) to wait for the camera pose in TF before applying on_missing_tf.",
              range=(0.0, 5.0), unit="s"),
    ParamSpec("on_missing_tf", "skip",
              "Without a camera pose: 'skip' logs, counts and drops the frame; 'identity' uses the identity "
              "pose and publishes the outputs in the camera frame instead of world_frame.",
              choices=MISSING_TF_POLICIES),
    # ------------------------------------------------------------------ model
    ParamSpec("checkpoint", "",
              "Model checkpoint file; empty = the shipped demo checkpoint.", read_only=True),
    ParamSpec("device", "auto",
              "Inference device: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda'.",
              choices=("auto", "cpu", "cuda"), read_only=True),
    ParamSpec("half", False, "Half precision: fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 / AMX).",
              read_only=True),
    ParamSpec("voxel_size", 0.0,
              "Voxel size (m) of the 3D branch; 0 = the checkpoint's (5 cm for the shipped one).",
              range=(0.0, 0.5), read_only=True, unit="m"),
    ParamSpec("classes", [],
              "Class names / open-vocabulary text prompts; empty = the checkpoint's class list. "
              "Can be changed at run time (ros2 param set /bifusion classes \"['chair', 'table']\")."),
    ParamSpec("score_threshold", 0.25,
              "Instances scoring below this are left out of the markers and instance list and their points "
              "get instance 0 in the cloud.", range=(0.0, 1.0)),
    # ------------------------------------------------------------------ outputs
    ParamSpec("cloud_topic", "~/cloud",
              "Labelled sensor_msgs/PointCloud2 (x, y, z, rgb, label, instance, score, alpha) in world_frame.",
              read_only=True),
    ParamSpec("markers_topic", "~/markers",
              "visualization_msgs/MarkerArray: a box and a text label per instance.", read_only=True),
    ParamSpec("instances_topic", "~/instances",
              "bifusion_ros/InstanceArray: id, class, score, box and point count per instance.", read_only=True),
    ParamSpec("alpha_topic", "~/alpha",
              "sensor_msgs/Image 32FC1 of the 2D/3D fusion weight per pixel (NaN where no point), in the "
              "camera frame.", read_only=True),
    # ------------------------------------------------------------------ online map
    ParamSpec("map", True,
              "Build the online 3D instance map: each frame's instances merge into persistent instances whose "
              "ids the cloud, markers and instances carry; publishes map_cloud_topic / map_markers_topic and "
              "offers ~/reset_map (std_srvs/Trigger). false: per-frame ids 1..K.", read_only=True),
    ParamSpec("map_voxel_size", 0.05,
              "Edge (m) of the map's voxels (instance voxel sets, boxes and the labelled map cloud).",
              range=(0.01, 1.0), read_only=True, unit="m"),
    ParamSpec("map_max_instances", 100,
              "Most instances kept in the map; beyond it the least recently seen are evicted (their ids are "
              "never reused).", range=(1, 100000), read_only=True),
    ParamSpec("map_merge_threshold", 0.01,
              "A new instance merges into a map instance when embedding cosine x box overlap (map_overlap) is "
              "above this.", range=(0.0, 0.99), read_only=True),
    ParamSpec("map_overlap", "box_iom",
              "Geometric term of the merge score: box_iom (intersection of the 3D boxes over the smaller box), "
              "box_iou (their IoU, as ESAM) or voxel_iou (IoU of the voxel sets).",
              choices=OVERLAP_KINDS, read_only=True),
    ParamSpec("map_class_agnostic", False,
              "Merge instances of different classes too (default: only instances of one class merge).",
              read_only=True),
    ParamSpec("map_max_voxels", 250000,
              "Most voxels of the labelled map cloud (about 120 bytes each); beyond it the least recently seen "
              "voxels are dropped.", range=(1000, 100000000), read_only=True),
    ParamSpec("map_publish_period", 1.0,
              "Seconds (of image stamps) between two map_cloud / map_markers messages; 0 = with every frame.",
              range=(0.0, 3600.0), unit="s"),
    ParamSpec("map_cloud_topic", "~/map_cloud",
              "Labelled sensor_msgs/PointCloud2 of the map's voxels (x, y, z, rgb, label, instance) in "
              "world_frame; reliable, transient local (a late subscriber gets the latest map).", read_only=True),
    ParamSpec("map_markers_topic", "~/map_markers",
              "visualization_msgs/MarkerArray: a box and a label per map instance, coloured by id; reliable, "
              "transient local.", read_only=True),
    ParamSpec("diagnostics_period", 1.0,
              "Period (s) of the diagnostic_msgs/DiagnosticArray published on /diagnostics.",
              range=(0.1, 60.0), read_only=True, unit="s"),
    ParamSpec("latency_log_period", 5.0,
              "Throttle period (s) of the per-stage latency log line; 0 = log every frame.",
              range=(0.0, 3600.0), unit="s"),
)
"""Every parameter the node declares, in declaration order."""

_BY_NAME = {p.name: p for p in PARAMS}


def spec(name: str) -> ParamSpec:
    """The :class:`ParamSpec` of ``name`` (``KeyError`` for an unknown parameter)."""
    return _BY_NAME[name]


def defaults() -> dict[str, Any]:
    """``{name: default}`` of every parameter (lists copied)."""
    return {p.name: list(p.default) if p.type is list else p.default for p in PARAMS}


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is.

    Checks the type (an ``int`` is accepted for a ``float`` parameter; a ``list`` parameter takes a list or
    tuple of strings, and an empty list of any element type), the range and the choices.
    """
    p = _BY_NAME.get(name)
    if p is None:
        return f"unknown parameter {name!r}"
    t = p.type
    if t is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{name} must be a list of strings, got {value!r}"
        if value:  # the one class-list rule set (empty: the checkpoint's classes)
            try:
                check_class_names(list(value))
            except ValueError as exc:
                return f"{name}: {exc}"
        return None
    if t is bool:
        ok = isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        return f"{name} must be a {'finite ' if t is float else ''}{t.__name__}, got {value!r}"
    if p.range is not None and not (p.range[0] <= value <= p.range[1]):
        return f"{name} must lie in [{p.range[0]}, {p.range[1]}], got {value!r}"
    if p.choices is not None and value not in p.choices:
        return f"{name} must be one of {', '.join(p.choices)}; got {value!r}"
    return None


def coerce(name: str, value: Any) -> tuple[Any, str | None]:
    """``(value, None)`` with ``value`` in the parameter's own type (an integer for a float parameter becomes a
    float; a tuple or rclpy array for the string list becomes a list), or ``(value, reason)`` when
    :func:`validate` refuses it. Never raises: the node calls it from rclpy's parameter callbacks."""
    p = _BY_NAME.get(name)
    if p is None:
        return value, f"unknown parameter {name!r}"
    if p.type is list and value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        try:
            value = list(value)
        except Exception:  # noqa: BLE001 - an odd iterable: validate() says why below
            pass
    elif p.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value, validate(name, value)


def resolve_topic(topic: str, node_name: str = NODE_NAME, namespace: str = "/") -> str:
    """A topic name as ROS 2 resolves it for node ``namespace/node_name`` (``~/x``, relative or absolute)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if topic.startswith("/"):
        return topic
    if topic == "~" or topic.startswith("~/"):
        return f"{ns}/{node_name}{topic[1:]}"
    return f"{ns}/{topic}"


def parse_string_list(text) -> list[str]:
    """A launch argument -> list of class names (:func:`bifusion_core.io.class_list.parse_class_list`: ``""``
    -> ``[]``; a YAML flow list or comma-separated names).

    Raises:
        ValueError: a YAML list holding something other than non-empty strings, an empty or repeated item.
    """
    return parse_class_list(text)


def parse_bool(text) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case) -> bool (``ValueError`` otherwise)."""
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def yaml_parameters(node_name: str = NODE_NAME) -> dict:
    """``{node_name: {"ros__parameters": {...}}}`` with every default that a ROS 2 YAML file can hold
    (empty lists are left out, see the module doc)."""
    values = {name: value for name, value in defaults().items() if not (isinstance(value, list) and not value)}
    return {node_name: {"ros__parameters": values}}


def _yaml_scalar(value) -> str:
    import json

    import yaml

    if isinstance(value, str):  # always quoted: the rcl parser then never reads it as a bool or a number
        return json.dumps(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def render_yaml(node_name: str = NODE_NAME) -> str:
    """The text of ``config/realsense.yaml``: every parameter with its description as a comment."""
    lines = [
        "# Parameters of the bifusion node for a RealSense camera started by realsense2_camera",
        "# (align_depth.enable: true). Generated from bifusion_ros/params.py: python -m bifusion_ros.params",
        f"{node_name}:",
        "  ros__parameters:",
    ]
    for p in PARAMS:
        lines.append(f"    # {p.description}" + (f" [{p.constraints}]" if p.constraints else ""))
        if p.type is list and not p.default:
            lines.append(f"    # {p.name}: [chair, table]   (empty list = default; ROS 2 YAML cannot hold [])")
        else:
            lines.append(f"    {p.name}: {_yaml_scalar(p.default)}")
    return "\n".join(lines) + "\n"


def bifusion_overrides(arg) -> dict:
    """Node parameters given as launch arguments (``arg(name)`` -> the argument's string, empty when not
    given), validated; used by the launch files."""
    out = {}
    for name in ("checkpoint", "device", "world_frame"):
        if arg(name):
            out[name] = arg(name)
    for name in ("half", "map"):
        if arg(name):
            out[name] = parse_bool(arg(name))
    if arg("classes"):
        out["classes"] = parse_string_list(arg("classes"))
    for name, value in out.items():
        err = validate(name, value)
        if err:
            raise ValueError(f"launch argument {name}: {err}")
    return out


def map_config(cfg: dict):
    """The :class:`bifusion_core.mapping.MapConfig` of the ``map_*`` parameters in ``cfg`` (``{name: value}``)."""
    from bifusion_core.mapping import MapConfig

    return MapConfig(voxel_size=cfg["map_voxel_size"], max_instances=cfg["map_max_instances"],
                     merge_threshold=cfg["map_merge_threshold"], overlap=cfg["map_overlap"],
                     class_agnostic=cfg["map_class_agnostic"], max_voxels=cfg["map_max_voxels"])


def main() -> None:  # pragma: no cover - trivial
    print(render_yaml(), end="")


if __name__ == "__main__":  # pragma: no cover
    main()

