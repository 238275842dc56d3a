"""Geometric PE signal (64-d per point) and the FiLM that modulates f2D and f3D with it (DESIGN.md §2).

Every quantity is computed per *sample* (a scene crop when training, a frame in the node), given by a
per-point sample index ``batch`` (``None``: one sample). World frame, z up (REP 103), metres.

Per sample: ``lo``/``hi`` = per-axis min/max of its points (its axis-aligned bounding box),
``c = (lo + hi) / 2`` the box centre, ``diag = |hi - lo|`` (clamped to at least ``voxel_size`` so a single
point does not divide by zero), ``half = (hi - lo) / 2`` (each axis clamped to at least ``voxel_size / 2``).

PE layout (``num_freqs = K = 8`` gives 64 channels):

=========  =====  ===========================================================================================
slice      width  content
=========  =====  ===========================================================================================
``0:3``    3      ``(xyz - c) / diag``
``3:6``    3      ``size / diag``: extent (x, y, z) of the point's superpoint, see :func:`superpoint_size`;
                  ``voxel_size`` on every axis where no size is given
``6:9``    3      pose_rel, first column of the camera->world rotation ``R[:, 0]``
``9:12``   3      pose_rel, second column ``R[:, 1]``
``12:15``  3      pose_rel, ``(t - c) / diag``: camera position relative to the box centre
``15:16``  1      ``(z - lo_z) / diag``: height above the sample's lowest point
``16:64``  48     Fourier features of ``xyz_n = (xyz - c) / half`` (in [-1, 1] per axis):
                  channel ``16 + s * 3K + a * K + k`` = ``sin`` (s = 0) or ``cos`` (s = 1) of
                  ``xyz_n[a] * w_k * pi``, axis ``a`` in (x, y, z), ``w_k = 2 ** log_w[k]``
=========  =====  ===========================================================================================

``log_w`` (K,) is learnable, shared by the three axes, initialised to ``0, 1, ..., K-1``. The crop is
axis-aligned in the world frame, so the camera's rotation relative to the crop is its world rotation.
Without a pose (``pose=None``) the 9 pose_rel channels are 0.

FiLM: ``Linear(64 -> 128) -> SiLU -> Linear(128 -> 512)``, split into ``gamma, beta`` (256 each, gamma
first); ``f' = (1 + gamma) * f + beta`` on both f2D and f3D with the same gamma/beta. The last layer is
initialised to exactly zero (weights and bias, as adaLN-Zero / ControlNet zero-convs), so the module starts
as the identity. Consequence: at the very first step only that last layer receives a gradient (the first
layer and ``log_w`` get exactly zero); from the second step on the gradient reaches them. Set
``last_init_std > 0`` for a small random init instead (then the start is only near-identity).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import precision
from ..config import configclass, spec

__all__ = ["PEFiLMConfig", "PESignal", "PEFiLM", "pe_dim", "superpoint_size", "sample_bounds"]


def pe_dim(num_freqs: int = 8) -> int:
    """Width of the PE signal: 16 geometric channels + 3 axes x ``num_freqs`` x {sin, cos}."""
    return 16 + 6 * num_freqs


def _check_batch(batch: torch.Tensor | None, n: int, device, num_samples: int | None) -> tuple[torch.Tensor, int]:
    if batch is None:
        b = torch.zeros(n, dtype=torch.int64, device=device)
    else:
        if not isinstance(batch, torch.Tensor) or batch.shape != (n,):
            raise ValueError(f"batch must be an (N,) = ({n},) integer tensor, got {getattr(batch, 'shape', batch)}")
        if batch.is_floating_point() or batch.dtype == torch.bool:
            raise ValueError(f"batch must be an integer tensor, got {batch.dtype}")
        b = batch.to(device=device, dtype=torch.int64)
    if num_samples is None:
        num_samples = int(b.max()) + 1 if n else 1
    if n and (int(b.min()) < 0 or int(b.max()) >= num_samples):
        raise ValueError(f"batch indices must be in [0, {num_samples})")
    return b, num_samples


def sample_bounds(xyz: torch.Tensor, batch: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample axis-aligned box: ``(lo (B, 3), hi (B, 3))``; a sample without points gets zeros."""
    idx = batch.view(-1, 1).expand(-1, 3)
    lo = torch.full((num_samples, 3), float("inf"), dtype=xyz.dtype, device=xyz.device)
    hi = torch.full((num_samples, 3), float("-inf"), dtype=xyz.dtype, device=xyz.device)
    lo = lo.scatter_reduce(0, idx, xyz, reduce="amin", include_self=True)
    hi = hi.scatter_reduce(0, idx, xyz, reduce="amax", include_self=True)
    empty = ~torch.isfinite(lo).all(dim=1, keepdim=True)
    lo = torch.where(empty, torch.zeros_like(lo), lo)
    hi = torch.where(empty, torch.zeros_like(hi), hi)
    return lo, hi


def superpoint_size(
    xyz: torch.Tensor, superpoint: torch.Tensor, voxel_size: float, batch: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-point extent of its superpoint: ``(N, 3)`` = per-axis ``max - min`` over the superpoint's points,
    clamped below at ``voxel_size``; points with ``superpoint < 0`` (none) get ``voxel_size``.

    Superpoint ids are local to a sample (the pair ``(batch, superpoint)`` identifies one).
    """
    if xyz.dim() != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {tuple(xyz.shape)}")
    n = xyz.shape[0]
    if superpoint.shape != (n,):
        raise ValueError(f"superpoint ids must be (N,) = ({n},), got {tuple(superpoint.shape)}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    b, _ = _check_batch(batch, n, xyz.device, None)
    out = torch.full((n, 3), float(voxel_size), dtype=xyz.dtype, device=xyz.device)
    has = superpoint >= 0
    if not bool(has.any()):
        return out
    sp = superpoint[has].to(torch.int64)
    keys = b[has].to(torch.int64) * (int(sp.max()) + 1) + sp  # (sample, superpoint) packed, same order as rows
    _, inv = torch.unique(keys, return_inverse=True)  # 1-D unique: unique(dim=0) compares row by row (~60x slower)
    m = int(inv.max()) + 1
    lo, hi = sample_bounds(xyz[has], inv, m)
    ext = (hi - lo).clamp_min(voxel_size)
    out[has] = ext[inv]
    return out


@configclass
class PEFiLMConfig:
    """PE signal + FiLM sizes. ``pe_dim = 16 + 6 * num_freqs`` (64 for the spec's 8 frequencies)."""

    feat_dim: int = spec(256, ge=1)
    hidden: int = spec(128, ge=1)
    num_freqs: int = spec(8, ge=1, le=32)
    voxel_size: float = spec(0.05, gt=0)
    last_init_std: float = spec(0.0, ge=0)
    enabled: bool = True  # False (ablations): f2D and f3D pass unchanged (invalid points' f2D still zeroed)

    @property
    def pe_dim(self) -> int:
        return pe_dim(self.num_freqs)


class PESignal(nn.Module):
    """Per-point geometric PE (layout in the module docstring). Parameters: ``log_w (num_freqs,)``.

    ``forward(xyz (N,3), batch (N,) | None, size (N,3) | None, pose (B,4,4) | (4,4) | None,
    num_samples=None) -> (N, pe_dim)`` in ``xyz``'s dtype.
    """

    def __init__(self, num_freqs: int = 8, voxel_size: float = 0.05):
        super().__init__()
        self.num_freqs = num_freqs
        self.voxel_size = float(voxel_size)
        self.log_w = nn.Parameter(torch.arange(num_freqs, dtype=torch.float32))

    @property
    def out_dim(self) -> int:
        return pe_dim(self.num_freqs)

    def forward(
        self,
        xyz: torch.Tensor,
        batch: torch.Tensor | None = None,
        size: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        if not isinstance(xyz, torch.Tensor) or xyz.dim() != 2 or xyz.shape[1] != 3 or not xyz.is_floating_point():
            raise ValueError(f"xyz must be a float (N, 3) tensor, got {getattr(xyz, 'shape', type(xyz))}")
        n = xyz.shape[0]
        b, B = _check_batch(batch, n, xyz.device, num_samples)
        vs = self.voxel_size
        lo, hi = sample_bounds(xyz, b, B)
        centre = (lo + hi) / 2
        diag = torch.linalg.vector_norm(hi - lo, dim=1).clamp_min(vs)  # (B,)
        half = ((hi - lo) / 2).clamp_min(vs / 2)  # (B, 3)
        c_p, d_p, h_p = centre[b], diag[b].unsqueeze(1), half[b]

        if size is None:
            size = xyz.new_full((n, 3), vs)
        elif size.shape != (n, 3):
            raise ValueError(f"size must be (N, 3) = ({n}, 3), got {tuple(size.shape)}")

        if pose is None:
            pose_rel = xyz.new_zeros(n, 9)
        else:
            P = torch.as_tensor(pose).to(device=xyz.device, dtype=xyz.dtype)
            if P.shape == (4, 4):
                P = P.expand(B, 4, 4)
            if P.shape != (B, 4, 4):
                raise ValueError(f"pose must be (4, 4) or (B, 4, 4) with B = {B} samples, got {tuple(P.shape)}")
            if not bool(torch.isfinite(P).all()):
                raise ValueError("pose has non-finite (NaN/inf) entries")
            R = P[:, :3, :3]
            t_rel = (P[:, :3, 3] - centre) / diag.unsqueeze(1)
            pose_rel = torch.cat([R[:, :, 0], R[:, :, 1], t_rel], dim=1)[b]  # (N, 9)

        xyz_n = (xyz - c_p) / h_p  # (N, 3) in [-1, 1]
        w = torch.exp2(self.log_w).to(xyz.dtype)  # (K,)
        ang = xyz_n.unsqueeze(2) * w.view(1, 1, -1) * math.pi  # (N, 3, K)
        fourier = torch.cat([torch.sin(ang).flatten(1), torch.cos(ang).flatten(1)], dim=1)  # (N, 6K)
        return torch.cat(
            [
                (xyz - c_p) / d_p,
                size.to(xyz.dtype) / d_p,
                pose_rel,
                (xyz[:, 2:3] - lo[b][:, 2:3]) / d_p,
                fourier,
            ],
            dim=1,
        )


class PEFiLM(nn.Module):
    """PE signal -> MLP -> (gamma, beta) -> ``(1 + gamma) * f + beta`` on f2D and f3D.

    ``forward(f2d (N,C), f3d (N,C), xyz (N,3), batch=None, size=None, pose=None, valid=None)``
    returns ``(f2d', f3d')`` (not re-normalised; the fusion gate normalises). When ``valid (N,)`` is given,
    f2D rows of invalid points stay exactly zero (they have no 2D observation, DESIGN §2 "invalid points
    still get a feature (zeros)"); without it the formula is applied to every row.
    """

    def __init__(self, cfg: PEFiLMConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PEFiLMConfig()
        self.pe = PESignal(cfg.num_freqs, cfg.voxel_size)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.pe_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 2 * cfg.feat_dim)
        )
        last = self.mlp[2]
        if cfg.last_init_std > 0:
            nn.init.normal_(last.weight, std=cfg.last_init_std)
        else:
            nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def modulation(self, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, pe_dim)`` -> ``(1 + gamma) (N, C), beta (N, C)``, each contiguous.

        The last layer's rows are used as two GEMMs (the ``+ 1`` folded into gamma's bias) rather than one
        ``(N, 2C)`` output split into two strided halves: the same values, two fewer passes over ``(N, C)``.
        """
        C = self.cfg.feat_dim
        first, last = self.mlp[0], self.mlp[2]
        w, b = last.weight, last.bias
        h = F.silu(precision.linear(pe, first.weight, first.bias))  # F.linear; bf16 on the CPU: rows bucketed
        return precision.linear(h, w[:C], b[:C] + 1), precision.linear(h, w[C:], b[C:])

    def forward(
        self,
        f2d: torch.Tensor,
        f3d: torch.Tensor,
        xyz: torch.Tensor,
        batch: torch.Tensor | None = None,
        size: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, C = xyz.shape[0], self.cfg.feat_dim
        for name, f in (("f2d", f2d), ("f3d", f3d)):
            if f.shape != (n, C):
                raise ValueError(f"{name} must be (N, {C}) = ({n}, {C}), got {tuple(f.shape)}")
        if valid is not None and valid.shape != (n,):
            raise ValueError(f"valid must be (N,) = ({n},), got {tuple(valid.shape)}")
        if not self.cfg.enabled:
            return (f2d if valid is None else f2d * valid.to(f2d.dtype).unsqueeze(1)), f3d
        pe = self.pe(xyz, batch, size, pose, num_samples)
        scale, beta = self.modulation(pe.to(self.mlp[0].weight.dtype))
        out2d = torch.addcmul(beta, scale, f2d)
        out3d = torch.addcmul(beta, scale, f3d)
        if valid is not None:
            out2d = out2d * valid.to(out2d.dtype).unsqueeze(1)
        return out2d, out3d
