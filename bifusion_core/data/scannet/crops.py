"""Training crops of scenes (or single frames) with the usual point-cloud augmentations.

A crop is a ``crop_size`` x ``crop_size`` metre square (all heights) around a random point of the input,
subsampled to ``max_points``, then moved so its centre is at the xy origin (z kept: height above the floor
still means something), rotated about z, mirrored in x and/or y, scaled, and its colours jittered. Labels
become contiguous training indices of a class set (:data:`IGNORE_INDEX` = -100 outside it).

When the crop comes from an RGB-D frame it keeps the frame (untouched: colour jitter only changes the
points' colours) and every point's pixel, so 2D features can be sampled for it; ``transform`` maps the
frame's world coordinates into the crop's, so the camera pose in crop coordinates is
``transform @ frame.pose``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...config import configclass, spec
from ...geometry import backproject
from ..frame import RGBDFrame
from .classes import get_class_set
from .scene import ScenePoints


@configclass
class CropConfig:
    """Attributes:
        crop_size: side of the square crop in metres (``inf``: no cropping).
        max_points: random subsample to at most this many points.
        min_points: a crop centre is redrawn (up to ``attempts`` times) while the crop has fewer points; the
            fullest attempt is kept.
        rotate: random rotation about z, uniform in [0, 2 pi).
        flip_prob: probability of mirroring x, and independently y.
        scale: range of the uniform random scale factor.
        brightness: additive colour offset drawn from ``[-b, b]``; ``contrast``: factor ``1 + [-c, c]`` about
            the mean colour; ``colour_noise``: per-point Gaussian colour noise (all in [0, 1] units).
        classes: class set (:data:`~.classes.CLASS_SETS` name) whose contiguous indices the labels become.
        frame_stride: pixel stride when back-projecting frames.
    """

    crop_size: float = spec(3.0, gt=0, allow_inf=True)  # inf: no cropping
    max_points: int = spec(100_000, ge=1)
    min_points: int = spec(500, ge=0)
    attempts: int = spec(10, ge=1)
    rotate: bool = True
    flip_prob: float = spec(0.5, ge=0, le=1)
    scale: tuple[float, float] = spec((0.9, 1.1), gt=0)
    brightness: float = spec(0.1, ge=0)
    contrast: float = spec(0.1, ge=0)
    colour_noise: float = spec(0.01, ge=0)
    classes: str = "scannet200"
    frame_stride: int = spec(2, ge=1)

    def __post_init__(self) -> None:
        if not self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range (lo, hi) with 0 < lo <= hi, got {self.scale}")
        get_class_set(self.classes)


@dataclass
class SceneCrop:
    """What the encoder consumes for one sample.

    Attributes:
        points: ``(N, 3)`` float32 metres, crop coordinates (z up).
        colours: ``(N, 3)`` float32 in [0, 1].
        semantic: ``(N,)`` int64 contiguous class index, :data:`IGNORE_INDEX` (-100) when unlabelled.
        instance: ``(N,)`` int64 instance id of the source scene, -1 for none.
        transform: ``(4, 4)`` float64 source-world -> crop similarity (rotation, mirror, scale, translation).
        source_index: ``(N,)`` int64 index of each point in the source cloud (scene points, or the
            back-projected valid pixels of a frame).
        frame: the source RGB-D frame (rgb, depth, intrinsics, pose), for crops of frames.
        pixels: ``(N, 2)`` int64 ``(u, v)`` pixel of each point in ``frame``, for crops of frames.
    """

    points: np.ndarray
    colours: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    transform: np.ndarray
    source_index: np.ndarray
    frame: RGBDFrame | None = None
    pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def as_tensors(self) -> dict:
        """The per-point arrays as torch tensors (``points``, ``colours``, ``semantic``, ``instance`` and,
        for frame crops, ``pixels``)."""
        import torch

        out = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k)))
               for k in ("points", "colours", "semantic", "instance")}
        if self.pixels is not None:
            out["pixels"] = torch.from_numpy(self.pixels)
        return out


class CropSampler:
    """Draws :class:`SceneCrop` samples; deterministic given ``seed`` and the call sequence."""

    def __init__(self, config: CropConfig | None = None, seed: int = 0):
        self.config = config or CropConfig()
        self.classes = get_class_set(self.config.classes)
        self.rng = np.random.default_rng(seed)

    def sample(self, points: np.ndarray, colours: np.ndarray, semantic_ids: np.ndarray,
               instance_ids: np.ndarray, frame: RGBDFrame | None = None,
               pixels: np.ndarray | None = None) -> SceneCrop:
        """A crop of a labelled cloud.

        Args:
            points: ``(N, 3)`` metres (world, z up).
            colours: ``(N, 3)`` in [0, 1].
            semantic_ids: ``(N,)`` ScanNet label ids (0 unlabelled).
            instance_ids: ``(N,)`` instance ids (0 none).
            frame, pixels: the source frame and each point's ``(u, v)``, passed through for frame crops.
        """
        cfg, rng = self.config, self.rng
        points = np.asarray(points, np.float64)
        n = len(points)
        if n == 0:
            raise ValueError("cannot crop an empty point cloud")
        for name, arr, shape in (("colours", colours, (n, 3)), ("semantic_ids", semantic_ids, (n,)),
                                 ("instance_ids", instance_ids, (n,))):
            if np.shape(arr) != shape:
                raise ValueError(f"{name} has shape {np.shape(arr)}, expected {shape}")
        if points.shape != (n, 3):
            raise ValueError(f"points must be (N, 3), got {points.shape}")
        # crop window
        best, centre = None, points[:, :2].mean(0)
        if math.isfinite(cfg.crop_size):
            half = cfg.crop_size / 2
            for _ in range(cfg.attempts):
                c = points[rng.integers(n), :2]
                idx = np.flatnonzero((np.abs(points[:, :2] - c) <= half).all(axis=1))
                if best is None or len(idx) > len(best):
                    best, centre = idx, c
                if len(idx) >= cfg.min_points:
                    break
        else:
            best = np.arange(n)
        idx = best
        if len(idx) > cfg.max_points:
            idx = np.sort(rng.choice(idx, cfg.max_points, replace=False))
        # augmentation: translate centre to the origin, rotate about z, mirror, scale
        t = np.eye(4)
        t[:2, 3] = -centre
        theta = rng.uniform(0, 2 * np.pi) if cfg.rotate else 0.0
        r = np.eye(4)
        r[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
        f = np.diag([-1.0 if rng.random() < cfg.flip_prob else 1.0, -1.0 if rng.random() < cfg.flip_prob else 1.0,
                     1.0, 1.0])
        s = np.diag([rng.uniform(*cfg.scale)] * 3 + [1.0])
        transform = s @ f @ r @ t
        pts = (points[idx] @ transform[:3, :3].T + transform[:3, 3]).astype(np.float32)
        col = np.asarray(colours, np.float32)[idx]
        if len(col):
            mean = col.mean(0)
            col = (col - mean) * np.float32(1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
            col = col + np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
            col = col + rng.normal(0, cfg.colour_noise, col.shape).astype(np.float32) if cfg.colour_noise else col
        col = np.clip(col, 0, 1).astype(np.float32)
        inst = np.asarray(instance_ids, np.int64)[idx]
        return SceneCrop(points=pts, colours=col, semantic=self.classes.to_index(np.asarray(semantic_ids)[idx]),
                         instance=np.where(inst > 0, inst, -1), transform=transform, source_index=idx.astype(np.int64),
                         frame=frame, pixels=None if pixels is None else np.asarray(pixels, np.int64)[idx])

    def from_scene(self, scene: ScenePoints) -> SceneCrop:
        """A crop of a scene's labelled points."""
        return self.sample(scene.points, scene.colours, scene.semantic, scene.instance)

    def from_frame(self, frame: RGBDFrame) -> SceneCrop:
        """A crop of one RGB-D frame's back-projected valid depth (world coordinates from its pose); pixels
        without labels count as unlabelled."""
        bp = backproject(frame.depth, frame.intrinsics, pose=frame.pose, stride=self.config.frame_stride)
        pts, pix = bp.points.numpy().astype(np.float64), bp.pixels.numpy()
        if len(pts) == 0:
            raise ValueError(f"frame {frame.frame_id!r} has no valid depth")
        u, v = pix[:, 0], pix[:, 1]
        colours = frame.rgb[v, u].astype(np.float32) / 255.0
        sem = frame.semantic[v, u] if frame.semantic is not None else np.zeros(len(pts), np.int64)
        inst = frame.instance[v, u] if frame.instance is not None else np.zeros(len(pts), np.int64)
        return self.sample(pts, colours, sem, inst, frame=frame, pixels=pix)
