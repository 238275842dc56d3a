"""Training data: RGB-D frames with per-pixel ground truth, turned into batches of encoder input + targets.

Each training sample is one frame (the node segments single frames, so training does too). Batch ``i`` is a
pure function of ``(seed, rank, i)`` (frame choice and augmentation), which makes a killed-and-resumed run replay
exactly the batches an uninterrupted one would see.

The merge stage (S3) trains on frame pairs: ``batch_size // 2`` anchor frames, each followed by a partner
frame of the same scene at most ``pair_gap`` frames away, both under one world rotation and scale (as one
session's frames share one world frame). Ground-truth instance ids name the same object in every frame of a
scene: the synthetic rooms number their objects once per room, and ScanNet's ``instance-filt`` images carry
the scene's object ids (the ``objectId`` of its aggregation), so a pair's common ids are its common objects.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from ..config import configclass, spec
from ..data.frame import Frame
from ..data.synthetic.stream import RoomStream, StreamConfig
from ..data.scannet.classes import STUFF_CLASSES, index_lookup
from ..losses.criterion import Targets
from ..models.bifusion import BiFusionConfig, EncoderInput, batch_superpoints, frames_to_input

log = logging.getLogger(__name__)


@configclass
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
        pair_gap: in the merge stage, a partner frame is at most this many frames (of the pool: rendered
            synthetic frames, or ScanNet frames after ``frame_skip``) away from its anchor, in the same scene.
        stream: synthetic training rooms as a stream that does not run out (``stream.rooms > 0``: that many
            rooms live, ``stream.renew`` new ones per step, :mod:`~bifusion_core.data.synthetic.stream`) instead
            of the fixed ``scenes`` rooms; validation keeps its fixed held-out rooms.
    """

    source: str = spec("synthetic", choices=("synthetic", "scannet"))
    root: str | None = None
    val_root: str | None = None
    scenes: int = spec(8, ge=1)
    val_scenes: int = spec(2, ge=0)
    frames_per_scene: int = spec(30, ge=1)
    val_frames_per_scene: int = spec(6, ge=1)
    frame_skip: int = spec(10, ge=1)
    width: int = spec(320, ge=16)
    height: int = spec(240, ge=16)
    seed: int = spec(0, ge=0)
    batch_size: int = spec(8, ge=1)
    yaw: bool = True
    scale: tuple[float, float] = spec((0.9, 1.1), gt=0)
    colour_jitter: float = spec(0.1, ge=0)
    crop_size: float | None = spec(None, gt=0)
    crop_min_points: int = spec(500, ge=0)
    pair_gap: int = spec(5, ge=1)
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        if self.stream.rooms and self.source != "synthetic":
            raise ValueError("data.stream is for synthetic rooms: set data.stream.rooms = 0 with data.source "
                             f"{self.source!r}")
        if self.source == "scannet" and not self.root:
            raise ValueError("data.source 'scannet' needs data.root (exported ScanNet frames)")
        if not self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale range must be 0 < lo <= hi, got {self.scale}")


def training_pool(cfg: DataConfig, split: str, rank: int = 0) -> "FramePool | RoomStream":
    """The frames of ``split`` (``train`` / ``val``): a :class:`RoomStream` for training with
    ``cfg.stream.rooms > 0``, else a :class:`FramePool`. Either answers ``at(step)`` with the items of that step."""
    if split == "train" and cfg.stream.rooms:
        from ..data.synthetic import CameraConfig

        return RoomStream(cfg.stream, cfg.frames_per_scene, CameraConfig.scaled(cfg.width, cfg.height),
                          cfg.seed, rank)
    return FramePool(cfg, split)


class FramePool:
    """Frames addressed by index; synthetic frames are rendered on first use and cached.

    Items are added scene by scene: ``scene_of[i]`` is item ``i``'s scene (0, 1, ... in order) and
    ``frame_of[i]`` its frame index within that scene's frames (``(len(pool),)`` int64 arrays)."""

    def __init__(self, cfg: DataConfig, split: str):
        self.cfg = cfg
        self._items: list = []
        scenes: list[int] = []
        frames_in: list[int] = []
        if cfg.source == "synthetic":
            from ..data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence

            cam = CameraConfig.scaled(cfg.width, cfg.height)
            n_scenes = cfg.scenes if split == "train" else cfg.val_scenes
            n_frames = cfg.frames_per_scene if split == "train" else cfg.val_frames_per_scene
            first = cfg.seed if split == "train" else cfg.seed + 100_000  # held-out rooms never overlap
            for k in range(n_scenes):
                seq = SyntheticSequence(first + k, SequenceConfig(n_frames=n_frames, camera=cam))
                self._items += [(seq.frame, i) for i in range(n_frames)]
                scenes += [k] * n_frames
                frames_in += list(range(n_frames))
        else:
            from ..data.scannet.frames import FrameReaderConfig, ScanNetFrames, list_scenes

            root = cfg.root if split == "train" else (cfg.val_root or cfg.root)
            for k, scene in enumerate(list_scenes(root)):
                frames = ScanNetFrames(scene, FrameReaderConfig(frame_step=cfg.frame_skip,
                                                                max_frames=cfg.frames_per_scene))
                self._items += [(frames.__getitem__, i) for i in range(len(frames))]
                scenes += [k] * len(frames)
                frames_in += list(range(len(frames)))
        if not self._items and split == "train":
            raise ValueError(f"no training frames found ({cfg.source})")
        self.scene_of = np.asarray(scenes, np.int64)
        self.frame_of = np.asarray(frames_in, np.int64)
        self.get = lru_cache(maxsize=4096)(self._load)

    def __len__(self) -> int:
        return len(self._items)

    def at(self, step: int) -> "FramePool":
        """The pool at training step ``step``: a fixed pool is the same at every step."""
        return self

    def partners(self, i: int, gap: int) -> np.ndarray:
        """Items of item ``i``'s scene whose frame index differs from its own by 1 to ``gap``: ``(P,)`` int64."""
        d = np.abs(self.frame_of - self.frame_of[i])
        return np.nonzero((self.scene_of == self.scene_of[i]) & (d >= 1) & (d <= gap))[0]

    def _load(self, i: int) -> Frame:
        read, j = self._items[i]
        return read(j)


def _rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    r = np.eye(4)
    r[:2, :2] = [[c, -s], [s, c]]
    return r


def draw_world_transform(rng: np.random.Generator, cfg: DataConfig) -> tuple[float | None, float]:
    """``(yaw radians or None without yaw augmentation, scale)`` for :func:`augment`."""
    yaw = rng.uniform(0, 2 * np.pi) if cfg.yaw else None
    return yaw, rng.uniform(*cfg.scale)


def augment(frame: Frame, rng: np.random.Generator, cfg: DataConfig,
            world: tuple[float | None, float] | None = None) -> Frame:
    """World rotation about z and uniform scale (rigid for the camera, so depth and pose stay consistent) and
    brightness jitter. ``world``: a ``(yaw, scale)`` from :func:`draw_world_transform` to apply (frames of one
    pair share it); None: drawn here."""
    pose = frame.pose.copy()
    depth = frame.depth
    yaw, s = world if world is not None else draw_world_transform(rng, cfg)
    if yaw is not None:
        pose = _rot_z(yaw) @ pose
    if s != 1.0:
        depth = depth * np.float32(s)
        pose[:3, 3] *= s
    rgb = frame.rgb
    if cfg.colour_jitter > 0:
        gain = 1.0 + rng.uniform(-cfg.colour_jitter, cfg.colour_jitter)
        rgb = np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return dataclasses.replace(frame, rgb=rgb, depth=depth, pose=pose)


@dataclass
class Batch:
    """``inp`` and per-point ``targets``; ``frames`` the (augmented) frames of its samples; ``items`` their pool
    indices; ``pairs``: samples ``2k`` and ``2k+1`` are a frame pair of one scene (merge stage)."""

    inp: EncoderInput
    targets: Targets
    frames: list[Frame] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    pairs: bool = False


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


def make_batch(frames: list[Frame], model_cfg: BiFusionConfig, lut: np.ndarray, stuff: tuple[int, ...],
               rng: np.random.Generator | None = None, crop_size: float | None = None,
               crop_min_points: int = 0) -> Batch:
    """Frames -> encoder input (with superpoints) and per-point targets read at each point's pixel.

    ``rng`` drives the random parts (subsampling to ``frame.max_points``, the crop): a batch is a pure function
    of it (``None``: a fixed seed). ``crop_size`` cuts each sample to a square crop (see :func:`crop_keep`)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    inp = frames_to_input([(f.rgb, f.depth, f.intrinsics, f.pose) for f in frames], model_cfg.frame,
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
    """Batch ``step`` = frames chosen (among ``pool.at(step)``'s items) and augmented by
    ``default_rng([seed, rank, step])``; with ``pairs``
    (the merge stage), ``max(1, batch_size // 2)`` anchor frames (distinct, among those with a partner) each
    followed by a partner drawn from :meth:`FramePool.partners` within ``pair_gap``, one world transform per
    pair."""

    def __init__(self, pool: "FramePool | RoomStream", cfg: DataConfig, model_cfg: BiFusionConfig,
                 class_names: list[str], rank: int = 0):
        self.pool, self.cfg, self.model_cfg = pool, cfg, model_cfg
        self.lut = index_lookup(class_names)
        self.stuff = tuple(i for i, n in enumerate(class_names) if n in STUFF_CLASSES)
        self.rank = rank
        self._with_partner: np.ndarray | None = None  # items that have a partner (cached on first pair batch)

    def batch(self, step: int, augment_frames: bool = True, pairs: bool = False) -> Batch:
        rng = np.random.default_rng([self.cfg.seed, self.rank, step])
        pool = self.pool.at(step)
        if pairs:
            return self._pair_batch(pool, rng, augment_frames)
        idx = rng.choice(len(pool), size=min(self.cfg.batch_size, len(pool)), replace=False)
        frames = [pool.get(int(i)) for i in idx]
        if augment_frames:
            frames = [augment(f, rng, self.cfg) for f in frames]
        crop = self.cfg.crop_size if augment_frames else None  # validation sees whole frames, as the node does
        b = make_batch(frames, self.model_cfg, self.lut, self.stuff, rng, crop, self.cfg.crop_min_points)
        b.items = [int(i) for i in idx]
        return b

    def _pair_batch(self, pool, rng: np.random.Generator, augment_frames: bool) -> Batch:
        gap = self.cfg.pair_gap
        if self._with_partner is None:  # the same items at every step (a stream renews rooms, not its layout)
            self._with_partner = np.array([i for i in range(len(pool)) if len(pool.partners(i, gap))], np.int64)
        anchors_ok = self._with_partner
        if len(anchors_ok) == 0:
            raise ValueError(f"no frame has a partner within data.pair_gap = {gap} frames of its scene: the merge "
                             "stage needs scenes of at least 2 frames")
        n_pairs = min(max(1, self.cfg.batch_size // 2), len(anchors_ok))
        anchors = rng.choice(anchors_ok, size=n_pairs, replace=False)
        items = []
        for a in anchors:
            items += [int(a), int(rng.choice(pool.partners(int(a), gap)))]
        frames = [pool.get(i) for i in items]
        if augment_frames:
            out = []
            for k in range(0, len(frames), 2):
                world = draw_world_transform(rng, self.cfg)
                out += [augment(f, rng, self.cfg, world) for f in frames[k:k + 2]]
            frames = out
        crop = self.cfg.crop_size if augment_frames else None
        b = make_batch(frames, self.model_cfg, self.lut, self.stuff, rng, crop, self.cfg.crop_min_points)
        b.items, b.pairs = items, True
        return b
