"""Every sparse op against a dense conv3d / conv_transpose3d reference: values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from bifusion_core.sparse import SparseConv3d, cat, get_backend
from bifusion_core.sparse.coords import pack_keys

torch.manual_seed(0)


def random_coords(n_batch=2, extent=8, density=0.3, lo=-4, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(n_batch):
        occ = torch.rand(extent, extent, extent, generator=g) < density
        xyz = occ.nonzero() + lo
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), b), xyz], 1))
    return torch.cat(rows).to(torch.int32)


def to_dense(coords, feats, lo, extent, n_batch, scale=1):
    dense = feats.new_zeros(n_batch, feats.shape[1], extent, extent, extent)
    idx = (coords[:, 1:].long() - lo) // scale
    dense[coords[:, 0].long(), :, idx[:, 0], idx[:, 1], idx[:, 2]] = feats
    return dense


def read_dense(dense, coords, lo, scale=1):
    idx = (coords[:, 1:].long() - lo) // scale
    return dense[coords[:, 0].long(), :, idx[:, 0], idx[:, 1], idx[:, 2]]


def dense_weight(kernel, k):
    # (K, Cin, Cout) canonical -> conv3d (Cout, Cin, k, k, k)
    return kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2]).permute(4, 3, 0, 1, 2)


def make_input(coords, cin, backend="torch"):
    feats = torch.randn(coords.shape[0], cin, dtype=torch.float64, requires_grad=True)
    x, rows = get_backend(backend).from_voxels(coords, feats)
    return x, feats


@pytest.fixture(params=["gather_scatter", "im2col"])
def formulation(request, monkeypatch):
    """Both exact formulations of the submanifold convolution (chosen by input width)."""
    import bifusion_core.sparse.torch_backend as tb

    monkeypatch.setattr(tb, "IM2COL_MAX_CHANNELS", 0 if request.param == "gather_scatter" else 1 << 30)
    monkeypatch.setattr(tb, "IM2COL_MIN_OUT_CHANNELS", 0)
    monkeypatch.setattr(tb, "IM2COL_INFERENCE_MAX_CHANNELS", 0 if request.param == "gather_scatter" else 1 << 30)
    return request.param


@pytest.mark.parametrize("k", [3, 5])
def test_submanifold_conv_matches_dense(k, formulation):
    coords = random_coords()
    x, feats = make_input(coords, 4)
    conv = SparseConv3d(4, 6, kernel_size=k).double()
    y = conv(x)
    assert torch.equal(y.coords, x.coords)
    gy = torch.randn_like(y.feats)
    (y.feats * gy).sum().backward()

    feats_d = feats.detach().clone().requires_grad_(True)
    w_d = conv.kernel.detach().clone().requires_grad_(True)
    dense = F.conv3d(to_dense(coords, feats_d, -4, 8, 2), dense_weight(w_d, k), padding=k // 2)
    ref = read_dense(dense, coords, -4)
    (ref * gy).sum().backward()
    torch.testing.assert_close(y.feats, ref)
    torch.testing.assert_close(feats.grad, feats_d.grad)
    torch.testing.assert_close(conv.kernel.grad, w_d.grad)


def test_downsample_conv_matches_dense():
    coords = random_coords(lo=-4)
    x, feats = make_input(coords, 3)
    conv = SparseConv3d(3, 5, kernel_size=2, stride=2).double()
    y = conv(x)
    assert y.stride == 2
    assert (y.coords[:, 1:] % 2 == 0).all()
    # output sites = every 2x2x2 block with at least one input
    parents = torch.unique(pack_keys(torch.cat([coords[:, :1], torch.div(coords[:, 1:], 2, rounding_mode="floor") * 2], 1)))
    assert torch.equal(torch.sort(pack_keys(y.coords)).values, parents)
    gy = torch.randn_like(y.feats)
    (y.feats * gy).sum().backward()

    feats_d = feats.detach().clone().requires_grad_(True)
    w_d = conv.kernel.detach().clone().requires_grad_(True)
    dense = F.conv3d(to_dense(coords, feats_d, -4, 8, 2), dense_weight(w_d, 2), stride=2)
    ref = read_dense(dense, y.coords, -4, scale=2)
    (ref * gy).sum().backward()
    torch.testing.assert_close(y.feats, ref)
    torch.testing.assert_close(feats.grad, feats_d.grad)
    torch.testing.assert_close(conv.kernel.grad, w_d.grad)


def test_submanifold_at_stride_two_matches_dense_on_coarse_grid(formulation):
    coords = random_coords(extent=8, density=0.5)
    x, _ = make_input(coords, 3)
    down = SparseConv3d(3, 3, kernel_size=2, stride=2).double()
    xs = down(x)
    feats2 = xs.feats.detach().requires_grad_(True)
    xs2 = xs.replace(feats2)
    conv = SparseConv3d(3, 4, kernel_size=3).double()
    y = conv(xs2)
    dense = F.conv3d(to_dense(xs.coords, feats2.detach(), -4, 4, 2, scale=2), dense_weight(conv.kernel.detach(), 3), padding=1)
    torch.testing.assert_close(y.feats, read_dense(dense, xs.coords, -4, scale=2))


def test_transposed_conv_matches_dense():
    coords = random_coords(lo=-4)
    x, _ = make_input(coords, 3)
    coarse = SparseConv3d(3, 4, kernel_size=2, stride=2).double()(x)
    cf = coarse.feats.detach().clone().requires_grad_(True)
    up = SparseConv3d(4, 5, kernel_size=2, stride=2, transposed=True).double()
    y = up(coarse.replace(cf))
    assert y.stride == 1 and torch.equal(y.coords, x.coords)
    gy = torch.randn_like(y.feats)
    (y.feats * gy).sum().backward()

    cf_d = cf.detach().clone().requires_grad_(True)
    w_d = up.kernel.detach().clone().requires_grad_(True)
    w_t = w_d.reshape(2, 2, 2, 4, 5).permute(3, 4, 0, 1, 2)  # (Cin, Cout, 2, 2, 2)
    dense = F.conv_transpose3d(to_dense(coarse.coords, cf_d, -4, 4, 2, scale=2), w_t, stride=2)
    ref = read_dense(dense, coords, -4)
    (ref * gy).sum().backward()
    torch.testing.assert_close(y.feats, ref)
    torch.testing.assert_close(cf.grad, cf_d.grad)
    torch.testing.assert_close(up.kernel.grad, w_d.grad)


def test_pointwise_conv_and_bias_match_linear():
    coords = random_coords()
    x, feats = make_input(coords, 4)
    conv = SparseConv3d(4, 3, kernel_size=1, bias=True).double()
    torch.nn.init.normal_(conv.bias)
    y = conv(x)
    ref = F.conv3d(to_dense(coords, feats, -4, 8, 2), conv.kernel.t()[:, :, None, None, None], conv.bias[0])
    torch.testing.assert_close(y.feats, read_dense(ref, coords, -4))


def test_cat_requires_same_coordinates():
    coords = random_coords()
    x, _ = make_input(coords, 2)
    y = SparseConv3d(2, 3, kernel_size=2, stride=2).double()(x)
    assert cat(x, x).channels == 4
    with pytest.raises(ValueError, match="same coordinates"):
        cat(x, y)


def test_conv_rejects_wrong_channel_count():
    x, _ = make_input(random_coords(), 2)
    with pytest.raises(ValueError, match="channels"):
        SparseConv3d(3, 3).double()(x)


@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (5, 1), (3, 4)])
def test_dense_grid_and_binary_search_neighbour_maps_agree(monkeypatch, kernel_size, stride):
    """The submanifold map by dense-grid lookup (small boxes) and by binary search of sorted keys (the fallback
    for boxes beyond DENSE_LOOKUP_CELLS) pair exactly the same rows through the same offsets."""
    import bifusion_core.sparse.torch_backend as tb

    coords = random_coords(n_batch=3, extent=10, density=0.35, lo=-6, seed=3)
    coords[:, 1:] *= stride  # coordinates of a stride-s tensor are multiples of s

    def triples(cells):
        monkeypatch.setattr(tb, "DENSE_LOOKUP_CELLS", cells)
        ctx = tb.TorchContext()
        ctx.coords[stride] = coords
        km = tb._submanifold_map(ctx, stride, kernel_size)
        in_idx, out_idx, ptr = km.pairs()
        k = torch.repeat_interleave(torch.arange(len(ptr) - 1), torch.diff(torch.tensor(ptr)))
        return sorted(zip(k.tolist(), in_idx.tolist(), out_idx.tolist())), ptr, km.table()

    dense, ptr_d, table_d = triples(1 << 24)
    search, ptr_s, table_s = triples(0)
    assert dense == search and ptr_d == ptr_s and torch.equal(table_d, table_s)
    assert len(dense) > coords.shape[0] // 2  # neighbours were found (the centre offset is not stored)
    # the im2col table holds the same pairs, plus the centre, and the zero row where there is no neighbour
    m, volume = coords.shape[0], kernel_size**3
    t = table_d.view(m, volume)
    assert torch.equal(t[:, volume // 2], torch.arange(m))
    o, kk = (t < m).nonzero(as_tuple=True)
    from_table = sorted((a, b, c) for a, b, c in zip(kk.tolist(), t[o, kk].tolist(), o.tolist()) if a != volume // 2)
    assert from_table == dense


def test_binary_search_fallback_matches_dense_conv3d(monkeypatch, formulation):
    import bifusion_core.sparse.torch_backend as tb

    monkeypatch.setattr(tb, "DENSE_LOOKUP_CELLS", 0)
    test_submanifold_conv_matches_dense(3, formulation)
    test_submanifold_at_stride_two_matches_dense_on_coarse_grid(formulation)


def test_formulation_follows_autograd_and_size_and_both_agree(monkeypatch):
    """Inference (no autograd) takes im2col up to IM2COL_INFERENCE_MAX_CHANNELS inputs and IM2COL_MAX_ELEMENTS
    gathered entries; training takes gather-GEMM-scatter; the results agree."""
    import bifusion_core.sparse.torch_backend as tb

    used = []
    real = tb._apply
    monkeypatch.setattr(tb, "_apply", lambda fn, *a: used.append(fn.__name__) or real(fn, *a))
    coords = random_coords()
    x, feats = make_input(coords, 8)
    conv = SparseConv3d(8, 6, kernel_size=3).double()
    train = conv(x).feats
    with torch.no_grad():
        infer = conv(x).feats
        monkeypatch.setattr(tb, "IM2COL_MAX_ELEMENTS", coords.shape[0] * 27 * 8 - 1)  # one entry too many
        capped = conv(x).feats
        monkeypatch.setattr(tb, "IM2COL_MAX_ELEMENTS", 1 << 26)
        wide = SparseConv3d(65, 6, kernel_size=3).double()(get_backend("torch").from_voxels(
            coords, torch.randn(coords.shape[0], 65, dtype=torch.float64))[0])
    assert used == ["GatherMatmulScatter", "Im2colConv", "GatherMatmulScatter", "GatherMatmulScatter"]
    torch.testing.assert_close(infer, train.detach())
    torch.testing.assert_close(capped, train.detach())
    assert wide.feats.shape == (coords.shape[0], 6)
