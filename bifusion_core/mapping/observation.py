"""One frame's instance as the map receives it (:class:`Observation`), validated once on construction."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import check_float, check_int


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def check_points(name: str, points) -> np.ndarray:
    """``points`` as a read-only ``(M, 3)`` float64 copy; ``ValueError`` unless a finite float array of that
    shape."""
    a = np.asarray(points)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must have shape (M, 3), got {a.shape}")
    if a.dtype.kind != "f":
        raise ValueError(f"{name} must be a float array (world metres), got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return _readonly(np.array(a, np.float64))


def check_colours(name: str, colours, n: int) -> np.ndarray:
    """``colours`` as a read-only ``(n, 3)`` uint8 copy; ``ValueError`` otherwise."""
    a = np.asarray(colours)
    if a.shape != (n, 3):
        raise ValueError(f"{name} must have shape ({n}, 3), got {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255 RGB), got dtype {a.dtype}")
    return _readonly(a.copy())


def check_labels(name: str, labels, n: int, minimum: int) -> np.ndarray:
    """``labels`` as a read-only ``(n,)`` int64 copy of integers >= ``minimum``; ``ValueError`` otherwise."""
    a = np.asarray(labels)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {a.min()}")
    return _readonly(a)


@dataclass(frozen=True, eq=False)
class Observation:
    """One instance segmented in one frame, in the world frame.

    Attributes:
        points: ``(M, 3)`` float world coordinates, metres (stored as read-only float64).
        class_id: the instance's class (contiguous index into the class list, >= 0).
        score: its confidence in [0, 1].
        embedding: ``(D,)`` float merge embedding (the merge head's output) or None; stored L2-normalised.
            When either side of a pair has none, the similarity term of the merge score is 1.
        colours: optional ``(M, 3)`` uint8 RGB of the points.
        semantic: optional ``(M,)`` integer per-point class index (-1: unknown).

    ``colours`` and ``semantic`` only feed the labelled voxel map when a frame's full cloud is not given
    (:meth:`~bifusion_core.mapping.scene_map.SceneMap.update`). Every check raises ``ValueError``.
    """

    points: np.ndarray
    class_id: int
    score: float
    embedding: np.ndarray | None = None
    colours: np.ndarray | None = None
    semantic: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = check_points("observation points", self.points)
        n = len(points)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "class_id", check_int("observation class_id", self.class_id, 0))
        object.__setattr__(self, "score", check_float("observation score", self.score, 0.0, 1.0))
        if self.embedding is not None:
            e = np.asarray(self.embedding)
            if e.ndim != 1 or e.shape[0] < 1:
                raise ValueError(f"observation embedding must have shape (D,), got {e.shape}")
            if e.dtype.kind != "f":
                raise ValueError(f"observation embedding must be a float array, got dtype {e.dtype}")
            e = e.astype(np.float64)
            norm = float(np.linalg.norm(e)) if np.isfinite(e).all() else float("nan")
            if not np.isfinite(norm) or norm == 0.0:
                raise ValueError("observation embedding must be finite and non-zero")
            object.__setattr__(self, "embedding", _readonly(e / norm))
        if self.colours is not None:
            object.__setattr__(self, "colours", check_colours("observation colours", self.colours, n))
        if self.semantic is not None:
            object.__setattr__(self, "semantic", check_labels("observation semantic", self.semantic, n, -1))

    def __len__(self) -> int:
        return int(self.points.shape[0])
