"""Points -> voxels (mean pooling) and voxels -> points (devoxelisation)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .coords import MAX_BATCH, MAX_COORD, pack_keys


@dataclass
class Voxels:
    """Result of :func:`voxelize`.

    Attributes:
        coords: ``(M, 4)`` int32 ``[batch, x, y, z]`` voxel coordinates, sorted by key (batch first).
        feats: ``(M, C)`` mean of the features of the points in each voxel.
        inverse: ``(N,)`` int64, voxel index of every input point (``feats[inverse]`` devoxelises).
        counts: ``(M,)`` int64, number of points per voxel.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    inverse: torch.Tensor
    counts: torch.Tensor


def voxelize(points: torch.Tensor, feats: torch.Tensor, voxel_size: float, batch: torch.Tensor | None = None) -> Voxels:
    """Quantise points to a grid of ``voxel_size`` and mean-pool their features.

    Args:
        points: ``(N, 3)`` float coordinates (metres).
        feats: ``(N, C)`` features, pooled by mean.
        voxel_size: edge length in the units of ``points``.
        batch: ``(N,)`` integer sample index, all zeros when omitted.

    Raises:
        ValueError: empty input, NaN/inf coordinates, mismatched counts, or coordinates beyond the range.
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be an (N, 3) tensor, got {getattr(points, 'shape', type(points))}")
    n = points.shape[0]
    if n == 0:
        raise ValueError("empty point cloud: nothing to voxelise")
    if feats.dim() != 2 or feats.shape[0] != n:
        raise ValueError(f"feature count {tuple(feats.shape)} does not match point count {n}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if not torch.isfinite(points).all():
        bad = int((~torch.isfinite(points).all(dim=1)).sum())
        raise ValueError(f"{bad} point(s) have NaN or infinite coordinates")
    if batch is None:
        batch = torch.zeros(n, dtype=torch.int64, device=points.device)
    elif batch.shape != (n,):
        raise ValueError(f"batch index shape {tuple(batch.shape)} does not match point count {n}")
    if n and (int(batch.min()) < 0 or int(batch.max()) >= MAX_BATCH):
        raise ValueError(f"batch index out of range [0, {MAX_BATCH})")
    grid = torch.floor(points.double() / voxel_size)
    if float(grid.abs().max()) > MAX_COORD:
        raise ValueError(
            f"points span beyond the supported range of +-{MAX_COORD} voxels of {voxel_size} "
            f"(max |coordinate| {float(points.abs().max()):.3g}); crop the cloud or use a larger voxel"
        )
    coords = torch.cat([batch.view(-1, 1).to(torch.int64), grid.to(torch.int64)], dim=1)
    keys = pack_keys(coords)
    ukeys, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    m = ukeys.shape[0]
    first = torch.full((m,), n, dtype=torch.int64, device=points.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=points.device), reduce="amin")
    vcoords = coords[first].to(torch.int32)
    pooled = torch.zeros(m, feats.shape[1], dtype=feats.dtype, device=feats.device)
    pooled.index_add_(0, inverse, feats)
    pooled = pooled / counts.to(feats.dtype).unsqueeze(1)
    return Voxels(vcoords, pooled, inverse, counts)


def devoxelize(voxel_feats: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``(M, C)`` voxel features -> ``(N, C)`` point features through the ``(N,)`` inverse map."""
    return voxel_feats.index_select(0, inverse)
