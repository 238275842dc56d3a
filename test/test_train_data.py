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
