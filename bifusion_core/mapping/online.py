"""Feeding the map from a frame's segmentation, and scoring it as ESAM's online protocol.

- :func:`observations_from_result`: a :class:`~bifusion_core.pipeline.types.FrameResult`'s instances as
  :class:`~bifusion_core.mapping.Observation` (world points, class, score, and the merge embedding when the
  instance carries one), plus which observation each point belongs to.
- :func:`oracle_observations`: the same from ground-truth instance ids per point (``--oracle-instances``:
  the merging machinery alone, without the model's errors).
- :class:`OnlineMapScorer`: over a sequence, collects the scene's ground truth (one entry per map voxel: the
  latest ground-truth instance seen in it) and, per frame, the map id each ground-truth instance received.
  At the end, the map's instances are scored against that scene ground truth with the ScanNet benchmark's
  rules (:mod:`bifusion_core.eval.instance`: AP, AP50, AP25) and tracking figures are computed per
  ground-truth instance:

  - **ID consistency**: the share of the frames it was seen in that carry its most frequent map id (mean over
    ground-truth instances; a frame where it got no map id counts against it);
  - **fragmentation**: how many distinct map ids it received (mean);
  - **ID switches**: how often its map id changed between two consecutive frames it was seen in (sum).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from .observation import Observation
from .voxel_keys import point_keys

__all__ = ["observations_from_result", "oracle_observations", "OnlineMapScorer"]


def _indices(idx) -> np.ndarray:
    return np.asarray(idx.cpu().numpy() if hasattr(idx, "cpu") else idx, np.int64).ravel()


def _embedding(inst):
    e = getattr(inst, "embedding", None)
    if e is None:
        return None
    return np.asarray(e.detach().cpu().numpy() if hasattr(e, "detach") else e, np.float64).ravel()


def observations_from_result(result, min_points: int = 1) -> tuple[list[Observation], np.ndarray, np.ndarray]:
    """``(observations, point_observation (N,) int64, source (K,) int64)``: one observation per instance of
    ``result`` with at least ``min_points`` points (world metres); for each of its N points the index of the
    observation it belongs to (-1: none); for each of the K observations the index of its instance in
    ``result.instances``."""
    owner = np.full(len(result.points), -1, np.int64)
    obs, source = [], []
    for k, inst in enumerate(result.instances):
        idx = _indices(inst.point_indices)
        if len(idx) < max(1, min_points):
            continue
        owner[idx] = len(obs)
        source.append(k)
        obs.append(Observation(points=np.asarray(result.points)[idx], class_id=int(inst.class_id),
                               score=float(min(max(float(inst.score), 0.0), 1.0)), embedding=_embedding(inst),
                               colours=np.asarray(result.colours)[idx]))
    return obs, owner, np.asarray(source, np.int64)


def oracle_observations(points: np.ndarray, gt_instance: np.ndarray, gt_class: np.ndarray,
                        min_points: int = 1) -> tuple[list[Observation], np.ndarray]:
    """Observations from ground truth: one per ground-truth instance id > 0 among ``points (N, 3)`` with a
    class ``gt_class (N,)`` >= 0 (its most frequent one), score 1, no embedding; and each point's observation
    index (-1: none)."""
    points = np.asarray(points)
    gt_instance = np.asarray(gt_instance, np.int64).ravel()
    gt_class = np.asarray(gt_class, np.int64).ravel()
    owner = np.full(len(points), -1, np.int64)
    obs = []
    for gid in np.unique(gt_instance[gt_instance > 0]):
        idx = np.nonzero((gt_instance == gid) & (gt_class >= 0))[0]
        if len(idx) < max(1, min_points):
            continue
        cls = int(np.bincount(gt_class[idx]).argmax())
        owner[idx] = len(obs)
        obs.append(Observation(points=points[idx], class_id=cls, score=1.0, embedding=None))
    return obs, owner


class OnlineMapScorer:
    """ESAM-style scoring of an online map over one sequence (see the module doc).

    Args:
        voxel_size: metres; the scene ground truth is kept per voxel of this size (the map's).
        min_region_size: smallest ground-truth instance (scene voxels) the benchmark counts.
    """

    def __init__(self, voxel_size: float, min_region_size: int = 100):
        self.voxel_size = float(voxel_size)
        self.min_region_size = int(min_region_size)
        self._keys: list[np.ndarray] = []
        self._codes: list[np.ndarray] = []
        self._tracks: dict[int, list[int]] = defaultdict(list)  # gt code -> map id per frame it was seen in
        self.frames = 0

    def add_frame(self, points: np.ndarray, gt_label_id: np.ndarray, gt_instance: np.ndarray,
                  point_map_ids: np.ndarray, min_points: int = 1) -> None:
        """One frame: ``points (N, 3)`` world metres, ``gt_label_id (N,)`` ScanNet label ids (0: none),
        ``gt_instance (N,)`` ids (0: none), ``point_map_ids (N,)`` the map id the point's instance got (0: none)."""
        label = np.asarray(gt_label_id, np.int64).ravel()
        inst = np.asarray(gt_instance, np.int64).ravel()
        mids = np.asarray(point_map_ids, np.int64).ravel()
        if not (len(points) == len(label) == len(inst) == len(mids)):
            raise ValueError(f"points {len(points)}, labels {len(label)}, instances {len(inst)} and map ids "
                             f"{len(mids)} differ in length")
        code = np.where((label > 0) & (inst > 0), label * 1000 + np.clip(inst, 0, 999), 0)
        self._keys.append(point_keys(points, self.voxel_size))
        self._codes.append(code)
        self.frames += 1
        for c in np.unique(code[code > 0]):
            m = mids[code == c]
            if len(m) < max(1, min_points):
                continue
            self._tracks[int(c)].append(int(Counter(m.tolist()).most_common(1)[0][0]))

    def scene_ground_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys (V,), gt code (V,))``: per voxel seen, the latest ground-truth code (label * 1000 + instance)."""
        if not self._keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        keys = np.concatenate(self._keys)[::-1]  # newest first, so unique's first index is the latest sample
        codes = np.concatenate(self._codes)[::-1]
        ukeys, first = np.unique(keys, return_index=True)
        return ukeys, codes[first]

    def tracking(self) -> dict:
        """ID consistency, fragmentation and ID switches (see the module doc)."""
        consistency, fragments, switches = [], [], 0
        for track in self._tracks.values():
            ids = [i for i in track if i > 0]
            top = Counter(ids).most_common(1)[0][1] if ids else 0
            consistency.append(top / len(track))
            fragments.append(len(set(ids)))
            switches += sum(1 for a, b in zip(ids, ids[1:]) if a != b)
        return {"gt_instances": len(self._tracks),
                "id_consistency": float(np.mean(consistency)) if consistency else None,
                "fragmentation": float(np.mean(fragments)) if fragments else None,
                "id_switches": int(switches)}

    def result(self, instances, label_ids: np.ndarray) -> dict:
        """Scene AP / AP50 / AP25 of the map's ``instances`` (:class:`~bifusion_core.mapping.MapInstance`; a
        class index ``c`` is the benchmark label ``label_ids[c]``) and the tracking figures."""
        from ..eval.instance import InstanceAccumulator, InstanceEvalConfig, PredictedInstance

        instances = list(instances)
        keys, codes = self.scene_ground_truth()
        preds = []
        for inst in instances:
            mask = np.isin(keys, inst.voxel_keys)
            c = int(inst.class_id)
            label = int(label_ids[c]) if 0 <= c < len(label_ids) else 0
            if mask.any() and label > 0:
                preds.append(PredictedInstance(mask, label, float(inst.score)))
        acc = InstanceAccumulator(InstanceEvalConfig(min_region_size=self.min_region_size))
        acc.add(codes, preds)
        res = acc.result()

        def f(x):
            return None if x is None or not np.isfinite(x) else float(x)

        return {"scene_voxels": int(len(keys)), "map_instances": len(instances), "scored_predictions": len(preds),
                "ap": f(res.ap), "ap50": f(res.ap50), "ap25": f(res.ap25), **self.tracking()}
