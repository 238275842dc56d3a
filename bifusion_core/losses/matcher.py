"""Hungarian matching of decoder queries to ground-truth instances (class, BCE and Dice mask costs)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..config import configclass, spec


@configclass
class MatcherConfig:
    """Weights of the matching cost terms. ``cost_seed`` prefers, for each instance, a superpoint query whose
    own superpoint lies inside it (cost ``1 - fraction of that superpoint in the instance``; learnable queries
    pay the full weight): superpoint queries then learn the instance they seed, as in ESAM/OneFormer3D,
    instead of a few learnable queries taking every match."""

    cost_class: float = spec(1.0, ge=0)
    cost_bce: float = spec(1.0, ge=0)
    cost_dice: float = spec(1.0, ge=0)
    cost_seed: float = spec(1.0, ge=0)


def dice_cost(pred_logits: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``(Q, S)`` logits vs ``(G, S)`` {0,1} (or soft) masks -> ``(Q, G)`` 1 - Dice, weighted per superpoint."""
    p = pred_logits.sigmoid()
    gt_w = gt
    if weight is not None:
        p, gt_w = p * weight, gt * weight
    inter = 2 * p @ gt.t()
    denom = p.sum(1, keepdim=True) + gt_w.sum(1).unsqueeze(0)
    return 1 - (inter + 1) / (denom + 1)


def bce_cost(pred_logits: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``(Q, S)`` logits vs ``(G, S)`` masks -> ``(Q, G)`` mean binary cross-entropy (weighted mean)."""
    pos = F.binary_cross_entropy_with_logits(pred_logits, torch.ones_like(pred_logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred_logits, torch.zeros_like(pred_logits), reduction="none")
    if weight is None:
        weight = torch.ones(pred_logits.shape[1], dtype=pred_logits.dtype, device=pred_logits.device)
    w = weight / weight.sum()
    return (pos * w) @ gt.t() + (neg * w) @ (1 - gt).t()


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, gt_labels: torch.Tensor,
                    gt_masks: torch.Tensor, cfg: MatcherConfig | None = None,
                    sp_weight: torch.Tensor | None = None, n_seed_queries: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal one-to-one assignment for one sample.

    Args:
        class_logits: ``(Q, C+1)``; mask_logits: ``(Q, S)``; gt_labels: ``(G,)`` in ``0..C-1``;
        gt_masks: ``(G, S)`` float in [0, 1]; sp_weight: optional ``(S,)`` points per superpoint.
        n_seed_queries: the first ``n_seed_queries`` queries are seeded by superpoints ``0..n-1`` (the seed
            cost applies when it is > 0).

    Returns:
        (query indices, gt indices), both ``(min(Q, G),)`` int64, sorted by query index.
    """
    cfg = cfg or MatcherConfig()
    if gt_labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    prob = class_logits.float().softmax(-1)
    cost = -cfg.cost_class * prob[:, gt_labels]
    m, g = mask_logits.float(), gt_masks.float()
    cost = cost + cfg.cost_bce * bce_cost(m, g, sp_weight) + cfg.cost_dice * dice_cost(m, g, sp_weight)
    if cfg.cost_seed and n_seed_queries:
        if n_seed_queries > min(cost.shape[0], g.shape[1]):
            raise ValueError(f"{n_seed_queries} superpoint-seeded queries, but {cost.shape[0]} queries and "
                             f"{g.shape[1]} superpoints")
        inside = torch.zeros_like(cost)
        inside[:n_seed_queries] = g[:, :n_seed_queries].t()
        cost = cost + cfg.cost_seed * (1 - inside)
    cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6).cpu().numpy()
    qi, gi = linear_sum_assignment(cost)
    order = np.argsort(qi)
    return torch.as_tensor(qi[order], dtype=torch.int64), torch.as_tensor(gi[order], dtype=torch.int64)
