"""What the ROS-free frame pipeline takes and returns (the contract the ROS node and replay build on): the one
frame type, :class:`~bifusion_core.data.frame.Frame` (re-exported here), in; :class:`FrameResult` out."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.frame import Frame
from ..models.postprocess import Instance

__all__ = ["Frame", "FrameResult", "NonFiniteOutput"]


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
