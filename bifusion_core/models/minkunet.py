"""MinkUNet18A (MinkowskiEngine's channel plan) with the BiFusion 256-d head.

Module names mirror MinkowskiEngine's example ``MinkUNetBase`` (``conv0p1s1``, ``block1``, ``convtr4p16s2``,
...), so the network's structure can be checked layer by layer against one assembled from MinkowskiEngine's
own layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import configclass, spec
from ..sparse import SparseBatchNorm, SparseConv3d, SparseReLU, SparseTensor, cat, devoxelize, get_backend, voxelize
from ..sparse.backends import BACKENDS


class BasicBlock(nn.Module):
    """ResNet basic block: conv3-BN-ReLU-conv3-BN (+ 1x1 conv-BN shortcut when channels change), ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = SparseConv3d(inplanes, planes, kernel_size=3)
        self.norm1 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = SparseConv3d(planes, planes, kernel_size=3)
        self.norm2 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.relu = SparseReLU()
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return out.replace(torch.relu(out.feats + residual.feats))


@configclass
class MinkUNetConfig:
    """MinkUNet18A plan; ``width`` scales every channel count (for small CPU/test configs)."""

    in_channels: int = spec(3, ge=1)
    out_channels: int = spec(96, ge=1)
    init_dim: int = spec(32, ge=1)
    planes: tuple[int, ...] = spec((32, 64, 128, 256, 128, 128, 96, 96), ge=1)
    layers: tuple[int, ...] = spec((2, 2, 2, 2, 2, 2, 2, 2), ge=1)
    width: float = spec(1.0, gt=0, le=4)

    def __post_init__(self) -> None:
        if len(self.planes) != 8 or len(self.layers) != 8:
            raise ValueError("planes and layers need 8 entries (4 encoder + 4 decoder stages)")

    def scaled(self, c: int) -> int:
        return max(4, int(round(c * self.width)))


class MinkUNet18A(nn.Module):
    """Sparse U-Net: k5 stem, 4 down stages (k2 s2 + 2 BasicBlocks), 4 up stages (k2 s2 transposed, skip
    concatenation, 2 BasicBlocks), final 1x1 conv (with bias) to ``out_channels``.

    Input/Output: :class:`SparseTensor` ``(M, in_channels)`` at stride 1 -> ``(M, out_channels)`` on the
    same coordinates.
    """

    def __init__(self, cfg: MinkUNetConfig | None = None):
        super().__init__()
        cfg = cfg or MinkUNetConfig()
        self.cfg = cfg
        p = [cfg.scaled(c) for c in cfg.planes]
        init_dim = cfg.scaled(cfg.init_dim)
        L = cfg.layers
        self.inplanes = init_dim
        self.conv0p1s1 = SparseConv3d(cfg.in_channels, init_dim, kernel_size=5)
        self.bn0 = SparseBatchNorm(init_dim)
        self.conv1p1s2 = SparseConv3d(init_dim, init_dim, kernel_size=2, stride=2)
        self.bn1 = SparseBatchNorm(init_dim)
        self.block1 = self._make_layer(p[0], L[0])
        self.conv2p2s2 = SparseConv3d(self.inplanes, self.inplanes, kernel_size=2, stride=2)
        self.bn2 = SparseBatchNorm(self.inplanes)
        self.block2 = self._make_layer(p[1], L[1])
        self.conv3p4s2 = SparseConv3d(self.inplanes, self.inplanes, kernel_size=2, stride=2)
        self.bn3 = SparseBatchNorm(self.inplanes)
        self.block3 = self._make_layer(p[2], L[2])
        self.conv4p8s2 = SparseConv3d(self.inplanes, self.inplanes, kernel_size=2, stride=2)
        self.bn4 = SparseBatchNorm(self.inplanes)
        self.block4 = self._make_layer(p[3], L[3])
        self.convtr4p16s2 = SparseConv3d(self.inplanes, p[4], kernel_size=2, stride=2, transposed=True)
        self.bntr4 = SparseBatchNorm(p[4])
        self.inplanes = p[4] + p[2]
        self.block5 = self._make_layer(p[4], L[4])
        self.convtr5p8s2 = SparseConv3d(self.inplanes, p[5], kernel_size=2, stride=2, transposed=True)
        self.bntr5 = SparseBatchNorm(p[5])
        self.inplanes = p[5] + p[1]
        self.block6 = self._make_layer(p[5], L[5])
        self.convtr6p4s2 = SparseConv3d(self.inplanes, p[6], kernel_size=2, stride=2, transposed=True)
        self.bntr6 = SparseBatchNorm(p[6])
        self.inplanes = p[6] + p[0]
        self.block7 = self._make_layer(p[6], L[6])
        self.convtr7p2s2 = SparseConv3d(self.inplanes, p[7], kernel_size=2, stride=2, transposed=True)
        self.bntr7 = SparseBatchNorm(p[7])
        self.inplanes = p[7] + init_dim
        self.block8 = self._make_layer(p[7], L[7])
        self.final = SparseConv3d(p[7], cfg.out_channels, kernel_size=1, bias=True)
        self.relu = SparseReLU()
        del self.inplanes

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes:
            downsample = nn.Sequential(SparseConv3d(self.inplanes, planes, kernel_size=1), SparseBatchNorm(planes))
        layers = [BasicBlock(self.inplanes, planes, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out = self.relu(self.bn1(self.conv1p1s2(out_p1)))
        out_b1p2 = self.block1(out)
        out = self.relu(self.bn2(self.conv2p2s2(out_b1p2)))
        out_b2p4 = self.block2(out)
        out = self.relu(self.bn3(self.conv3p4s2(out_b2p4)))
        out_b3p8 = self.block3(out)
        out = self.relu(self.bn4(self.conv4p8s2(out_b3p8)))
        out = self.block4(out)
        out = self.relu(self.bntr4(self.convtr4p16s2(out)))
        out = self.block5(cat(out, out_b3p8))
        out = self.relu(self.bntr5(self.convtr5p8s2(out)))
        out = self.block6(cat(out, out_b2p4))
        out = self.relu(self.bntr6(self.convtr6p4s2(out)))
        out = self.block7(cat(out, out_b1p2))
        out = self.relu(self.bntr7(self.convtr7p2s2(out)))
        out = self.block8(cat(out, out_p1))
        return self.final(out)


@configclass
class Backbone3DConfig:
    """3D branch of BiFusion: voxelise, MinkUNet18A, 1x1 conv+BN+ReLU head, devoxelise, L2 normalise."""

    voxel_size: float = spec(0.05, gt=0)
    out_dim: int = spec(256, ge=1)
    backend: str = spec("torch", choices=BACKENDS)
    unet: MinkUNetConfig | None = None  # None: the default MinkUNetConfig

    def __post_init__(self) -> None:
        self.unet = self.unet or MinkUNetConfig()


class Backbone3D(nn.Module):
    """Points -> per-point unit-norm 3D features.

    ``forward(points (N,3) float metres, feats (N,in_channels), batch (N,) int or None)`` returns
    ``(f3d (N,out_dim) unit norm, voxels)`` where ``voxels`` is the :class:`Voxels` map (for pooling
    other per-point quantities the same way).
    """

    def __init__(self, cfg: Backbone3DConfig | None = None):
        super().__init__()
        self.cfg = cfg or Backbone3DConfig()
        self.unet = MinkUNet18A(self.cfg.unet)
        self.head = SparseConv3d(self.cfg.unet.out_channels, self.cfg.out_dim, kernel_size=1)
        self.head_bn = SparseBatchNorm(self.cfg.out_dim)
        self.backend = self.cfg.backend

    def forward(self, points: torch.Tensor, feats: torch.Tensor, batch: torch.Tensor | None = None):
        if feats.dim() != 2 or feats.shape[0] != points.shape[0]:
            raise ValueError(f"feature count {tuple(feats.shape)} does not match point count {points.shape[0]}")
        if feats.shape[1] != self.cfg.unet.in_channels:
            raise ValueError(f"expected {self.cfg.unet.in_channels} input feature channels, got {feats.shape[1]}")
        vox = voxelize(points, feats, self.cfg.voxel_size, batch)
        x, rows = get_backend(self.backend).from_voxels(vox.coords, vox.feats)
        y = self.unet(x)
        y = y.replace(torch.relu(self.head_bn(self.head(y)).feats))
        vf = y.feats if rows is None else y.feats.index_select(0, rows)
        f3d = devoxelize(F.normalize(vf, dim=1), vox.inverse)  # normalised per voxel: the same rows, fewer of them
        return f3d, vox
