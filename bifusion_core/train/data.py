"""Training data: RGB-D frames with per-pixel ground truth, turned into batches of encoder input + targets.

Each training sample is one frame (the node segments single frames, so training does too). Batch ``i`` is a
pure function of ``(seed, i)`` (frame choice and augmentation), which makes a killed-and-resumed run replay
exactly the batches an uninterrupted one would see.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from ..data.frame import RGBDFrame
from ..data.scannet.classes import IGNORE_INDEX, SCANNET200, STUFF_CLASSES
from ..losses.criterion import Targets
from ..models.bifusion import BiFusionConfig, EncoderInput, batch_superpoints, frames_to_input

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Attributes:
        source: ``synthetic`` (procedural rooms, rendered on the fly) or ``scannet`` (exported frames in ``root``).
        scenes / val_scenes: synthetic rooms for training / held-out validation (seeds ``seed + k``).
        frames_per_scene: frames rendered per synthetic room (or used per ScanNet scene, every ``frame_skip``).
        width / height: synthetic render size (intrinsics scale with it).
        batch_size: frames per batch (the design: 8 scene crops).
        yaw / scale / colour_jitter: augmentation (random rotation about world z, uniform scale, brightness).
        crop_size: when set, each sample is a ``crop_size`` x ``crop_size`` metre square (all heights, world xy)
            of its frame's points around a random point (the design's "scene crops"; the image stays whole, so
            every kept point keeps its pixel and 2D feature). ``None``: whole frames, as the node sees them.
        crop_min_points: a crop centre is redrawn (up to 10 times) while the crop has fewer points.
    """

    source: str = "synthetic"
    root: str | None = None
    val_root: str | None = None
    scenes: int = 8
    val_scenes: int = 2
    frames_per_scene: int = 30
    val_frames_per_scene: int = 6
    frame_skip: int = 10
    width: int = 320
    height: int = 240
    seed: int = 0
    batch_size: int = 8
    yaw: bool = True
    scale: tuple[float, float] = (0.9, 1.1)
    colour_jitter: float = 0.1
    crop_size: float | None = None
    crop_min_points: int = 500

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "scannet"):
            raise ValueError(f"data.source must be 'synthetic' or 'scannet', got {self.source!r}")
        if self.source == "scannet" and not self.root:
            raise ValueError("data.source 'scannet' needs data.root (exported ScanNet frames)")
        if min(self.scenes, self.frames_per_scene, self.batch_size) < 1 or self.val_scenes < 0:
            raise ValueError("scenes, frames_per_scene and batch_size must be >= 1 (val_scenes >= 0)")
        if self.crop_size is not None and not self.crop_size > 0:
            raise ValueError(f"data.crop_size must be positive metres or null, got {self.crop_size}")
        self.scale = tuple(self.scale)
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale range must be 0 < lo <= hi, got {self.scale}")


class FramePool:
    """Frames addressed by index; synthetic frames are rendered on first use and cached."""

    def __init__(self, cfg: DataConfig, split: str):
        self.cfg = cfg
        self._items: list = []
        if cfg.source == "synthetic":
            from ..data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence

            cam = CameraConfig.scaled(cfg.width, cfg.height)
            n_scenes = cfg.scenes if split == "train" else cfg.val_scenes
            n_frames = cfg.frames_per_scene if split == "train" else cfg.val_frames_per_scene
            first = cfg.seed if split == "train" else cfg.seed + 100_000  # held-out rooms never overlap
            for k in range(n_scenes):
                seq = SyntheticSequence(first + k, SequenceConfig(n_frames=n_frames, camera=cam))
                self._items += [(seq.frame, i) for i in range(n_frames)]
        else:
            from ..data.scannet.frames import FrameReaderConfig, ScanNetFrames, list_scenes

            root = cfg.root if split == "train" else (cfg.val_root or cfg.root)
            for scene in list_scenes(root):
                frames = ScanNetFrames(scene, FrameReaderConfig(frame_step=cfg.frame_skip,
                                                                max_frames=cfg.frames_per_scene))
                self._items += [(frames.__getitem__, i) for i in range(len(frames))]
        if not self._items and split == "train":
            raise ValueError(f"no training frames found ({cfg.source})")
        self.get = lru_cache(maxsize=4096)(self._load)

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, i: int) -> RGBDFrame:
        read, j = self._items[i]
        return read(j)


def class_lookup(class_names: list[str]) -> np.ndarray:
    """ScanNet label id -> contiguous index of ``class_names`` (``IGNORE_INDEX`` for other ids)."""
    lut = np.full(max(SCANNET200.ids) + 1, IGNORE_INDEX, np.int64)
    for idx, name in enumerate(class_names):
        if name in SCANNET200.name_to_id:
            lut[SCANNET200.name_to_id[name]] = idx
    return lut


def _rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    r = np.eye(4)
    r[:2, :2] = [[c, -s], [s, c]]
    return r


def augment(frame: RGBDFrame, rng: np.random.Generator, cfg: DataConfig) -> RGBDFrame:
    """World rotation about z and uniform scale (rigid for the camera, so depth and pose stay consistent) and
    brightness jitter."""
    pose = frame.pose.copy()
    depth = frame.depth
    if cfg.yaw:
        pose = _rot_z(rng.uniform(0, 2 * np.pi)) @ pose
    s = rng.uniform(*cfg.scale)
    if s != 1.0:
        depth = depth * np.float32(s)
        pose[:3, 3] *= s
    rgb = frame.rgb
    if cfg.colour_jitter > 0:
        gain = 1.0 + rng.uniform(-cfg.colour_jitter, cfg.colour_jitter)
        rgb = np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return RGBDFrame(rgb=rgb, depth=depth, intrinsics=frame.intrinsics, pose=pose, semantic=frame.semantic,
                     instance=frame.instance, frame_id=frame.frame_id, stamp_ns=frame.stamp_ns)


def intrinsics_tuple(K: np.ndarray) -> tuple[float, float, float, float]:
    return float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])


@dataclass
class Batch:
    inp: EncoderInput
    targets: Targets
    frames: list[RGBDFrame] = field(default_factory=list)


def crop_keep(points: np.ndarray, batch: np.ndarray, size: float, rng: np.random.Generator,
              min_points: int = 0, attempts: int = 10) -> np.ndarray:
    """``(N,)`` bool: per sample, the points in a ``size`` x ``size`` xy square (all z) centred on a random
    point of that sample; the centre is redrawn while fewer than ``min_points`` fall inside (the fullest of
    ``attempts`` draws is kept)."""
    keep = np.zeros(len(points), bool)
    half = size / 2
    for b in np.unique(batch):
        idx = np.nonzero(batch == b)[0]
        xy = points[idx, :2]
        best = None
        for _ in range(attempts):
            c = xy[rng.integers(len(idx))]
            inside = np.all(np.abs(xy - c) <= half, axis=1)
            if best is None or inside.sum() > best.sum():
                best = inside
            if best.sum() >= min_points:
                break
        keep[idx[best]] = True
    return keep


def select_points(inp: EncoderInput, keep: torch.Tensor) -> EncoderInput:
    """The per-point fields of ``inp`` restricted to ``keep`` (images and poses unchanged)."""
    per_point = ("points", "colours", "uv", "valid", "batch", "superpoints", "pixels")
    kw = {k: (v[keep] if k in per_point and v is not None else v) for k, v in inp.__dict__.items()}
    return EncoderInput(**kw)


def make_batch(frames: list[RGBDFrame], model_cfg: BiFusionConfig, lut: np.ndarray, stuff: tuple[int, ...],
               rng: np.random.Generator | None = None, crop_size: float | None = None,
               crop_min_points: int = 0) -> Batch:
    """Frames -> encoder input (with superpoints) and per-point targets read at each point's pixel.

    ``rng`` drives the random parts (subsampling to ``frame.max_points``, the crop): a batch is a pure function
    of it (``None``: a fixed seed). ``crop_size`` cuts each sample to a square crop (see :func:`crop_keep`)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    inp = frames_to_input([(f.rgb, f.depth, intrinsics_tuple(f.intrinsics), f.pose) for f in frames], model_cfg.frame,
                          generator=gen)
    if crop_size is not None:
        keep = crop_keep(inp.points.numpy(), inp.batch.numpy(), crop_size, rng, crop_min_points)
        inp = select_points(inp, torch.from_numpy(keep))
    inp.superpoints = batch_superpoints(inp.points, inp.colours, inp.batch, model_cfg.superpoints)
    sem, inst = [], []
    for b, f in enumerate(frames):
        sel = (inp.batch == b).numpy()
        u, v = inp.pixels[sel, 0].numpy(), inp.pixels[sel, 1].numpy()
        ids = f.semantic[v, u] if f.semantic is not None else np.zeros(len(u), np.int64)
        ids = np.clip(ids, 0, len(lut) - 1)
        sem.append(lut[ids])
        ins = f.instance[v, u].astype(np.int64) if f.instance is not None else np.zeros(len(u), np.int64)
        inst.append(np.where(ins > 0, ins, -1))
    targets = Targets(torch.from_numpy(np.concatenate(sem)), torch.from_numpy(np.concatenate(inst)), stuff)
    return Batch(inp, targets, frames)


class BatchSampler:
    """Batch ``step`` = frames chosen and augmented by ``default_rng([seed, step])``."""

    def __init__(self, pool: FramePool, cfg: DataConfig, model_cfg: BiFusionConfig, class_names: list[str],
                 rank: int = 0):
        self.pool, self.cfg, self.model_cfg = pool, cfg, model_cfg
        self.lut = class_lookup(class_names)
        self.stuff = tuple(i for i, n in enumerate(class_names) if n in STUFF_CLASSES)
        self.rank = rank

    def batch(self, step: int, augment_frames: bool = True) -> Batch:
        rng = np.random.default_rng([self.cfg.seed, self.rank, step])
        idx = rng.choice(len(self.pool), size=min(self.cfg.batch_size, len(self.pool)), replace=False)
        frames = [self.pool.get(int(i)) for i in idx]
        if augment_frames:
            frames = [augment(f, rng, self.cfg) for f in frames]
        crop = self.cfg.crop_size if augment_frames else None  # validation sees whole frames, as the node does
        return make_batch(frames, self.model_cfg, self.lut, self.stuff, rng, crop, self.cfg.crop_min_points)
