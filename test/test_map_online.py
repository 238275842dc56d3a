"""Feeding the map from a frame's segmentation or from ground truth, and the online scoring (ESAM's protocol)."""
from types import SimpleNamespace

import numpy as np
import pytest

from bifusion_core.mapping import MapConfig, OnlineMapScorer, SceneMap, observations_from_result, oracle_observations

CHAIR, TABLE = 5, 7  # benchmark label ids of the test's two classes (any ids > 0)


def box(rng, lo, hi, n):
    return (np.asarray(lo) + rng.random((n, 3)) * (np.asarray(hi) - np.asarray(lo))).astype(np.float32)


def views(rng):
    """Two frames of a chair (gt 1) and a table (gt 2) 1.5 m apart, each frame seeing an overlapping part."""
    frames = []
    for shift in (0.0, 0.15):
        chair = box(rng, (0.0 + shift, 0.0, 0.0), (0.5 + shift, 0.5, 0.9), 800)
        table = box(rng, (1.5 + shift, 0.0, 0.0), (2.5 + shift, 0.8, 0.75), 1200)
        pts = np.concatenate([chair, table])
        inst = np.r_[np.full(800, 1), np.full(1200, 2)]
        cls = np.r_[np.zeros(800, np.int64), np.ones(1200, np.int64)]  # class indices 0 chair, 1 table
        frames.append((pts, inst, cls, cls))  # ground-truth classes, classes the observations carry
    return frames


def run_oracle(frames, cfg=None):
    smap, scorer = SceneMap(cfg or MapConfig(min_points=10)), OnlineMapScorer(0.05, min_region_size=10)
    label_ids = np.array([CHAIR, TABLE])
    for t, (pts, inst, gt_cls, obs_cls) in enumerate(frames):
        obs, owner = oracle_observations(pts, inst, obs_cls)
        ids = smap.update(obs, float(t), points=pts, semantic=obs_cls, point_observation=owner)
        point_ids = np.where(owner >= 0, np.asarray(ids + [0])[owner], 0)
        scorer.add_frame(pts, label_ids[gt_cls], inst, point_ids)
    return smap, scorer, scorer.result(smap.instances, label_ids)


def test_oracle_sequence_gives_one_id_per_object_and_a_perfect_scene():
    smap, scorer, res = run_oracle(views(np.random.default_rng(0)))
    assert len(smap.instances) == 2 and sorted(i.class_id for i in smap.instances) == [0, 1]
    assert res["id_consistency"] == 1.0 and res["fragmentation"] == 1.0 and res["id_switches"] == 0
    assert res["gt_instances"] == 2 and res["ap50"] == 1.0 and res["ap25"] == 1.0
    assert res["scored_predictions"] == 2 and res["scene_voxels"] > 100


def test_a_map_that_loses_an_object_between_frames_is_fragmented():
    """Class-disagreeing views of one object cannot merge: two map ids for one ground-truth instance."""
    frames = views(np.random.default_rng(1))
    pts, inst, gt_cls, _ = frames[1]
    obs_cls = gt_cls.copy()
    obs_cls[inst == 1] = 1  # the chair is taken for a table in frame 2
    frames[1] = (pts, inst, gt_cls, obs_cls)
    smap, scorer, res = run_oracle(frames)
    assert len(smap.instances) == 3
    chair = scorer._tracks[CHAIR * 1000 + 1]
    assert len(set(chair)) == 2  # a new id in frame 2
    assert res["fragmentation"] == pytest.approx((2 + 1) / 2) and res["id_switches"] == 1
    assert res["id_consistency"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["ap50"] < 1.0  # the chair's second id is a false positive of the wrong class


def test_tracking_figures_by_hand():
    s = OnlineMapScorer(0.05)
    pts = np.zeros((4, 3), np.float32)
    label = np.array([3, 3, 3, 3])
    gt = np.array([1, 1, 2, 2])
    for ids in ([10, 10, 20, 20], [10, 10, 21, 21], [10, 10, 0, 0], [10, 10, 20, 20]):
        s.add_frame(pts, label, gt, np.array(ids))
    t = s.tracking()
    # gt 1: always 10 -> 1.0, 1 id, 0 switches; gt 2: 20, 21, none, 20 -> 2/4, 2 ids, 2 switches (20->21->20)
    assert t == {"gt_instances": 2, "id_consistency": pytest.approx(0.75), "fragmentation": 1.5, "id_switches": 2}
    with pytest.raises(ValueError):
        s.add_frame(pts, label[:3], gt, np.zeros(4))


def test_observations_from_a_result():
    pts = np.arange(30, dtype=np.float32).reshape(10, 3)
    inst = [SimpleNamespace(point_indices=np.array([0, 1, 2, 3]), class_id=2, score=0.8),
            SimpleNamespace(point_indices=np.array([7]), class_id=1, score=1.3, embedding=np.ones(4))]
    result = SimpleNamespace(points=pts, colours=np.zeros((10, 3), np.uint8), instances=inst)
    obs, owner, source = observations_from_result(result, min_points=1)
    assert [o.class_id for o in obs] == [2, 1] and obs[1].score == 1.0  # clipped into [0, 1]
    assert source.tolist() == [0, 1]
    np.testing.assert_array_equal(owner, [0, 0, 0, 0, -1, -1, -1, 1, -1, -1])
    np.testing.assert_allclose(obs[1].embedding, np.full(4, 0.5))  # unit length
    obs, owner, source = observations_from_result(result, min_points=2)
    assert len(obs) == 1 and owner[7] == -1 and source.tolist() == [0]
