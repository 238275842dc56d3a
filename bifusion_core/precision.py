"""Low-precision matrix products on the CPU whose shapes repeat from frame to frame.

PyTorch runs bfloat16 GEMMs on the CPU through oneDNN, which JIT-compiles a kernel for every new shape and
caches it. A frame's point and voxel counts change every frame (18,699 points, then 18,686, ...), so every
product of every frame met a shape never seen before and paid its compilation: 0.6-3.4 ms for a
``(18700, 128) @ (128, 256)`` that takes 0.7 ms once compiled (float32 MKL: 3.5 ms), more than bf16 saves.
Padding the row count up to a *bucket* (:func:`row_bucket`) makes the shapes repeat: a few buckets per
octave, so a node sees a few hundred shapes in all and each is compiled once (oneDNN's primitive cache holds
1024).

:func:`cpu_lowp_dtype` says when this applies (bfloat16 autocast on the CPU, or bf16 tensors there);
:func:`linear` and :func:`mm` are ``F.linear`` / ``@`` with the rows padded and the padding cut off again.
Elsewhere (float32, CUDA) they are the plain operations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_BUCKET = 256
"""Row counts are padded to a multiple of ``max(MIN_BUCKET, 2 ** (bit_length(m) - 4))``: at most 1/8 of
extra rows (1/16 on average), 8 buckets per octave."""


def row_bucket(m: int) -> int:
    """The padded row count for ``m`` rows (``m`` itself when it is a multiple of its granule)."""
    if m <= 0:
        return m
    g = max(MIN_BUCKET, 1 << max(m.bit_length() - 4, 0))
    return -(-m // g) * g


def cpu_lowp_dtype(x: torch.Tensor) -> torch.dtype | None:
    """bfloat16 when a product with ``x`` runs in bf16 on the CPU (bf16 autocast on, or ``x`` is bf16), else None."""
    if x.device.type != "cpu":
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.bfloat16 if x.dtype == torch.bfloat16 else None


def padded(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x (M, ...)`` in ``dtype`` with zero rows up to :func:`row_bucket` ``(M)``: the cast and the padding in
    one pass (``x`` itself when nothing changes)."""
    m = x.shape[0]
    rows = row_bucket(m)
    if rows == m:
        return x.to(dtype)
    out = torch.empty(rows, *x.shape[1:], dtype=dtype, device=x.device)
    out[:m] = x
    out[m:] = 0
    return out


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (M, K) @ b (K, N)``; in bf16 on the CPU with ``M`` padded to :func:`row_bucket` (output bf16)."""
    dt = cpu_lowp_dtype(a)
    if dt is None:
        return a @ b
    with torch.autocast("cpu", enabled=False):
        return (padded(a, dt) @ b.to(dt))[: a.shape[0]]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x (M, K), weight (N, K), bias (N,))``; bucketed as :func:`mm` (output bf16 there)."""
    dt = cpu_lowp_dtype(x)
    if dt is None:
        return F.linear(x, weight, bias)
    with torch.autocast("cpu", enabled=False):
        out = F.linear(padded(x, dt), weight.to(dt), None if bias is None else bias.to(dt))
    return out[: x.shape[0]]
