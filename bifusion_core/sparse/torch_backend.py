"""Pure-PyTorch sparse convolution backend (CPU and CUDA).

Neighbour maps come from a dense int32 grid of the coordinates' bounding box (binary search of sorted int64
keys when the box is too large) and are cached in a :class:`TorchContext` shared by every tensor derived from
one input, so every convolution of one stride and kernel size reuses one map, as MinkowskiEngine's
coordinate manager does. Each convolution is computed in one of three exact formulations, each with a
hand-written backward:

* submanifold, *gather-GEMM-scatter*: per kernel offset gather the input rows, multiply by that offset's
  weight, ``index_add`` into the output rows (the centre offset is a plain matmul);
* submanifold, *im2col* (few input channels): gather every output row's ``K`` neighbours (a zero row where
  there is none) into one ``(M, K*Cin)`` matrix and do one GEMM; it does up to ``K / mean neighbours`` times
  the multiply-adds but no scatter and two big operations instead of ``3K`` small ones, which wins when the
  per-operation cost dominates (the k5 stem with 3 input channels, narrow networks);
* k2 s2 down/up-sampling: every fine voxel has exactly one coarse parent and one offset (its *slot*
  ``parent * 8 + offset``), so a down-sampling is one GEMM on the fine rows copied into their slots of a
  ``(M_coarse, 8 * Cin)`` matrix, and a transposed one is one GEMM ``(M_coarse, Cin) @ (Cin, 8 * Cout)``
  read back at the slots: no scatter-add at all.

Under bfloat16 autocast (:func:`_apply`) every submanifold convolution on the CPU is instead a chunked im2col
in bf16, forward and backward (:class:`Im2colChunkedConv`), with fp32 sums and outputs and row counts
bucketed so oneDNN's per-shape kernels are compiled once (:mod:`bifusion_core.precision`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import precision
from .coords import check_coords, downsample_coords, kernel_offsets, key_delta, pack_keys
from .tensor import SparseTensor

def _no_autocast_backward(backward):
    """Run a custom backward with autocast off (the engine inherits the caller's autocast state), so its
    matmuls stay in the fp32 that its forward ran in (see :func:`_apply`)."""

    def wrapped(ctx, grad_out):
        with torch.autocast(grad_out.device.type, enabled=False):
            return backward(ctx, grad_out)

    wrapped.__doc__ = backward.__doc__
    return wrapped


IM2COL_MAX_CHANNELS = 4
IM2COL_MIN_OUT_CHANNELS = 16
"""Submanifold convolutions with at most ``IM2COL_MAX_CHANNELS`` input and at least ``IM2COL_MIN_OUT_CHANNELS``
output channels use im2col (see the module docstring): it saves the scatter of ``pairs x Cout`` values and
costs a gather of ``M x K x Cin``. Measured on the k5 stem (interleaved medians, 1 thread): 58,848 voxels,
3 -> 32 channels: forward 2.79 vs 3.12 s for the whole MinkUNet18A; 10,545 voxels, 3 -> 8 channels (width
0.25): 0.136 vs 0.122 s, so narrow outputs keep gather-GEMM-scatter."""

IM2COL_INFERENCE_MAX_CHANNELS = 64
IM2COL_MAX_ELEMENTS = 1 << 26
"""Without autograd (inference), submanifold convolutions with at most ``IM2COL_INFERENCE_MAX_CHANNELS`` input
channels use im2col as long as the gathered matrix has at most ``IM2COL_MAX_ELEMENTS`` entries (256 MB in
float32). The demo's width-0.25 U-Net on a 640x480 frame (10,545 voxels, 2 threads, interleaved medians):
forward 73 vs 107 ms; the full-width U-Net on the 58,848-voxel room: 1.09 vs 1.13 s. With autograd the
backward's scatter of the gathered gradient makes it slower (width 0.25: 0.262 vs 0.241 s forward+backward),
so training keeps gather-GEMM-scatter."""


@dataclass
class KernelMap:
    """Input/output row pairs of one convolution, grouped by kernel offset.

    ``in_idx[ptr[k]:ptr[k+1]]`` feed ``out_idx[ptr[k]:ptr[k+1]]`` through weight ``k``. ``identity``: the
    offset that maps every row to itself (the centre of a submanifold kernel); its pairs are not stored
    (its range is empty) and it is computed without gather/scatter.

    Submanifold maps also carry ``neighbours``: ``(K, M)`` int32 input row of each output row's neighbour
    per offset (-1: none), from which :meth:`table` is built for im2col; their pair lists are derived from
    it on first use (:meth:`pairs`: im2col, what inference mostly runs, never needs them). Down-sampling maps
    carry ``slot``: ``(M_fine,)`` int64 ``parent * 8 + offset`` of each fine row.
    """

    in_idx: torch.Tensor | None
    out_idx: torch.Tensor | None
    ptr: list[int] | None
    n_out: int
    n_in: int
    identity: int = -1
    neighbours: torch.Tensor | None = None
    slot: torch.Tensor | None = None
    _table: torch.Tensor | None = None

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """``(in_idx, out_idx, ptr)``, built from ``neighbours`` on first use: sorted by offset, then by
        output row."""
        if self.in_idx is None:
            k_rows, out_rows = (self.neighbours >= 0).nonzero(as_tuple=True)
            keep = k_rows != self.identity  # the centre is computed without pairs
            k_rows, out_rows = k_rows[keep], out_rows[keep]
            self.in_idx = self.neighbours[k_rows, out_rows].to(torch.int64)
            self.out_idx = out_rows
            counts = torch.bincount(k_rows, minlength=self.neighbours.shape[0])
            self.ptr = [0] + torch.cumsum(counts, 0).tolist()
        return self.in_idx, self.out_idx, self.ptr

    def table(self) -> torch.Tensor:
        """``(M * K,)`` int64: at ``o * K + k`` the input row of output row ``o``'s neighbour at offset ``k``,
        ``n_in`` (a zero row) where there is none; built on first use."""
        if self._table is None:
            t = torch.where(self.neighbours >= 0, self.neighbours, self.n_in).t()
            self._table = t.to(torch.int64, memory_format=torch.contiguous_format).view(-1)
        return self._table


@dataclass
class TorchContext:
    """Coordinates per stride and cached kernel maps for one (batched) input."""

    coords: dict[int, torch.Tensor] = field(default_factory=dict)
    _sorted: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    _maps: dict[tuple, KernelMap] = field(default_factory=dict)

    def sorted_keys(self, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        if stride not in self._sorted:
            keys = pack_keys(self.coords[stride])
            self._sorted[stride] = torch.sort(keys)
        return self._sorted[stride]

    def submanifold_map(self, stride: int, kernel_size: int) -> KernelMap:
        key = ("sub", stride, kernel_size)
        if key not in self._maps:
            self._maps[key] = _submanifold_map(self, stride, kernel_size)
        return self._maps[key]

    def down_map(self, stride: int) -> KernelMap:
        """k2 s2 map from stride ``stride`` to ``2*stride`` (creates the output coordinates)."""
        key = ("down", stride)
        if key not in self._maps:
            self._maps[key] = _down_map(self, stride)
        return self._maps[key]


DENSE_LOOKUP_CELLS = 1 << 24
"""Neighbour search through a dense int32 grid of the coordinates' bounding box (one lookup per query) when
the box, padded by the kernel radius, has at most this many cells (64 MB); beyond it, binary search of the
sorted keys. A 7 x 6.5 x 3 m room at 5 cm is 1.1 M cells."""


def _dense_neighbours(coords: torch.Tensor, stride: int, offs: torch.Tensor, radius: int) -> torch.Tensor | None:
    """``(K', M)`` int32 row of the voxel at ``coords[i] + offs[k]`` (-1: none) by dense-grid lookup, or None
    when the padded bounding box exceeds :data:`DENSE_LOOKUP_CELLS`."""
    m = coords.shape[0]
    b = coords[:, 0].to(torch.int64)
    g = torch.div(coords[:, 1:].to(torch.int64), stride, rounding_mode="floor")
    lo = g.min(0).values - radius
    dims = (g.max(0).values + radius - lo + 1).tolist()
    nb = int(b.max()) + 1
    if nb * dims[0] * dims[1] * dims[2] > DENSE_LOOKUP_CELLS:
        return None
    g = g - lo
    lin = ((b * dims[0] + g[:, 0]) * dims[1] + g[:, 1]) * dims[2] + g[:, 2]
    grid = torch.full((nb * dims[0] * dims[1] * dims[2],), -1, dtype=torch.int32, device=coords.device)
    grid[lin] = torch.arange(m, dtype=torch.int32, device=coords.device)
    o = torch.div(offs, stride, rounding_mode="floor")
    dlin = (o[:, 0] * dims[1] + o[:, 1]) * dims[2] + o[:, 2]  # padding keeps every query inside its batch's box
    return grid[lin.unsqueeze(0) + dlin.unsqueeze(1)]


def _searched_neighbours(ctx: TorchContext, stride: int, offs: torch.Tensor) -> torch.Tensor:
    """As :func:`_dense_neighbours`, by binary search of the sorted keys (any extent)."""
    coords = ctx.coords[stride]
    m = coords.shape[0]
    skeys, order = ctx.sorted_keys(stride)
    query = pack_keys(coords).unsqueeze(0) + key_delta(offs).unsqueeze(1)  # (K', M)
    pos = torch.searchsorted(skeys, query).clamp_max_(m - 1)
    return torch.where(skeys[pos] == query, order[pos].to(torch.int32), -1)


def _submanifold_map(ctx: TorchContext, stride: int, kernel_size: int) -> KernelMap:
    coords = ctx.coords[stride]
    m, dev = coords.shape[0], coords.device
    offs = kernel_offsets(kernel_size, stride, device=dev)
    volume = offs.shape[0]
    centre = volume // 2  # odd kernel, canonical C order: the middle offset is (0, 0, 0)
    others = torch.tensor([k for k in range(volume) if k != centre], device=dev)
    nbr = _dense_neighbours(coords, stride, offs[others], (kernel_size - 1) // 2)
    if nbr is None:
        nbr = _searched_neighbours(ctx, stride, offs[others])
    ar = torch.arange(m, dtype=torch.int32, device=dev).unsqueeze(0)
    neighbours = torch.cat([nbr[:centre], ar, nbr[centre:]])
    return KernelMap(None, None, None, m, m, identity=centre, neighbours=neighbours)


def _down_map(ctx: TorchContext, stride: int) -> KernelMap:
    coords = ctx.coords[stride]
    out_stride = 2 * stride
    parent = downsample_coords(coords, out_stride)
    if out_stride in ctx.coords:  # already created: look the parents up
        skeys, order = ctx.sorted_keys(out_stride)
        pos = torch.searchsorted(skeys, pack_keys(parent))
        out_idx = order[pos]
    else:
        ukeys, out_idx = torch.unique(pack_keys(parent), sorted=True, return_inverse=True)
        first = torch.full((ukeys.shape[0],), coords.shape[0], dtype=torch.int64, device=coords.device)
        first.scatter_reduce_(0, out_idx, torch.arange(coords.shape[0], device=coords.device), reduce="amin")
        ctx.coords[out_stride] = parent[first]
    rel = torch.div(coords[:, 1:] - parent[:, 1:], stride, rounding_mode="floor").to(torch.int64)
    k_idx = rel[:, 0] * 4 + rel[:, 1] * 2 + rel[:, 2]
    order = torch.argsort(k_idx, stable=True)
    ptr = [0] + torch.cumsum(torch.bincount(k_idx, minlength=8), 0).tolist()
    return KernelMap(order, out_idx[order], ptr, ctx.coords[out_stride].shape[0], coords.shape[0],
                     slot=out_idx * 8 + k_idx)


def _save(ctx, kmap: KernelMap, *tensors: torch.Tensor) -> None:
    """What a convolution's backward needs: the map and the given tensors."""
    ctx.save_for_backward(*tensors)
    ctx.kmap = kmap


def _saved(ctx, grad_out: torch.Tensor):
    """``(*saved tensors, kmap, grad_out)``, ``grad_out`` contiguous in the first saved tensor's dtype."""
    saved = ctx.saved_tensors
    return (*saved, ctx.kmap, grad_out.to(saved[0].dtype).contiguous())


class GatherMatmulScatter(torch.autograd.Function):
    """``out[o] = sum_k sum_{(i,o) in map_k} feats[i] @ weight[k]`` with a hand-written backward."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, out_dtype: torch.dtype) -> torch.Tensor:
        c = kmap.identity
        out = precision.mm(feats, weight[c]).to(out_dtype) if c >= 0 else feats.new_zeros(kmap.n_out, weight.shape[2],
                                                                                 dtype=out_dtype)
        in_idx, out_idx, ptr = kmap.pairs()
        for k in range(weight.shape[0]):  # bf16 on the CPU never comes here (TorchBackend.conv: chunked im2col)
            a, b = ptr[k], ptr[k + 1]
            if a == b:
                continue
            prod = feats.index_select(0, in_idx[a:b]) @ weight[k]
            out.index_add_(0, out_idx[a:b], prod.to(out_dtype))
        _save(ctx, kmap, feats, weight)
        return out

    @staticmethod
    @_no_autocast_backward
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight, kmap, grad_out = _saved(ctx, grad_out)
        need_in, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_in = grad_w = None
        c = kmap.identity
        if need_w:
            grad_w = torch.zeros_like(weight)
            if c >= 0:
                grad_w[c] = feats.t() @ grad_out
        acc = torch.promote_types(feats.dtype, torch.float32)  # sums over offsets in fp32 at least
        if need_in:
            grad_in = (grad_out @ weight[c].t()).to(acc) if c >= 0 else torch.zeros_like(feats, dtype=acc)
        in_idx, out_idx, ptr = kmap.pairs()
        for k in range(weight.shape[0]):
            a, b = ptr[k], ptr[k + 1]
            if a == b:
                continue
            ii, oo = in_idx[a:b], out_idx[a:b]
            g = grad_out.index_select(0, oo)
            if need_w:
                grad_w[k] = feats.index_select(0, ii).t() @ g
            if need_in:
                grad_in.index_add_(0, ii, (g @ weight[k].t()).to(acc))
        return None if grad_in is None else grad_in.to(feats.dtype), grad_w, None, None


def _im2col(feats: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """``(M_out, K * Cin)``: every output row's neighbours side by side (zeros where none)."""
    pad = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])
    return pad.index_select(0, kmap.table()).view(kmap.n_out, -1)


IM2COL_CHUNK_ELEMENTS = 1 << 23
"""bf16 inference on the CPU runs every submanifold convolution as im2col, in chunks of output rows whose
gathered matrix has at most this many entries (16 MB): a power-of-two row count, so every chunk but the last
(bucketed) has a shape that repeats (:mod:`bifusion_core.precision`), and memory stays bounded at any width.
It does ``K / mean neighbours`` times the multiply-adds of gather-GEMM-scatter but no scatter and no per-offset
fp32 copies, which is what is left to pay for once the GEMMs run in bf16 (MinkUNet18A, 58,848 voxels,
1 thread, bf16 forward: 0.92 s instead of 1.30 s with gather-GEMM-scatter)."""


def _scratch(like: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """An uninitialised ``(rows, cols)`` work buffer in ``like``'s dtype and device (one place, so the tests can
    hand out buffers full of NaN and check that none of it reaches an output)."""
    return like.new_empty(rows, cols)


def _gathered_chunks(feats: torch.Tensor, kmap: KernelMap, k: int):
    """Yield ``(start, end, cols)`` over chunks of output rows: ``cols (rows_b, k * Cin)`` holds the chunk's
    gathered neighbourhoods (:func:`_im2col`) in its first ``end - start`` rows and zeros in the rest, up to a
    power-of-two row count whose matrix has at most :data:`IM2COL_CHUNK_ELEMENTS` entries, bucketed for the last
    chunk (:mod:`bifusion_core.precision`). The padding is zeros, not stale memory: oneDNN's bf16 GEMM lets a
    NaN row spoil another row's output. ``cols`` is one buffer, overwritten by the next chunk."""
    m, cin = kmap.n_out, feats.shape[1]
    table = kmap.table()
    pad = torch.cat([feats, feats.new_zeros(1, cin)])
    rows = min(max(precision.MIN_BUCKET, 1 << max((IM2COL_CHUNK_ELEMENTS // (k * cin)).bit_length() - 1, 0)),
               precision.row_bucket(m))
    buf = _scratch(feats, rows, k * cin)
    for s in range(0, m, rows):
        e = min(m, s + rows)
        n = e - s
        nb = precision.row_bucket(n) if n < rows else rows
        torch.index_select(pad, 0, table[s * k:e * k], out=buf[:n].view(n * k, cin))
        buf[n:nb] = 0
        yield s, e, buf[:nb]


def _im2col_chunked(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, out_dtype) -> torch.Tensor:
    """``(M_out, Cout)`` im2col convolution computed over chunks of output rows (:func:`_gathered_chunks`)."""
    w2 = weight.reshape(-1, weight.shape[2])
    out = torch.empty(kmap.n_out, w2.shape[1], dtype=out_dtype, device=feats.device)
    for s, e, cols in _gathered_chunks(feats, kmap, weight.shape[0]):
        out[s:e] = (cols @ w2)[: e - s]
    return out


def _im2col_chunked_wgrad(feats: torch.Tensor, grad_out: torch.Tensor, kmap: KernelMap, k: int) -> torch.Tensor:
    """``(K * Cin, Cout)`` fp32 ``im2col(feats)^T @ grad_out`` over the chunks of :func:`_gathered_chunks`
    (the output gradient's padding rows zeroed too)."""
    acc = torch.zeros(k * feats.shape[1], grad_out.shape[1], dtype=torch.float32, device=feats.device)
    gbuf = None
    for s, e, cols in _gathered_chunks(feats, kmap, k):
        if gbuf is None:
            gbuf = _scratch(grad_out, cols.shape[0], grad_out.shape[1])
        g = gbuf[: cols.shape[0]]
        g[: e - s] = grad_out[s:e]
        g[e - s:] = 0
        acc += cols.t() @ g
    return acc


class Im2colChunkedConv(torch.autograd.Function):
    """Submanifold convolution in bf16 on the CPU (forward and backward) as chunked im2col GEMMs only: the
    input gradient is itself a submanifold convolution of the output gradient with the mirrored, transposed
    kernel (``i`` is ``o``'s neighbour at offset ``d`` exactly when ``o`` is ``i``'s at ``-d``, and offset ``K-1-k``
    is ``-`` offset ``k``), so neither direction scatters; the weight gradient sums chunk GEMMs in fp32."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, out_dtype: torch.dtype) -> torch.Tensor:
        _save(ctx, kmap, feats, weight)
        return _im2col_chunked(feats, weight, kmap, out_dtype)

    @staticmethod
    @_no_autocast_backward
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight, kmap, grad_out = _saved(ctx, grad_out)
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            mirrored = weight.flip(0).transpose(1, 2).contiguous()  # (K, Cout, Cin)
            grad_in = _im2col_chunked(grad_out, mirrored, kmap, torch.float32).to(feats.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _im2col_chunked_wgrad(feats, grad_out, kmap, weight.shape[0]).view(weight.shape).to(weight.dtype)
        return grad_in, grad_w, None, None


class Im2colConv(torch.autograd.Function):
    """Submanifold convolution as one GEMM on gathered neighbourhoods (``kmap.table``)."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, out_dtype: torch.dtype) -> torch.Tensor:
        _save(ctx, kmap, feats, weight)
        return (_im2col(feats, kmap) @ weight.reshape(-1, weight.shape[2])).to(out_dtype)

    @staticmethod
    @_no_autocast_backward
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight, kmap, grad_out = _saved(ctx, grad_out)
        grad_in = grad_w = None
        if ctx.needs_input_grad[1]:  # the gathered matrix is rebuilt rather than kept (K x the input's memory)
            grad_w = (_im2col(feats, kmap).t() @ grad_out).view_as(weight)
        if ctx.needs_input_grad[0]:
            cols = (grad_out @ weight.reshape(-1, weight.shape[2]).t()).view(-1, feats.shape[1])
            acc = torch.promote_types(feats.dtype, torch.float32)
            grad_in = feats.new_zeros(feats.shape[0] + 1, feats.shape[1], dtype=acc).index_add_(
                0, kmap.table(), cols.to(acc))[:-1].to(feats.dtype)
        return grad_in, grad_w, None, None


class DownConv(torch.autograd.Function):
    """k2 s2 down-sampling: ``out = slots(feats) @ weight.view(8 * Cin, Cout)``."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, out_dtype: torch.dtype) -> torch.Tensor:
        cin, m = feats.shape[1], kmap.n_out
        rows = precision.row_bucket(m) if precision.cpu_lowp_dtype(feats) is not None else m
        cols = feats.new_zeros(rows * 8, cin).index_copy_(0, kmap.slot, feats).view(rows, 8 * cin)
        _save(ctx, kmap, cols[:m], weight)
        return (cols @ weight.reshape(8 * cin, -1))[:m].to(out_dtype)

    @staticmethod
    @_no_autocast_backward
    def backward(ctx, grad_out: torch.Tensor):
        cols, weight, kmap, grad_out = _saved(ctx, grad_out)
        w2 = weight.reshape(cols.shape[1], -1)
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_in = (grad_out @ w2.t()).view(kmap.n_out * 8, -1).index_select(0, kmap.slot)
        if ctx.needs_input_grad[1]:
            grad_w = (cols.t() @ grad_out).view_as(weight)
        return grad_in, grad_w, None, None


class UpConv(torch.autograd.Function):
    """k2 s2 transposed convolution onto the fine rows of a down-sampling map: ``out[i] = (feats @
    weight[k_i])[parent_i]``, one GEMM ``(M_coarse, Cin) @ (Cin, 8 * Cout)`` read at the slots."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, out_dtype: torch.dtype) -> torch.Tensor:
        cout = weight.shape[2]
        wcat = weight.permute(1, 0, 2).reshape(weight.shape[1], 8 * cout)
        _save(ctx, kmap, feats, weight)
        return precision.mm(feats, wcat).view(-1, cout).index_select(0, kmap.slot).to(out_dtype)

    @staticmethod
    @_no_autocast_backward
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight, kmap, grad_out = _saved(ctx, grad_out)
        cin, cout = weight.shape[1], weight.shape[2]
        g = feats.new_zeros(feats.shape[0] * 8, cout).index_copy_(0, kmap.slot, grad_out).view(-1, 8 * cout)
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_in = g @ weight.permute(1, 0, 2).reshape(cin, 8 * cout).t()
        if ctx.needs_input_grad[1]:
            grad_w = (feats.t() @ g).view(cin, 8, cout).permute(1, 0, 2)
        return grad_in, grad_w, None, None


def _apply(fn, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """``fn.apply`` in the precision autocast asks for (any device), with float32 outputs.

    Under bfloat16 autocast the gathers and GEMMs (forward and backward) run in bf16 — several times faster
    on CPUs with AMX / AVX512-BF16 — while every sum over kernel offsets (``index_add_``) accumulates in fp32
    and the output is fp32, so batch norms and residual sums downstream see fp32 as before; one bf16
    rounding per GEMM output, as in any autocast matmul. Under float16 autocast the convolution runs in
    fp32: fp16's range is not safe for sums over up to 125 neighbours without a scaler of its own. Without
    autocast the inputs' dtype is used throughout."""
    dev = feats.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        dt = dt if dt == torch.bfloat16 else torch.float32
        with torch.autocast(dev, enabled=False):
            return fn.apply(feats.to(dt), kernel.to(dt), kmap, torch.float32)
    return fn.apply(feats, kernel, kmap, feats.dtype)


class TorchBackend:
    """Default backend: pure PyTorch, any device."""

    name = "torch"

    def from_voxels(self, coords: torch.Tensor, feats: torch.Tensor) -> tuple[SparseTensor, torch.Tensor | None]:
        """Wrap unique voxel coordinates. Returns the tensor and the row of each input voxel (None: same)."""
        check_coords(coords)
        coords = coords.to(torch.int32)
        ctx = TorchContext()
        ctx.coords[1] = coords
        return SparseTensor(coords, feats, 1, ctx, self.name), None

    def conv(self, x: SparseTensor, kernel: torch.Tensor, kernel_size: int, stride: int, transposed: bool) -> SparseTensor:
        """Sparse convolution with a ``(K, Cin, Cout)`` kernel in canonical offset order.

        Supported: submanifold (stride 1, odd kernel), down-sampling k2 s2, transposed k2 s2 onto the
        coordinates that the matching down-sampling came from.
        """
        ctx: TorchContext = x.ctx
        if stride == 1 and not transposed:
            if kernel_size % 2 == 0:
                raise NotImplementedError("stride-1 convolutions need an odd kernel size")
            kmap = ctx.submanifold_map(x.stride, kernel_size)
            cin, cout = x.channels, kernel.shape[2]
            if precision.cpu_lowp_dtype(x.feats) is not None:  # bf16 on the CPU: chunked im2col, any width
                return x.replace(_apply(Im2colChunkedConv, x.feats, kernel, kmap))
            grad = torch.is_grad_enabled() and (x.feats.requires_grad or kernel.requires_grad)
            im2col = (cin <= IM2COL_MAX_CHANNELS and cout >= IM2COL_MIN_OUT_CHANNELS) or (
                not grad and cin <= IM2COL_INFERENCE_MAX_CHANNELS
                and x.feats.shape[0] * kernel.shape[0] * cin <= IM2COL_MAX_ELEMENTS)
            fn = Im2colConv if im2col else GatherMatmulScatter
            return x.replace(_apply(fn, x.feats, kernel, kmap))
        if kernel_size != 2 or stride != 2:
            raise NotImplementedError(f"only k2 s2 strided convolutions are supported, got k{kernel_size} s{stride}")
        if not transposed:
            kmap = ctx.down_map(x.stride)
            out_stride = 2 * x.stride
            return SparseTensor(ctx.coords[out_stride], _apply(DownConv, x.feats, kernel, kmap), out_stride, ctx,
                                self.name)
        out_stride = x.stride // 2
        if x.stride % 2 or out_stride not in ctx.coords:
            raise ValueError(f"transposed convolution from stride {x.stride}: no coordinates at stride {out_stride}")
        kmap = ctx.down_map(out_stride)
        return SparseTensor(ctx.coords[out_stride], _apply(UpConv, x.feats, kernel, kmap), out_stride, ctx, self.name)
