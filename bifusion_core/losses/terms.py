"""Loss terms of DESIGN.md §3 (each a plain function of tensors)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass."""
    return _GradScale.apply(x, scale)


def softmax_focal_loss(logits: torch.Tensor, target: torch.Tensor, no_object: int, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss over ``(Q, K)`` softmax class logits (the last class "no object") and ``(Q,)`` targets.

    ``FL_q = (1 - p_q)^gamma * -log(p_q)`` with ``p_q`` the probability of the target; the queries are averaged
    with weight ``alpha`` for "no object" targets and 1 for matched ones (``sum w FL / sum w``), so the few
    matched queries are not drowned by the many unmatched ones (DETR's ``eos_coef`` role).
    """
    logp = torch.log_softmax(logits, dim=-1).gather(1, target.view(-1, 1)).squeeze(1)
    fl = (1 - logp.exp()) ** gamma * -logp
    w = torch.where(target == no_object, torch.full_like(fl, alpha), torch.ones_like(fl))
    return (w * fl).sum() / w.sum().clamp_min(1e-9)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over masks of ``1 - (2|P∩G| + 1) / (|P| + |G| + 1)``; ``(M, S)`` logits and targets, optional
    ``(S,)`` weights (points per superpoint)."""
    p = logits.sigmoid()
    w = torch.ones_like(p[0]) if weight is None else weight
    inter = (p * targets * w).sum(1)
    return (1 - (2 * inter + 1) / ((p * w).sum(1) + (targets * w).sum(1) + 1)).mean()


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of ``(M, S)`` masks, mean over superpoints weighted by ``(S,)``, then over masks."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weight is None:
        return bce.mean()
    return ((bce * weight).sum(1) / weight.sum().clamp_min(1e-9)).mean()


def alignment_loss(f2d: torch.Tensor, f3d: torch.Tensor, valid: torch.Tensor, tau: float = 0.07,
                   grad_2d: float = 0.05) -> torch.Tensor:
    """``mean over valid points of -log(sigmoid(cos(f2d, f3d) / tau) + 1e-8)``; the 2D side passes through
    :func:`grad_scale` (value unchanged, gradient x ``grad_2d``). Zero when no point is valid."""
    v = valid.bool().view(-1)
    if not bool(v.any()):
        return f3d.sum() * 0
    cos = (F.normalize(grad_scale(f2d[v], grad_2d), dim=1, eps=1e-8) * F.normalize(f3d[v], dim=1, eps=1e-8)).sum(1)
    return -torch.log(torch.sigmoid(cos / tau) + 1e-8).mean()


def knn_indices(points: torch.Tensor, k: int, batch: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, k)`` indices of each point's k nearest other points in the same sample (KD-tree on the CPU).
    Samples with fewer than k+1 points repeat their farthest neighbour; a single point points to itself."""
    pts = points.detach().cpu().numpy().astype(np.float64)
    b = np.zeros(len(pts), np.int64) if batch is None else batch.detach().cpu().numpy()
    out = np.zeros((len(pts), k), np.int64)
    for s in np.unique(b):
        idx = np.nonzero(b == s)[0]
        kk = min(k + 1, len(idx))
        _, nn = cKDTree(pts[idx]).query(pts[idx], k=kk)
        nn = nn.reshape(len(idx), kk)[:, 1:] if kk > 1 else nn.reshape(len(idx), 1)
        if nn.shape[1] < k:
            nn = np.concatenate([nn, np.repeat(nn[:, -1:], k - nn.shape[1], 1)], 1)
        out[idx] = idx[nn]
    return torch.from_numpy(out).to(points.device)


def spatial_consistency_loss(f3d: torch.Tensor, knn: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Pull each point's 3D feature toward its neighbours': mean ``1 - cos(f_i, f_j)`` over the ``(M, k)``
    neighbour indices ``knn`` of points ``rows`` (``(M,)``, default all ``N``)."""
    with torch.autocast(f3d.device.type, enabled=False):  # fp32 cosines under mixed precision too
        f = F.normalize(f3d.float(), dim=1, eps=1e-8)  # normalise once: F.cosine_similarity on (M, k, C) is ~10x slower
        fi = f if rows is None else f[rows]
        return 1 - torch.bmm(f[knn], fi.unsqueeze(2)).mean()


def noview_pseudo_label_loss(sem_logits: torch.Tensor, valid: torch.Tensor, knn: torch.Tensor,
                             confidence: float = 0.8, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Points without a 2D view learn the majority label of their neighbours whose prediction confidence
    exceeds ``confidence``; points with no such neighbour are left out. ``sem_logits (N, C)``, ``knn (M, k)``
    neighbours of points ``rows (M,)`` (default all)."""
    rows = torch.arange(sem_logits.shape[0], device=sem_logits.device) if rows is None else rows
    with torch.no_grad():
        prob = sem_logits.softmax(1)
        conf, label = prob.max(1)
        nb_ok = conf[knn] > confidence  # (M, k)
        votes = torch.zeros(knn.shape[0], sem_logits.shape[1], device=sem_logits.device)
        votes.scatter_add_(1, label[knn], nb_ok.float())
        target = votes.argmax(1)
        use = (~valid.bool().view(-1)[rows]) & nb_ok.any(1)
    if not bool(use.any()):
        return sem_logits.sum() * 0
    return F.cross_entropy(sem_logits[rows[use]], target[use])


def merge_loss(emb_a: torch.Tensor, ids_a: torch.Tensor, emb_b: torch.Tensor, ids_b: torch.Tensor,
               tau: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """Contrastive loss of the merge embeddings of one frame pair (ESAM's cross-frame association).

    ``emb_a (Ma, E)`` / ``emb_b (Mb, E)``: unit merge embeddings of the queries matched to ground-truth
    instances in frames a and b, whose ids are ``ids_a (Ma,)`` / ``ids_b (Mb,)`` (unique within a frame; ids of
    one scene name the same object in both frames). With ``logits = emb_a @ emb_b.T / tau`` (cosines over the
    temperature), every row of a whose id also occurs in b takes the cross-entropy towards the column of that
    id (a -> b), and symmetrically every row of b (b -> a, over ``logits.T``). ``reduction="mean"``: averaged
    over those 2K rows (K = the number of shared ids); ``"sum"``: their sum. A pair with no shared id gives a
    zero that keeps the graph. Returns a scalar (nats).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    ids_a, ids_b = ids_a.to(emb_a.device).view(-1), ids_b.to(emb_a.device).view(-1)
    if emb_a.shape[0] != ids_a.numel() or emb_b.shape[0] != ids_b.numel():
        raise ValueError(f"{emb_a.shape[0]} / {emb_b.shape[0]} embeddings for {ids_a.numel()} / {ids_b.numel()} ids")
    if torch.unique(ids_a).numel() != ids_a.numel() or torch.unique(ids_b).numel() != ids_b.numel():
        raise ValueError("instance ids must be unique within a frame")
    same = ids_a.unsqueeze(1) == ids_b.unsqueeze(0)  # (Ma, Mb)
    rows_a, cols_b = same.nonzero(as_tuple=True)  # each shared id once (ids unique per frame)
    if rows_a.numel() == 0:
        return (emb_a.sum() + emb_b.sum()) * 0
    logits = emb_a.float() @ emb_b.float().t() / tau
    loss = (F.cross_entropy(logits[rows_a], cols_b, reduction="sum")
            + F.cross_entropy(logits.t()[cols_b], rows_a, reduction="sum"))
    return loss / (2 * rows_a.numel()) if reduction == "mean" else loss


def stage_weights(progress: float) -> tuple[float, float, float, float]:
    """(λ_sem, λ_inst, λ_align, λ_aux) by training progress p in [0, 1]: S0 p < 0.3, S1 p < 0.7, S2 after."""
    if progress < 0.3:
        return 0.3, 0.4, 0.2, 0.1
    if progress < 0.7:
        return 0.4, 0.5, 0.08, 0.02
    return 0.45, 0.5, 0.04, 0.01
