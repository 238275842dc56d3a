"""Training batches: frame crops, targets aligned with points, deterministic batches."""
import numpy as np
import pytest
import torch

from bifusion_core.train.config import load_train_config
from bifusion_core.train.data import BatchSampler, FramePool, crop_keep

TINY = ["data.scenes=1", "data.frames_per_scene=2", "data.val_scenes=0", "data.width=96", "data.height=72",
        "data.batch_size=2", "model.frame.stride=2", "model.frame.max_points=3000"]


def test_crop_keep_hand_case():
    # sample 0: a 1 m grid line along x; sample 1: two far-apart clusters
    pts = np.array([[x, 0.0, z] for x in range(10) for z in (0.0, 2.0)]
                   + [[0, 0, 0], [0.1, 0.1, 5], [20, 20, 0]], np.float64)
    batch = np.array([0] * 20 + [1, 1, 1])
    keep = crop_keep(pts, batch, 2.0, np.random.default_rng(0))
    for b in (0, 1):
        sel = keep & (batch == b)
        assert sel.any()
        kept = pts[sel]
        assert np.ptp(kept[:, 0]) <= 2.0 and np.ptp(kept[:, 1]) <= 2.0
        if b == 0:  # every point within 1 m in x of the centre, at both heights: 2 or 3 columns
            assert set(np.unique(kept[:, 2])) == {0.0, 2.0}
            assert sel.sum() in (4, 6) and np.ptp(kept[:, 0]) == (sel.sum() // 2 - 1)
    # sample 1: the crop is either the close pair (both, any z) or the lone far point
    s1 = keep[20:]
    assert s1.tolist() in ([True, True, False], [False, False, True])


def test_crop_redraws_until_min_points():
    pts = np.array([[0, 0, 0]] + [[50 + 0.01 * i, 0, 0] for i in range(30)], np.float64)
    batch = np.zeros(len(pts), np.int64)
    for seed in range(5):
        keep = crop_keep(pts, batch, 1.0, np.random.default_rng(seed), min_points=10, attempts=50)
        assert keep.sum() == 30 and not keep[0]


def test_cropped_batches_keep_targets_aligned(tmp_path):
    cfg = load_train_config("config/train/synthetic_small.yaml", TINY + ["data.crop_size=1.5",
                                                                          "data.crop_min_points=50"])
    from bifusion_core.models.bifusion import BiFusionModel

    names = BiFusionModel(cfg.model).class_names
    pool = FramePool(cfg.data, "train")
    sampler = BatchSampler(pool, cfg.data, cfg.model, names)
    full_cfg = load_train_config("config/train/synthetic_small.yaml", TINY)
    full = BatchSampler(pool, full_cfg.data, full_cfg.model, names).batch(0)
    b = sampler.batch(0)
    inp = b.inp
    assert 0 < inp.points.shape[0] < full.inp.points.shape[0]
    for s in range(inp.num_samples):
        p = inp.points[inp.batch == s]
        assert p.shape[0] > 0
        assert float(p[:, 0].max() - p[:, 0].min()) <= 1.5 + 1e-5
        assert float(p[:, 1].max() - p[:, 1].min()) <= 1.5 + 1e-5
    n = inp.points.shape[0]
    for t in (inp.colours, inp.uv, inp.valid, inp.batch, inp.superpoints, inp.pixels, b.targets.semantic,
              b.targets.instance):
        assert t.shape[0] == n
    # targets still come from each kept point's own pixel
    for s, f in enumerate(b.frames):
        sel = inp.batch == s
        u, v = inp.pixels[sel, 0].numpy(), inp.pixels[sel, 1].numpy()
        gt = sampler.lut[np.clip(f.semantic[v, u], 0, len(sampler.lut) - 1)]
        assert np.array_equal(gt, b.targets.semantic[sel].numpy())
    # deterministic per step; validation batches (no augmentation) are whole frames
    again = sampler.batch(0)
    assert torch.equal(again.inp.points, inp.points)
    whole = sampler.batch(0, augment_frames=False)
    assert whole.inp.points.shape[0] > inp.points.shape[0]


def test_crop_size_validated():
    with pytest.raises(ValueError, match="crop_size"):
        load_train_config("config/train/synthetic_small.yaml", ["data.crop_size=0"])


def test_subsampling_follows_the_batch_stream_not_the_global_rng():
    cfg = load_train_config("config/train/synthetic_small.yaml", TINY + ["model.frame.max_points=400"])
    from bifusion_core.models.bifusion import BiFusionModel

    sampler = BatchSampler(FramePool(cfg.data, "train"), cfg.data, cfg.model, BiFusionModel(cfg.model).class_names)
    torch.manual_seed(1)
    a = sampler.batch(3)
    torch.manual_seed(2)
    b = sampler.batch(3)
    assert a.inp.points.shape[0] == 2 * 400 and torch.equal(a.inp.points, b.inp.points)
    assert not torch.equal(sampler.batch(4).inp.pixels, a.inp.pixels)


def _pair_sampler(extra=()):
    cfg = load_train_config("config/train/synthetic_small.yaml", ["data.scenes=2", "data.frames_per_scene=6",
                                                                   "data.val_scenes=0", "data.width=96",
                                                                   "data.height=72", "data.batch_size=4",
                                                                   "data.pair_gap=2", "model.frame.stride=2",
                                                                   "model.frame.max_points=3000"] + list(extra))
    from bifusion_core.models.bifusion import BiFusionModel

    pool = FramePool(cfg.data, "train")
    return pool, BatchSampler(pool, cfg.data, cfg.model, BiFusionModel(cfg.model).class_names)


def test_pair_batches_pair_nearby_frames_of_one_scene_under_one_world_transform():
    pool, sampler = _pair_sampler()
    assert pool.scene_of.tolist() == [0] * 6 + [1] * 6 and pool.frame_of.tolist() == list(range(6)) * 2
    assert pool.partners(6, 2).tolist() == [7, 8] and pool.partners(9, 2).tolist() == [7, 8, 10, 11]
    seen_gaps = set()
    for step in range(6):
        b = sampler.batch(step, pairs=True)
        assert b.pairs and b.inp.num_samples == len(b.items) == 4
        anchors = b.items[0::2]
        assert len(set(anchors)) == 2
        for k in (0, 2):
            a, p = b.items[k], b.items[k + 1]
            gap = abs(int(pool.frame_of[a] - pool.frame_of[p]))
            assert pool.scene_of[a] == pool.scene_of[p] and 1 <= gap <= 2
            seen_gaps.add(gap)
            # one world rotation and scale for both frames: their relative pose keeps its rotation, and its
            # translation is scaled by the pair's scale
            fa, fp = pool.get(a), pool.get(p)
            rel = np.linalg.inv(fa.pose) @ fp.pose
            rel_aug = np.linalg.inv(b.frames[k].pose) @ b.frames[k + 1].pose
            np.testing.assert_allclose(rel_aug[:3, :3], rel[:3, :3], atol=1e-9)
            s = float(b.frames[k].depth[fa.depth > 0].mean() / fa.depth[fa.depth > 0].mean())
            np.testing.assert_allclose(rel_aug[:3, 3], s * rel[:3, 3], atol=1e-4)
            # the pair's frames share ground-truth objects
            ia = set(np.unique(b.targets.instance[b.inp.batch == k].numpy())) - {-1}
            ip = set(np.unique(b.targets.instance[b.inp.batch == k + 1].numpy())) - {-1}
            assert ia & ip
        again = sampler.batch(step, pairs=True)  # a pure function of the step
        assert again.items == b.items and torch.equal(again.inp.points, b.inp.points)
    assert seen_gaps == {1, 2}
    # batch_size 1 still makes one pair
    _, one = _pair_sampler(["data.batch_size=1"])
    assert len(one.batch(0, pairs=True).items) == 2


def test_pair_batches_need_partners_and_pair_gap_is_validated():
    _, lonely = _pair_sampler(["data.frames_per_scene=1"])
    with pytest.raises(ValueError, match="partner"):
        lonely.batch(0, pairs=True)
    for bad in ("0", "1.5", "true"):
        with pytest.raises(ValueError, match="pair_gap"):
            load_train_config("config/train/synthetic_small.yaml", [f"data.pair_gap={bad}"])


def test_synthetic_instance_ids_name_the_same_object_in_every_frame_of_a_room():
    """The merge loss pairs instances of two frames by ground-truth id: in one synthetic room, an id seen in two
    frames is one object (its noise-free points in both frames lie on that object's primitives)."""
    from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
    from bifusion_core.geometry import backproject

    seq = SyntheticSequence(11, SequenceConfig(n_frames=20, camera=CameraConfig.scaled(160, 120)))
    objects = {o.instance: o for o in seq.scene.objects}
    views = []
    for i in (3, 6):
        r = seq.render(i)
        bp = backproject(r.depth_clean, r.intrinsics, pose=r.pose)
        pix = bp.pixels.numpy()
        views.append((bp.points.numpy().astype(np.float64), r.instance[pix[:, 1], pix[:, 0]].astype(np.int64)))
    common = (set(np.unique(views[0][1])) & set(np.unique(views[1][1]))) - {0}
    furniture = [g for g in common if objects[g].name not in ("wall", "floor", "ceiling")]
    assert len(furniture) >= 2, sorted(common)
    for g in common:
        prims = [seq.scene.primitives[k] for k in objects[g].primitives]
        for pts, ids in views:
            on = pts[ids == g]
            dist = np.min(np.stack([np.abs(p.sdf(on)) for p in prims]), axis=0)
            assert dist.max() < 5e-3, (g, objects[g].name, dist.max())


def test_scannet_frames_pair_within_their_scene_and_share_ids(tmp_path):
    """ScanNet-layout sequences (here exported synthetic rooms): the pool groups the frames by scene and a pair's
    ground-truth ids (per-scene object ids) name common objects."""
    from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
    from bifusion_core.data.synthetic.export import ExportConfig, export_sequence
    from bifusion_core.models.bifusion import BiFusionModel

    for k, seed in enumerate((11, 12)):
        seq = SyntheticSequence(seed, SequenceConfig(n_frames=4, loop_fraction=0.1, camera=CameraConfig.scaled(96, 72)))
        export_sequence(seq, tmp_path, f"scene{k:04d}_00", ExportConfig(cloud_voxel=0), progress=False)
    cfg = load_train_config("config/train/synthetic_small.yaml", [
        "data.source=scannet", f"data.root={tmp_path}", "data.frame_skip=1", "data.frames_per_scene=4",
        "data.val_scenes=0", "data.batch_size=2", "data.pair_gap=2", "model.frame.stride=2",
        "model.frame.max_points=2000"])
    pool = FramePool(cfg.data, "train")
    assert pool.scene_of.tolist() == [0] * 4 + [1] * 4 and pool.frame_of.tolist() == list(range(4)) * 2
    sampler = BatchSampler(pool, cfg.data, cfg.model, BiFusionModel(cfg.model).class_names)
    for step in range(3):
        b = sampler.batch(step, pairs=True)
        a, p = b.items
        assert pool.scene_of[a] == pool.scene_of[p] and 1 <= abs(int(pool.frame_of[a] - pool.frame_of[p])) <= 2
        ia = set(np.unique(b.targets.instance[b.inp.batch == 0].numpy())) - {-1}
        ip = set(np.unique(b.targets.instance[b.inp.batch == 1].numpy())) - {-1}
        assert ia & ip


def test_stream_batches_draw_live_rooms_and_replay_exactly():
    from bifusion_core.data.synthetic.stream import RoomStream
    from bifusion_core.train.data import training_pool

    over = TINY + ["data.stream.rooms=3", "data.stream.renew=1", "data.frames_per_scene=4", "data.pair_gap=2"]
    cfg = load_train_config("config/train/synthetic_small.yaml", over)
    names = cfg.model.resolved_class_names()
    pool = training_pool(cfg.data, "train")
    assert isinstance(pool, RoomStream) and isinstance(training_pool(cfg.data, "val"), FramePool)
    sampler = BatchSampler(pool, cfg.data, cfg.model, names)
    for step in (0, 5):
        b = sampler.batch(step)
        live = {f"room{r}" for r in pool.live_rooms(step).tolist()}
        assert {f.name.split("/")[0] for f in b.frames} <= live
        # a fresh stream (a resumed run) gives the same batch
        again = BatchSampler(training_pool(cfg.data, "train"), cfg.data, cfg.model, names).batch(step)
        assert torch.equal(b.inp.points, again.inp.points) and torch.equal(b.targets.semantic, again.targets.semantic)
    p = sampler.batch(7, pairs=True)
    assert len(p.frames) == 2
    for k in range(0, len(p.frames), 2):
        ra, fa = p.frames[k].name.split("/")
        rb, fb = p.frames[k + 1].name.split("/")
        assert ra == rb and 1 <= abs(int(fa) - int(fb)) <= 2
    with pytest.raises(ValueError, match="stream"):
        load_train_config("config/train/synthetic_small.yaml", ["data.source=scannet", "data.root=/x",
                                                                "data.stream.rooms=2"])
