"""The online map's settings (:class:`MapConfig`) and the small type checks its inputs share (from
:mod:`bifusion_core.config`)."""
from __future__ import annotations

from ..config import check_float, check_int, configclass, spec

__all__ = ["MapConfig", "OVERLAP_KINDS", "check_float", "check_int"]

OVERLAP_KINDS = ("box_iou", "box_iom", "voxel_iou")


@configclass(frozen=True)
class MapConfig:
    """Settings of the online instance map and its labelled voxel map (all lengths in metres); frozen, so one
    session's maps cannot drift apart (build a new one with ``dataclasses.replace``).

    Attributes:
        voxel_size: edge of a map voxel, metres (> 0, at most 10). Instance voxel sets, instance boxes and the
            labelled voxel map all use it. Default 0.05 (5 cm, as DESIGN.md §5b).
        max_instances: most instances kept in memory (>= 1); beyond it the least recently seen are evicted
            (see :class:`~bifusion_core.mapping.instance_map.InstanceMap`). Default 100.
        merge_threshold: a memory/new pair merges when its score (embedding cosine x overlap, in [-1, 1]) is
            strictly above this, in [0, 1). Default 0.01 (ESAM's released code thresholds at 0). Measured on 4
            held-out synthetic sequences of 40 frames (seeds 200-203, 640x480, loop 0.5) with ``box_iom``:
            ground-truth instances give ID consistency / fragmentation 0.994 / 1.02 from 0 to 0.02, 0.993 /
            1.03 at 0.03, 0.974 / 1.14 at 0.05, 0.966 / 1.21 at 0.2; the shipped model's instances with their trained merge
            embeddings give scene AP50 / fragmentation 0.298 / 1.46 at 0, 0.300 / 1.47 at 0.01, 0.285 / 1.48
            at 0.02, 0.285 / 1.58 at 0.03, 0.315 / 1.72 at 0.1 (per-frame AP50 0.261).
        overlap: the geometric term: ``"box_iom"`` (intersection of the axis-aligned voxel boxes over the
            smaller one: a partial view inside an instance's accumulated box still matches it; the default),
            ``"box_iou"`` (their IoU, as ESAM) or ``"voxel_iou"`` (IoU of the voxel sets). On the sequences
            above (threshold 0.03), with ground-truth instances: scene AP50 / ID consistency / fragmentation
            0.978 / 0.993 / 1.03 (box_iom), 0.975 / 0.959 / 1.32 (box_iou), 0.978 / 0.956 / 1.21 (voxel_iou);
            with the model's instances (no merge head): 0.300 / 0.424 / 1.57 (box_iom), 0.262 / 0.414 / 1.68
            (box_iou), 0.289 / 0.400 / 1.79 (voxel_iou), against a per-frame AP50 of 0.261.
        class_agnostic: merge across classes (the score is not zeroed where the classes disagree).
        max_voxels: most voxels of the labelled voxel map (>= 1); beyond it the least recently seen voxels are
            evicted. About 100 bytes per voxel plus 16 per (voxel, class) evidence entry. Default 250,000
            (a large room's surfaces at 5 cm).
        min_points: fewest points an observation needs to enter the map (>= 1); smaller ones get id 0.
            Default 10.
        max_instance_voxels: most voxels one instance keeps (>= 1; the nearest to its newest observation's
            box), which bounds the instance memory at ``max_instances x max_instance_voxels x 8`` bytes. Default
            20,000 (50 m2 of surface at 5 cm; a 2 m couch has about 3,000).
    """

    voxel_size: float = spec(0.05, gt=0.0, le=10.0)
    max_instances: int = spec(100, ge=1)
    merge_threshold: float = spec(0.01, ge=0.0, lt=1.0)
    overlap: str = spec("box_iom", choices=OVERLAP_KINDS)
    class_agnostic: bool = False
    max_voxels: int = spec(250_000, ge=1)
    min_points: int = spec(10, ge=1)
    max_instance_voxels: int = spec(20_000, ge=1)
