"""A quick procedural room as a coloured point cloud (surface samples), for backbone benchmarks and demos."""
from __future__ import annotations

import numpy as np
import torch


def _box_surface(rng, lo, hi, density):
    """Sample points on the 6 faces of an axis-aligned box, ``density`` points per square metre."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    size = hi - lo
    pts = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        area = size[a] * size[b]
        n = max(1, int(area * density))
        for side in (lo[axis], hi[axis]):
            p = np.empty((n, 3))
            p[:, axis] = side
            p[:, a] = rng.uniform(lo[a], hi[a], n)
            p[:, b] = rng.uniform(lo[b], hi[b], n)
            pts.append(p)
    return np.concatenate(pts)


def synthetic_room_cloud(size=(5.5, 4.5, 2.5), n_objects: int = 8, density: float = 1200.0, seed: int = 0):
    """A room (floor and 4 walls, open top as a scan sees it) with ``n_objects`` boxes, sampled on the surfaces.

    Returns ``(points (N,3) float32 metres, z up, colours (N,3) float32 in [0,1], object id (N,) int64,
    0 = room shell)``. With the defaults, about 55k occupied 5 cm voxels.
    """
    rng = np.random.default_rng(seed)
    W, D, H = size
    pts, cols, ids = [], [], []
    shell = [((0, 0, -0.02), (W, D, 0.0)), ((-0.02, 0, 0), (0, D, H)),
             ((W, 0, 0), (W + 0.02, D, H)), ((0, -0.02, 0), (W, 0, H)), ((0, D, 0), (W, D + 0.02, H))]
    for lo, hi in shell:
        p = _box_surface(rng, lo, hi, density)
        pts.append(p)
        cols.append(np.tile(rng.uniform(0.4, 0.9, 3), (len(p), 1)))
        ids.append(np.zeros(len(p), np.int64))
    for i in range(n_objects):
        ext = rng.uniform([0.3, 0.3, 0.3], [1.4, 1.0, 1.4])
        corner = rng.uniform([0.1, 0.1, 0.0], [W - ext[0] - 0.1, D - ext[1] - 0.1, 0.0])
        p = _box_surface(rng, corner, corner + ext, density)
        pts.append(p)
        cols.append(np.clip(rng.uniform(0, 1, 3) + rng.normal(0, 0.03, (len(p), 3)), 0, 1))
        ids.append(np.full(len(p), i + 1, np.int64))
    return (torch.from_numpy(np.concatenate(pts).astype(np.float32)),
            torch.from_numpy(np.concatenate(cols).astype(np.float32)),
            torch.from_numpy(np.concatenate(ids)))
