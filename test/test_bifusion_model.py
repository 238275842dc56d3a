"""The assembled encoder + decoder on tiny configs: shapes, batching, gradients, frozen CLIP, bad input."""
import numpy as np
import pytest
import torch

from bifusion_core.config import from_dict, to_dict
from bifusion_core.models.bifusion import BiFusionConfig, BiFusionModel, FrameConfig, frames_to_input
from bifusion_core.models.presets import tiny_config
from bifusion_core.models.superpoints import SuperpointConfig


def make_frame(seed=0, h=48, w=64):
    rng = np.random.default_rng(seed)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = (1.5 + 0.3 * rng.random((h, w))).astype(np.float32)
    depth[:5, :5] = 0  # holes
    pose = np.eye(4)
    pose[:3, 3] = [0.1 * seed, 0.0, 1.0]
    return rgb, depth, (50.0, 50.0, w / 2, h / 2), pose


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BiFusionModel(tiny_config(early_steps=2))


def test_forward_shapes_and_norms(model):
    inp = frames_to_input([make_frame(0), make_frame(1)], FrameConfig(stride=2), SuperpointConfig(seed_size=0.2))
    out = model(inp)
    n = inp.points.shape[0]
    assert n == 2 * (24 * 32 - 9)  # 3x3 strided pixels fall in the hole
    assert out.enc.fused.shape == (n, 256) and out.enc.alpha.shape == (n, 1)
    torch.testing.assert_close(out.enc.fused.norm(dim=1), torch.ones(n))
    torch.testing.assert_close(out.enc.f3d.norm(dim=1), torch.ones(n))
    assert out.sem_logits.shape == (n, 4)
    assert out.dec.class_logits.shape[0] == 2 and out.dec.class_logits.shape[2] == 5
    segs = model.segment(inp, out)
    assert [s.semantic.shape[0] for s in segs] == [n // 2, n // 2]


def test_batch_equals_each_frame_alone(model):
    model.eval()
    sp = SuperpointConfig(seed_size=0.2)
    f0, f1 = make_frame(0), make_frame(1)
    with torch.no_grad():
        both = model(frames_to_input([f0, f1], FrameConfig(stride=2), sp))
        one = model(frames_to_input([f1], FrameConfig(stride=2), sp))
    idx = both.sample_points[1]
    torch.testing.assert_close(both.enc.fused[idx], one.enc.fused, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.sem_logits[idx], one.sem_logits, atol=1e-4, rtol=1e-4)
    model.train()


def test_gradients_reach_trainable_parts_never_clip():
    torch.manual_seed(1)
    m = BiFusionModel(tiny_config(early_steps=1))
    m.encoder.pe_film.mlp[2].weight.data.normal_(0, 0.01)  # leave the exact-identity init for this check
    m.train()
    inp = frames_to_input([make_frame(0)], FrameConfig(stride=2), SuperpointConfig(seed_size=0.2))
    m.encoder.set_training_step(5)  # after the warm-up: the alpha MLP is in the graph
    out = m(inp)
    loss = out.enc.fused.sum() + out.sem_logits.sum() + out.dec.mask_logits.sum() + (out.enc.f2d * out.enc.f3d).sum()
    loss.backward()
    enc = m.encoder
    for name, module in [("proj2d", enc.clip.proj2d), ("pe_film", enc.pe_film), ("gate", enc.gate),
                         ("backbone", enc.backbone)]:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name
    assert float(enc.pe_film.pe.log_w.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in enc.clip.clip.parameters())


def test_config_round_trip_and_unknown_keys():
    cfg = tiny_config()
    again = from_dict(BiFusionConfig, to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(BiFusionConfig, {"decoder": {"n_layerz": 3}})
    with pytest.raises(ValueError, match="class names"):
        from_dict(BiFusionConfig, {"class_names": ["a"], "decoder": {"num_classes": 3}})


def test_bad_frames():
    rgb, depth, intr, pose = make_frame(0)
    with pytest.raises(ValueError, match="no valid depth"):
        frames_to_input([(rgb, np.zeros_like(depth), intr, pose)])
    with pytest.raises(ValueError, match="no valid depth"):
        frames_to_input([(rgb, np.full_like(depth, np.nan), intr, pose)])
    with pytest.raises(ValueError):
        frames_to_input([(rgb[:40], depth, intr, pose)])
    bad = pose.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        frames_to_input([(rgb, depth, intr, bad)])


def test_fixed_classifier_rejects_other_class_counts(model):
    with pytest.raises(ValueError, match="fixed"):
        model.set_classes(["a", "b"])
    model.set_classes(["w", "f", "c", "t"])
    assert model.class_names == ["w", "f", "c", "t"]
