"""Sparse tensors and convolutions: a pure-PyTorch backend and a MinkowskiEngine backend."""
from .backends import available_backends, get_backend
from .nn import SparseBatchNorm, SparseConv3d, SparseReLU
from .tensor import SparseTensor, cat
from .voxelize import Voxels, devoxelize, voxelize

__all__ = [
    "SparseTensor", "cat", "Voxels", "voxelize", "devoxelize", "SparseConv3d", "SparseBatchNorm",
    "SparseReLU", "get_backend", "available_backends",
]
