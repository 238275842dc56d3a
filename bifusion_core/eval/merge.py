"""How well merge embeddings (DESIGN.md §5b) tell objects apart across frames.

For pairs of frames of one scene: each predicted instance is assigned the ground-truth object it overlaps
(:func:`assign_ground_truth`, point IoU >= 0.5); then :func:`embedding_separation` averages the cosine of the
embeddings of instances of the two frames that are the *same* object, and of instances that are *different
objects of the same class* (the pairs the map's class gate cannot separate, where the embedding must). A useful
merge head makes the first near 1 and the second clearly lower; a random head gives both about the same value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameEmbeddings", "assign_ground_truth", "frame_embeddings", "embedding_separation"]


@dataclass
class FrameEmbeddings:
    """The instances of one frame that were assigned a ground-truth object: ``embeddings (M, E)`` unit vectors,
    ``gt_ids (M,)`` the objects' ids (unique within the scene), ``gt_classes (M,)`` their class indices."""

    embeddings: np.ndarray
    gt_ids: np.ndarray
    gt_classes: np.ndarray


def assign_ground_truth(point_sets: list[np.ndarray], gt_instance: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """For each predicted instance (``(P_k,)`` indices into the frame's N points), the id of the ground-truth
    instance (``gt_instance (N,)``, <= 0: none) it overlaps most, when their point IoU is at least ``min_iou``;
    -1 otherwise. Returns ``(K,)`` int64."""
    gt = np.asarray(gt_instance, np.int64).ravel()
    ids, counts = np.unique(gt[gt > 0], return_counts=True)
    size = dict(zip(ids.tolist(), counts.tolist()))
    out = np.full(len(point_sets), -1, np.int64)
    for k, idx in enumerate(point_sets):
        idx = np.unique(np.asarray(idx, np.int64).ravel())
        hit = gt[idx]
        hit = hit[hit > 0]
        if len(idx) == 0 or len(hit) == 0:
            continue
        g, inter = np.unique(hit, return_counts=True)
        best = int(np.argmax(inter))
        gid, n = int(g[best]), int(inter[best])
        if n / (len(idx) + size[gid] - n) >= min_iou:
            out[k] = gid
    return out


def frame_embeddings(instances, gt_instance: np.ndarray, gt_semantic: np.ndarray,
                     min_iou: float = 0.5) -> FrameEmbeddings:
    """:class:`FrameEmbeddings` of a frame's predicted ``instances`` (each with ``point_indices`` into the N
    points and an ``embedding (E,)``; those without one are left out) against per-point ground truth
    ``gt_instance (N,)`` (<= 0 none) and ``gt_semantic (N,)`` class indices (< 0 unlabelled); an object's class
    is the most frequent labelled class of its points."""
    insts = [i for i in instances if getattr(i, "embedding", None) is not None]
    sets = [_np(i.point_indices).astype(np.int64) for i in insts]
    gid = assign_ground_truth(sets, gt_instance, min_iou)
    gt_instance = np.asarray(gt_instance, np.int64).ravel()
    gt_semantic = np.asarray(gt_semantic, np.int64).ravel()
    keep = [k for k in range(len(insts)) if gid[k] > 0]
    classes = []
    for k in keep:
        sem = gt_semantic[gt_instance == gid[k]]
        sem = sem[sem >= 0]
        classes.append(int(np.bincount(sem).argmax()) if len(sem) else -1)
    dim = len(_np(insts[0].embedding)) if insts else 0
    emb = np.stack([_np(insts[k].embedding).astype(np.float64) for k in keep]) if keep else np.zeros((0, dim))
    return FrameEmbeddings(emb, gid[keep], np.asarray(classes, np.int64))


def embedding_separation(pairs: list[tuple[FrameEmbeddings, FrameEmbeddings]]) -> dict:
    """Over frame pairs ``(a, b)`` of one scene each, the cosines ``e_a . e_b`` of every instance of a with every
    instance of b (embeddings renormalised), split into:

    - ``same_object``: both assigned the same ground-truth object;
    - ``same_class_other_object``: different objects of the same ground-truth class;

    Returns their means (NaN when there is no such pair) and counts (``n_same_object``,
    ``n_same_class_other_object``), ``separation`` = the difference of the means, and ``pairs`` (frame pairs).
    """
    same, other = [], []
    for a, b in pairs:
        if len(a.gt_ids) == 0 or len(b.gt_ids) == 0:
            continue
        ea = a.embeddings / np.linalg.norm(a.embeddings, axis=1, keepdims=True)
        eb = b.embeddings / np.linalg.norm(b.embeddings, axis=1, keepdims=True)
        cos = ea @ eb.T
        s = a.gt_ids[:, None] == b.gt_ids[None, :]
        c = (a.gt_classes[:, None] == b.gt_classes[None, :]) & (a.gt_classes[:, None] >= 0) & ~s
        same += cos[s].tolist()
        other += cos[c].tolist()
    m_same = float(np.mean(same)) if same else float("nan")
    m_other = float(np.mean(other)) if other else float("nan")
    return {"same_object": m_same, "same_class_other_object": m_other, "separation": m_same - m_other,
            "n_same_object": len(same), "n_same_class_other_object": len(other), "pairs": len(pairs)}


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x).ravel()
