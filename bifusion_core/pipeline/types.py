"""What the ROS-free frame pipeline takes and returns (the contract the ROS node and replay build on)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..models.postprocess import Instance


@dataclass
class Frame:
    """One RGB-D frame.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 RGB.
        depth: ``(H, W)`` float32 metres (0 or NaN = no reading) or uint16 millimetres.
        intrinsics: ``(fx, fy, cx, cy)`` of the (aligned) colour camera.
        pose: ``(4, 4)`` camera(optical)->world transform; identity when the world frame is the camera's.
        stamp: seconds.
        frame_id: world frame name of the outputs (e.g. "map").
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: tuple[float, float, float, float]
    pose: np.ndarray
    stamp: float = 0.0
    frame_id: str = "map"


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
