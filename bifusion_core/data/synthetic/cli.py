"""Command-line options shared by the two writers of synthetic scenes: ``python -m bifusion_core.data.synthetic``
(ScanNet layout) and ``python -m bifusion_ros.synthetic_bag`` (rosbag2 recordings)."""
from __future__ import annotations

import argparse

from .render import CameraConfig
from .scene import SceneConfig
from .sequence import SequenceConfig

__all__ = ["scene_name", "add_sequence_arguments", "sequence_config", "scene_seeds"]


def scene_name(seed: int) -> str:
    """Directory (or bag) name of the scene generated from ``seed``."""
    return f"synth{seed:04d}_00"


def add_sequence_arguments(p: argparse.ArgumentParser) -> None:
    """``--scenes --frames --seed --fps --loop --width --height --no-ceiling``."""
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1); scene i uses seed S + i")
    p.add_argument("--frames", type=int, default=100, help="frames per scene (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the stamps (default 30)")
    p.add_argument("--loop", type=float, default=1.0, help="share of the camera loop travelled (default 1)")
    p.add_argument("--width", type=int, default=640, help="image width (default 640; intrinsics scale with it)")
    p.add_argument("--height", type=int, default=480, help="image height (default 480)")
    p.add_argument("--no-ceiling", action="store_true", help="rooms without a ceiling")


def sequence_config(args: argparse.Namespace) -> SequenceConfig:
    """The :class:`SequenceConfig` of parsed :func:`add_sequence_arguments` options (``ValueError`` when invalid)."""
    return SequenceConfig(n_frames=args.frames, fps=args.fps, loop_fraction=args.loop,
                          scene=SceneConfig(ceiling=not args.no_ceiling),
                          camera=CameraConfig.scaled(args.width, args.height))


def scene_seeds(args: argparse.Namespace) -> list[int]:
    """The seed of every scene (``ValueError`` for ``--scenes`` < 1)."""
    if args.scenes < 1:
        raise ValueError(f"--scenes must be >= 1, got {args.scenes}")
    return [args.seed + i for i in range(args.scenes)]
