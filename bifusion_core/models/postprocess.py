"""Decoder outputs -> labelled points and an instance list (scores, mask NMS, semantic fill-in)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import configclass, spec
from ..data.scannet.classes import STUFF_CLASSES


@configclass
class PostprocessConfig:
    score_threshold: float = spec(0.2, ge=0, le=1)      # instance score = class prob x objectness x mean mask prob
    mask_threshold: float = spec(0.5, ge=0, le=1)       # superpoint in a mask when its mask probability exceeds this
    nms_iou: float = spec(0.5, ge=0, le=1)              # a lower-scored mask overlapping a kept one more than this is dropped
    min_points: int = spec(50, ge=0)                    # instances with fewer points are dropped
    max_instances: int = spec(100, ge=1)
    semantic_confidence: float = spec(0.5, ge=0, le=1)  # superpoints below this take their nearest confident neighbour's label
    fill_radius: float = spec(0.5, ge=0, allow_inf=True)  # metres; farther than this: background
    background: int = -1              # label of points with no confident class
    # an instance's class distribution: the decoder's ("query"), the mean per-point semantic probability over
    # its mask ("semantic"), or the average of the two ("mean")
    instance_class: str = spec("query", choices=("query", "semantic", "mean"))
    stuff_classes: tuple[str, ...] = STUFF_CLASSES  # class names an instance never takes (walls, floors)


@dataclass
class Instance:
    """One instance of a frame: ``center``/``size`` are the axis-aligned box of its points (metres);
    ``point_indices (P,)`` int64 into the frame's points; ``embedding``: the ``(E,)`` float32 unit merge embedding
    of its query (DESIGN.md §5b, for the online map), or None when the model has no merge head."""

    id: int
    class_id: int
    class_name: str
    score: float
    point_indices: torch.Tensor
    center: torch.Tensor
    size: torch.Tensor
    embedding: torch.Tensor | None = None

    @property
    def point_count(self) -> int:
        return int(self.point_indices.numel())


@dataclass
class Segmentation:
    """Per-point outputs ``(N,)``: semantic label (``background`` where unknown), instance id (-1: none),
    score (instance score inside instances, semantic confidence elsewhere); and the instances."""

    semantic: torch.Tensor
    instance: torch.Tensor
    score: torch.Tensor
    instances: list[Instance] = field(default_factory=list)


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, weight: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy NMS of ``(Q, S)`` boolean masks with ``(Q,)`` scores, overlap weighted by ``(S,)`` point counts.
    Returns kept indices, best first."""
    order = torch.argsort(scores, descending=True, stable=True)
    m = masks[order].to(weight.dtype) * weight
    inter = m @ masks[order].to(weight.dtype).t()
    area = inter.diagonal()
    ious = inter / (area.unsqueeze(0) + area.unsqueeze(1) - inter).clamp_min(1e-9)
    keep: list[int] = []
    for i in range(order.numel()):
        if all(float(ious[i, j]) <= iou for j in keep):
            keep.append(i)
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def postprocess(class_logits: torch.Tensor, mask_logits: torch.Tensor, objectness: torch.Tensor,
                sem_logits: torch.Tensor, sp_ids: torch.Tensor, sp_centres: torch.Tensor, points: torch.Tensor,
                class_names: list[str], cfg: PostprocessConfig | None = None,
                merge_embed: torch.Tensor | None = None) -> Segmentation:
    """One sample: ``class_logits (Q, C+1)``, ``mask_logits (Q, S)``, ``objectness (Q,)``,
    ``sem_logits (N, C)``, ``sp_ids (N,)``, ``sp_centres (S, 3)``, ``points (N, 3)`` metres, and optionally
    ``merge_embed (Q, E)`` unit merge embeddings (each kept instance carries its query's row as
    ``Instance.embedding``; None: instances get none). The embeddings never change which instances are kept."""
    cfg = cfg or PostprocessConfig()
    n, s = sp_ids.shape[0], mask_logits.shape[1]
    c = class_logits.shape[1] - 1
    if len(class_names) != c or sem_logits.shape[1] != c:
        raise ValueError(f"{len(class_names)} class names for {c} decoder classes / {sem_logits.shape[1]} semantic")
    if merge_embed is not None and (merge_embed.dim() != 2 or merge_embed.shape[0] != class_logits.shape[0]):
        raise ValueError(f"merge_embed must be (Q, E) with Q = {class_logits.shape[0]}, got {tuple(merge_embed.shape)}")
    sizes = torch.bincount(sp_ids, minlength=s).to(torch.float32)
    sem_prob = sem_logits.float().softmax(-1)
    sp_prob = torch.zeros(s, c).index_add_(0, sp_ids, sem_prob) / sizes.clamp_min(1).unsqueeze(1)  # (S, C)
    # --- instances
    mp = mask_logits.float().sigmoid()
    masks = mp > cfg.mask_threshold
    npts = masks.float() @ sizes
    probs = class_logits.float().softmax(-1)[:, :c]
    if cfg.instance_class != "query":
        pooled = (masks.float() * sizes) @ sp_prob / npts.clamp_min(1).unsqueeze(1)  # (Q, C) over mask points
        probs = pooled if cfg.instance_class == "semantic" else 0.5 * (probs + pooled)
    stuff = torch.tensor([n in cfg.stuff_classes for n in class_names], dtype=torch.bool)
    cls_prob, cls = probs.masked_fill(stuff, 0.0).max(1)
    mean_mp = (mp * masks) @ sizes / npts.clamp_min(1)
    score = cls_prob * objectness.float().sigmoid() * mean_mp
    cand = ((score >= cfg.score_threshold) & (npts >= max(cfg.min_points, 1))).nonzero().squeeze(1)
    kept = cand[mask_nms(masks[cand], score[cand], sizes, cfg.nms_iou)][: cfg.max_instances]
    # each superpoint goes to the best-scoring kept instance that covers it
    sp_inst = torch.full((s,), -1, dtype=torch.int64)
    if kept.numel():
        cover = masks[kept].float() * score[kept].unsqueeze(1)
        best_val, best = cover.max(0)
        sp_inst = torch.where(best_val > 0, best, sp_inst)
    point_slot = sp_inst[sp_ids]
    instances, instance = [], torch.full((n,), -1, dtype=torch.int64)
    point_score = torch.zeros(n)
    for slot, q in enumerate(kept.tolist()):
        idx = (point_slot == slot).nonzero().squeeze(1)
        if idx.numel() < cfg.min_points or idx.numel() == 0:
            continue
        new_id = len(instances) + 1
        instance[idx] = new_id
        point_score[idx] = float(score[q])
        lo, hi = points[idx].min(0).values, points[idx].max(0).values
        emb = None if merge_embed is None else merge_embed[q].detach().float().clone()
        instances.append(Instance(new_id, int(cls[q]), class_names[int(cls[q])], float(score[q]), idx,
                                  (lo + hi) / 2, hi - lo, emb))
    # --- semantics at superpoint level, unconfident superpoints filled from the nearest confident one
    sp_conf, sp_label = sp_prob.max(1)
    confident = (sp_conf >= cfg.semantic_confidence) & (sizes > 0)
    sp_label = torch.where(confident, sp_label, torch.full_like(sp_label, cfg.background))
    weak = (~confident & (sizes > 0)).nonzero().squeeze(1)
    strong = confident.nonzero().squeeze(1)
    if weak.numel() and strong.numel():
        d = torch.cdist(sp_centres[weak].float(), sp_centres[strong].float())
        dmin, j = d.min(1)
        near = dmin <= cfg.fill_radius
        sp_label[weak[near]] = sp_label[strong[j[near]]]
    semantic = sp_label[sp_ids]
    outside = instance < 0
    point_score[outside] = sp_conf[sp_ids][outside]
    return Segmentation(semantic, instance, point_score, instances)
