"""MinkowskiEngine 0.5.4 backend (optional; ``make minkowski`` builds and installs it).

Our layers keep their own parameters (canonical kernel order); this backend permutes the kernel to
MinkowskiEngine's order and runs its convolution functions on its coordinate manager, so the same
weights run under either backend.
"""
from __future__ import annotations

import collections
import collections.abc
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from .coords import check_coords, pack_keys
from .tensor import SparseTensor


def import_minkowski():
    """Import MinkowskiEngine. It still uses ``collections.Sequence`` (gone in Python 3.10+), so the alias
    is restored first. Raises ``ImportError`` saying how to install it."""
    if not hasattr(collections, "Sequence"):
        collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():  # "compiled with CPU_ONLY": expected for the CPU wheel
            warnings.filterwarnings("ignore", message=".*CPU_ONLY.*")
            import MinkowskiEngine as ME  # noqa: N814
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(
            "MinkowskiEngine is not installed; run `make minkowski` to build a CPU wheel "
            "(cached in ~/.cache/bifusion/wheels) or use backend='torch'"
        ) from exc
    return ME


def to_minkowski_kernel(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``(K, Cin, Cout)`` canonical order (z fastest) -> MinkowskiEngine's order (x fastest)."""
    k = kernel_size
    ci, co = kernel.shape[1], kernel.shape[2]
    return kernel.reshape(k, k, k, ci, co).permute(2, 1, 0, 3, 4).reshape(k**3, ci, co)


@dataclass
class MinkowskiContext:
    manager: Any
    keys: dict[int, Any] = field(default_factory=dict)
    coords: dict[int, torch.Tensor] = field(default_factory=dict)


class MinkowskiBackend:
    name = "minkowski"

    def __init__(self):
        self.ME = import_minkowski()
        from MinkowskiEngineBackend import _C  # installed with MinkowskiEngine

        self._C = _C
        self._generators: dict[tuple, Any] = {}

    def from_voxels(self, coords: torch.Tensor, feats: torch.Tensor) -> tuple[SparseTensor, torch.Tensor]:
        """Wrap unique voxel coordinates; returns the tensor and, for each input voxel, its row in it."""
        ME = self.ME
        check_coords(coords)
        coords = coords.to(torch.int32)
        manager = ME.CoordinateManager(D=3, coordinate_map_type=ME.CoordinateMapType.CUDA
                                       if coords.is_cuda else ME.CoordinateMapType.CPU)
        st = ME.SparseTensor(feats, coordinates=coords, coordinate_manager=manager,
                             quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE)
        ctx = MinkowskiContext(manager)
        ctx.keys[1] = st.coordinate_map_key
        me_coords = st.C
        ctx.coords[1] = me_coords
        # row of each of our voxels in MinkowskiEngine's order (it may reorder on insertion)
        me_keys, me_order = torch.sort(pack_keys(me_coords))
        rows = me_order[torch.searchsorted(me_keys, pack_keys(coords))]
        if not torch.equal(me_coords[rows], coords):
            raise RuntimeError("MinkowskiEngine changed the voxel coordinates on insertion")
        return SparseTensor(me_coords, st.F, 1, ctx, self.name), rows

    def _generator(self, kernel_size: int, stride: int, tensor_stride: int, transposed: bool):
        key = (kernel_size, stride, tensor_stride, transposed)
        if key not in self._generators:
            self._generators[key] = self.ME.KernelGenerator(kernel_size=kernel_size, stride=stride, dilation=1,
                                                            dimension=3)
        return self._generators[key]

    def conv(self, x: SparseTensor, kernel: torch.Tensor, kernel_size: int, stride: int, transposed: bool) -> SparseTensor:
        ME = self.ME
        ctx: MinkowskiContext = x.ctx
        gen = self._generator(kernel_size, stride, x.stride, transposed)
        if transposed:
            out_stride = x.stride // stride
            fn = ME.MinkowskiConvolutionTransposeFunction()
        else:
            out_stride = x.stride * stride
            fn = ME.MinkowskiConvolutionFunction()
        out_key = ctx.keys.get(out_stride)
        if out_key is None:
            out_key = self._C.CoordinateMapKey(4)  # let MinkowskiEngine create the strided coordinates
        feats = fn.apply(x.feats.contiguous(), to_minkowski_kernel(kernel, kernel_size), gen,
                         self._C.ConvolutionMode.DEFAULT, ctx.keys[x.stride], out_key, ctx.manager)
        if out_stride not in ctx.keys:
            ctx.keys[out_stride] = out_key
            ctx.coords[out_stride] = ctx.manager.get_coordinates(out_key)
        return SparseTensor(ctx.coords[out_stride], feats, out_stride, ctx, self.name)
