"""A synthetic RGB-D sequence: one generated room, a smooth camera trajectory through it, rendered lazily.

Frame ``i`` depends only on ``(seed, i)`` (its sensor noise has its own generator), so frames can be
rendered in any order, or in parallel, with identical results.
"""
from __future__ import annotations

from dataclasses import field

import numpy as np

from ...config import configclass, spec
from ..frame import Frame
from .render import CameraConfig, RenderedFrame, Renderer
from .scene import SceneConfig, SyntheticScene, generate_scene
from .trajectory import camera_poses

DEFAULT_START_NS = 1_700_000_000 * 10**9
"""Stamp of the first frame of seed 0 (later seeds start an hour later each, so bags never overlap)."""


@configclass
class SequenceConfig:
    """Attributes:
        n_frames: number of frames.
        fps: frame rate (sets the stamps; a RealSense colour stream runs at 30).
        loop_fraction: share of the closed camera path travelled over the sequence.
        scene, camera: room generation and camera / depth sensor parameters.
    """

    n_frames: int = spec(100, ge=1)
    fps: float = spec(30.0, gt=0)
    loop_fraction: float = spec(1.0, gt=0, le=10)
    scene: SceneConfig = field(default_factory=SceneConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)


class SyntheticSequence:
    """``len(seq)`` frames of the room generated from ``seed``.

    Attributes:
        scene: the :class:`~.scene.SyntheticScene`.
        poses: ``(F, 4, 4)`` optical-frame camera-to-world poses.
        stamps_ns: ``(F,)`` int64 acquisition times.
        intrinsics: ``(3, 3)``.
    """

    def __init__(self, seed: int = 0, config: SequenceConfig | None = None,
                 scene: SyntheticScene | None = None):
        self.seed = int(seed)
        self.config = config or SequenceConfig()
        cfg = self.config
        self.scene = scene if scene is not None else generate_scene(self.seed, cfg.scene)
        self.renderer = Renderer(self.scene, cfg.camera)
        self.poses = camera_poses(self.scene.path, cfg.n_frames, cfg.loop_fraction)
        start = DEFAULT_START_NS + self.seed * 3600 * 10**9
        self.stamps_ns = start + np.round(np.arange(cfg.n_frames) * 1e9 / cfg.fps).astype(np.int64)
        self.intrinsics = cfg.camera.intrinsics

    def __len__(self) -> int:
        return self.config.n_frames

    def render(self, index: int) -> RenderedFrame:
        """Render frame ``index`` (all outputs, ground truth included)."""
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range [0, {len(self)})")
        rng = np.random.default_rng([self.seed, int(index), 0xD])
        return self.renderer.render(self.poses[index], rng)

    def frame(self, index: int) -> Frame:
        """Frame ``index`` as a :class:`~bifusion_core.data.frame.Frame` (noisy depth in metres)."""
        return to_frame(self.render(index), str(index), int(self.stamps_ns[index]) * 1e-9)

    def __iter__(self):
        for i in range(len(self)):
            yield self.frame(i)


def to_frame(r: RenderedFrame, name: str = "", stamp: float = 0.0) -> Frame:
    """A rendered view as a :class:`~bifusion_core.data.frame.Frame` (depth in metres, ground truth as int64;
    ``stamp`` seconds)."""
    return Frame(rgb=r.rgb, depth=r.depth_mm.astype(np.float32) / 1000.0, intrinsics=r.intrinsics, pose=r.pose,
                 stamp=stamp, semantic=r.semantic.astype(np.int64), instance=r.instance.astype(np.int64), name=name)
