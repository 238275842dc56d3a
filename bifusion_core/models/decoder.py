"""Superpoint-query transformer decoder (as ESAM / OneFormer3D) with fixed or open-vocabulary classes.

Shapes use B samples (frames or crops), S superpoints per sample (padded to the largest), Q queries
(``Q = S + n_learnable``), C classes, D = ``d_model``, E = ``merge_dim`` (the merge embedding of DESIGN.md §5b).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import precision
from ..config import configclass, spec


@configclass
class DecoderConfig:
    """Attributes (besides the transformer's sizes):
        merge_dim: size E of the per-query merge embedding (DESIGN.md §5b: an MLP ``d_model -> merge_hidden ->
            merge_dim`` on the final layer's query features, L2-normalised), used to associate the instances of
            successive frames in the online map; 0: no merge head (checkpoints written before it existed).
        merge_hidden: width of the merge MLP's hidden layer.
    """

    in_dim: int = spec(256, ge=1)
    d_model: int = spec(256, ge=1)
    n_layers: int = spec(3, ge=1)
    n_heads: int = spec(8, ge=1)
    ffn_dim: int = spec(1024, ge=1)
    dropout: float = spec(0.0, ge=0, lt=1)
    n_learnable_queries: int = spec(16, ge=0)
    num_classes: int = spec(200, ge=1)
    open_vocab: bool = False
    temperature: float = spec(0.07, gt=0)
    merge_dim: int = spec(256, ge=0)  # 0: no merge head
    merge_hidden: int = spec(512, ge=1)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1])


class ClassHead(nn.Module):
    """Logits over C classes from ``(..., D)`` embeddings: a learned linear classifier, or (open vocabulary)
    cosine similarity with ``(C, E)`` text embeddings divided by the temperature."""

    def __init__(self, dim: int, num_classes: int, open_vocab: bool, temperature: float, text_dim: int = 256):
        super().__init__()
        self.open_vocab = open_vocab
        self.temperature = temperature
        if open_vocab:
            self.proj = nn.Linear(dim, text_dim)
            if dim == text_dim:  # features already live in the text space: start as the identity
                nn.init.eye_(self.proj.weight)
                nn.init.zeros_(self.proj.bias)
        else:
            self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None, bf16: bool = False) -> torch.Tensor:
        """``bf16``: the projection as a bf16 GEMM with bucketed rows (:mod:`bifusion_core.precision`), the
        cosines in x's dtype (the CPU's half-precision inference, where autocast is off around the head)."""
        if not self.open_vocab:
            return self.fc(x)
        if text is None:
            raise ValueError("open-vocabulary classes need text embeddings (C, E)")
        if bf16:
            h = precision.linear(x.bfloat16(), self.proj.weight, self.proj.bias).to(x.dtype)
        else:
            h = self.proj(x)
        # normalize(h) @ t^T as (h @ t^T) / |h|: the division on (N, C) logits instead of (N, E) features
        scale = torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(1e-12) * self.temperature
        return (h @ F.normalize(text, dim=-1).t()) / scale


class DecoderLayer(nn.Module):
    """Cross-attention (queries -> superpoints), self-attention among queries, FFN; post-norm residuals."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.d_model
        self.cross = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.ffn_dim, d))
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, q, q_pos, q_pad, mem, mem_pos, mem_pad):
        q = self.n1(q + self.cross(q + q_pos, mem + mem_pos, mem, key_padding_mask=mem_pad, need_weights=False)[0])
        qk = q + q_pos
        q = self.n2(q + self.self_attn(qk, qk, q, key_padding_mask=q_pad, need_weights=False)[0])
        return self.n3(q + self.ffn(q))


@dataclass
class DecoderOutput:
    """Per-layer predictions (the last is the final one).

    Attributes:
        class_logits: ``(B, Q, C+1)``, the last column is "no object".
        mask_logits: ``(B, Q, S)`` over superpoints.
        objectness: ``(B, Q)`` logits.
        query_pad: ``(B, Q)`` True for padding queries; ``sp_pad``: ``(B, S)`` True for padding superpoints.
        aux: the same triple for every earlier layer, for deep supervision.
        merge_embed: ``(B, Q, E)`` unit-norm merge embeddings of the final layer's queries, or None when the
            decoder has no merge head (``merge_dim = 0``).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    objectness: torch.Tensor
    query_pad: torch.Tensor
    sp_pad: torch.Tensor
    aux: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    merge_embed: torch.Tensor | None = None


def pad_superpoints(feats: list[torch.Tensor], centres: list[torch.Tensor]):
    """Lists of ``(S_b, D)`` features and ``(S_b, 3)`` normalised centres -> padded ``(B, S, D)``,
    ``(B, S, 3)`` and the ``(B, S)`` padding mask."""
    s = max(f.shape[0] for f in feats)
    b = len(feats)
    x = feats[0].new_zeros(b, s, feats[0].shape[1])
    c = feats[0].new_zeros(b, s, 3)
    pad = torch.ones(b, s, dtype=torch.bool, device=feats[0].device)
    for i, (f, ce) in enumerate(zip(feats, centres)):
        x[i, : f.shape[0]] = f
        c[i, : f.shape[0]] = ce
        pad[i, : f.shape[0]] = False
    return x, c, pad


class QueryDecoder(nn.Module):
    """Queries = superpoint features (+ learnable queries) -> instance masks over superpoints, classes,
    objectness, and (with ``merge_dim > 0``) a unit-norm merge embedding per query.

    ``forward(sp_feats (B,S,in_dim), sp_centres (B,S,3) normalised, sp_pad (B,S), text (C,E_text) or None)``
    -> :class:`DecoderOutput`. ``merge_head`` (None without one) is ``mlp([d_model, merge_hidden, merge_dim])``
    on the final layer's normalised ``(B, Q, D)`` query features.
    """

    def __init__(self, cfg: DecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DecoderConfig()
        d = cfg.d_model
        self.input_proj = nn.Sequential(nn.Linear(cfg.in_dim, d), nn.LayerNorm(d))
        self.pos = mlp([3, d, d])
        self.query_proj = nn.Linear(d, d)
        self.learnable = nn.Parameter(torch.randn(cfg.n_learnable_queries, d) * 0.02)
        self.learnable_pos = nn.Parameter(torch.zeros(cfg.n_learnable_queries, d))
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.n_layers)])
        self.out_norm = nn.LayerNorm(d)
        self.mask_embed = mlp([d, d, d])
        self.mask_feat = nn.Linear(d, d)
        self.cls = ClassHead(d, cfg.num_classes, cfg.open_vocab, cfg.temperature)
        self.no_object = nn.Linear(d, 1)
        self.obj = nn.Linear(d, 1)
        self.merge_head = mlp([d, cfg.merge_hidden, cfg.merge_dim]) if cfg.merge_dim > 0 else None

    def _heads(self, q, q_pos, mem):
        """Masks compare position-aware embeddings: the query's (plus its position) with each superpoint's mask
        feature (which carries its centre), so two alike objects at different places get different masks."""
        q = self.out_norm(q)
        masks = torch.einsum("bqd,bsd->bqs", self.mask_embed(q + q_pos), mem) / self.cfg.d_model**0.5
        return q, masks, self.obj(q).squeeze(-1)

    def forward(self, sp_feats: torch.Tensor, sp_centres: torch.Tensor, sp_pad: torch.Tensor,
                text: torch.Tensor | None = None) -> DecoderOutput:
        b = sp_feats.shape[0]
        mem = self.input_proj(sp_feats)
        mem_pos = self.pos(sp_centres)
        n_l = self.cfg.n_learnable_queries
        q = torch.cat([self.query_proj(mem), self.learnable.unsqueeze(0).expand(b, -1, -1)], 1)
        q_pos = torch.cat([mem_pos, self.learnable_pos.unsqueeze(0).expand(b, -1, -1)], 1)
        q_pad = torch.cat([sp_pad, sp_pad.new_zeros(b, n_l)], 1)
        mask_mem = self.mask_feat(mem + mem_pos)
        outs = []
        for layer in self.layers:
            q = layer(q, q_pos, q_pad, mem, mem_pos, sp_pad)
            qn, masks, obj = self._heads(q, q_pos, mask_mem)
            cls = torch.cat([self.cls(qn, text), self.no_object(qn)], -1)
            masks = masks.masked_fill(sp_pad.unsqueeze(1), -1e4)
            outs.append((cls, masks, obj))
        cls, masks, obj = outs[-1]
        merge = None
        if self.merge_head is not None:  # qn: the final layer's normalised query features (B, Q, D)
            merge = F.normalize(self.merge_head(qn), dim=-1)
        return DecoderOutput(cls, masks, obj, q_pad, sp_pad, aux=outs[:-1], merge_embed=merge)


class SemanticHead(nn.Module):
    """Per-point semantic logits ``(N, C)`` from unit-norm fused features ``(N, in_dim)``.

    Both label spaces score by cosine similarity divided by the temperature, as the fused space is meant to
    be compared with text: open vocabulary against ``(C, E)`` text embeddings, a fixed label set against
    ``(C, in_dim)`` learned class prototypes. (A plain linear layer on unit-norm inputs starts with logits of
    about +-0.06 and needs hundreds of steps just to grow its weights; prototypes start at full scale.)"""

    def __init__(self, in_dim: int, num_classes: int, open_vocab: bool, temperature: float = 0.07):
        super().__init__()
        self.open_vocab = open_vocab
        self.temperature = temperature
        if open_vocab:
            self.head = ClassHead(in_dim, num_classes, open_vocab, temperature)
        else:
            self.prototypes = nn.Parameter(F.normalize(torch.randn(num_classes, in_dim), dim=1))

    def forward(self, feats: torch.Tensor, text: torch.Tensor | None = None, bf16: bool = False) -> torch.Tensor:
        if self.open_vocab:
            return self.head(feats, text, bf16)
        return F.normalize(feats, dim=-1) @ F.normalize(self.prototypes, dim=-1).t() / self.temperature
