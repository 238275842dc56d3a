"""File layout of ScanNet's exported frames (``SensReader`` output plus the 2D label exports), shared by the
reader (:mod:`.frames`) and the synthetic generator, and the matrix text files both use.

::

    SCENE/color/N.jpg                 colour (the reader resizes it to the depth size)
    SCENE/depth/N.png                 uint16 depth, millimetres (DEPTH_SCALE per metre), 0 invalid
    SCENE/pose/N.txt                  4x4 camera-to-world (optical frame); "-inf" rows mark lost tracking
    SCENE/intrinsic/intrinsic_depth.txt, intrinsic_color.txt, extrinsic_depth.txt, extrinsic_color.txt
    SCENE/label-filt/N.png            uint16 ScanNet label ids (optional)
    SCENE/instance-filt/N.png         uint8/uint16 instance ids, 0 none (optional)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOR_DIR, DEPTH_DIR, POSE_DIR, INTRINSIC_DIR = "color", "depth", "pose", "intrinsic"
LABEL_DIR, INSTANCE_DIR = "label-filt", "instance-filt"
INTRINSIC_DEPTH, INTRINSIC_COLOR = "intrinsic_depth.txt", "intrinsic_color.txt"
EXTRINSIC_DEPTH, EXTRINSIC_COLOR = "extrinsic_depth.txt", "extrinsic_color.txt"
COLOR_EXTS = (".jpg", ".jpeg", ".png")
DEPTH_SCALE = 1000.0
"""Depth PNG units per metre."""


def write_matrix(path, matrix: np.ndarray) -> None:
    """Write a matrix as whitespace-separated rows (the ScanNet pose / intrinsic format)."""
    m = np.atleast_2d(np.asarray(matrix, np.float64))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(" ".join(f"{v:.9g}" for v in row) for row in m) + "\n")


def read_matrix(path, shape: tuple[int, int] = (4, 4), allow_nonfinite: bool = False) -> np.ndarray:
    """Read a whitespace-separated matrix file of ``shape``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not numbers, wrong count, or non-finite values (unless ``allow_nonfinite``); the message
            names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matrix file not found: {path}")
    text = path.read_text(errors="replace").split()
    try:
        vals = np.array([float(t) for t in text])
    except ValueError as exc:
        raise ValueError(f"{path}: malformed matrix file ({exc})") from None
    if vals.size != shape[0] * shape[1]:
        raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} matrix ({shape[0] * shape[1]} numbers), "
                         f"found {vals.size} numbers")
    if not allow_nonfinite and not np.isfinite(vals).all():
        raise ValueError(f"{path}: matrix contains non-finite values")
    return vals.reshape(shape)


def read_intrinsics(path) -> np.ndarray:
    """``(3, 3)`` camera matrix from a 4x4 (ScanNet) or 3x3 intrinsic file; ``ValueError`` naming the file when
    it is not a valid pinhole matrix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"intrinsics file not found: {path}")
    n = len(path.read_text(errors="replace").split())
    m = read_matrix(path, (4, 4) if n == 16 else (3, 3))[:3, :3]
    if not (m[0, 0] > 0 and m[1, 1] > 0 and np.allclose(m[2], [0, 0, 1]) and m[1, 0] == 0):
        raise ValueError(f"{path}: not a pinhole camera matrix: {m.tolist()}")
    return m
