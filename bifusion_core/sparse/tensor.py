"""The sparse tensor shared by every backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class SparseTensor:
    """Features on a set of active voxels.

    Attributes:
        coords: ``(M, 4)`` int32 ``[batch, x, y, z]`` in base-voxel units; spatial entries are multiples
            of ``stride``.
        feats: ``(M, C)`` float features, row ``i`` belongs to ``coords[i]``.
        stride: tensor stride (1 for the input voxels, 2, 4, ... after down-sampling).
        ctx: the backend's coordinate context, shared by every tensor derived from one input (it caches
            coordinates per stride and kernel maps, like MinkowskiEngine's coordinate manager).
        backend: name of the backend that owns ``ctx``.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    stride: int
    ctx: Any
    backend: str

    def __post_init__(self) -> None:
        if self.feats.dim() != 2 or self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"feature count {tuple(self.feats.shape)} does not match coordinate count {self.coords.shape[0]}"
            )

    @property
    def num_points(self) -> int:
        return int(self.coords.shape[0])

    @property
    def channels(self) -> int:
        return int(self.feats.shape[1])

    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """Same coordinates, new ``(M, C')`` features."""
        return SparseTensor(self.coords, feats, self.stride, self.ctx, self.backend)

    def same_layout(self, other: "SparseTensor") -> bool:
        return self.ctx is other.ctx and self.stride == other.stride and self.num_points == other.num_points


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Channel concatenation of tensors on the same coordinates (U-Net skip connections)."""
    first = tensors[0]
    for t in tensors[1:]:
        if not first.same_layout(t):
            raise ValueError(
                "cat needs tensors on the same coordinates: got strides "
                f"{[x.stride for x in tensors]} and sizes {[x.num_points for x in tensors]}"
            )
    return first.replace(torch.cat([t.feats for t in tensors], dim=1))
