"""bfloat16 on the CPU: row-bucketed products (bifusion_core.precision) and the torch sparse backend under bf16
autocast, against float64 dense ``conv3d`` / ``conv_transpose3d`` on the same bf16-rounded inputs."""
import pytest
import torch
import torch.nn.functional as F

from bifusion_core import precision
from bifusion_core.sparse import SparseConv3d, get_backend

from test_sparse_ops import dense_weight, random_coords, read_dense, to_dense


def test_row_buckets_cover_the_rows_with_little_padding_and_repeat_across_frames():
    for m in list(range(1, 3000)) + list(range(14_000, 20_000, 7)) + [1 << 20, (1 << 20) + 1]:
        b = precision.row_bucket(m)
        assert m <= b <= max(m + precision.MIN_BUCKET, m * 9 // 8 + 1), (m, b)
        assert precision.row_bucket(b) == b  # a bucket is its own bucket
    assert precision.row_bucket(0) == 0
    # a node's frames (15k-19k points) fall into a handful of shapes, so each GEMM shape compiles once
    assert len({precision.row_bucket(m) for m in range(15_000, 19_000)}) <= 6


def test_bucketed_products_are_the_plain_ones_in_bf16_and_untouched_in_fp32():
    g = torch.Generator().manual_seed(0)
    a, w, bias = torch.randn(1000, 64, generator=g), torch.randn(32, 64, generator=g), torch.randn(32, generator=g)
    assert torch.equal(precision.linear(a, w, bias), F.linear(a, w, bias))  # fp32: the plain op
    assert torch.equal(precision.mm(a, w.t()), a @ w.t())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = precision.linear(a, w, bias)
        ref = F.linear(a, w, bias)
        prod = precision.mm(a, w.t())
    assert out.shape == (1000, 32) and out.dtype == torch.bfloat16 and out.is_contiguous()
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=5e-2)
    torch.testing.assert_close(prod.float(), (a.bfloat16() @ w.t().bfloat16()).float(), rtol=1e-2, atol=5e-2)
    with torch.autocast("cpu", dtype=torch.float16):  # only bf16 is bucketed
        assert precision.cpu_lowp_dtype(a) is None
    p = precision.padded(a, torch.bfloat16)  # cast and zero rows up to the bucket in one pass
    assert p.shape == (precision.row_bucket(1000), 64) and p.dtype == torch.bfloat16
    assert torch.equal(p[:1000], a.bfloat16()) and not p[1000:].any()


def _rounded(t):
    return t.detach().bfloat16().double()


def _rel(a, b):
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


@pytest.fixture(params=["one_chunk", "chunks"])
def chunking(request, monkeypatch):
    """The chunked im2col of bf16 convolutions with one chunk, and with several (the last one short)."""
    import bifusion_core.sparse.torch_backend as tb

    if request.param == "chunks":
        monkeypatch.setattr(tb, "IM2COL_CHUNK_ELEMENTS", 1 << 10)  # 256-row chunks (the smallest bucket)
    return request.param


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("grad", [False, True])
def test_bf16_submanifold_conv_is_fp32_out_and_matches_dense_on_rounded_inputs(chunking, grad, k):
    """Values and both gradients (the input gradient computed as a convolution with the mirrored kernel)
    against float64 dense conv3d of the bf16-rounded inputs."""
    coords = random_coords(density=0.5)  # ~500 voxels: the bucket pads rows; "chunks": 256-row chunks
    assert precision.row_bucket(coords.shape[0]) > coords.shape[0] and coords.shape[0] % 256
    feats = torch.randn(coords.shape[0], 8, requires_grad=grad)
    x, _ = get_backend("torch").from_voxels(coords, feats)
    conv = SparseConv3d(8, 16, kernel_size=k)
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    with torch.no_grad():
        y32 = conv(get_backend("torch").from_voxels(coords, feats.detach())[0]).feats
    assert y.feats.dtype == torch.float32 and y.feats.shape == (coords.shape[0], 16)
    fd = _rounded(feats).requires_grad_(grad)
    wd = _rounded(conv.kernel).requires_grad_(grad)
    ref = read_dense(F.conv3d(to_dense(coords, fd, -4, 8, 2), dense_weight(wd, k), padding=k // 2), coords, -4)
    assert _rel(y.feats, ref) < 4e-3  # one bf16 rounding of each GEMM output
    assert not torch.equal(y.feats, y32)  # it did run in bf16
    if grad:
        gy = torch.randn_like(y.feats)
        (y.feats * gy).sum().backward()
        (ref * gy.double()).sum().backward()
        assert _rel(feats.grad, fd.grad) < 1e-2 and _rel(conv.kernel.grad, wd.grad) < 1e-2
        assert conv.kernel.grad.dtype == torch.float32 and feats.grad.dtype == torch.float32


def test_bf16_down_and_up_sampling_match_dense_on_rounded_inputs():
    coords = random_coords(density=0.5)
    feats = torch.randn(coords.shape[0], 6, requires_grad=True)
    x, _ = get_backend("torch").from_voxels(coords, feats)
    down = SparseConv3d(6, 8, kernel_size=2, stride=2)
    up = SparseConv3d(8, 4, kernel_size=2, stride=2, transposed=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coarse = down(x)
        fine = up(coarse)
    assert coarse.feats.dtype == fine.feats.dtype == torch.float32 and torch.equal(fine.coords, x.coords)
    fd, wd = _rounded(feats), _rounded(down.kernel)
    ref_c = read_dense(F.conv3d(to_dense(coords, fd, -4, 8, 2), dense_weight(wd, 2), stride=2), coarse.coords, -4, 2)
    assert _rel(coarse.feats, ref_c) < 4e-3
    cd = _rounded(coarse.feats)
    w_t = _rounded(up.kernel).reshape(2, 2, 2, 8, 4).permute(3, 4, 0, 1, 2)
    ref_f = read_dense(F.conv_transpose3d(to_dense(coarse.coords, cd, -4, 4, 2, scale=2), w_t, stride=2), coords, -4)
    assert _rel(fine.feats, ref_f) < 4e-3
    fine.feats.square().sum().backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0


def test_fp16_autocast_keeps_the_sparse_convolution_in_fp32():
    coords = random_coords(density=0.5)
    x, _ = get_backend("torch").from_voxels(coords, torch.randn(coords.shape[0], 8))
    conv = SparseConv3d(8, 16, kernel_size=3)
    with torch.no_grad():
        y32 = conv(x).feats
        with torch.autocast("cpu", dtype=torch.float16):
            y16 = conv(x).feats
    assert y16.dtype == torch.float32 and torch.equal(y16, y32)


@pytest.mark.parametrize("rows", [459, 513])
@pytest.mark.parametrize("chunk_elements", [None, 1 << 10])
def test_stale_scratch_memory_never_reaches_a_bf16_output(monkeypatch, chunk_elements, rows):
    """oneDNN's bf16 GEMM lets a NaN in one row of a matrix spoil another row's output (measured: 459 valid rows
    of 512, or 513 of 768, then NaN rows: the last valid row comes out NaN), so the rows that pad a chunk up to
    its bucket must be zeroed, not left as whatever the buffer held: with every scratch buffer
    handed out full of NaN, values and gradients stay finite and equal to those from clean buffers."""
    import bifusion_core.sparse.torch_backend as tb

    coords = random_coords(density=0.6)[:rows]  # row counts where NaN rows after them reached one of them
    feats = torch.randn(coords.shape[0], 8)
    conv = SparseConv3d(8, 16, kernel_size=3)

    def run():
        f = feats.clone().requires_grad_(True)
        x, _ = get_backend("torch").from_voxels(coords, f)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x).feats
        conv.kernel.grad = None
        y.square().sum().backward()
        return y.detach(), f.grad, conv.kernel.grad

    if chunk_elements:  # 256-row chunks, the last one short; default: one chunk padded to its bucket
        monkeypatch.setattr(tb, "IM2COL_CHUNK_ELEMENTS", chunk_elements)
    clean = run()
    monkeypatch.setattr(tb, "_scratch", lambda like, rows, cols: like.new_full((rows, cols), float("nan")))
    dirty = run()
    for a, b in zip(clean, dirty):
        assert torch.isfinite(b).all() and torch.equal(a, b)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference too (no autograd)
        y = conv(get_backend("torch").from_voxels(coords, feats)[0]).feats
    assert torch.isfinite(y).all() and torch.equal(y, clean[0])
