"""Validation on held-out frames: semantic mIoU and instance AP/AP50/AP25 (ScanNet protocol)."""
from __future__ import annotations

import torch

from ..data.scannet.classes import IGNORE_INDEX
from ..data.scannet.classes import label_ids
from ..eval import InstanceAccumulator, InstanceEvalConfig, SemanticEvaluator, frame_instance_inputs
from ..models.bifusion import BiFusionModel
from .data import BatchSampler


@torch.no_grad()
def validate(model: BiFusionModel, sampler: BatchSampler, max_frames: int | None = None,
             device: torch.device | str = "cpu", min_region_size: int = 100, details: bool = False) -> dict:
    """Run the model on every validation frame (no augmentation); returns ``{"miou", "accuracy", "ap",
    "ap50", "ap25", "frames"}`` (plus ``"semantic"``, the full :class:`SemanticResult`, with ``details``).
    Instances are scored per frame as ScanNet scores scenes."""
    was_training = model.training
    model.eval()
    names = model.class_names
    sem_eval = SemanticEvaluator(len(names), names, IGNORE_INDEX)
    to_id = label_ids(names)
    inst_eval = InstanceAccumulator(InstanceEvalConfig(min_region_size=min_region_size))
    n = len(sampler.pool) if max_frames is None else min(max_frames, len(sampler.pool))
    for i in range(n):
        frame = sampler.pool.get(i)
        batch = sampler_batch(sampler, frame)
        inp = batch.inp.to(device)
        seg = model.segment(inp, model(inp))[0]
        sem_gt = batch.targets.semantic.numpy()
        sem_eval.update(sem_gt, seg.semantic.numpy())
        inst_eval.add(*frame_instance_inputs(sem_gt, batch.targets.instance.numpy(), seg.instances, to_id))
    sem = sem_eval.result()
    inst_res = inst_eval.result()
    model.train(was_training)
    out = {"miou": sem.miou, "accuracy": sem.accuracy, "ap": inst_res.ap, "ap50": inst_res.ap50,
           "ap25": inst_res.ap25, "frames": n}
    if details:
        out["semantic"] = sem
    return out


@torch.no_grad()
def merge_separation(model: BiFusionModel, sampler: BatchSampler, pair_gap: int, max_frames: int | None = None,
                     device: torch.device | str = "cpu") -> dict:
    """Merge-embedding figures of :func:`bifusion_core.eval.merge.embedding_separation` on the held-out frames
    (no augmentation): every pair of frames of one scene at most ``pair_gap`` frames apart. NaN figures for a
    model without a merge head."""
    from ..eval.merge import embedding_separation, frame_embeddings

    was_training = model.training
    model.eval()
    pool = sampler.pool
    n = len(pool) if max_frames is None else min(max_frames, len(pool))
    per_frame = []
    for i in range(n):
        batch = sampler_batch(sampler, pool.get(i))
        inp = batch.inp.to(device)
        seg = model.segment(inp, model(inp))[0]
        per_frame.append(frame_embeddings(seg.instances, batch.targets.instance.numpy(),
                                          batch.targets.semantic.numpy()))
    model.train(was_training)
    pairs = [(per_frame[i], per_frame[j]) for i in range(n) for j in range(i + 1, n)
             if pool.scene_of[i] == pool.scene_of[j] and abs(int(pool.frame_of[j] - pool.frame_of[i])) <= pair_gap]
    return embedding_separation(pairs)


def sampler_batch(sampler: BatchSampler, frame):
    from .data import make_batch

    return make_batch([frame], sampler.model_cfg, sampler.lut, sampler.stuff)
