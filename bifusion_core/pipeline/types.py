"""What the ROS-free frame pipeline takes and returns (the contract the ROS node and replay build on)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..geometry import as_intrinsics
from ..models.postprocess import Instance


@dataclass
class Frame:
    """One RGB-D frame: the pipeline's input contract, checked when the frame is built.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 RGB (float images are refused: 0..1 and 0..255 floats cannot be told apart
            reliably, and the outputs' colours are uint8).
        depth: ``(H, W)`` float32/float64 metres (0, negative, NaN or inf = no reading) or uint16 millimetres,
            the size of ``rgb`` (aligned to the colour camera).
        intrinsics: pixels of the (aligned) colour camera, in any form :func:`~bifusion_core.geometry.as_intrinsics`
            reads (``(fx, fy, cx, cy)``, a ``CameraIntrinsics``, a 3x3 matrix); stored as ``(fx, fy, cx, cy)``.
        pose: ``(4, 4)`` camera(optical)->world transform; identity when the world frame is the camera's
            (finite, rigid: checked where the points are built, :func:`bifusion_core.geometry.check_pose`).
        stamp: seconds (finite).
        frame_id: world frame name of the outputs (e.g. "map").

    Raises:
        ValueError: naming the field that breaks the contract.
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: tuple[float, float, float, float]
    pose: np.ndarray
    stamp: float = 0.0
    frame_id: str = "map"

    def __post_init__(self) -> None:
        rgb, depth = self.rgb, self.depth
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frame rgb must be an (H, W, 3) numpy array, got {_describe(rgb)}")
        if rgb.dtype != np.uint8:
            raise ValueError(f"frame rgb must be uint8 (0..255), got {rgb.dtype}; convert float images with "
                             "np.clip(x * 255, 0, 255).astype(np.uint8) for 0..1 values")
        if not isinstance(depth, np.ndarray) or depth.ndim != 2:
            raise ValueError(f"frame depth must be an (H, W) numpy array, got {_describe(depth)}")
        if depth.dtype not in (np.uint16, np.float32, np.float64):
            raise ValueError(f"frame depth must be uint16 millimetres or float32/float64 metres, got {depth.dtype}")
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"frame rgb {rgb.shape[:2]} and depth {depth.shape} sizes differ (H, W); depth must "
                             "be aligned to the colour image")
        try:
            self.intrinsics = as_intrinsics(self.intrinsics).as_tuple()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"frame intrinsics: {exc} (got {self.intrinsics!r})") from None
        pose = np.asarray(self.pose)
        if pose.shape != (4, 4) or not np.issubdtype(pose.dtype, np.number) or not np.isfinite(pose).all():
            raise ValueError(f"frame pose must be a finite 4x4 matrix, got {_describe(self.pose)}")
        try:
            stamp = float(self.stamp)
        except (TypeError, ValueError):
            stamp = math.nan
        if not math.isfinite(stamp):
            raise ValueError(f"frame stamp must be finite seconds, got {self.stamp!r}")
        self.stamp = stamp
        if not isinstance(self.frame_id, str):
            raise ValueError(f"frame frame_id must be a string, got {type(self.frame_id).__name__}")


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


@dataclass
class FrameResult:
    """Labelled points of one frame, in the world frame.

    Attributes:
        points: ``(N, 3)`` float32 metres; colours ``(N, 3)`` uint8; semantic ``(N,)`` int64 class index
            (-1 unknown); instance ``(N,)`` int64 (0: none, else the id of an entry of ``instances``);
            score ``(N,)`` float32; alpha ``(N,)`` float32 2D/3D gate weight (1 = all 2D).
        pixels: ``(N, 2)`` int64 (u, v) pixel each point came from.
        instances: the frame's instances (``Instance``: id, class_id, class_name, score, center, size,
            point_count, point_indices).
        class_names: the active class list (``semantic`` indexes it).
        timings: seconds per stage, e.g. {"backproject": .., "clip": .., "backbone": .., "decoder": ..}.
        alpha_image: ``(H, W)`` float32 α per pixel (NaN where no point), for publishing as a heat map.
        stride: pixel stride the points were sampled at (each stands for a ``stride x stride`` block).
    """

    points: np.ndarray
    colours: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    score: np.ndarray
    alpha: np.ndarray
    pixels: np.ndarray
    instances: list[Instance]
    class_names: list[str]
    stamp: float = 0.0
    frame_id: str = "map"
    timings: dict[str, float] = field(default_factory=dict)
    alpha_image: np.ndarray | None = None
    stride: int = 1

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteOutput` naming the first output (points, score, alpha, an instance's score,
        box or merge embedding) that holds a NaN or inf. The processor calls it once on every result, where the
        outputs leave the model, so nothing non-finite is published, merged into the map or scored."""
        for name in ("points", "score", "alpha"):
            arr = getattr(self, name)
            bad = ~np.isfinite(arr)
            if bad.any():
                raise NonFiniteOutput(f"{int(bad.sum())} of {arr.size} {name} values are not finite")
        for inst in self.instances:
            values = {"score": np.asarray([inst.score], np.float64), "center": np.asarray(inst.center),
                      "size": np.asarray(inst.size)}
            if inst.embedding is not None:
                values["embedding"] = np.asarray(inst.embedding)
            for name, arr in values.items():
                if not np.isfinite(arr).all():
                    raise NonFiniteOutput(f"instance {inst.id} ({inst.class_name!r}) has a non-finite {name}")


class NonFiniteOutput(ValueError):
    """The model's outputs for a frame hold NaN or inf (e.g. a diverged model, or fp16 overflow); the frame is
    skipped (counted as ``bad_output``), never published or scored."""
