"""Pure-PyTorch sparse convolution backend (CPU and CUDA).

Neighbour maps come from sorted int64 coordinate keys (``searchsorted``); a convolution is, per kernel
offset, gather rows -> matmul with that offset's weight -> ``index_add`` into the output rows, with a
hand-written backward that does the same in reverse.  Maps are cached in a :class:`TorchContext` shared by
every tensor derived from one input, so the two convolutions of each residual block reuse one map.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .coords import check_coords, downsample_coords, kernel_offsets, key_delta, pack_keys
from .tensor import SparseTensor


@dataclass
class KernelMap:
    """Input/output row pairs of one convolution, grouped by kernel offset.

    ``in_idx[ptr[k]:ptr[k+1]]`` feed ``out_idx[ptr[k]:ptr[k+1]]`` through weight ``k``.  When
    ``identity == k`` that offset maps every row to itself (the centre of a submanifold kernel) and is
    computed without gather/scatter.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    ptr: list[int]
    n_out: int
    identity: int = -1

    def transposed(self, n_out: int) -> "KernelMap":
        return KernelMap(self.out_idx, self.in_idx, self.ptr, n_out, self.identity)


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


def _group_by_offset(in_idx, out_idx, k_idx, volume: int):
    order = torch.argsort(k_idx, stable=True)
    counts = torch.bincount(k_idx, minlength=volume)
    ptr = [0] + torch.cumsum(counts, 0).tolist()
    return in_idx[order], out_idx[order], ptr


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


def _submanifold_map(ctx: TorchContext, stride: int, kernel_size: int) -> KernelMap:
    coords = ctx.coords[stride]
    m = coords.shape[0]
    skeys, order = ctx.sorted_keys(stride)
    offs = kernel_offsets(kernel_size, stride, device=coords.device)
    centre = (offs == 0).all(dim=1).nonzero().item()
    others = torch.tensor([k for k in range(offs.shape[0]) if k != centre], device=coords.device)
    dense = _dense_neighbours(coords, stride, offs[others], (kernel_size - 1) // 2)
    if dense is not None:
        found = dense >= 0
        k_rows, out_rows = found.nonzero(as_tuple=True)  # sorted by k, then output row
        in_rows = dense[k_rows, out_rows].to(torch.int64)
    else:
        query = pack_keys(coords).unsqueeze(0) + key_delta(offs[others]).unsqueeze(1)  # (K-1, M)
        pos = torch.searchsorted(skeys, query).clamp_max_(m - 1)
        found = skeys[pos] == query
        k_rows, out_rows = found.nonzero(as_tuple=True)  # sorted by k, then output row
        in_rows = order[pos[k_rows, out_rows]]
    ar = torch.arange(m, device=coords.device)
    in_idx = torch.cat([ar, in_rows])
    out_idx = torch.cat([ar, out_rows])
    k_idx = torch.cat([torch.full((m,), centre, device=coords.device), others[k_rows]])
    in_idx, out_idx, ptr = _group_by_offset(in_idx, out_idx, k_idx, offs.shape[0])
    return KernelMap(in_idx, out_idx, ptr, m, identity=centre)


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
    in_idx = torch.arange(coords.shape[0], device=coords.device)
    in_idx, out_idx, ptr = _group_by_offset(in_idx, out_idx, k_idx, 8)
    return KernelMap(in_idx, out_idx, ptr, ctx.coords[out_stride].shape[0])


class GatherMatmulScatter(torch.autograd.Function):
    """``out[o] = sum_k sum_{(i,o) in map_k} feats[i] @ weight[k]`` with a hand-written backward."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        out = feats.new_zeros(kmap.n_out, weight.shape[2])
        ptr = kmap.ptr
        for k in range(weight.shape[0]):
            a, b = ptr[k], ptr[k + 1]
            if a == b:
                continue
            if k == kmap.identity:
                out += feats @ weight[k]
            else:
                rows = feats.index_select(0, kmap.in_idx[a:b])
                out.index_add_(0, kmap.out_idx[a:b], rows @ weight[k])
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        with torch.autocast(grad_out.device.type, enabled=False):  # one dtype for index_add_, as forward
            feats, weight = ctx.saved_tensors
            grad_out = grad_out.to(feats.dtype).contiguous()
            kmap: KernelMap = ctx.kmap
            need_in, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_in = torch.zeros_like(feats) if need_in else None
            grad_w = torch.zeros_like(weight) if need_w else None
            ptr = kmap.ptr
            for k in range(weight.shape[0]):
                a, b = ptr[k], ptr[k + 1]
                if a == b:
                    continue
                if k == kmap.identity:
                    if need_w:
                        grad_w[k] = feats.t() @ grad_out
                    if need_in:
                        grad_in += grad_out @ weight[k].t()
                    continue
                ii, oo = kmap.in_idx[a:b], kmap.out_idx[a:b]
                g = grad_out.index_select(0, oo)
                if need_w:
                    grad_w[k] = feats.index_select(0, ii).t() @ g
                if need_in:
                    grad_in.index_add_(0, ii, g @ weight[k].t())
            return grad_in, grad_w, None


def gather_matmul_scatter(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """:class:`GatherMatmulScatter`, run in fp32 under autocast (any device): ``index_add_`` needs one dtype,
    and fp32 accumulation keeps half-precision training stable."""
    dev = feats.device.type
    if torch.is_autocast_enabled(dev):
        with torch.autocast(dev, enabled=False):
            return GatherMatmulScatter.apply(feats.float(), kernel.float(), kmap)
    return GatherMatmulScatter.apply(feats, kernel, kmap)


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
            return x.replace(gather_matmul_scatter(x.feats, kernel, kmap))
        if kernel_size != 2 or stride != 2:
            raise NotImplementedError(f"only k2 s2 strided convolutions are supported, got k{kernel_size} s{stride}")
        if not transposed:
            kmap = ctx.down_map(x.stride)
            out_stride = 2 * x.stride
            out = gather_matmul_scatter(x.feats, kernel, kmap)
            return SparseTensor(ctx.coords[out_stride], out, out_stride, ctx, self.name)
        out_stride = x.stride // 2
        if x.stride % 2 or out_stride not in ctx.coords:
            raise ValueError(f"transposed convolution from stride {x.stride}: no coordinates at stride {out_stride}")
        kmap = ctx.down_map(out_stride).transposed(ctx.coords[out_stride].shape[0])
        out = gather_matmul_scatter(x.feats, kernel, kmap)
        return SparseTensor(ctx.coords[out_stride], out, out_stride, ctx, self.name)
