"""The BiFusion model: encoder (CLIP 2D branch, MinkUNet18A 3D branch, PE/FiLM, LiteFusionGate) and the
superpoint-query decoder with per-point semantics.

Samples (frames or scene crops) are batched as concatenated points with a per-point sample index
``batch``; B samples, N points in all, C classes.
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import precision
from ..config import configclass, spec
from ..geometry import backproject, compute_valid_mask
from ..io.class_list import check_class_names
from .clip2d import Clip2D, Clip2DConfig
from .decoder import DecoderConfig, DecoderOutput, QueryDecoder, SemanticHead, pad_superpoints
from .fusion_gate import FusionGateConfig, LiteFusionGate
from .minkunet import Backbone3D, Backbone3DConfig
from .pe_film import PEFiLM, PEFiLMConfig, superpoint_size
from .postprocess import PostprocessConfig, Segmentation, postprocess
from .superpoints import SuperpointConfig, compute_superpoints, pool_mean, superpoint_stats


@configclass
class FrameConfig:
    """How a depth frame becomes points: every ``stride``-th pixel, depth range, point cap, valid-mask eps."""

    stride: int = spec(2, ge=1)
    min_depth: float = spec(0.1, ge=0)
    max_depth: float = spec(6.0, gt=0)
    max_points: int | None = spec(80000, ge=1)
    valid_eps: float = spec(0.05, gt=0)

    def __post_init__(self) -> None:
        if not self.min_depth < self.max_depth:
            raise ValueError(f"need min_depth < max_depth, got {self.min_depth} and {self.max_depth}")


@configclass
class BiFusionConfig:
    clip: Clip2DConfig = field(default_factory=Clip2DConfig)
    backbone: Backbone3DConfig = field(default_factory=Backbone3DConfig)
    pe_film: PEFiLMConfig = field(default_factory=PEFiLMConfig)
    gate: FusionGateConfig = field(default_factory=FusionGateConfig)
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    frame: FrameConfig = field(default_factory=FrameConfig)
    class_set: str = "scannet200"           # class names come from this set unless class_names is given
    class_names: list[str] | None = None
    clip_lora_rank: int = spec(0, ge=0)     # > 0: LoRA adapters on the CLIP image tower's MLPs (stage S2)

    def __post_init__(self) -> None:
        dim = self.backbone.out_dim
        if not (self.clip.out_dim == dim == self.pe_film.feat_dim == self.gate.feat_dim == self.decoder.in_dim):
            raise ValueError("clip.out_dim, backbone.out_dim, pe_film.feat_dim, gate.feat_dim and decoder.in_dim "
                             f"must agree (got {self.clip.out_dim}, {dim}, {self.pe_film.feat_dim}, "
                             f"{self.gate.feat_dim}, {self.decoder.in_dim})")
        names = self.resolved_class_names()
        if len(names) != self.decoder.num_classes:
            raise ValueError(f"{len(names)} class names but decoder.num_classes = {self.decoder.num_classes}")
        if abs(self.pe_film.voxel_size - self.backbone.voxel_size) > 1e-12:
            raise ValueError("pe_film.voxel_size must equal backbone.voxel_size")

    def resolved_class_names(self) -> list[str]:
        if self.class_names is not None:
            return list(self.class_names)
        from ..data.scannet.classes import get_class_set

        return list(get_class_set(self.class_set).names)


@dataclass
class EncoderInput:
    """A batch of B samples.

    Attributes:
        points: ``(N, 3)`` float32 world metres (z up); colours: ``(N, 3)`` float32 [0, 1].
        uv: ``(N, 2)`` float pixel coordinates of each point in its sample's image; valid: ``(N,)`` bool.
        batch: ``(N,)`` int64 sample index; images: ``(B, H, W, 3)`` uint8; poses: ``(B, 4, 4)`` camera->world
            or None.
        superpoints: ``(N,)`` int64 superpoint ids, unique across the batch (None: none yet).
        pixels: ``(N, 2)`` int64 source pixel (frames only).
    """

    points: torch.Tensor
    colours: torch.Tensor
    uv: torch.Tensor
    valid: torch.Tensor
    batch: torch.Tensor
    images: torch.Tensor
    poses: torch.Tensor | None = None
    superpoints: torch.Tensor | None = None
    pixels: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def to(self, device) -> "EncoderInput":
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return EncoderInput(**kw)


def frames_to_input(frames, cfg: FrameConfig | None = None, sp_cfg: SuperpointConfig | None = None,
                    generator: torch.Generator | None = None) -> EncoderInput:
    """Frames ``[(rgb (H,W,3) uint8, depth (H,W), intrinsics (fx,fy,cx,cy), pose (4,4) or None), ...]`` of one
    size -> :class:`EncoderInput` (with superpoints when ``sp_cfg`` is given).

    Raises ``ValueError`` for a frame with no usable depth (it has no points), RGB/depth size mismatch, or
    frames of different sizes.
    """
    cfg = cfg or FrameConfig()
    parts, images, poses, shapes = [], [], [], set()
    for i, (rgb, depth, intr, pose) in enumerate(frames):
        bp = backproject(depth, intr, rgb=rgb, pose=pose, stride=cfg.stride, min_depth=cfg.min_depth,
                         max_depth=cfg.max_depth, max_points=cfg.max_points, generator=generator)
        if len(bp) == 0:
            raise ValueError(f"frame {i}: no valid depth reading in [{cfg.min_depth}, {cfg.max_depth}] m")
        proj = compute_valid_mask(bp.points, depth, intr, pose, eps=cfg.valid_eps)
        parts.append((bp, proj.valid, i))
        img = torch.as_tensor(np.ascontiguousarray(rgb))
        shapes.add(tuple(img.shape))
        images.append(img)
        poses.append(torch.as_tensor(np.asarray(pose if pose is not None else np.eye(4)), dtype=torch.float32))
    if len(shapes) != 1:
        raise ValueError(f"frames of one batch must share their size, got {sorted(shapes)}")
    points = torch.cat([p.points for p, _, _ in parts])
    colours = torch.cat([p.colors for p, _, _ in parts])
    pixels = torch.cat([p.pixels for p, _, _ in parts])
    valid = torch.cat([v.to(torch.bool) for _, v, _ in parts])
    batch = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for p, _, i in parts])
    inp = EncoderInput(points, colours, pixels.to(torch.float32), valid, batch, torch.stack(images),
                       torch.stack(poses), pixels=pixels)
    if sp_cfg is not None:
        inp.superpoints = batch_superpoints(inp.points, inp.colours, inp.batch, sp_cfg)
    return inp


def batch_superpoints(points, colours, batch, cfg: SuperpointConfig, masks=None) -> torch.Tensor:
    """Superpoints per sample, ids offset to be unique across the batch: ``(N,)`` int64."""
    out = torch.empty(points.shape[0], dtype=torch.int64, device=points.device)
    offset = 0
    for b in torch.unique(batch).tolist():
        sel = (batch == b).nonzero().squeeze(1)
        sp = compute_superpoints(points[sel], colours[sel], cfg, None if masks is None else masks[sel])
        out[sel] = sp.ids + offset
        offset += sp.count
    return out


@dataclass
class EncoderOutput:
    """``f2d``/``f3d``: ``(N, 256)`` unit-norm branch features (f2d zero where not valid); ``fused``:
    ``(N, 256)`` unit norm; ``alpha``: ``(N, 1)``; ``valid``: ``(N,)`` bool; ``voxel_inverse``: ``(N,)``
    point -> voxel index; ``num_voxels``."""

    f2d: torch.Tensor
    f3d: torch.Tensor
    fused: torch.Tensor
    alpha: torch.Tensor
    valid: torch.Tensor
    voxel_inverse: torch.Tensor
    num_voxels: int


class StageTimer:
    """Collects wall-clock seconds per named stage (synchronising CUDA), when enabled."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, device: torch.device | None = None):
        if not self.enabled:
            yield
            return
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        yield
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


class BiFusionEncoder(nn.Module):
    """(images, points, uv, valid, poses[, superpoints]) -> f2D, f3D, fused, α (see :class:`EncoderOutput`)."""

    def __init__(self, cfg: BiFusionConfig):
        super().__init__()
        self.clip = Clip2D(cfg.clip)
        if cfg.clip_lora_rank:
            from .lora import add_lora

            add_lora(self.clip.clip.visual, cfg.clip_lora_rank)
        self.backbone = Backbone3D(cfg.backbone)
        self.pe_film = PEFiLM(cfg.pe_film)
        self.gate = LiteFusionGate(cfg.gate)
        self.voxel_size = cfg.backbone.voxel_size

    @property
    def training_step(self) -> int:
        return int(self.gate.step)

    def set_training_step(self, step: int) -> None:
        """Drives the gate warm-up (``early_steps``)."""
        self.gate.set_step(step)

    def forward(self, inp: EncoderInput, timer: StageTimer | None = None) -> EncoderOutput:
        timer = timer or StageTimer(False)
        dev = inp.points.device
        if inp.points.shape[0] == 0:
            raise ValueError("empty input: no points")
        with timer("clip", dev):
            tokens = self.clip.dense_tokens(inp.images.permute(0, 3, 1, 2))
        with timer("project_sample", dev):
            f2d = self.clip(None, inp.uv, inp.batch, inp.valid, tokens=tokens)
        with timer("backbone", dev):  # voxelise + U-Net + head + devoxelise
            f3d, vox = self.backbone(inp.points, inp.colours, inp.batch)
        with timer("pe_film", dev):
            size = None
            if inp.superpoints is not None:
                size = superpoint_size(inp.points, inp.superpoints, self.voxel_size, inp.batch)
            f2d_m, f3d_m = self.pe_film(f2d, f3d, inp.points, inp.batch, size, inp.poses, inp.valid,
                                        num_samples=inp.num_samples)
        with timer("gate", dev):
            fused, alpha = self.gate(f2d_m, f3d_m, inp.valid, inp.batch, num_samples=inp.num_samples)
        return EncoderOutput(f2d, f3d, fused, alpha, inp.valid, vox.inverse, int(vox.coords.shape[0]))


@dataclass
class ModelOutput:
    """Encoder outputs plus ``sem_logits (N, C)``, the decoder output and per-sample superpoint data:
    ``sp_local`` list of ``(N_b,)`` local ids, ``sp_centres`` list of ``(S_b, 3)`` world centres,
    ``sample_points`` list of ``(N_b,)`` point indices into the batch."""

    enc: EncoderOutput
    sem_logits: torch.Tensor
    dec: DecoderOutput
    sp_local: list[torch.Tensor]
    sp_centres: list[torch.Tensor]
    sample_points: list[torch.Tensor]


class BiFusionModel(nn.Module):
    """Encoder + superpoint-query decoder + per-point semantic head."""

    def __init__(self, cfg: BiFusionConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or BiFusionConfig()
        self.encoder = BiFusionEncoder(cfg)
        self.decoder = QueryDecoder(cfg.decoder)
        self.sem_head = SemanticHead(cfg.backbone.out_dim, cfg.decoder.num_classes, cfg.decoder.open_vocab,
                                     cfg.decoder.temperature)
        self.class_names = cfg.resolved_class_names()

    @property
    def open_vocab(self) -> bool:
        return self.cfg.decoder.open_vocab

    def set_classes(self, names: list[str]) -> None:
        """Change the label space: any list with open-vocabulary classes; a fixed classifier only takes its
        own number of classes (a renaming)."""
        names = check_class_names(list(names) if isinstance(names, (list, tuple)) else names)
        if not self.open_vocab and len(names) != self.cfg.decoder.num_classes:
            raise ValueError(f"this checkpoint has a fixed {self.cfg.decoder.num_classes}-class classifier; "
                             f"{len(names)} names given (train with decoder.open_vocab=true for free prompts)")
        self.class_names = names

    def text_embeddings(self) -> torch.Tensor | None:
        return self.encoder.clip.encode_text(self.class_names) if self.open_vocab else None

    def forward(self, inp: EncoderInput, timer: StageTimer | None = None) -> ModelOutput:
        if inp.superpoints is None:
            raise ValueError("the decoder needs superpoints: build the input with sp_cfg or batch_superpoints()")
        timer = timer or StageTimer(False)
        enc = self.encoder(inp, timer)
        dev = inp.points.device
        # On the CPU the decoder runs in float32 under any autocast: its matrices are small, and in bf16 the
        # casts cost more than the matmuls save (demo frame: 23.6 vs 16.4 ms, post-processing 6.0 vs 4.1 ms).
        # The per-point semantic head's (N, 256) x (256, 256) projection is the exception: under bf16 autocast it
        # stays a bf16 GEMM (row-bucketed, bifusion_core.precision), 8.2 -> 1.5 ms on the demo frame.
        cpu_fp32 = torch.autocast("cpu", enabled=False) if dev.type == "cpu" else nullcontext()
        bf16 = precision.cpu_lowp_dtype(enc.fused) is not None  # before autocast is switched off below
        with timer("decoder", dev), cpu_fp32:
            if dev.type == "cpu":
                enc.fused = enc.fused.float()
            text = self.text_embeddings()
            sem_logits = self.sem_head(enc.fused, text, bf16)
            feats, centres, locals_, world_centres, idxs = [], [], [], [], []
            single = inp.num_samples == 1  # one frame (the node): every row is the sample's, no gathers
            for b in range(inp.num_samples):
                idx = torch.arange(inp.points.shape[0], device=dev) if single else (inp.batch == b).nonzero().squeeze(1)
                if idx.numel() == 0:
                    raise ValueError(f"sample {b} has no points")
                uniq, local = torch.unique(inp.superpoints if single else inp.superpoints[idx], return_inverse=True)
                s = uniq.numel()
                pts = inp.points if single else inp.points[idx]
                c, _, _ = superpoint_stats(pts, local, s)
                lo, hi = pts.min(0).values, pts.max(0).values
                centres.append((c - (lo + hi) / 2) / (hi - lo).norm().clamp_min(1e-6))
                feats.append(pool_mean(enc.fused if single else enc.fused[idx], local, s))
                locals_.append(local)
                world_centres.append(c)
                idxs.append(idx)
            x, cpad, pad = pad_superpoints(feats, centres)
            dec = self.decoder(x, cpad, pad, text)
        return ModelOutput(enc, sem_logits, dec, locals_, world_centres, idxs)

    @torch.no_grad()
    def segment(self, inp: EncoderInput, out: ModelOutput | None = None,
                cfg: PostprocessConfig | None = None) -> list[Segmentation]:
        """Post-processed :class:`Segmentation` per sample (point indices local to the sample); with a merge
        head each instance carries its query's ``(E,)`` merge embedding (``Instance.embedding``)."""
        out = out or self(inp)
        cfg = cfg or self.cfg.postprocess
        merge = out.dec.merge_embed
        segs = []
        for b, idx in enumerate(out.sample_points):
            s = out.sp_centres[b].shape[0]
            q = ~out.dec.query_pad[b]
            segs.append(postprocess(out.dec.class_logits[b][q].cpu(), out.dec.mask_logits[b][q][:, :s].cpu(),
                                    out.dec.objectness[b][q].cpu(), out.sem_logits[idx].cpu(),
                                    out.sp_local[b].cpu(), out.sp_centres[b].cpu(), inp.points[idx].cpu(),
                                    self.class_names, cfg, None if merge is None else merge[b][q].cpu()))
        return segs

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict for checkpoints: everything except a frozen CLIP tower that comes from its own weights
        file (a randomly initialised tower is kept: it cannot be rebuilt from a file; so is one with
        ``clip.embed_weights``)."""
        sd = self.state_dict()
        if not self.tower_from_file:
            return sd
        return {k: v for k, v in sd.items() if not k.startswith("encoder.clip.clip.") or ".lora_" in k}

    @property
    def tower_from_file(self) -> bool:
        """Whether the CLIP tower's weights are read from their own file (not from BiFusion checkpoints)."""
        c = self.cfg.clip
        return not c.embed_weights and (c.pretrained is not None or c.weights_path is not None)
