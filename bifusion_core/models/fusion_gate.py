"""LiteFusionGate: per-point mixing of f2D and f3D with a warm-up, a view-validity prior and channel SE.

DESIGN.md §2::

    alpha  = sigmoid(Linear(512->64) -> ReLU -> Linear(64->1))([f2D || f3D])      (N, 1)
    warm-up (first ``early_steps`` training iterations): alpha = 0.5, the alpha MLP is not run (no gradient)
    after:  alpha = alpha * valid + invalid_alpha * (1 - valid)                  (invalid_alpha = 0.1)
    f_mix  = alpha * f2D + (1 - alpha) * f3D
    w      = sigmoid(Linear(256->256)(mean of f_mix over the points of each sample))   (B, 256)
    fused  = normalise(w[batch] * f_mix)                                          (N, 256)

Step counter and eval mode: the schedule reads the buffer ``step`` (int64, saved in ``state_dict``), which
every forward in *training* mode increments by one (after using it). The warm-up is a property of the
trained weights, not of the mode: a module whose counter is still below ``early_steps`` gives alpha = 0.5 in
eval mode too, so a checkpoint saved during warm-up behaves at inference exactly as it did in training
(its alpha MLP was never trained). Trainers that run several forwards per optimizer step (gradient
accumulation) or resume with a different schedule call :meth:`LiteFusionGate.set_step` instead of relying on
the automatic increment.

Default sizes: 32 832 + 65 (alpha MLP) + 65 792 (SE) = 98 689 parameters (~0.1 M).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .. import precision
from ..config import configclass, spec

__all__ = ["FusionGateConfig", "LiteFusionGate"]


@configclass
class FusionGateConfig:
    feat_dim: int = spec(256, ge=1)
    hidden: int = spec(64, ge=1)
    early_steps: int = spec(3000, ge=0)
    invalid_alpha: float = spec(0.1, ge=0, le=1)
    warmup_alpha: float = spec(0.5, ge=0, le=1)
    fixed_alpha: float | None = spec(None, ge=0, le=1)  # ablations: alpha at every point (0: 3D only, 1: 2D only)


class LiteFusionGate(nn.Module):
    """``forward(f2d (N,C), f3d (N,C), valid (N,) bool/float, batch (N,) int | None, num_samples=None)``
    -> ``(fused (N,C) unit norm, alpha (N,1))``.
    """

    def __init__(self, cfg: FusionGateConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FusionGateConfig()
        self.alpha_mlp = nn.Sequential(nn.Linear(2 * cfg.feat_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
        self.se = nn.Linear(cfg.feat_dim, cfg.feat_dim)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    @property
    def in_warmup(self) -> bool:
        """True while the counter is below ``early_steps`` (alpha fixed, alpha MLP not run)."""
        return int(self.step) < self.cfg.early_steps

    def set_step(self, step: int) -> None:
        """Set the training-iteration counter (e.g. the trainer's global step)."""
        if int(step) < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.step.fill_(int(step))

    def forward(
        self,
        f2d: torch.Tensor,
        f3d: torch.Tensor,
        valid: torch.Tensor,
        batch: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, C = f3d.shape[0], self.cfg.feat_dim
        if f2d.shape != (n, C) or f3d.shape != (n, C):
            raise ValueError(f"f2d and f3d must both be (N, {C}), got {tuple(f2d.shape)} and {tuple(f3d.shape)}")
        if valid.shape not in ((n,), (n, 1)):
            raise ValueError(f"valid must be (N,) or (N, 1) with N = {n}, got {tuple(valid.shape)}")
        v = valid.reshape(n, 1).to(f3d.dtype)
        if batch is None:
            batch = torch.zeros(n, dtype=torch.int64, device=f3d.device)
        elif batch.shape != (n,) or batch.is_floating_point():
            raise ValueError(f"batch must be an (N,) integer tensor, got {tuple(batch.shape)} {batch.dtype}")
        batch = batch.to(torch.int64)
        B = num_samples if num_samples is not None else (int(batch.max()) + 1 if n else 1)
        if n and (int(batch.min()) < 0 or int(batch.max()) >= B):
            raise ValueError(f"batch indices must be in [0, {B})")

        if self.cfg.fixed_alpha is not None:
            alpha = f3d.new_full((n, 1), self.cfg.fixed_alpha)
        elif self.in_warmup:
            alpha = f3d.new_full((n, 1), self.cfg.warmup_alpha)
        else:
            first, last = self.alpha_mlp[0], self.alpha_mlp[2]
            # Linear(512 -> 64) on [f2D || f3D] as two GEMMs on the halves of its weight: no (N, 512) copy
            if precision.cpu_lowp_dtype(f2d) is not None:  # bf16 on the CPU: row counts bucketed (precision)
                h = precision.linear(f2d, first.weight[:, :C], first.bias) + precision.linear(f3d, first.weight[:, C:])
            else:  # one pass: the second GEMM accumulates into the first's output
                h = torch.addmm(torch.addmm(first.bias, f2d, first.weight[:, :C].t()), f3d, first.weight[:, C:].t())
            alpha = torch.sigmoid(precision.linear(torch.relu(h), last.weight, last.bias))
            alpha = alpha * v + self.cfg.invalid_alpha * (1 - v)
        dt = torch.promote_types(torch.promote_types(f2d.dtype, f3d.dtype), alpha.dtype)  # lerp wants one dtype
        f_mix = torch.lerp(f3d.to(dt), f2d.to(dt), alpha.to(dt))  # alpha * f2D + (1 - alpha) * f3D in one pass

        if B == 1 and n:  # a single sample (every frame in the node): no per-point gather of the SE weights
            w = torch.sigmoid(self.se(f_mix.mean(0, keepdim=True)))
            fused = F.normalize(w * f_mix, dim=1)
        else:
            sums = f_mix.new_zeros(B, C).index_add_(0, batch, f_mix)
            counts = torch.bincount(batch, minlength=B).clamp_min(1).to(f_mix.dtype).unsqueeze(1)
            w = torch.sigmoid(self.se(sums / counts))  # (B, C)
            fused = F.normalize(w[batch] * f_mix, dim=1)

        if self.training:
            self.step += 1
        return fused, alpha
