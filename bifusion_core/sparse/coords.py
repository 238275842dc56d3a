"""Integer voxel coordinates: validation, packing into sortable int64 keys, kernel offsets.

Coordinates are ``(M, 4)`` int32 tensors ``[batch, x, y, z]`` in units of the base voxel, as in
MinkowskiEngine: a tensor at stride ``s`` has spatial coordinates that are multiples of ``s``.

Keys pack one coordinate into one int64 so that neighbour look-ups are a ``searchsorted`` over the sorted
keys (a sorted-key hash, identical on CPU and CUDA)::

    key = batch * 2**48 + (x + 2**15) * 2**32 + (y + 2**15) * 2**16 + (z + 2**15)

The packing is linear in x, y, z while every field stays inside 16 bits, so the key of ``c + o`` is
``key(c) + key_delta(o)``.  ``MAX_COORD`` leaves head-room for the largest kernel offset of a U-Net at
stride 16, so a neighbour query never wraps into another field.
"""
from __future__ import annotations

import itertools

import torch

MAX_COORD = 30000  # |x|,|y|,|z| in base voxels: 1.5 km at 5 cm voxels
MAX_BATCH = 2**14
_SHIFT = 2**15


def check_coords(coords: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``coords`` is an ``(M, 4)`` integer tensor inside the supported range."""
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] != 4:
        shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
        raise ValueError(f"coordinates must be an (M, 4) tensor [batch, x, y, z], got {shape}")
    if coords.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"coordinates must be int32 or int64, got {coords.dtype}")
    if coords.shape[0] == 0:
        raise ValueError("empty sparse tensor: no coordinates")
    b = coords[:, 0]
    if int(b.min()) < 0 or int(b.max()) >= MAX_BATCH:
        raise ValueError(f"batch index out of range [0, {MAX_BATCH})")
    span = coords[:, 1:].abs().max()
    if int(span) > MAX_COORD:
        raise ValueError(
            f"voxel coordinate {int(span)} is beyond the supported range +-{MAX_COORD} voxels; "
            "crop the cloud or use a larger voxel size"
        )


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """``(M, 4)`` int coordinates -> ``(M,)`` int64 keys (order: batch, x, y, z)."""
    c = coords.to(torch.int64)
    return (c[:, 0] << 48) | ((c[:, 1] + _SHIFT) << 32) | ((c[:, 2] + _SHIFT) << 16) | (c[:, 3] + _SHIFT)


def key_delta(offsets: torch.Tensor) -> torch.Tensor:
    """``(K, 3)`` int spatial offsets -> ``(K,)`` int64 key increments."""
    o = offsets.to(torch.int64)
    return o[:, 0] * 2**32 + o[:, 1] * 2**16 + o[:, 2]


def kernel_offsets(kernel_size: int, tensor_stride: int, device=None) -> torch.Tensor:
    """``(K, 3)`` int64 offsets of a cubic kernel, K = kernel_size**3, in our canonical order.

    Canonical order is C order over (dx, dy, dz): index = ix*k*k + iy*k + iz, i.e. the order of the
    spatial dims of a dense ``conv3d`` weight ``(Cout, Cin, kx, ky, kz)``.  Odd kernels are centred
    (offsets ``-(k-1)/2 .. (k-1)/2``); even kernels start at the site (``0 .. k-1``), as in
    MinkowskiEngine.  Offsets are scaled by the input tensor stride.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    lo = -(kernel_size - 1) // 2 if kernel_size % 2 == 1 else 0
    rng = range(lo, lo + kernel_size)
    offs = torch.tensor(list(itertools.product(rng, rng, rng)), dtype=torch.int64, device=device)
    return offs * tensor_stride


def downsample_coords(coords: torch.Tensor, stride: int) -> torch.Tensor:
    """Floor spatial coordinates to multiples of ``stride`` (the batch column is kept)."""
    out = coords.clone()
    out[:, 1:] = torch.div(coords[:, 1:], stride, rounding_mode="floor") * stride
    return out
