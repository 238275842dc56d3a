"""The one RGB-D frame type: every reader and generator of :mod:`bifusion_core.data` returns it, and the frame
pipeline (node, replay, ``infer``) takes it (:mod:`bifusion_core.pipeline` re-exports it).

Conventions (shared with ScanNet's exported frames):

* ``intrinsics`` are the pinhole ``(fx, fy, cx, cy)`` of the returned image size; pixel ``(u, v)`` = (column, row)
  with integer coordinates at pixel centres, so a point ``(x, y, z)`` of the camera frame lands at
  ``u = fx x / z + cx``, ``v = fy y / z + cy`` (:attr:`Frame.camera_matrix` gives the 3x3 matrix).
* The camera frame is the *optical* frame: x right, y down, z forward.
* ``pose`` is the ``(4, 4)`` camera-to-world transform (ScanNet ``pose/N.txt``); the world has z up (REP 103).
* ``depth`` is float32 metres along the optical axis (0 where invalid) from the readers; the pipeline also
  takes uint16 millimetres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import as_intrinsics


@dataclass
class Frame:
    """One RGB-D frame: what the data readers and generators return and the pipeline's input contract, checked
    when the frame is built.

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
        semantic: ``(H, W)`` int64 ScanNet label ids (0 = unlabelled) of a dataset frame, or None.
        instance: ``(H, W)`` int64 instance ids, unique per scene (0 = none), or None.
        name: the frame's name in its recording (a ScanNet file stem, a synthetic frame's index).
        masks: ``(H, W)`` integer 2D instance-mask ids aligned with ``rgb`` (e.g. from a SAM / FastSAM node;
            0 or negative = no mask), or None. The pipeline cuts superpoints along them
            (:func:`point_masks`, ``SuperpointConfig.from_masks``); without them it uses VCCS alone.

    Raises:
        ValueError: naming the field that breaks the contract.
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: tuple[float, float, float, float]
    pose: np.ndarray
    stamp: float = 0.0
    frame_id: str = "map"
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None
    name: str = ""
    masks: np.ndarray | None = None

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
        for what in ("semantic", "instance"):
            arr = getattr(self, what)
            if arr is not None and (not isinstance(arr, np.ndarray) or arr.shape != depth.shape):
                raise ValueError(f"frame {self.name!r}: {what} must be an {depth.shape} array like depth, got "
                                 f"{_describe(arr)}")
        m = self.masks
        if m is not None and (not isinstance(m, np.ndarray) or m.shape != depth.shape
                              or not (np.issubdtype(m.dtype, np.integer) or m.dtype == np.bool_)):
            raise ValueError(f"frame {self.name!r}: masks must be an integer {depth.shape} array like depth, got "
                             f"{_describe(m)}")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.depth.shape[0], self.depth.shape[1]

    @property
    def camera_matrix(self) -> np.ndarray:
        """``(3, 3)`` float64 pinhole matrix of ``intrinsics``."""
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def point_masks(masks: np.ndarray, pixels) -> np.ndarray:
    """Per-point mask ids ``(N,)`` int64 of a frame's ``masks`` image read at the points' ``pixels`` ``(N, 2)``
    ``(u, v)``; -1 where no mask covers the pixel (ids 0 and negative)."""
    px = np.asarray(pixels)
    ids = masks[px[:, 1], px[:, 0]].astype(np.int64)
    return np.where(ids > 0, ids, -1)


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__
