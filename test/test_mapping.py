"""The ROS-free online map (bifusion_core.mapping): ESAM-style merging with persistent ids, the labelled voxel
map, and saving (PLY, JSON, exact state, ScanNet-format predictions scored by the project's evaluator)."""
import json
import math

import numpy as np
import pytest

from bifusion_core.io.ply import read_ply
from bifusion_core.mapping import (InstanceMap, LabelledVoxelMap, MapConfig, Observation, SceneMap, box_iom, box_iou,
                                   pack_keys, point_keys, unpack_keys, voxel_iou, voxel_set)
from bifusion_core.mapping.voxel_keys import INDEX_MAX, INDEX_MIN

VS = 0.05


def box_surface(center, size=(0.4, 0.4, 0.4), step=0.02):
    """Points on the surface of an axis-aligned box (a grid of ``step`` metres)."""
    center, size = np.asarray(center, float), np.asarray(size, float)
    axes = [np.arange(0.0, s + 1e-9, step) for s in size]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    on = ((g <= 1e-9) | (g >= size - 1e-9)).any(1)
    return g[on] + center - size / 2


def obs(points, class_id=0, score=0.8, embedding=None, **kw):
    return Observation(np.asarray(points, np.float64), class_id, score, embedding, **kw)


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value", [
    ("voxel_size", float("nan")), ("voxel_size", -0.05), ("voxel_size", 0.0), ("voxel_size", True),
    ("voxel_size", "0.05"), ("voxel_size", float("inf")),
    ("max_instances", True), ("max_instances", 10.0), ("max_instances", 0),
    ("merge_threshold", float("nan")), ("merge_threshold", 1.0), ("merge_threshold", -0.1),
    ("overlap", "iou"), ("overlap", None), ("class_agnostic", 1), ("class_agnostic", "yes"),
    ("max_voxels", False), ("max_voxels", 5.0), ("max_voxels", -1),
    ("min_points", 0), ("min_points", 2.5), ("min_points", False),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MapConfig(**{field: value})


def test_config_defaults_and_accepted_forms():
    c = MapConfig()
    assert (c.voxel_size, c.max_instances, c.overlap, c.class_agnostic, c.min_points) == (0.05, 100, "box_iom",
                                                                                        False, 10)
    assert 0.0 <= c.merge_threshold < 1.0
    c = MapConfig(voxel_size=1, max_instances=np.int64(7), class_agnostic=np.bool_(True))
    assert type(c.voxel_size) is float and c.voxel_size == 1.0
    assert type(c.max_instances) is int and c.max_instances == 7 and c.class_agnostic is True
    with pytest.raises(ValueError, match="config"):
        InstanceMap({"voxel_size": 0.05})
    with pytest.raises(AttributeError):
        c.voxel_size = 0.1  # frozen: the maps of a session share one voxel size


# ---------------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("kwargs,match", [
    (dict(points=np.zeros((5, 2))), "shape"), (dict(points=np.zeros(6)), "shape"),
    (dict(points=np.zeros((5, 3), np.int64)), "float"), (dict(points=np.full((5, 3), np.nan)), "NaN"),
    (dict(class_id=True), "class_id"), (dict(class_id=-1), "class_id"), (dict(class_id=1.0), "class_id"),
    (dict(score=1.5), "score"), (dict(score=float("nan")), "score"), (dict(score=None), "score"),
    (dict(embedding=np.zeros(4)), "non-zero"), (dict(embedding=np.ones((2, 2))), "shape"),
    (dict(embedding=np.ones(4, np.int64)), "float"), (dict(embedding=np.array([1.0, np.nan])), "finite"),
    (dict(colours=np.zeros((5, 3), np.float32)), "uint8"), (dict(colours=np.zeros((4, 3), np.uint8)), "shape"),
    (dict(semantic=np.zeros(4, np.int64)), "shape"), (dict(semantic=np.zeros(5)), "integer"),
    (dict(semantic=np.full(5, -2)), ">= -1"),
])
def test_bad_observations_are_rejected(kwargs, match):
    args = dict(points=np.zeros((5, 3)), class_id=0, score=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Observation(**args)


def test_update_rejects_bad_frames_and_leaves_the_map_unchanged():
    m = InstanceMap(MapConfig(min_points=1))
    assert m.update([obs(box_surface((0, 0, 0)), embedding=unit([1, 0, 0]))], 0.0) == [1]
    before = m.instances
    far = box_surface((3, 0, 0))
    for frame, stamp, match in [
        ([far], 1.0, "Observation"),  # a bare array
        ([obs(far), {"points": far}], 1.0, "observation 1"),
        ([obs(far)], float("nan"), "stamp"),
        ([obs(far)], True, "stamp"),
        ([obs(far, embedding=unit([1, 0, 0, 0]))], 1.0, "size D"),  # D differs from the session's 3
        ([obs(far), obs(np.full((3, 3), 1e6))], 1.0, "range"),  # beyond the packable key range
        (obs(far), 1.0, "sequence"),
    ]:
        with pytest.raises(ValueError, match=match):
            m.update(frame, stamp)
    assert m.next_id == 2 and len(m) == 1
    assert m.instances[0].merge_count == before[0].merge_count == 1


def test_small_observations_get_id_zero_and_stay_out():
    m = InstanceMap(MapConfig(min_points=10))
    pts = box_surface((0, 0, 0))
    assert m.update([obs(pts[:9]), obs(pts)], 0.0) == [0, 1]
    assert len(m) == 1 and m.next_id == 2


# ---------------------------------------------------------------------------------------------- voxel keys
def test_voxel_keys_round_trip_and_order():
    rng = np.random.default_rng(0)
    idx = rng.integers(INDEX_MIN, INDEX_MAX + 1, size=(500, 3))
    idx[:2] = [[INDEX_MIN] * 3, [INDEX_MAX] * 3]
    keys = pack_keys(idx)
    assert (keys >= 0).all()
    np.testing.assert_array_equal(unpack_keys(keys), idx)
    order = np.argsort(keys)
    np.testing.assert_array_equal(np.lexsort(idx.T[::-1]), order)  # keys sort by (x, y, z)
    p = np.array([[-0.001, 0.0, 0.049], [0.05, -0.05, 0.1]])
    np.testing.assert_array_equal(unpack_keys(point_keys(p, VS)), [[-1, 0, 0], [1, -1, 2]])


# ---------------------------------------------------------------------------------------------- overlap
def test_box_iou_matches_dense_grids():
    rng = np.random.default_rng(1)
    lo = rng.integers(0, 9, size=(30, 3))
    hi = lo + rng.integers(0, 5, size=(30, 3))  # some boxes have zero volume
    grids = np.zeros((30, 14, 14, 14), bool)
    for k in range(30):
        grids[k, lo[k, 0]:hi[k, 0], lo[k, 1]:hi[k, 1], lo[k, 2]:hi[k, 2]] = True
    flat = grids.reshape(30, -1)
    inter = (flat[:, None] & flat[None]).sum(-1)
    union = (flat[:, None] | flat[None]).sum(-1)
    ref = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.testing.assert_allclose(box_iou(lo * 0.05, hi * 0.05, lo * 0.05, hi * 0.05), ref, atol=1e-12)
    assert 0 < np.count_nonzero((ref > 0) & (ref < 1)) < 30 * 30  # the cases are not all trivial


def test_box_iom_matches_dense_grids():
    rng = np.random.default_rng(3)
    lo = rng.integers(0, 9, size=(30, 3))
    hi = lo + rng.integers(0, 5, size=(30, 3))  # some boxes have zero volume
    hi[0] = lo[0] + 2
    lo[1], hi[1] = lo[0], lo[0] + 4  # box 0 lies inside box 1
    grids = np.zeros((30, 14, 14, 14), bool)
    for k in range(30):
        grids[k, lo[k, 0]:hi[k, 0], lo[k, 1]:hi[k, 1], lo[k, 2]:hi[k, 2]] = True
    flat = grids.reshape(30, -1)
    inter = (flat[:, None] & flat[None]).sum(-1)
    small = np.minimum(flat.sum(1)[:, None], flat.sum(1)[None])
    ref = np.where(small > 0, inter / np.maximum(small, 1), 0.0)
    got = box_iom(lo * 0.05, hi * 0.05, lo * 0.05, hi * 0.05)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert got[0, 1] == got[1, 0] == 1.0 and box_iou(lo[:2], hi[:2], lo[:2], hi[:2])[0, 1] == 8 / 64
    assert 0 < np.count_nonzero((ref > 0) & (ref < 1))
    with pytest.raises(ValueError):
        box_iom(hi, lo, lo, hi)


def test_box_iom_keeps_a_partial_view_inside_a_large_instance():
    """A table seen whole, then only a corner of it: the corner's box lies inside the table's (containment 1)
    but its box IoU is small, so with the IoU the corner would become a new instance."""
    table = box_surface((1.0, 1.0, 0.4), size=(1.6, 0.8, 0.8))
    corner = table[(table[:, 0] < 0.45) & (table[:, 1] < 0.8)]
    for overlap, expect in (("box_iom", [1]), ("box_iou", [2])):
        m = InstanceMap(MapConfig(overlap=overlap, merge_threshold=0.3))
        m.update([obs(table)], 0.0)
        assert m.update([obs(corner)], 1.0) == expect, overlap


def test_voxel_iou_matches_dense_grids():
    rng = np.random.default_rng(2)
    grids = rng.random((12, 6, 6, 6)) < rng.uniform(0.05, 0.5, size=(12, 1, 1, 1))
    grids[3] = False  # an empty set
    sets = [pack_keys(np.argwhere(g) - 3) for g in grids]
    flat = grids.reshape(12, -1)
    inter = (flat[:, None] & flat[None]).sum(-1)
    union = (flat[:, None] | flat[None]).sum(-1)
    ref = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.testing.assert_allclose(voxel_iou(sets, sets), ref, atol=1e-12)
    np.testing.assert_allclose(voxel_iou(sets[:5], sets[5:]), ref[:5, 5:], atol=1e-12)
    assert voxel_iou([], sets).shape == (0, 12)


def test_overlap_kind_decides_interleaved_sets():
    """Two interleaved voxel patterns share one box (box IoU 1) but no voxel (voxel IoU 0)."""
    idx = np.argwhere(np.ones((6, 6, 6), bool))
    even, odd = idx[idx.sum(1) % 2 == 0], idx[idx.sum(1) % 2 == 1]
    a, b = (even + 0.5) * VS, (odd + 0.5) * VS
    box = InstanceMap(MapConfig(overlap="box_iou", min_points=1))
    vox = InstanceMap(MapConfig(overlap="voxel_iou", min_points=1))
    for m in (box, vox):
        m.update([obs(a)], 0.0)
    assert box.update([obs(b)], 1.0) == [1]
    assert vox.update([obs(b)], 1.0) == [2]
    assert vox.update([obs(np.concatenate([a, b]))], 2.0) in ([1], [2])  # overlaps both: one of them takes it


# ---------------------------------------------------------------------------------------------- merging
def test_one_object_from_two_viewpoints_gets_one_id():
    pts = box_surface((1.01, 2.01, 0.51))  # x 0.81 .. 1.21: off the voxel faces
    view_a, view_b = pts[pts[:, 0] <= 1.06], pts[pts[:, 0] >= 0.96]  # partial views with an overlap
    for overlap in ("box_iou", "voxel_iou"):
        m = InstanceMap(MapConfig(overlap=overlap))
        assert m.update([obs(view_a)], 0.0) == [1]
        assert m.update([obs(view_b)], 1.0) == [1]
        (inst,) = m.instances
        assert inst.merge_count == 2 and (inst.first_seen, inst.last_seen) == (0.0, 1.0)
        np.testing.assert_array_equal(inst.voxel_keys, voxel_set(pts, VS))  # the union of both views
        np.testing.assert_allclose(inst.box_min, [0.8, 1.8, 0.3], atol=1e-9)
        np.testing.assert_allclose(inst.box_max, [1.25, 2.25, 0.75], atol=1e-9)
        np.testing.assert_array_equal(inst.contains(pts), True)
        assert not inst.contains(pts + [1.0, 0, 0]).any()


def test_two_same_class_objects_one_metre_apart_stay_two():
    a, b = box_surface((0, 0, 0)), box_surface((1.0, 0, 0))
    m = InstanceMap()
    assert m.update([obs(a), obs(b)], 0.0) == [1, 2]
    assert m.update([obs(b[b[:, 1] > 0]), obs(a[a[:, 1] > 0])], 1.0) == [2, 1]
    assert [i.merge_count for i in m.instances] == [2, 2]


def test_disagreeing_classes_do_not_merge_unless_class_agnostic():
    pts = box_surface((0, 0, 0))
    m = InstanceMap()
    m.update([obs(pts, class_id=1, score=0.9)], 0.0)
    assert m.update([obs(pts, class_id=2, score=0.6)], 1.0) == [2]
    m = InstanceMap(MapConfig(class_agnostic=True))
    m.update([obs(pts, class_id=1, score=0.3)], 0.0)
    assert m.update([obs(pts, class_id=2, score=0.6)], 1.0) == [1]
    assert m.update([obs(pts, class_id=1, score=0.2)], 2.0) == [1]
    (inst,) = m.instances
    assert dict(inst.class_evidence) == pytest.approx({1: 0.5, 2: 0.6})
    assert inst.class_id == 2  # the argmax of the summed scores


def test_duplicates_within_one_frame_merge():
    pts = box_surface((0, 0, 0))
    far = box_surface((2, 0, 0))
    m = InstanceMap()
    ids = m.update([obs(pts[pts[:, 2] > -0.1], score=0.9), obs(far), obs(pts[pts[:, 2] < 0.1], score=0.5)], 0.0)
    assert ids == [1, 2, 1]
    assert len(m) == 2 and m[1].merge_count == 2 and m[1].score == pytest.approx(0.7)
    np.testing.assert_array_equal(m[1].voxel_keys, voxel_set(pts, VS))
    # a duplicated pair that also matches a map instance joins it as one group
    ids = m.update([obs(pts[pts[:, 0] > 0]), obs(pts[pts[:, 0] < 0.05])], 1.0)
    assert ids == [1, 1] and m[1].merge_count == 4 and m.next_id == 3


def test_features_average_by_merge_counts():
    pts = box_surface((0, 0, 0))
    e1, e2, e3 = unit([1, 0, 0, 0]), unit([1, 1, 0, 0]), unit([1, 0, 1, 1])
    m = InstanceMap()
    m.update([obs(pts, score=0.9, embedding=e1)], 0.0)
    m.update([obs(pts, score=0.6, embedding=e2)], 1.0)
    inst = m[1]
    assert inst.score == pytest.approx(0.75) and inst.merge_count == 2
    np.testing.assert_allclose(inst.embedding, unit(e1 + e2), atol=1e-12)
    assert np.linalg.norm(inst.embedding) == pytest.approx(1.0)
    m.update([obs(pts, score=0.3, embedding=e3)], 2.0)
    inst = m[1]
    assert inst.score == pytest.approx(0.6) and inst.merge_count == 3
    np.testing.assert_allclose(inst.embedding, unit(e1 + e2 + e3), atol=1e-12)  # weight 2 for the first two
    assert dict(inst.class_evidence) == pytest.approx({0: 1.8})
    # a group of two from one frame weighs two against a single earlier observation
    m2 = InstanceMap()
    m2.update([obs(pts, score=0.9, embedding=e1)], 0.0)
    m2.update([obs(pts, score=0.6, embedding=e2), obs(pts, score=0.3, embedding=e3)], 1.0)
    assert m2[1].score == pytest.approx(0.6) and m2[1].merge_count == 3
    np.testing.assert_allclose(m2[1].embedding, unit(e1 + e2 + e3), atol=1e-12)
    # an observation without embedding counts for the score, not for the embedding
    m2.update([obs(pts, score=1.0)], 2.0)
    assert m2[1].score == pytest.approx(0.7) and m2[1].merge_count == 4
    np.testing.assert_allclose(m2[1].embedding, unit(e1 + e2 + e3), atol=1e-12)


def test_score_is_cosine_times_overlap():
    pts = box_surface((0.01, 0.01, 0.01))  # voxels -4 .. 4 along x
    view = pts[pts[:, 0] <= 0.08]  # up to x = 0.07, voxel 1: box IoU with the whole object 6 / 9
    m = InstanceMap(MapConfig(merge_threshold=0.3, overlap="box_iou"))
    m.update([obs(pts, embedding=unit([1, 0]))], 0.0)
    assert m.update([obs(pts, embedding=unit([0, 1]))], 1.0) == [2]  # orthogonal: score 0 despite IoU 1
    m = InstanceMap(MapConfig(merge_threshold=0.3, overlap="box_iou"))
    m.update([obs(pts, embedding=unit([1, 0]))], 0.0)
    c = math.cos(math.radians(60))  # 0.5 x 2/3 = 0.33 > 0.3
    assert m.update([obs(view, embedding=np.array([c, math.sin(math.radians(60))]))], 1.0) == [1]
    m = InstanceMap(MapConfig(merge_threshold=0.3, overlap="box_iou"))
    m.update([obs(pts, embedding=unit([1, 0]))], 0.0)
    c = math.cos(math.radians(65))  # 0.42 x 2/3 = 0.28 < 0.3
    assert m.update([obs(view, embedding=np.array([c, math.sin(math.radians(65))]))], 1.0) == [2]


def test_assignment_is_one_to_one():
    a, b = box_surface((0, 0, 0)), box_surface((0.3, 0, 0))
    m = InstanceMap(MapConfig(overlap="box_iou"))
    assert m.update([obs(a), obs(b)], 0.0) == [1, 1]  # overlapping within a frame (box IoU 0.2): they join
    whole = box_surface((0.01, 0.01, 0.01))  # voxels -4 .. 4 along x
    left, right = whole[whole[:, 0] < 0.0], whole[whole[:, 0] > 0.1]  # voxels -4 .. -1 and 2 .. 4: disjoint
    m = InstanceMap(MapConfig(overlap="box_iou"))
    m.update([obs(whole)], 0.0)
    # both halves overlap the instance, only the better match (left, IoU 4/9 against 3/9) takes its id
    assert m.update([obs(right), obs(left)], 1.0) == [2, 1]
    assert m[1].merge_count == 2 and m[2].merge_count == 1


def test_pairs_at_or_below_the_threshold_cannot_displace_a_match():
    """Memory 1, 2 and new A, B share one place; cosines 1-A 0.3, 1-B 0.25, 2-A 0.09, 2-B 0. Maximising the raw
    sum would pair 1-B and 2-A (0.34) and then drop 2-A as below the threshold 0.1; thresholding first keeps
    the best admissible match 1-A."""
    pts = box_surface((0, 0, 0))
    e = np.eye(4)
    m = InstanceMap(MapConfig(merge_threshold=0.1))
    assert m.update([obs(pts, embedding=e[0])], 0.0) == [1]
    assert m.update([obs(pts, embedding=e[1])], 1.0) == [2]  # orthogonal: a second instance at the same place
    g_a = np.array([0.3, 0.09, math.sqrt(1 - 0.09 - 0.0081), 0.0])
    g_b = np.array([0.25, 0.0, 0.0, math.sqrt(1 - 0.0625)])  # A . B = 0.075: no within-frame merge
    assert m.update([obs(pts, embedding=g_a), obs(pts, embedding=g_b)], 2.0) == [1, 3]


def test_cap_evicts_least_recently_seen_and_never_reuses_ids():
    def at(x):
        return box_surface((x, 0, 0))

    m = InstanceMap(MapConfig(max_instances=3))
    assert m.update([obs(at(0), score=0.9), obs(at(2), score=0.5), obs(at(4), score=0.8)], 0.0) == [1, 2, 3]
    assert m.update([obs(at(0))], 1.0) == [1]
    assert m.update([obs(at(6))], 2.0) == [4]
    # 2 and 3 were both last seen at 0 with one merge: the lower score (2) goes
    assert m.last_evicted == (2,) and m.ids == (1, 3, 4)
    assert m.update([obs(at(8))], 3.0) == [5]
    assert m.last_evicted == (3,) and m.ids == (1, 4, 5)
    assert m.update([obs(at(2))], 4.0) == [6]  # the place of evicted 2 gets a fresh id
    assert m.last_evicted == (1,) and m.ids == (4, 5, 6)
    assert m.update([obs(at(8))], 5.0) == [5] and m.last_evicted == ()


def test_cap_ties_go_to_fewest_merges_then_score():
    m = InstanceMap(MapConfig(max_instances=2))
    a = box_surface((0, 0, 0))
    assert m.update([obs(a, score=0.2), obs(a, score=0.2), obs(box_surface((2, 0, 0)), score=0.9)], 0.0) == [1, 1, 2]
    assert m.update([obs(box_surface((4, 0, 0)), score=0.1)], 1.0) == [3]
    assert m.last_evicted == (2,)  # same last_seen; 2 has one merge, 1 has two (the higher score does not save 2)
    # a frame with more new instances than the cap keeps the best of them; the others' ids are used up
    m = InstanceMap(MapConfig(max_instances=1))
    assert m.update([obs(box_surface((0, 0, 0)), score=0.3), obs(box_surface((2, 0, 0)), score=0.7)], 0.0) == [1, 2]
    assert m.ids == (2,) and m.last_evicted == (1,) and m.next_id == 3


def test_reset_starts_ids_at_one():
    m = SceneMap()
    m.update([obs(box_surface((0, 0, 0))), obs(box_surface((2, 0, 0)))], 0.0)
    assert len(m.instance_map) == 2 and len(m.voxel_map) > 0
    m.reset()
    assert len(m.instance_map) == 0 and len(m.voxel_map) == 0 and m.instance_map.next_id == 1
    assert m.update([obs(box_surface((5, 0, 0)), embedding=unit([1, 2]))], 10.0) == [1]
    assert m.instance_map.embedding_dim == 2


def test_snapshots_are_read_only_and_detached():
    pts = box_surface((0, 0, 0))
    m = InstanceMap()
    m.update([obs(pts[pts[:, 0] < 0.05], embedding=unit([1, 0]))], 0.0)
    snap = m[1]
    with pytest.raises(ValueError):
        snap.voxel_keys[0] = 0
    with pytest.raises(ValueError):
        snap.embedding[0] = 0.0
    with pytest.raises(TypeError):
        snap.class_evidence[3] = 1.0
    with pytest.raises(AttributeError):
        snap.score = 0.0
    with pytest.raises(ValueError):
        snap.box_min[0] = 1.0
    n = snap.num_voxels
    m.update([obs(pts, embedding=unit([0.9, 0.1]))], 1.0)
    assert snap.num_voxels == n < m[1].num_voxels and snap.merge_count == 1
    assert [i.id for i in m] == [1] and 1 in m and 2 not in m and m.get(2) is None


def test_update_with_100_instances_in_memory_and_20_observations():
    rng = np.random.default_rng(3)
    centres = [(x * 1.0, y * 1.0, 0.0) for x in range(10) for y in range(10)]
    small = box_surface((0, 0, 0), size=(0.3, 0.3, 0.3), step=0.05)
    for overlap in ("box_iou", "voxel_iou"):
        m = InstanceMap(MapConfig(overlap=overlap))
        embs = [unit(rng.normal(size=256)) for _ in centres]
        scores = np.linspace(0.5, 0.99, 100)
        ids = m.update([obs(small + c, score=s, embedding=e) for c, s, e in zip(centres, scores, embs)], 0.0)
        assert ids == list(range(1, 101)) and len(m) == 100
        seen = [obs(small[small[:, 0] > -0.1] + centres[k], embedding=embs[k]) for k in range(0, 100, 10)]
        new = [obs(small + (20.0 + k, 0, 0), embedding=unit(rng.normal(size=256))) for k in range(10)]
        ids = m.update(seen + new, 1.0)
        assert ids[:10] == list(range(1, 101, 10)) and ids[10:] == list(range(101, 111))
        assert len(m) == 100
        # the ten lowest-scored of the instances not seen again are evicted
        unseen = [i for i in range(1, 101) if i % 10 != 1]
        assert m.last_evicted == tuple(sorted(unseen[:10]))


# ---------------------------------------------------------------------------------------------- voxel map
def test_labelled_voxel_map_evidence_argmax_colour_and_instances():
    vm = LabelledVoxelMap(voxel_size=1.0, max_voxels=100)
    pts = np.array([[0.5, 0.5, 0.5]] * 5 + [[1.5, 0.5, 0.5]] * 4 + [[2.5, 0.5, 0.5]])
    sem = np.array([3, 3, 1, 1, -1, 2, 2, 5, 5, -1])
    col = np.array([[10, 0, 255]] * 2 + [[20, 0, 0]] * 2 + [[0, 30, 0]] + [[0, 0, 0]] * 4 + [[7, 7, 7]], np.uint8)
    inst = np.array([4, 4, 9, 0, 0, 2, 2, 3, 3, 0])
    vm.integrate(pts, sem, col, inst, 1.0)
    assert len(vm) == 3
    np.testing.assert_array_equal(vm.class_counts(), [[0, 2, 0, 2, 0, 0], [0, 0, 2, 0, 0, 2], [0] * 6])
    np.testing.assert_array_equal(vm.labels, [1, 2, -1])  # ties: lowest class; no evidence: -1
    np.testing.assert_array_equal(vm.colours, [[12, 6, 102], [0, 0, 0], [7, 7, 7]])
    np.testing.assert_array_equal(vm.instance_ids, [4, 3, 0])  # majority; tie -> the larger (newer) id
    np.testing.assert_array_equal(vm.point_counts, [5, 4, 1])
    np.testing.assert_allclose(vm.centres(), [[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [2.5, 0.5, 0.5]])
    # a second frame: evidence accumulates, id-0 points keep the instance, colour-less points keep the colour
    vm.integrate(np.array([[0.2, 0.2, 0.2]] * 3 + [[2.9, 0.1, 0.1]]), np.array([3, 3, 3, 1]), None,
                 np.array([0, 0, 0, 6]), 2.5)
    np.testing.assert_array_equal(vm.labels, [3, 2, 1])
    np.testing.assert_array_equal(vm.class_counts(7)[0], [0, 2, 0, 5, 0, 0, 0])
    np.testing.assert_array_equal(vm.instance_ids, [4, 3, 6])
    np.testing.assert_array_equal(vm.colours[0], [12, 6, 102])
    np.testing.assert_array_equal(vm.last_seen, [2.5, 1.0, 2.5])
    np.testing.assert_array_equal(vm.lookup(np.array([[1.1, 0.9, 0.1], [9.0, 0, 0]])), [1, -1])
    vm.clear_instances([4, 6])
    np.testing.assert_array_equal(vm.instance_ids, [0, 3, 0])


def test_labelled_voxel_map_is_capped_least_recently_seen_first():
    vm = LabelledVoxelMap(voxel_size=1.0, max_voxels=4)
    grid = np.array([[x + 0.5, 0.5, 0.5] for x in range(10)])

    def add(xs, stamp, repeat=1):
        p = np.repeat(grid[list(xs)], repeat, axis=0)
        vm.integrate(p, np.zeros(len(p), np.int64), None, np.zeros(len(p), np.int64), stamp)

    add([0, 1, 2, 3], 0.0)
    add([1], 0.5, repeat=3)  # voxel 1 now holds more points
    add([2], 1.0, repeat=3)
    add([3], 1.0)
    add([4], 2.0)  # evicts voxel 0: least recently seen
    np.testing.assert_array_equal(unpack_keys(vm.keys)[:, 0], [1, 2, 3, 4])
    add([5, 6], 3.0)  # the two oldest: 1 (seen at 0.5), then of 2 / 3 (both at 1.0) the one with fewer points
    np.testing.assert_array_equal(unpack_keys(vm.keys)[:, 0], [2, 4, 5, 6])
    assert len(vm) == 4
    np.testing.assert_array_equal(vm.class_counts()[:, 0], [4, 1, 1, 1])  # evidence of evicted voxels is gone
    add([7, 8], 3.0)  # 2 (at 1.0) and 4 (at 2.0)
    add([9], 4.0)  # 5 .. 8 all seen at 3.0 with one point: the lowest key goes
    np.testing.assert_array_equal(unpack_keys(vm.keys)[:, 0], [6, 7, 8, 9])
    nbytes = vm.nbytes
    for t in range(20):  # memory stays flat once capped
        add([(7 + t) % 10, (8 + t) % 10], 4.0 + t)
        assert len(vm) == 4
    assert vm.nbytes <= nbytes + 64
    add(range(10), 50.0, repeat=1)  # more distinct voxels than the cap in one frame
    assert len(vm) == 4
    vm2 = LabelledVoxelMap(voxel_size=1.0, max_voxels=2)
    p = grid[[0, 1, 1, 2, 2, 2]]
    vm2.integrate(p, np.zeros(6, np.int64), None, np.zeros(6, np.int64), 0.0)
    np.testing.assert_array_equal(unpack_keys(vm2.keys)[:, 0], [1, 2])  # the most populated voxels stay


def test_labelled_voxel_map_rejects_bad_inputs():
    vm = LabelledVoxelMap()
    p = np.zeros((4, 3))
    z = np.zeros(4, np.int64)
    for args, match in [((np.zeros((4, 2)), z, None, z), "points"), ((p, z[:3], None, z), "semantic"),
                        ((p, z.astype(float), None, z), "semantic"), ((p, z, np.zeros((4, 3)), z), "colours"),
                        ((p, z, None, z - 1), "instance_ids"), ((p, z - 2, None, z), "semantic")]:
        with pytest.raises(ValueError, match=match):
            vm.integrate(*args, 0.0)
    with pytest.raises(ValueError, match="stamp"):
        vm.integrate(p, z, None, z, float("inf"))
    assert len(vm) == 0
    with pytest.raises(ValueError, match="max_voxels"):
        LabelledVoxelMap(max_voxels=0)


def test_scene_map_links_instance_ids_into_the_voxel_map():
    a, b, c = box_surface((0, 0, 0)), box_surface((2, 0, 0)), box_surface((4, 0, 0))
    floor = np.array([[x, y, -0.5] for x in np.arange(-0.5, 4.5, 0.1) for y in (0.0, 0.1)])
    m = SceneMap(MapConfig(max_instances=2))
    pts = np.concatenate([a, b, floor])
    po = np.r_[np.zeros(len(a), int), np.ones(len(b), int), np.full(len(floor), -1)]
    sem = np.r_[np.full(len(a) + len(b), 1), np.full(len(floor), 0)]
    col = np.full((len(pts), 3), 200, np.uint8)
    assert m.update([obs(a, 1), obs(b, 1)], 0.0, points=pts, semantic=sem, colours=col, point_observation=po) == [1, 2]
    vm = m.voxel_map
    np.testing.assert_array_equal(vm.instance_ids[vm.lookup(a)], 1)
    np.testing.assert_array_equal(vm.instance_ids[vm.lookup(floor)], 0)
    np.testing.assert_array_equal(vm.labels[vm.lookup(floor)], 0)
    # a third object evicts 1 (the lower score at the same last_seen ... scores tie, so the lower id)
    assert m.update([obs(c, 1, score=0.9)], 1.0) == [3]  # without a cloud: the observation's points
    assert m.instance_map.last_evicted == (1,)
    assert not np.isin(vm.instance_ids, [1]).any()
    np.testing.assert_array_equal(vm.instance_ids[vm.lookup(c)], 3)
    np.testing.assert_array_equal(vm.labels[vm.lookup(c)], 1)
    for kwargs, match in [(dict(points=pts), "semantic is required"),
                          (dict(points=pts, semantic=sem, point_observation=po + 5), "indexes observation"),
                          (dict(semantic=sem), "need points"),
                          (dict(points=pts, semantic=sem[:-1]), "semantic")]:
        with pytest.raises(ValueError, match=match):
            m.update([obs(a, 1)], 2.0, **kwargs)
    tiny_far = obs(np.full((2, 3), 1e6), 1)  # too small for the instance map, out of the voxel map's range
    with pytest.raises(ValueError, match="range"):
        m.update([obs(a, 1), tiny_far], 2.0)
    assert m.instance_map.next_id == 4 and m.instance_map[2].merge_count == 1


# ---------------------------------------------------------------------------------------------- files
def _build_map(tmp_class_names=("chair", "table")):
    rng = np.random.default_rng(5)
    m = SceneMap(MapConfig(overlap="voxel_iou", max_voxels=5000), class_names=tmp_class_names)
    chair, table = box_surface((0, 0, 0)), box_surface((1.5, 0, 0), size=(0.8, 0.6, 0.4))
    base_chair, base_table = rng.normal(size=8), rng.normal(size=8)
    for t, half in enumerate((lambda p: p[:, 0] <= p[:, 0].mean() + 0.1, lambda p: p[:, 0] >= p[:, 0].mean() - 0.1)):
        oa, ob = chair[half(chair)], table[half(table)]
        pts = np.concatenate([oa, ob])
        sem = np.r_[np.zeros(len(oa), int), np.ones(len(ob), int)]
        col = rng.integers(0, 256, size=(len(pts), 3)).astype(np.uint8)
        po = np.r_[np.zeros(len(oa), int), np.ones(len(ob), int)]
        m.update([obs(oa, 0, 0.9 - 0.1 * t, embedding=unit(base_chair + 0.2 * rng.normal(size=8))),
                  obs(ob, 1, 0.7, embedding=unit(base_table + 0.2 * rng.normal(size=8)))], float(t), points=pts,
                 semantic=sem,
                 colours=col, point_observation=po)
    return m, chair, table


def test_save_load_round_trip(tmp_path):
    m, chair, table = _build_map()
    m.update([obs(box_surface((5, 0, 0)), 1, 0.4)], 3.0)  # a third instance without embedding
    paths = m.save(tmp_path / "map")
    assert {p.name for p in paths.values()} == {"map.ply", "map.png", "instances.json", "map_state.npz"}
    import cv2

    png = cv2.imread(str(tmp_path / "map" / "map.png"))
    assert png is not None and png.shape[0] > 10 and png.shape[1] > 2 * png.shape[0] * 0.5
    back = SceneMap.load(tmp_path / "map")
    assert back.config == m.config and back.class_names == ("chair", "table")
    assert back.instance_map.next_id == m.instance_map.next_id == 4
    for a, b in zip(m.instances, back.instances, strict=True):
        assert (a.id, a.class_id, a.merge_count, a.first_seen, a.last_seen) == (b.id, b.class_id, b.merge_count,
                                                                                b.first_seen, b.last_seen)
        assert a.score == b.score and dict(a.class_evidence) == dict(b.class_evidence)
        np.testing.assert_array_equal(a.voxel_keys, b.voxel_keys)
        np.testing.assert_array_equal(a.box_min, b.box_min)
        assert (a.embedding is None) == (b.embedding is None)
        if a.embedding is not None:
            np.testing.assert_array_equal(a.embedding, b.embedding)
    va, vb = m.voxel_map, back.voxel_map
    for name in ("keys", "labels", "instance_ids", "colours", "last_seen", "point_counts"):
        np.testing.assert_array_equal(getattr(va, name), getattr(vb, name), err_msg=name)
    np.testing.assert_array_equal(va.class_counts(), vb.class_counts())
    # the PLY holds the labelled voxels, the JSON the instances
    ply = read_ply(tmp_path / "map" / "map.ply")
    assert ply.dtype.names == ("x", "y", "z", "red", "green", "blue", "label", "instance")
    assert [ply.dtype[n].str for n in ply.dtype.names] == ["<f4"] * 3 + ["|u1"] * 3 + ["<i4"] * 2
    np.testing.assert_allclose(np.stack([ply["x"], ply["y"], ply["z"]], 1), va.centres(), atol=1e-6)
    np.testing.assert_array_equal(ply["label"], va.labels)
    np.testing.assert_array_equal(ply["instance"], va.instance_ids)
    np.testing.assert_array_equal(np.stack([ply["red"], ply["green"], ply["blue"]], 1), va.colours)
    doc = json.loads((tmp_path / "map" / "instances.json").read_text())
    assert [r["id"] for r in doc["instances"]] == [1, 2, 3] and doc["next_id"] == 4
    r = doc["instances"][1]
    assert r["class_name"] == "table" and r["merge_count"] == 2 and r["num_voxels"] == m.instance_map[2].num_voxels
    np.testing.assert_allclose(r["box_size"], m.instance_map[2].box_size, atol=1e-12)
    assert 0.8 - 1e-9 <= r["box_size"][0] <= 0.85 + 1e-9 and r["first_seen"] == 0.0 and r["last_seen"] == 1.0
    # both continue identically
    frame = [obs(chair[chair[:, 1] > 0], 0, 0.5, embedding=m.instance_map[1].embedding), obs(box_surface((8, 0, 0)))]
    assert m.update(frame, 4.0) == back.update(frame, 4.0) == [1, 4]
    assert [(i.id, i.merge_count, i.score) for i in m.instances] == [(i.id, i.merge_count, i.score)
                                                                     for i in back.instances]
    np.testing.assert_array_equal(m.instance_map[1].embedding, back.instance_map[1].embedding)
    np.testing.assert_array_equal(m.voxel_map.labels, back.voxel_map.labels)
    # files that do not belong together are refused
    doc["next_id"] = 9
    (tmp_path / "map" / "instances.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="different maps"):
        SceneMap.load(tmp_path / "map")
    with pytest.raises(FileNotFoundError):
        SceneMap.load(tmp_path / "nothing")


def _gt_scene(chair, table, floor):
    """ScanNet ground truth: label_id * 1000 + instance per vertex (chair = 2, table = 4, floor unannotated)."""
    verts = np.concatenate([chair, table, floor])
    gt = np.r_[np.full(len(chair), 2 * 1000 + 1), np.full(len(table), 4 * 1000 + 2), np.zeros(len(floor), int)]
    return verts, gt


def _evaluate(pred_dir, verts_gt, tmp_path, name):
    from bifusion_core.eval.__main__ import main as eval_main
    from bifusion_core.eval.io import write_ids

    gt_dir = tmp_path / f"gt_{name}"
    write_ids(gt_dir / "scene0.txt", verts_gt)
    out = tmp_path / f"{name}.json"
    assert eval_main(["instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "-q", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_scannet_output_scored_by_the_project_evaluator(tmp_path):
    m, chair, table = _build_map(("chair", "table"))
    floor = np.array([[x, y, -0.5] for x in np.arange(-0.5, 2.5, 0.1) for y in np.arange(-0.5, 0.5, 0.1)])
    verts, gt = _gt_scene(chair, table, floor)
    assert len(chair) >= 100 and len(table) >= 100  # the benchmark's min_region_size
    paths = m.save(tmp_path / "perfect", scene_points=verts, scene="scene0")  # label ids from the class names
    lines = paths["scannet"].read_text().splitlines()
    assert [ln.split()[:2] for ln in lines] == [["pred_mask/scene0_0.txt", "2"], ["pred_mask/scene0_1.txt", "4"]]
    assert float(lines[0].split()[2]) == pytest.approx(m.instance_map[1].score, abs=1e-6)
    mask0 = np.loadtxt(tmp_path / "perfect" / "scannet" / "pred_mask" / "scene0_0.txt", dtype=np.int64)
    np.testing.assert_array_equal(mask0, (gt == 2001).astype(int))
    res = _evaluate(tmp_path / "perfect" / "scannet", gt, tmp_path, "perfect")
    assert res["ap"] == pytest.approx(1.0) and res["ap50"] == pytest.approx(1.0) and res["ap25"] == pytest.approx(1.0)

    # the chair seen as two halves that never overlap: split into two instances, AP drops
    split = SceneMap(MapConfig(merge_threshold=0.5), class_names=("chair", "table"))
    left, right = chair[chair[:, 0] < 0.01], chair[chair[:, 0] > 0.01]  # box IoU of the halves <= 1 / 9
    assert split.update([obs(left, 0, 0.9), obs(table, 1, 0.7)], 0.0) == [1, 2]
    assert split.update([obs(right, 0, 0.95)], 1.0) == [3]
    split.save(tmp_path / "split", scene_points=verts, label_ids=np.array([2, 4]), scene="scene0")
    res_split = _evaluate(tmp_path / "split" / "scannet", gt, tmp_path, "split")
    assert res_split["ap"] < 0.9  # each half misses the stricter IoU thresholds
    assert res_split["classes"]["table"]["ap"] == pytest.approx(1.0)
    assert res_split["classes"]["chair"]["ap"] < 0.5


def test_save_refuses_bad_scannet_arguments(tmp_path):
    m = SceneMap()
    m.update([obs(box_surface((0, 0, 0)))], 0.0)
    with pytest.raises(ValueError, match="label_ids"):
        m.save(tmp_path / "a", scene_points=np.zeros((3, 3)))  # no class names to derive them from
    with pytest.raises(ValueError, match="label_ids"):
        m.save(tmp_path / "a", scene_points=np.zeros((3, 3)), label_ids=np.array([1.5]))
    with pytest.raises(ValueError, match="scene_points"):
        m.save(tmp_path / "a", scene_points=np.zeros((3, 2)), label_ids=[2])
    with pytest.raises(ValueError, match="scene"):
        m.save(tmp_path / "a", scene_points=np.zeros((3, 3)), label_ids=[2], scene="../x")


def test_map_topdown_image_shows_the_highest_visible_voxel_per_cell():
    from bifusion_core.io.render import ID_PALETTE, map_topdown_image

    vs = 0.1
    # cell (0, 0): a floor voxel (no instance) under an instance-3 voxel; cell (2, 1): instance 7 under a
    # hidden "ceiling" voxel; cell (1, 0): a floor voxel only
    centres = np.array([[0.05, 0.05, 0.05], [0.05, 0.05, 0.55], [0.25, 0.15, 0.45], [0.25, 0.15, 2.5],
                        [0.15, 0.05, 0.05]])
    colours = np.array([[10, 20, 30], [200, 0, 0], [0, 200, 0], [255, 255, 255], [90, 90, 90]], np.uint8)
    ids = np.array([0, 3, 7, 0, 0])
    hide = np.array([False, False, False, True, False])
    img = map_topdown_image(centres, colours, ids, vs, hide=hide, scale=2)
    h, w = 2, 3  # cells: x 0..2, y 0..1
    assert img.shape == (h * 2, 2 * w * 2 + 8, 3)
    rgb, inst = img[:, :w * 2], img[:, w * 2 + 8:]
    # world y goes up the image: y index 0 is the bottom row
    np.testing.assert_array_equal(rgb[3, 0], [200, 0, 0])         # the higher voxel of cell (0, 0)
    np.testing.assert_array_equal(rgb[1, 4], [0, 200, 0])         # the ceiling voxel is hidden
    np.testing.assert_array_equal(inst[3, 0], ID_PALETTE[3 % 20])
    np.testing.assert_array_equal(inst[1, 4], ID_PALETTE[7 % 20])
    assert len(set(inst[3, 2])) == 1 and tuple(inst[3, 2]) != tuple(ID_PALETTE[0])  # no instance: grey
    np.testing.assert_array_equal(rgb[1, 0], [0, 0, 0])           # cell (0, 1): nothing seen
    assert map_topdown_image(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), vs).shape == (1, 1, 3)


def test_an_instance_that_keeps_growing_keeps_its_newest_voxels_up_to_the_cap():
    """A mis-segmentation that slides along a wall merges frame after frame; the instance keeps at most
    max_instance_voxels voxels, those nearest its newest observation, and its box follows them."""
    cap = 300
    m = InstanceMap(MapConfig(max_instance_voxels=cap))
    for f in range(40):
        x0 = 0.1 * f  # 10 cm a frame, 1 m long observations: consecutive ones overlap
        wall = np.stack(np.meshgrid(np.arange(x0, x0 + 1.0, 0.05), [0.02], np.arange(0.02, 0.5, 0.05)), -1)
        assert m.update([obs(wall.reshape(-1, 3) + 0.001)], float(f)) == [1]
    (inst,) = m.instances
    assert inst.merge_count == 40 and inst.num_voxels == cap
    newest = voxel_set(wall.reshape(-1, 3) + 0.001, VS)
    assert np.isin(newest, inst.voxel_keys).all()  # the newest view is kept whole
    np.testing.assert_allclose(inst.box_max[0], 4.9, atol=1e-9)  # the far end of the newest view
    assert inst.box_min[0] > 3.0  # the start of the wall (x = 0) was dropped
    with pytest.raises(ValueError, match="max_instance_voxels"):
        MapConfig(max_instance_voxels=0)
