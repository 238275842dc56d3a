"""PE signal layout (64-d), superpoint sizes, FiLM identity at init and its gradients."""
import math

import pytest
import torch

from bifusion_core.models.pe_film import PEFiLM, PEFiLMConfig, PESignal, pe_dim, superpoint_size


def expected_pe(p, lo, hi, size, R, t, log_w, voxel=0.05):
    """Independent scalar (pure Python) computation of the documented 64-d layout for one point."""
    c = [(a + b) / 2 for a, b in zip(lo, hi)]
    diag = max(math.sqrt(sum((b - a) ** 2 for a, b in zip(lo, hi))), voxel)
    half = [max((b - a) / 2, voxel / 2) for a, b in zip(lo, hi)]
    out = [(p[i] - c[i]) / diag for i in range(3)]
    out += [s / diag for s in size]
    out += [R[i][0] for i in range(3)] + [R[i][1] for i in range(3)]
    out += [(t[i] - c[i]) / diag for i in range(3)]
    out += [(p[2] - lo[2]) / diag]
    xn = [(p[i] - c[i]) / half[i] for i in range(3)]
    K = len(log_w)
    for fn in (math.sin, math.cos):  # s = 0 sin, s = 1 cos; then axis; then frequency
        for a in range(3):
            for k in range(K):
                out.append(fn(xn[a] * 2.0 ** log_w[k] * math.pi))
    return out


def test_pe_layout_on_a_hand_case():
    pe = PESignal(num_freqs=8, voxel_size=0.05)
    assert pe.out_dim == pe_dim(8) == 64
    assert isinstance(pe.log_w, torch.nn.Parameter) and pe.log_w.requires_grad
    assert pe.log_w.tolist() == list(range(8))
    # sample 0: box [0, 2] x [0, 4] x [1, 5] spanned by its first two points; sample 1: a single point
    xyz = torch.tensor(
        [[0.0, 0.0, 1.0], [2.0, 4.0, 5.0], [0.37, 1.3, 2.9], [7.0, 7.0, 7.0]], dtype=torch.float64
    )
    batch = torch.tensor([0, 0, 0, 1])
    size = torch.tensor([[0.5, 1.0, 1.5], [0.1, 0.2, 0.3], [0.05, 0.05, 0.05], [0.2, 0.2, 0.2]], dtype=torch.float64)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    R0 = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]  # 30 deg about z
    t0 = [1.0, 2.0, 9.0]
    P = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    P[0, :3, :3] = torch.tensor(R0)
    P[0, :3, 3] = torch.tensor(t0)
    P[1, :3, 3] = torch.tensor([7.0, 7.0, 8.0])
    with torch.no_grad():
        pe.log_w.copy_(torch.tensor([0.0, 0.5, 1.0, 1.7, 2.0, 3.0, 4.2, 7.0]))
    out = pe.to(torch.float64)(xyz, batch, size, P)
    assert out.shape == (4, 64) and torch.isfinite(out).all()
    lw = pe.log_w.tolist()
    for i in range(3):
        exp = expected_pe(xyz[i].tolist(), [0, 0, 1], [2, 4, 5], size[i].tolist(), R0, t0, lw)
        assert torch.allclose(out[i], torch.tensor(exp, dtype=torch.float64), atol=1e-9), i
    # the single-point sample: zero extent, diag clamped to the voxel size, no NaN
    exp = expected_pe([7, 7, 7], [7, 7, 7], [7, 7, 7], [0.2] * 3, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [7, 7, 8], lw)
    assert torch.allclose(out[3], torch.tensor(exp, dtype=torch.float64), atol=1e-9)
    # spot checks of the slices: height of the lowest point is 0, of the highest 4/diag
    diag = math.sqrt(4 + 16 + 16)
    out = out.detach()
    assert out[0, 15] == 0 and abs(float(out[1, 15]) - 4 / diag) < 1e-12
    assert torch.allclose(out[0, 6:12], torch.tensor([c, s, 0.0, -s, c, 0.0], dtype=torch.float64))
    # x of point 2 normalised: (0.37 - 1) / 1, first sin/cos channels (k = 0, w = 1)
    assert abs(float(out[2, 16]) - math.sin(-0.63 * math.pi)) < 1e-12
    assert abs(float(out[2, 16 + 24]) - math.cos(-0.63 * math.pi)) < 1e-12
    # z axis, k = 7 (w = 2^7)
    zn = (2.9 - 3.0) / 2.0
    assert abs(float(out[2, 16 + 2 * 8 + 7]) - math.sin(zn * 128 * math.pi)) < 1e-9


def test_pe_defaults_and_per_sample_boxes():
    pe = PESignal()
    xyz = torch.rand(20, 3) * 4
    out = pe(xyz)  # one sample, no size (voxel size), no pose (zeros)
    diag = float((xyz.max(0).values - xyz.min(0).values).norm())
    assert torch.allclose(out[:, 3:6], torch.full((20, 3), 0.05 / diag))
    assert torch.equal(out[:, 6:15], torch.zeros(20, 9))
    assert (out[:, 16:] >= -1).all() and (out[:, 16:] <= 1).all()
    # adding a second sample far away does not change the first sample's PE
    both = pe(torch.cat([xyz, xyz + 100]), torch.cat([torch.zeros(20), torch.ones(20)]).long())
    assert torch.allclose(both[:20], out, atol=1e-5)
    # translation invariant inside a sample (float64: at 100 m, float32 loses the 2^7 pi frequency's phase)
    pe64, x64 = pe.double(), xyz.double()
    both = pe64(torch.cat([x64, x64 + 100]), torch.cat([torch.zeros(20), torch.ones(20)]).long())
    assert torch.allclose(both[20:], both[:20], atol=1e-9)
    with pytest.raises(ValueError, match="pose"):
        pe(xyz, pose=torch.eye(4).repeat(3, 1, 1))
    with pytest.raises(ValueError, match="non-finite"):
        pe(xyz, pose=torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="size"):
        pe(xyz, size=torch.ones(20, 2))


def test_log_w_gets_gradient_only_through_the_fourier_channels():
    pe = PESignal()
    xyz = torch.rand(30, 3)
    pe(xyz)[:, :16].sum().backward()
    assert pe.log_w.grad is None or torch.count_nonzero(pe.log_w.grad) == 0
    pe.log_w.grad = None
    (pe(xyz)[:, 16:] ** 2 * torch.linspace(0, 1, 48)).sum().backward()
    assert torch.count_nonzero(pe.log_w.grad) == 8


def test_superpoint_size():
    xyz = torch.tensor([[0, 0, 0], [1, 2, 0], [5, 5, 5], [0, 0, 0], [0.5, 0, 3], [9, 9, 9]], dtype=torch.float32)
    sp = torch.tensor([0, 0, 1, 0, 0, -1])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])  # superpoint 0 of sample 0 and of sample 1 are different
    out = superpoint_size(xyz, sp, 0.05, batch)
    exp = torch.tensor(
        [[1, 2, 0.05], [1, 2, 0.05], [0.05] * 3, [0.5, 0.05, 3], [0.5, 0.05, 3], [0.05] * 3], dtype=torch.float32
    )
    assert torch.allclose(out, exp)


def test_film_is_identity_at_init_and_has_the_spec_layers():
    film = PEFiLM()
    l1, act, l2 = film.mlp
    assert (l1.in_features, l1.out_features, l2.in_features, l2.out_features) == (64, 128, 128, 512)
    assert isinstance(act, torch.nn.SiLU)
    n = 50
    f2d, f3d = torch.randn(n, 256), torch.randn(n, 256)
    xyz = torch.rand(n, 3)
    batch = torch.randint(0, 2, (n,))
    o2, o3 = film(f2d, f3d, xyz, batch, pose=torch.eye(4))
    assert torch.equal(o2, f2d) and torch.equal(o3, f3d)


def test_film_formula_valid_rows_and_gradients():
    torch.manual_seed(0)
    film = PEFiLM(PEFiLMConfig(feat_dim=8, hidden=16))
    n = 12
    xyz = torch.rand(n, 3)
    f2d = torch.nn.functional.normalize(torch.randn(n, 8), dim=1).requires_grad_()
    f3d = torch.nn.functional.normalize(torch.randn(n, 8), dim=1).requires_grad_()
    # one SGD step from the zero init opens the path to the first layer and log_w (adaLN-Zero behaviour)
    opt = torch.optim.SGD(film.parameters(), lr=0.1)
    target = torch.randn(n, 8)
    o2, o3 = film(f2d, f3d, xyz)
    ((o2 + o3 - target) ** 2).sum().backward()
    assert torch.count_nonzero(film.mlp[2].weight.grad) > 0
    assert film.pe.log_w.grad is None or torch.count_nonzero(film.pe.log_w.grad) == 0
    opt.step()
    opt.zero_grad()
    o2, o3 = film(f2d, f3d, xyz)
    ((o2 + o3 - target) ** 2).sum().backward()
    assert torch.count_nonzero(film.pe.log_w.grad) > 0
    assert torch.count_nonzero(film.mlp[0].weight.grad) > 0
    assert f2d.grad is not None and f3d.grad is not None
    # independent formula: gamma = first 8 outputs, beta = last 8, same for both branches
    with torch.no_grad():
        h = film.mlp[2](torch.nn.functional.silu(film.mlp[0](film.pe(xyz))))
        gamma, beta = h[:, :8], h[:, 8:]
        o2, o3 = film(f2d, f3d, xyz)
        assert torch.allclose(o2, (1 + gamma) * f2d + beta, atol=1e-6)
        assert torch.allclose(o3, (1 + gamma) * f3d + beta, atol=1e-6)
        valid = torch.arange(n) % 3 != 0
        v2, v3 = film(f2d * valid[:, None], f3d, xyz, valid=valid)
        assert torch.equal(v2[~valid], torch.zeros(int((~valid).sum()), 8))
        assert torch.allclose(v2[valid], o2[valid], atol=1e-6) and torch.allclose(v3, o3)
    with pytest.raises(ValueError, match="f2d"):
        film(torch.zeros(n, 7), f3d, xyz)
    with pytest.raises(ValueError, match="batch"):
        film(f2d, f3d, xyz, batch=torch.full((n,), -1))


def test_disabled_pe_film_passes_features_through():
    torch.manual_seed(0)
    m = PEFiLM(PEFiLMConfig(feat_dim=8, hidden=8, num_freqs=2, enabled=False))
    f2d, f3d, xyz = torch.randn(20, 8), torch.randn(20, 8), torch.rand(20, 3)
    valid = torch.arange(20) % 3 > 0
    o2, o3 = m(f2d, f3d, xyz, valid=valid)
    assert torch.equal(o3, f3d) and torch.equal(o2[valid], f2d[valid]) and not o2[~valid].any()
    on = PEFiLM(PEFiLMConfig(feat_dim=8, hidden=8, num_freqs=2, last_init_std=0.5))
    assert not torch.allclose(on(f2d, f3d, xyz)[1], f3d)
