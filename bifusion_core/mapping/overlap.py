"""Geometric overlap of instances, all pairs at once: IoU of axis-aligned 3D boxes, intersection over the smaller
box (containment), and IoU of voxel sets."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse


def _volumes(name, lo_a, hi_a, lo_b, hi_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vol_a (A,), vol_b (B,), intersection volume (A, B))`` of two sets of boxes; ``ValueError`` naming
    ``name`` for mismatched corner shapes or a max corner below its min corner."""
    lo_a, hi_a = np.asarray(lo_a, np.float64).reshape(-1, 3), np.asarray(hi_a, np.float64).reshape(-1, 3)
    lo_b, hi_b = np.asarray(lo_b, np.float64).reshape(-1, 3), np.asarray(hi_b, np.float64).reshape(-1, 3)
    if lo_a.shape != hi_a.shape or lo_b.shape != hi_b.shape:
        raise ValueError(f"{name}: min and max corners must have the same shape")
    if (hi_a < lo_a).any() or (hi_b < lo_b).any():
        raise ValueError(f"{name}: a box has a max corner below its min corner")
    side = np.minimum(hi_a[:, None], hi_b[None]) - np.maximum(lo_a[:, None], lo_b[None])
    return np.prod(hi_a - lo_a, 1), np.prod(hi_b - lo_b, 1), np.clip(side, 0.0, None).prod(-1)


def box_iou(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """``(A, B)`` IoU of every pair of axis-aligned boxes.

    Args:
        lo_a, hi_a: ``(A, 3)`` min / max corners of the first boxes (any length unit, e.g. metres or voxels).
        lo_b, hi_b: ``(B, 3)`` the same for the second boxes.

    Boxes of zero volume have IoU 0 with everything.
    """
    vol_a, vol_b, inter = _volumes("box_iou", lo_a, hi_a, lo_b, hi_b)
    union = vol_a[:, None] + vol_b[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iom(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """``(A, B)`` intersection over minimum (containment) of every pair of axis-aligned boxes:
    ``vol(a & b) / min(vol(a), vol(b))``, 1 when one box lies inside the other. Arguments as :func:`box_iou`;
    boxes of zero volume have 0 with everything.

    Unlike the IoU it does not fall when a partial view (a small box) is compared with the box an instance
    accumulated over many views.
    """
    vol_a, vol_b, inter = _volumes("box_iom", lo_a, hi_a, lo_b, hi_b)
    small = np.minimum(vol_a[:, None], vol_b[None])
    return np.divide(inter, small, out=np.zeros_like(inter), where=small > 0)


def boxes_intersect(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """``(A, B)`` bool: the closed integer voxel boxes ``[lo, hi]`` (``(A, 3)`` / ``(B, 3)`` int indices)
    share at least one voxel (a voxel-set IoU can only be non-zero then)."""
    return ((np.minimum(hi_a[:, None], hi_b[None]) >= np.maximum(lo_a[:, None], lo_b[None]))).all(-1)


def voxel_iou(sets_a: Sequence[np.ndarray], sets_b: Sequence[np.ndarray]) -> np.ndarray:
    """``(A, B)`` IoU ``|a & b| / |a | b|`` of every pair of voxel sets.

    Args:
        sets_a, sets_b: sequences of ``(K_i,)`` int64 voxel keys, each without duplicates.
    """
    n_a, n_b = len(sets_a), len(sets_b)
    if n_a == 0 or n_b == 0:
        return np.zeros((n_a, n_b))
    size_a = np.array([len(s) for s in sets_a], np.int64)
    size_b = np.array([len(s) for s in sets_b], np.int64)
    keys = np.concatenate([np.asarray(s, np.int64).ravel() for s in (*sets_a, *sets_b)])
    _, cols = np.unique(keys, return_inverse=True)
    n_cols = int(cols.max()) + 1 if cols.size else 1
    rows_a = np.repeat(np.arange(n_a), size_a)
    rows_b = np.repeat(np.arange(n_b), size_b)
    cut = int(size_a.sum())
    ones_a, ones_b = np.ones(cut, np.float64), np.ones(len(cols) - cut, np.float64)
    mat_a = sparse.csr_matrix((ones_a, (rows_a, cols[:cut])), shape=(n_a, n_cols))
    mat_b = sparse.csr_matrix((ones_b, (rows_b, cols[cut:])), shape=(n_b, n_cols))
    inter = np.asarray((mat_a @ mat_b.T).todense(), np.float64)
    union = size_a[:, None] + size_b[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
