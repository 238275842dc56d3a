"""One RGB-D frame with its camera, as every reader and generator of :mod:`bifusion_core.data` returns it.

Conventions (shared with ScanNet's exported frames):

* ``intrinsics`` is the ``(3, 3)`` pinhole matrix of the returned image size; pixel ``(u, v)`` = (column, row)
  with integer coordinates at pixel centres, so a point ``(x, y, z)`` of the camera frame lands at
  ``u = fx x / z + cx``, ``v = fy y / z + cy``.
* The camera frame is the *optical* frame: x right, y down, z forward.
* ``pose`` is the ``(4, 4)`` camera-to-world transform (ScanNet ``pose/N.txt``); the world has z up (REP 103).
* ``depth`` is float32 metres along the optical axis, 0 where invalid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RGBDFrame:
    """An RGB-D frame.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 colour, RGB order.
        depth: ``(H, W)`` float32 metres, 0 = no measurement.
        intrinsics: ``(3, 3)`` float64 camera matrix for ``(H, W)``.
        pose: ``(4, 4)`` float64 camera-to-world transform.
        semantic: ``(H, W)`` int64 ScanNet label ids (0 = unlabelled), or None.
        instance: ``(H, W)`` int64 instance ids, unique per scene (0 = none), or None.
        frame_id: name of the frame (its file stem).
        stamp_ns: acquisition time in nanoseconds, where known.
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    pose: np.ndarray
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None
    frame_id: str = ""
    stamp_ns: int | None = None

    def __post_init__(self) -> None:
        h, w = self.depth.shape[:2] if self.depth.ndim == 2 else (None, None)
        if h is None:
            raise ValueError(f"frame {self.frame_id!r}: depth must be (H, W), got {self.depth.shape}")
        if self.rgb.shape != (h, w, 3):
            raise ValueError(f"frame {self.frame_id!r}: rgb {self.rgb.shape} does not match depth {(h, w)}")
        for name in ("semantic", "instance"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (h, w):
                raise ValueError(f"frame {self.frame_id!r}: {name} {arr.shape} does not match depth {(h, w)}")
        if self.intrinsics.shape != (3, 3) or self.pose.shape != (4, 4):
            raise ValueError(f"frame {self.frame_id!r}: need (3, 3) intrinsics and (4, 4) pose, got "
                             f"{self.intrinsics.shape} and {self.pose.shape}")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.depth.shape[0], self.depth.shape[1]
