"""LiteFusionGate: size, warm-up, validity prior, per-sample SE, step counter."""
import pytest
import torch
import torch.nn.functional as F

from bifusion_core.models.fusion_gate import FusionGateConfig, LiteFusionGate


def inputs(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    f2d = F.normalize(torch.randn(n, 256, generator=g), dim=1)
    f3d = F.normalize(torch.randn(n, 256, generator=g), dim=1)
    valid = torch.rand(n, generator=g) > 0.4
    f2d = f2d * valid[:, None]  # invalid points carry a zero 2D feature (DESIGN §2)
    batch = torch.cat([torch.zeros(n // 2), torch.ones(n - n // 2)]).long()
    return f2d, f3d, valid, batch


def reference(gate, f2d, f3d, valid, batch, warm):
    """Independent per-sample loop implementation of DESIGN §2."""
    if warm:
        alpha = torch.full((f2d.shape[0], 1), 0.5)
    else:
        w1, b1 = gate.alpha_mlp[0].weight, gate.alpha_mlp[0].bias
        h = torch.relu(f2d @ w1[:, :256].T + f3d @ w1[:, 256:].T + b1)
        alpha = torch.sigmoid(h @ gate.alpha_mlp[2].weight.T + gate.alpha_mlp[2].bias)
        v = valid.float()[:, None]
        alpha = alpha * v + 0.1 * (1 - v)
    mix = alpha * f2d + (1 - alpha) * f3d
    fused = torch.empty_like(mix)
    for b in batch.unique():
        m = batch == b
        w = torch.sigmoid(gate.se(mix[m].mean(0)))
        fused[m] = F.normalize(w * mix[m], dim=1)
    return fused, alpha


def test_parameter_count_and_layers():
    gate = LiteFusionGate()
    n = sum(p.numel() for p in gate.parameters())
    assert n == 512 * 64 + 64 + 64 + 1 + 256 * 256 + 256 == 98689
    assert 80_000 <= n <= 150_000
    assert isinstance(gate.alpha_mlp[1], torch.nn.ReLU)
    assert "step" in gate.state_dict() and gate.state_dict()["step"].dtype == torch.int64


def test_warmup_alpha_is_half_and_alpha_mlp_gets_no_gradient():
    gate = LiteFusionGate(FusionGateConfig(early_steps=3))
    gate.train()
    f2d, f3d, valid, batch = inputs()
    f2d.requires_grad_()
    for step in range(3):
        assert gate.in_warmup and int(gate.step) == step
        fused, alpha = gate(f2d, f3d, valid, batch)
        assert fused.shape == (40, 256) and alpha.shape == (40, 1)
        assert torch.equal(alpha, torch.full((40, 1), 0.5))  # exactly, invalid points included
        assert torch.allclose(fused.norm(dim=1), torch.ones(40), atol=1e-5)
        exp, _ = reference(gate, f2d.detach(), f3d, valid, batch, warm=True)
        assert torch.allclose(fused, exp, atol=1e-6)
        fused.sum().backward()
        assert all(p.grad is None for p in gate.alpha_mlp.parameters())
        assert gate.se.weight.grad is not None and torch.count_nonzero(gate.se.weight.grad) > 0
        assert f2d.grad is not None
        gate.zero_grad()
    assert not gate.in_warmup and int(gate.step) == 3


def test_after_warmup_validity_prior_and_gradients():
    gate = LiteFusionGate()
    gate.set_step(3000)
    gate.train()
    f2d, f3d, valid, batch = inputs(seed=1)
    fused, alpha = gate(f2d, f3d, valid.float(), batch)
    assert torch.equal(alpha[~valid], torch.full((int((~valid).sum()), 1), 0.1))
    assert ((alpha[valid] > 0) & (alpha[valid] < 1)).all()
    assert not torch.allclose(alpha[valid], torch.full_like(alpha[valid], 0.1))
    exp_f, exp_a = reference(gate, f2d, f3d, valid, batch, warm=False)
    assert torch.allclose(alpha, exp_a, atol=1e-6) and torch.allclose(fused, exp_f, atol=1e-6)
    assert torch.allclose(fused.norm(dim=1), torch.ones(40), atol=1e-5)
    (fused * torch.randn(40, 256)).sum().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in gate.parameters())
    assert int(gate.step) == 3001


def test_se_is_per_sample_and_eval_mode_follows_the_saved_counter():
    gate = LiteFusionGate()
    gate.set_step(5000)
    gate.eval()
    f2d, f3d, valid, batch = inputs(seed=2)
    fused, alpha = gate(f2d, f3d, valid, batch)
    assert int(gate.step) == 5000  # eval does not count
    # changing sample 1 leaves sample 0 untouched (its mean, hence its SE weights, is its own)
    f3d2 = f3d.clone()
    f3d2[batch == 1] = F.normalize(torch.randn(int((batch == 1).sum()), 256), dim=1)
    fused2, _ = gate(f2d, f3d2, valid, batch)
    assert torch.allclose(fused2[batch == 0], fused[batch == 0], atol=1e-6)
    assert not torch.allclose(fused2[batch == 1], fused[batch == 1], atol=1e-3)
    # a checkpoint saved during warm-up still behaves as trained (alpha 0.5), also in eval mode
    early = LiteFusionGate()
    early.set_step(10)
    restored = LiteFusionGate()
    restored.load_state_dict(early.state_dict())
    restored.eval()
    assert int(restored.step) == 10
    _, a = restored(f2d, f3d, valid, batch)
    assert torch.equal(a, torch.full((40, 1), 0.5))
    # while a trained one uses its alpha MLP
    trained = LiteFusionGate()
    trained.load_state_dict(gate.state_dict())
    _, a = trained.eval()(f2d, f3d, valid, batch)
    assert torch.equal(a, alpha)


def test_bad_input():
    gate = LiteFusionGate()
    f2d, f3d, valid, batch = inputs()
    with pytest.raises(ValueError, match="f2d and f3d"):
        gate(f2d[:, :128], f3d, valid, batch)
    with pytest.raises(ValueError, match="valid"):
        gate(f2d, f3d, valid[:5], batch)
    with pytest.raises(ValueError, match="batch"):
        gate(f2d, f3d, valid, batch.float())
    with pytest.raises(ValueError, match="early_steps"):
        FusionGateConfig(early_steps=-1)


@pytest.mark.parametrize("batch_given", [False, True])
def test_single_sample_matches_the_reference_values_and_gradients(batch_given):
    """One sample (every frame in the node) takes a shorter path; it gives the reference's values and the same
    gradients as the general per-sample path (the same frame put through with a second sample beside it)."""
    gate = LiteFusionGate(FusionGateConfig(early_steps=0))
    f2d, f3d, valid, _ = inputs(seed=4)
    zeros = torch.zeros(40, dtype=torch.int64)
    f2d.requires_grad_(True)
    fused, alpha = gate(f2d, f3d, valid, zeros if batch_given else None)
    exp_f, exp_a = reference(gate, f2d.detach(), f3d, valid, zeros, warm=False)
    assert torch.allclose(alpha, exp_a, atol=1e-6) and torch.allclose(fused, exp_f, atol=1e-6)
    g = torch.randn(40, 256, generator=torch.Generator().manual_seed(5))
    (fused * g).sum().backward()
    f2d_grad = f2d.grad.clone()
    f2d_b = f2d.detach().clone().requires_grad_(True)
    other = F.normalize(torch.randn(7, 256), dim=1)
    two, _ = gate(torch.cat([f2d_b, other]), torch.cat([f3d, other]), torch.cat([valid, torch.ones(7, dtype=torch.bool)]),
                  torch.cat([zeros, torch.ones(7, dtype=torch.int64)]))
    assert torch.allclose(two[:40], fused, atol=1e-6)
    (two[:40] * g).sum().backward()
    assert torch.allclose(f2d_b.grad, f2d_grad, atol=1e-6)  # f2d's gradient depends on its own sample only


def test_fixed_alpha_ablation_gives_one_branch_alone():
    torch.manual_seed(0)
    f2d, f3d = F.normalize(torch.randn(50, 16), dim=1), F.normalize(torch.randn(50, 16), dim=1)
    valid = torch.ones(50, dtype=torch.bool)
    for a, ref in ((0.0, f3d), (1.0, f2d)):
        gate = LiteFusionGate(FusionGateConfig(feat_dim=16, hidden=8, early_steps=0, fixed_alpha=a)).train()
        fused, alpha = gate(f2d, f3d, valid)
        assert torch.all(alpha == a)
        w = torch.sigmoid(gate.se(ref.mean(0, keepdim=True)))
        torch.testing.assert_close(fused, F.normalize(w * ref, dim=1))
