"""ROS-free frame processor: RGB-D frame in, labelled points and instances out."""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..allocator import keep_heap_blocks
from ..data.frame import point_masks
from ..io.render import splat
from ..models.bifusion import BiFusionModel, StageTimer, batch_superpoints, frames_to_input
from ..models.checkpoint import load_model
from ..threads import ThreadGovernor, adaptive_threads_enabled
from .types import Frame, FrameResult

DEFAULT_MAX_POINTS = 200_000
"""Point cap of a frame when the checkpoint's ``frame.max_points`` is None: whatever the camera sends, one
frame's cost stays bounded."""

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo" / "synthetic_small.pt"


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return dev


def default_checkpoint() -> Path:
    if not DEMO_CHECKPOINT.is_file():
        raise FileNotFoundError(f"no checkpoint given and the shipped demo checkpoint is missing ({DEMO_CHECKPOINT})")
    return DEMO_CHECKPOINT


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU multiplies bfloat16 natively (``amx_bf16`` or ``avx512_bf16`` flags): there bf16
    autocast runs the matmuls several times faster than float32; elsewhere it is emulated and slower."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


class FrameProcessor:
    """Runs :class:`BiFusionModel` on single frames (inference mode; ``half``: fp16 autocast on CUDA, where
    the sparse convolutions stay float32; bf16 autocast on a CPU with native bf16, where they run in bf16 with
    fp32 sums and the row counts of every bf16 GEMM are bucketed, :mod:`bifusion_core.precision`).

    Bounded cost per frame, whatever the camera sends: at most ``frame.max_points`` points of the model config
    (:data:`DEFAULT_MAX_POINTS` when that is None) and a 2D tower input of at most ``clip.max_side`` pixels on
    its long side (see :class:`~bifusion_core.models.clip2d.Clip2DConfig`). Every result's outputs are checked
    for NaN/inf (:meth:`FrameResult.check_finite`) before they are returned.
    """

    def __init__(self, model: BiFusionModel, device: str | torch.device = "auto", half: bool = False,
                 adaptive_threads: bool | None = None):
        """``adaptive_threads``: run each frame on the CPU threads other processes leave free (up to
        torch's count at construction; see :mod:`bifusion_core.threads`). None: on unless the environment sets
        ``BIFUSION_ADAPTIVE_THREADS=0`` (the test suite does, so that runs it compares use one thread count)."""
        keep_heap_blocks()  # a frame's large tensors reuse the heap's pages (bifusion_core.allocator)
        self.device = pick_device(device) if isinstance(device, str) else device
        if adaptive_threads is None:
            adaptive_threads = adaptive_threads_enabled()
        self.threads = ThreadGovernor() if adaptive_threads else None
        if model.cfg.frame.max_points is None:
            model.cfg.frame.max_points = DEFAULT_MAX_POINTS
        self.model = model.to(self.device).eval()
        self.amp_dtype: torch.dtype | None = None  # autocast dtype when ``half`` applies here
        if half and self.device.type == "cuda":
            self.amp_dtype = torch.float16
        elif half and self.device.type == "cpu" and cpu_has_native_bf16():
            self.amp_dtype = torch.bfloat16
        elif half:
            log.warning("half precision needs CUDA or a CPU with native bfloat16 (AVX512-BF16 / AMX); running in "
                        "float32 on %s", self.device)
        self.half = self.amp_dtype is not None
        self.checkpoint: Path | None = None  # the file the model came from (set by from_checkpoint)

    @classmethod
    def from_checkpoint(cls, path=None, device: str = "auto", half: bool = False, classes=None,
                        voxel_size: float | None = None,
                        superpoints_from_masks: bool | None = None) -> "FrameProcessor":
        """``path`` None: the shipped demo checkpoint; ``voxel_size`` (> 0) overrides the trained voxel size;
        ``superpoints_from_masks`` (not None) the checkpoint's ``superpoints.from_masks`` (how frames with 2D
        masks get their superpoints)."""
        over = {}
        if voxel_size:
            over = {"backbone": {"voxel_size": float(voxel_size)}, "pe_film": {"voxel_size": float(voxel_size)}}
        if superpoints_from_masks is not None:
            over["superpoints"] = {"from_masks": bool(superpoints_from_masks)}
        over = over or None
        path = Path(path or default_checkpoint())
        model, _ = load_model(path, "cpu", over)
        proc = cls(model, device, half)
        proc.checkpoint = path
        if classes:
            proc.set_classes(classes)
        return proc

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    def set_classes(self, names) -> None:
        self.model.set_classes(list(names))

    def process(self, frame: Frame) -> FrameResult:
        """One frame -> :class:`FrameResult` (points in the frame's world frame).

        Raises ``ValueError`` for unusable input (size mismatch, no depth, bad pose/intrinsics), and its
        subclass :class:`~bifusion_core.pipeline.types.NonFiniteOutput` when the model's outputs are not finite.
        """
        with self.threads.work() if self.threads is not None else nullcontext():
            return self._process(frame)

    def _process(self, frame: Frame) -> FrameResult:
        t_all = time.perf_counter()
        timer = StageTimer(True)
        cfg = self.model.cfg
        with timer("backproject"):
            inp = frames_to_input([(frame.rgb, frame.depth, frame.intrinsics, frame.pose)], cfg.frame)
        with timer("superpoints"):
            masks = None if frame.masks is None else torch.from_numpy(point_masks(frame.masks, inp.pixels.numpy()))
            inp.superpoints = batch_superpoints(inp.points, inp.colours, inp.batch, cfg.superpoints, masks)
        inp = inp.to(self.device)
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.half else nullcontext()
        with torch.inference_mode():
            with amp:
                out = self.model(inp, timer)
            with timer("postprocess", self.device):  # float32: small matrices, most of it on the CPU anyway
                seg = self.model.segment(inp, out)[0]
        pts = inp.points.cpu().numpy()
        instance = seg.instance.numpy().copy()
        instance[instance < 0] = 0
        alpha = out.enc.alpha.float().squeeze(1).cpu().numpy()
        pixels = inp.pixels.cpu().numpy()
        # alpha over the image: each sampled pixel's stride x stride block
        alpha_img = splat(pixels, alpha.astype(np.float32), frame.rgb.shape[:2], cfg.frame.stride, fill=np.nan)
        timer.times["total"] = time.perf_counter() - t_all
        result = FrameResult(
            points=pts.astype(np.float32),
            colours=(inp.colours.cpu().numpy() * 255).round().astype(np.uint8),
            semantic=seg.semantic.numpy().astype(np.int64), instance=instance.astype(np.int64),
            score=seg.score.numpy().astype(np.float32), alpha=alpha.astype(np.float32), pixels=pixels,
            instances=seg.instances, class_names=self.class_names, stamp=frame.stamp, frame_id=frame.frame_id,
            timings=dict(timer.times), alpha_image=alpha_img, stride=cfg.frame.stride,
        )
        result.check_finite()
        return result
