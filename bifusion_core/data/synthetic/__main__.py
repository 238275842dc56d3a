"""``python -m bifusion_core.data.synthetic --out DIR [--scenes N --frames F --seed S]``

Generate procedural RGB-D scenes and write them in ScanNet's exported-frame layout (``DIR/synthSSSS_00/``,
see :mod:`bifusion_core.data.synthetic.export`), plus benchmark ground truth of each scene's labelled cloud
in ``DIR/gt_instance`` and ``DIR/gt_semantic``. Scene ``i`` uses seed ``S + i``.

The same scenes as rosbag2 recordings (realsense2_camera topics, TF, ground-truth images) are written on the
ROS side, by ``python -m bifusion_ros.synthetic_bag`` with the same scene options: this package imports
nothing from ``bifusion_ros``.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bifusion_core.data.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--frames", type=int, default=100, help="frames per scene (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
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
        args.out.mkdir(parents=True, exist_ok=True)
        summaries, t0 = [], time.perf_counter()
        for i in range(args.scenes):
            seed = args.seed + i
            name = scene_name(seed)
            seq = SyntheticSequence(seed, seq_cfg)
            log.info("%s: room %.1f x %.1f x %.1f m, %d objects, %d primitives", name, *seq.scene.size,
                     len(seq.scene.objects), len(seq.scene.primitives))
            summaries.append(export_sequence(seq, args.out, name, export_cfg, progress=not args.quiet))
        (args.out / "scenes.json").write_text(json.dumps(summaries, indent=1))
        log.info("wrote %d scene(s) to %s in %.1f s", args.scenes, args.out, time.perf_counter() - t0)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
