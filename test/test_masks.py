"""2D instance masks in (issue 16): the frame field, ESAM-style superpoints, noisy synthetic masks, the stamp
cache the node and replay share, and replay with a mask topic."""
import threading
import time

import numpy as np
import pytest
import torch

from bifusion_core.data.frame import Frame, point_masks
from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
from bifusion_core.data.synthetic.masks import ORACLE, MaskNoise, noisy_masks
from bifusion_core.models.superpoints import SuperpointConfig, compute_superpoints
from bifusion_core.pipeline.mask_cache import MaskCache


def _frame(seed=3, w=96, h=72, index=2):
    seq = SyntheticSequence(seed, SequenceConfig(n_frames=4, camera=CameraConfig.scaled(w, h)))
    return seq.frame(index)


def test_frame_masks_are_checked_and_read_per_point():
    f = _frame()
    with pytest.raises(ValueError, match="masks must be an integer"):
        Frame(f.rgb, f.depth, f.intrinsics, f.pose, masks=np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="masks must be an integer"):
        Frame(f.rgb, f.depth, f.intrinsics, f.pose, masks=np.zeros(f.depth.shape, np.float32))
    m = np.zeros(f.depth.shape, np.int32)
    m[10, 20], m[5, 6] = 4, -3
    assert point_masks(m, np.array([[20, 10], [6, 5], [0, 0]])).tolist() == [4, -1, -1]


def test_esam_rule_one_superpoint_per_mask_and_vccs_for_the_rest():
    torch.manual_seed(0)
    pts = torch.rand(3000, 3) * torch.tensor([3.0, 3.0, 0.5])
    masks = torch.full((3000,), -1)
    masks[pts[:, 0] < 1.0] = 9
    masks[(pts[:, 0] > 2.0) & (pts[:, 1] < 1.5)] = 2
    cfg = SuperpointConfig(seed_size=0.5, from_masks=True)
    sp = compute_superpoints(pts, torch.full_like(pts, 0.5), cfg, masks)
    for m in (9, 2):  # every mask is exactly one superpoint
        ids = sp.ids[masks == m].unique()
        assert ids.numel() == 1 and bool((masks[sp.ids == ids[0]] == m).all())
    rest = masks < 0
    vccs = compute_superpoints(pts[rest], torch.full_like(pts[rest], 0.5), SuperpointConfig(seed_size=0.5))
    assert sp.count == 2 + vccs.count
    # the unmasked points are clustered exactly as VCCS clusters them alone
    a, b = sp.ids[rest].numpy(), vccs.ids.numpy()
    assert len(set(zip(a.tolist(), b.tolist()))) == vccs.count == len(np.unique(a))
    # centres are their points' means
    torch.testing.assert_close(sp.centres[sp.ids[masks == 9][0]], pts[masks == 9].mean(0))


def test_noisy_masks_drop_merge_split_and_oracle_is_exact():
    inst = np.zeros((60, 80), np.int64)
    for k in range(12):  # 12 touching vertical stripes
        inst[:, k * 6:(k + 1) * 6 + 0] = k + 1
    inst[:, 72:] = 0
    rng = np.random.default_rng(0)
    oracle = noisy_masks(inst, rng, ORACLE)
    # a bijection of the instances (ids renumbered)
    pairs = set(zip(inst.ravel().tolist(), oracle.ravel().tolist()))
    assert len(pairs) == 13 and (0, 0) in pairs and all((i == 0) == (m == 0) for i, m in pairs)
    stats = {"dropped": 0, "merged": 0, "split": 0}
    for seed in range(20):
        m = noisy_masks(inst, np.random.default_rng(seed), MaskNoise(drop=0.2, merge=0.2, split=0.2, border=0))
        for k in range(1, 13):
            ids = np.unique(m[inst == k])
            stats["dropped"] += int(ids.tolist() == [0])
            stats["split"] += int(len(ids) == 2 and 0 not in ids)
        owners = {}
        for k in range(1, 13):
            for i in np.unique(m[inst == k]):
                owners.setdefault(int(i), set()).add(k)
        stats["merged"] += sum(len(v) > 1 for i, v in owners.items() if i)
    assert all(n > 5 for n in stats.values()), stats
    # borders move, but only by a pixel or two
    b = noisy_masks(inst, np.random.default_rng(1), MaskNoise(drop=0, merge=0, split=0, border=2))
    moved = (np.stack([b == b[30, x] for x in range(3, 72, 6)]).sum(0) == 0) & (inst > 0)
    assert 0 < moved.mean() < 0.5


def test_mask_cache_matches_stamps_waits_and_counts():
    c = MaskCache(keep=3, slop=0.002, timeout=0.05)
    m = np.ones((4, 5), np.int64)
    c.add(1_000_000_000, m)
    got, why = c.take(1_001_000_000, (4, 5))  # within 2 ms
    assert got is m and why == ""
    assert c.take(1_001_000_000, (4, 5), wait=0.0) == (None, "none")  # taken once
    c.add(2_000_000_000, m)
    assert c.take(2_000_000_000, (5, 4)) == (None, "size_mismatch")
    for s in range(5):
        c.add(10**9 * (10 + s), m)
    assert not c.has(10**10) and c.has(10**9 * 12) and c.has(10**9 * 14)  # keeps the last 3
    c.reject("bad_encoding")
    with pytest.raises(ValueError):
        c.reject("whatever")
    # a worker waiting for a late mask gets it
    late = MaskCache(timeout=1.0)
    threading.Timer(0.05, lambda: late.add(7, m)).start()
    t0 = time.monotonic()
    assert late.take(7, (4, 5))[0] is m and time.monotonic() - t0 < 0.9
    s = c.summary()
    assert s == {"received": 8, "used": 1, "frames_without_mask": 2,
                 "skipped": {"bad_encoding": 1, "bad_image": 0, "size_mismatch": 1}}


def _processor():
    from bifusion_core.data.synthetic.captions import CLASSES
    from bifusion_core.models.bifusion import BiFusionModel
    from bifusion_core.models.presets import tiny_config
    from bifusion_core.pipeline import FrameProcessor

    torch.manual_seed(0)
    cfg = tiny_config(list(CLASSES))
    cfg.frame.stride = 2
    return FrameProcessor(BiFusionModel(cfg), "cpu")


def test_frames_without_masks_keep_their_output_and_masks_cut_superpoints():
    from dataclasses import replace

    from bifusion_core.models.bifusion import batch_superpoints, frames_to_input

    proc = _processor()
    f = _frame()
    cfg = proc.model.cfg
    # no masks (and a mask image of zeros: no mask anywhere) = the VCCS superpoints of before, bit for bit
    inp = frames_to_input([(f.rgb, f.depth, f.intrinsics, f.pose)], cfg.frame)
    ref_sp = batch_superpoints(inp.points, inp.colours, inp.batch, cfg.superpoints)
    inp.superpoints = ref_sp
    with torch.inference_mode():
        ref = proc.model.segment(inp, proc.model(inp))[0]
    a = proc.process(f)
    b = proc.process(replace(f, masks=np.zeros(f.depth.shape, np.int32)))
    for r in (a, b):
        assert np.array_equal(r.semantic, ref.semantic.numpy()) and np.array_equal(r.score, ref.score.numpy())
    # with masks, no superpoint holds points of two masks (ESAM rule: exactly one superpoint per mask)
    masks = noisy_masks(f.instance, np.random.default_rng(0), ORACLE)
    pm = point_masks(masks, inp.pixels.numpy())
    sp = batch_superpoints(inp.points, inp.colours, inp.batch, replace(cfg.superpoints, from_masks=True),
                           torch.from_numpy(pm)).numpy()
    for s in np.unique(sp):
        assert len(np.unique(pm[sp == s])) == 1
    assert len(np.unique(sp[pm > 0])) == len(np.unique(pm[pm > 0]))


def test_the_processor_hands_the_frame_masks_to_the_superpoints(monkeypatch):
    import bifusion_core.pipeline.processor as P

    seen = []
    real = P.batch_superpoints

    def spy(points, colours, batch, cfg, masks=None):
        seen.append(None if masks is None else masks.clone())
        return real(points, colours, batch, cfg, masks)

    monkeypatch.setattr(P, "batch_superpoints", spy)
    proc = _processor()
    f = _frame()
    masks = noisy_masks(f.instance, np.random.default_rng(0), MaskNoise())
    from dataclasses import replace

    r = proc.process(replace(f, masks=masks))
    proc.process(f)
    assert seen[1] is None
    assert np.array_equal(seen[0].numpy(), point_masks(masks, r.pixels)) and (seen[0] > 0).any()
