"""The BiFusion training loss: ``L = λ1 L_sem + λ2 L_inst + λ3 L_align + λ4 L_aux`` (DESIGN.md §3) in stages
S0-S2; in the merge stage S3 (only the merge head trains) ``L = w_merge L_merge`` over frame pairs (DESIGN.md §5b,
:func:`~.terms.merge_loss`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import configclass, spec
from .matcher import MatcherConfig, hungarian_match
from .terms import (alignment_loss, dice_loss, knn_indices, merge_loss, noview_pseudo_label_loss,
                    softmax_focal_loss, spatial_consistency_loss, stage_weights, weighted_bce)

MERGE_STAGE = 3


@configclass
class LossConfig:
    ignore_index: int = -100
    focal_alpha: float = spec(0.25, ge=0, le=1)
    focal_gamma: float = spec(2.0, ge=0)
    w_cls: float = spec(1.0, ge=0)
    w_mask: float = spec(0.8, ge=0)
    w_obj: float = spec(0.2, ge=0)
    mask_bce: float = spec(0.6, ge=0)
    mask_dice: float = spec(0.4, ge=0)
    tau: float = spec(0.07, gt=0)
    align_grad_2d: float = spec(0.05, ge=0)
    knn: int = spec(8, ge=1)
    pseudo_confidence: float = spec(0.8, ge=0, le=1)
    w_spatial: float = spec(1.0, ge=0)   # λ41
    w_noview: float = spec(1.0, ge=0)    # λ42
    aux_points: int = spec(4096, ge=1)   # L_aux on this many points per batch (evenly spaced), neighbours from all points
    deep_supervision: bool = True
    min_instance_points: int = spec(10, ge=0)
    w_merge: float = spec(1.0, ge=0)     # weight of L_merge (stage S3)
    merge_tau: float = spec(0.1, gt=0)   # temperature of the merge embeddings' cosine logits
    matcher: MatcherConfig = field(default_factory=MatcherConfig)


@dataclass
class Targets:
    """Per-point ground truth of a batch: ``semantic (N,)`` class index (``ignore_index`` unlabelled),
    ``instance (N,)`` instance id (-1 none; ids need only be unique within a sample), and the class indices
    that are not instances (walls, floors: ``stuff``)."""

    semantic: torch.Tensor
    instance: torch.Tensor
    stuff: tuple[int, ...] = ()


def instance_targets(local_sp: torch.Tensor, n_sp: int, sem: torch.Tensor, inst: torch.Tensor, cfg: LossConfig,
                     stuff: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sample -> (labels ``(G,)``, masks ``(G, S)`` = fraction of each superpoint's points in the instance,
    superpoint sizes ``(S,)``, the ground-truth instance id behind each target ``(G,)`` int64).

    ``local_sp (N,)`` local superpoint ids in ``0..n_sp-1``, ``sem (N,)`` class indices, ``inst (N,)`` instance
    ids (-1 none). Instances with fewer than ``min_instance_points`` points, no labelled point or a stuff
    majority class are left out."""
    sizes = torch.bincount(local_sp, minlength=n_sp).to(torch.float32)
    ids = torch.unique(inst[inst >= 0])
    labels, masks, kept = [], [], []
    for g in ids.tolist():
        sel = inst == g
        if int(sel.sum()) < cfg.min_instance_points:
            continue
        s = sem[sel]
        s = s[s != cfg.ignore_index]
        if s.numel() == 0:
            continue
        lab = int(torch.mode(s).values)
        if lab in stuff:
            continue
        cnt = torch.bincount(local_sp[sel], minlength=n_sp).to(torch.float32)
        labels.append(lab)
        masks.append(cnt / sizes.clamp_min(1))
        kept.append(g)
    if not labels:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, torch.zeros(0, n_sp), sizes, empty.clone()
    return torch.tensor(labels, dtype=torch.int64), torch.stack(masks), sizes, torch.tensor(kept, dtype=torch.int64)


class BiFusionCriterion:
    """Computes every term (logged separately) and the scheduled total."""

    def __init__(self, cfg: LossConfig | None = None):
        self.cfg = cfg or LossConfig()

    def match(self, cls, masks, labels, gt_masks, sizes) -> tuple[torch.Tensor, torch.Tensor]:
        """Hungarian matching of one decoder layer's queries of one sample (padding removed: ``cls (Q, C+1)``,
        ``masks (Q, S)``, the first S queries seeded by superpoints 0..S-1) to its targets (``labels (G,)``,
        ``gt_masks (G, S)``, ``sizes (S,)``): (query indices, target indices) on ``cls``'s device."""
        labels, gt_masks, sizes = labels.to(cls.device), gt_masks.to(cls.device), sizes.to(cls.device)
        qi, gi = hungarian_match(cls, masks, labels, gt_masks, self.cfg.matcher, sizes, n_seed_queries=masks.shape[1])
        return qi.to(cls.device), gi.to(cls.device)

    def instance_loss(self, cls, masks, obj, labels, gt_masks, sizes) -> dict[str, torch.Tensor]:
        """One decoder layer, one sample (padding removed): softmax focal classes (unmatched queries target
        "no object"), 0.6 BCE + 0.4 Dice masks, BCE objectness, after Hungarian matching."""
        c = self.cfg
        labels, gt_masks, sizes = labels.to(cls.device), gt_masks.to(cls.device), sizes.to(cls.device)
        qi, gi = self.match(cls, masks, labels, gt_masks, sizes)
        no_obj = cls.shape[1] - 1
        target = torch.full((cls.shape[0],), no_obj, dtype=torch.int64, device=cls.device)
        if qi.numel():
            target[qi] = labels[gi]
        l_cls = softmax_focal_loss(cls, target, no_obj, c.focal_alpha, c.focal_gamma)
        obj_t = torch.zeros_like(obj)
        obj_t[qi] = 1.0
        l_obj = F.binary_cross_entropy_with_logits(obj, obj_t)
        if qi.numel():
            m, t = masks[qi], gt_masks[gi]
            l_mask = c.mask_bce * weighted_bce(m, t, sizes) + c.mask_dice * dice_loss(m, t, sizes)
        else:
            l_mask = masks.sum() * 0
        return {"inst_cls": l_cls, "inst_mask": l_mask, "inst_obj": l_obj}

    def merge_terms(self, out, tgt: Targets) -> dict[str, torch.Tensor]:
        """Stage S3: samples ``2k`` and ``2k+1`` of the batch are a frame pair of one scene. Per sample, the final
        decoder layer's queries are Hungarian-matched to the ground-truth instances (as in
        :meth:`instance_loss`); :func:`~.terms.merge_loss` of each pair's matched merge embeddings, averaged
        over every row (of every pair) that has a partner. ``{"merge", "total" = w_merge * merge}``."""
        c = self.cfg
        emb = out.dec.merge_embed
        if emb is None:
            raise ValueError("the merge stage needs a decoder with a merge head (decoder.merge_dim > 0)")
        n = len(out.sample_points)
        if n % 2:
            raise ValueError(f"the merge stage needs frame pairs (an even batch), got {n} samples")
        sem_t = tgt.semantic.to(out.sem_logits.device)
        inst_t = tgt.instance.to(out.sem_logits.device)
        matched = []
        for b, idx in enumerate(out.sample_points):
            s = out.sp_centres[b].shape[0]
            labels, gt_masks, sizes, ids = instance_targets(out.sp_local[b], s, sem_t[idx], inst_t[idx], c, tgt.stuff)
            q = ~out.dec.query_pad[b]
            qi, gi = self.match(out.dec.class_logits[b][q].float(), out.dec.mask_logits[b][q][:, :s].float(), labels,
                                gt_masks, sizes)
            matched.append((emb[b][q][qi].float(), ids.to(qi.device)[gi]))
        total = emb.sum() * 0
        rows = 0
        for k in range(0, n, 2):
            (ea, ia), (eb, ib) = matched[k], matched[k + 1]
            total = total + merge_loss(ea, ia, eb, ib, c.merge_tau, reduction="sum")
            rows += 2 * int(torch.isin(ia, ib).sum())
        l_merge = total / max(rows, 1)
        return {"merge": l_merge, "total": c.w_merge * l_merge}

    def __call__(self, out, inp, tgt: Targets, progress: float, stage: int | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of a batch. ``progress`` in [0, 1] over stages S0-S2 sets the weights
        (:func:`~.terms.stage_weights`); ``stage == 3`` (the merge stage) computes only :meth:`merge_terms`
        (everything but the merge head is frozen there, so the other terms would train nothing)."""
        if stage == MERGE_STAGE:
            return self.merge_terms(out, tgt)
        c = self.cfg
        sem_t = tgt.semantic.to(out.sem_logits.device)
        inst_t = tgt.instance.to(out.sem_logits.device)
        terms: dict[str, torch.Tensor] = {}
        if bool((sem_t != c.ignore_index).any()):
            terms["sem"] = F.cross_entropy(out.sem_logits.float(), sem_t, ignore_index=c.ignore_index)
        else:
            terms["sem"] = out.sem_logits.sum() * 0
        # instances: every sample, every decoder layer (deep supervision), averaged
        layers = list(out.dec.aux) + [(out.dec.class_logits, out.dec.mask_logits, out.dec.objectness)]
        if not c.deep_supervision:
            layers = layers[-1:]
        acc = {"inst_cls": 0.0, "inst_mask": 0.0, "inst_obj": 0.0}
        for b, idx in enumerate(out.sample_points):
            s = out.sp_centres[b].shape[0]
            labels, gt_masks, sizes, _ = instance_targets(out.sp_local[b], s, sem_t[idx], inst_t[idx], c, tgt.stuff)
            q = ~out.dec.query_pad[b]
            for cls, masks, obj in layers:
                li = self.instance_loss(cls[b][q].float(), masks[b][q][:, :s].float(), obj[b][q].float(), labels,
                                        gt_masks, sizes)
                for k in acc:
                    acc[k] = acc[k] + li[k] / (len(layers) * len(out.sample_points))
        terms.update(acc)
        terms["inst"] = c.w_cls * acc["inst_cls"] + c.w_mask * acc["inst_mask"] + c.w_obj * acc["inst_obj"]
        terms["align"] = alignment_loss(out.enc.f2d.float(), out.enc.f3d.float(), out.enc.valid, c.tau, c.align_grad_2d)
        knn = knn_indices(inp.points, c.knn, inp.batch)
        n = inp.points.shape[0]
        sub = torch.linspace(0, n - 1, min(n, c.aux_points), device=knn.device).round().long()
        terms["spatial"] = spatial_consistency_loss(out.enc.f3d.float(), knn[sub], sub)
        terms["noview"] = noview_pseudo_label_loss(out.sem_logits.float(), out.enc.valid, knn[sub], c.pseudo_confidence,
                                                   sub)
        terms["aux"] = c.w_spatial * terms["spatial"] + c.w_noview * terms["noview"]
        l1, l2, l3, l4 = stage_weights(progress)
        terms["total"] = l1 * terms["sem"] + l2 * terms["inst"] + l3 * terms["align"] + l4 * terms["aux"]
        return terms
