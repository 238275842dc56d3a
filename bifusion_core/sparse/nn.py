"""Sparse layers with one weight layout for every backend.

Parameter names and shapes follow MinkowskiEngine's layers (``kernel`` ``(K, Cin, Cout)``, ``(Cin, Cout)``
for 1x1; ``bias`` ``(1, Cout)``; batch norm as ``bn``), with kernel offsets in our canonical order
(see :func:`bifusion_core.sparse.coords.kernel_offsets`). The backend that owns the input tensor does
the arithmetic, so a checkpoint loads under either backend.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import precision
from .backends import get_backend
from .tensor import SparseTensor


class SparseConv3d(nn.Module):
    """Sparse 3D convolution.

    ``stride == 1``: submanifold (output on the input coordinates), odd ``kernel_size``;
    ``kernel_size == stride == 2``: down-sampling to twice the tensor stride;
    ``transposed=True`` with ``kernel_size == stride == 2``: up-sampling onto the coordinates of half the
    tensor stride that the matching down-sampling came from. ``kernel_size == 1``: point-wise linear map.

    Shapes: input ``(M, Cin)`` features -> output ``(M', Cout)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 transposed: bool = False, bias: bool = False):
        super().__init__()
        if kernel_size == 1 and (stride != 1 or transposed):
            raise ValueError("1x1 convolutions must have stride 1 and not be transposed")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.transposed = kernel_size, stride, transposed
        volume = kernel_size**3
        shape = (in_channels, out_channels) if volume == 1 else (volume, in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming normal, fan_out, as MinkowskiEngine's ResNet/MinkUNet weight initialisation.
        fan_out = self.out_channels * self.kernel_size**3
        nn.init.normal_(self.kernel, 0.0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.channels != self.in_channels:
            raise ValueError(f"{self}: input has {x.channels} channels, expected {self.in_channels}")
        if self.kernel_size == 1:  # a (Cin, Cout) matrix; bf16 on the CPU with bucketed rows (precision)
            out = x.replace(precision.mm(x.feats, self.kernel))
        else:
            out = get_backend(x.backend).conv(x, self.kernel, self.kernel_size, self.stride, self.transposed)
        if self.bias is not None:
            out = out.replace(out.feats + self.bias)
        return out

    def extra_repr(self) -> str:
        t = ", transposed" if self.transposed else ""
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}{t}"


class SparseBatchNorm(nn.Module):
    """Batch norm over the active voxels' features (``bn`` is a ``BatchNorm1d``)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.bn(x.feats))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu(x.feats))
