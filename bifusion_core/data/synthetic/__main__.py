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

from .cli import add_sequence_arguments, scene_name, scene_seeds, sequence_config
from .export import ExportConfig, export_sequence
from .sequence import SyntheticSequence

log = logging.getLogger("bifusion_core.data.synthetic")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bifusion_core.data.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    add_sequence_arguments(p)
    p.add_argument("--no-cloud", action="store_true", help="skip the fused labelled cloud and benchmark GT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        seeds = scene_seeds(args)
        seq_cfg = sequence_config(args)
        export_cfg = ExportConfig(cloud_voxel=0.0 if args.no_cloud else 0.02)
        args.out.mkdir(parents=True, exist_ok=True)
        summaries, t0 = [], time.perf_counter()
        for seed in seeds:
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
