"""Integer voxel keys: world points -> voxel indices ``floor(p / voxel_size)`` -> one packed int64 per voxel.

A key packs the three indices in 21 bits each (offset by 2**20), so every index must lie in
``[-2**20, 2**20)`` (+-52 km at 5 cm). Sorting keys sorts voxels by (x, y, z) index. Voxel ``(i, j, k)`` spans
``[i, i + 1) * voxel_size`` along x (likewise y, z); its centre is ``(i + 0.5) * voxel_size``.
"""
from __future__ import annotations

import numpy as np

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
KEY_MASK = (1 << KEY_BITS) - 1
INDEX_MIN, INDEX_MAX = -KEY_OFFSET, KEY_OFFSET - 1


def voxel_indices(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """``(N, 3)`` int64 voxel index of each of ``points (N, 3)`` (world metres); ``ValueError`` when one lies
    outside the packable range."""
    idx = np.floor(np.asarray(points, np.float64) / voxel_size)
    if idx.size and (idx.min() < INDEX_MIN or idx.max() > INDEX_MAX):
        raise ValueError(f"points lie outside the map's range of +-{KEY_OFFSET * voxel_size:g} m "
                         f"(voxel size {voxel_size:g} m)")
    return idx.astype(np.int64).reshape(-1, 3)


def pack_keys(indices: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 keys of voxel ``indices (N, 3)`` (each in ``[INDEX_MIN, INDEX_MAX]``)."""
    i = np.asarray(indices, np.int64).reshape(-1, 3) + KEY_OFFSET
    return (i[:, 0] << (2 * KEY_BITS)) | (i[:, 1] << KEY_BITS) | i[:, 2]


def unpack_keys(keys: np.ndarray) -> np.ndarray:
    """``(N, 3)`` int64 voxel indices of ``keys (N,)`` (the inverse of :func:`pack_keys`)."""
    k = np.asarray(keys, np.int64).ravel()
    return np.stack([(k >> (2 * KEY_BITS)) & KEY_MASK, (k >> KEY_BITS) & KEY_MASK, k & KEY_MASK], 1) - KEY_OFFSET


def point_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """``(N,)`` int64 key of the voxel holding each of ``points (N, 3)`` (metres)."""
    return pack_keys(voxel_indices(points, voxel_size))


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted unique values of the int64 ``keys`` (what ``np.unique`` returns): a sort and an adjacent-difference
    mask, about 4x faster than NumPy 2's hash-based ``np.unique`` on the few thousand keys of one instance."""
    s = np.sort(np.asarray(keys, np.int64).ravel())
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted union of two key arrays (``np.union1d``, about 8x faster on instance-sized sets)."""
    return sorted_unique(np.concatenate([a, b]))


def voxel_set(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Sorted unique ``(K,)`` int64 keys of the voxels ``points (N, 3)`` occupy."""
    return sorted_unique(point_keys(points, voxel_size))


def voxel_centres(keys: np.ndarray, voxel_size: float) -> np.ndarray:
    """``(N, 3)`` float64 centre (metres) of each voxel of ``keys (N,)``."""
    return (unpack_keys(keys) + 0.5) * voxel_size


def index_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo (3,), hi (3,))`` int64: the smallest and largest voxel index of the non-empty ``keys`` per axis
    (the box spans ``lo * voxel_size`` to ``(hi + 1) * voxel_size``)."""
    idx = unpack_keys(keys)
    if len(idx) == 0:
        raise ValueError("an empty voxel set has no box")
    return idx.min(0), idx.max(0)
