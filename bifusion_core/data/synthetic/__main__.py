"""``python -m bifusion_core.data.synthetic --out DIR [--scenes N --frames F --seed S] [--bag FILE.mcap]``

Generate procedural RGB-D scenes and write them in ScanNet's exported-frame layout (``DIR/synthSSSS_00/``,
see :mod:`bifusion_core.data.synthetic.export`), plus benchmark ground truth of each scene's labelled cloud
in ``DIR/gt_instance`` and ``DIR/gt_semantic``. Scene ``i`` uses seed ``S + i``. With ``--bag``, each scene is
also written as a rosbag2 recording with realsense2_camera topic names, TF and ground-truth images (see
``bifusion_ros/synthetic_bag.py``): ``FILE.mcap`` gives an MCAP bag directory ``FILE``, ``FILE.db3`` a sqlite3
one; with several scenes the scene name is appended (``FILE_synth0000_00``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .export import ExportConfig, export_sequence
from .render import CameraConfig
from .scene import SceneConfig
from .sequence import SequenceConfig, SyntheticSequence

log = logging.getLogger("bifusion_core.data.synthetic")


def scene_name(seed: int) -> str:
    """Directory name of the scene generated from ``seed``."""
    return f"synth{seed:04d}_00"


def _bag_writer_class():
    """``SyntheticBagWriter``, imported only when a bag is asked for (bifusion_core stays free of ROS libraries)."""
    try:
        from bifusion_ros.synthetic_bag import SyntheticBagWriter
    except ImportError as exc:
        raise RuntimeError(f"--bag needs bifusion_ros and the 'rosbags' package (pip install rosbags): {exc}") from exc
    return SyntheticBagWriter


def _bag_path(bag: Path, name: str, n_scenes: int) -> Path:
    if n_scenes == 1:
        return bag
    suffix = bag.suffix if bag.suffix.lower() in (".mcap", ".db3") else ""
    stem = bag.with_suffix("") if suffix else bag
    return stem.with_name(f"{stem.name}_{name}{suffix}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bifusion_core.data.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--frames", type=int, default=100, help="frames per scene (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    p.add_argument("--bag", type=Path, metavar="FILE.mcap", help="also write a rosbag2 (FILE.mcap or FILE.db3)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the stamps (default 30)")
    p.add_argument("--loop", type=float, default=1.0, help="share of the camera loop travelled (default 1)")
    p.add_argument("--width", type=int, default=640, help="image width (default 640; intrinsics scale with it)")
    p.add_argument("--height", type=int, default=480, help="image height (default 480)")
    p.add_argument("--no-ceiling", action="store_true", help="rooms without a ceiling")
    p.add_argument("--no-cloud", action="store_true", help="skip the fused labelled cloud and benchmark GT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.scenes < 1:
            raise ValueError(f"--scenes must be >= 1, got {args.scenes}")
        camera = CameraConfig.scaled(args.width, args.height)
        seq_cfg = SequenceConfig(n_frames=args.frames, fps=args.fps, loop_fraction=args.loop,
                                 scene=SceneConfig(ceiling=not args.no_ceiling), camera=camera)
        export_cfg = ExportConfig(cloud_voxel=0.0 if args.no_cloud else 0.02)
        writer_cls = _bag_writer_class() if args.bag else None
        args.out.mkdir(parents=True, exist_ok=True)
        summaries, t0 = [], time.perf_counter()
        for i in range(args.scenes):
            seed = args.seed + i
            name = scene_name(seed)
            seq = SyntheticSequence(seed, seq_cfg)
            log.info("%s: room %.1f x %.1f x %.1f m, %d objects, %d primitives", name, *seq.scene.size,
                     len(seq.scene.objects), len(seq.scene.primitives))
            if writer_cls is not None:
                with writer_cls(_bag_path(args.bag, name, args.scenes)) as bag:
                    summary = export_sequence(seq, args.out, name, export_cfg, bag=bag, progress=not args.quiet)
                    summary["bag"] = str(bag.path)
            else:
                summary = export_sequence(seq, args.out, name, export_cfg, progress=not args.quiet)
            summaries.append(summary)
        (args.out / "scenes.json").write_text(json.dumps(summaries, indent=1))
        log.info("wrote %d scene(s) to %s in %.1f s", args.scenes, args.out, time.perf_counter() - t0)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
