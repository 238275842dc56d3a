"""``python -m bifusion_ros.demo [--out demo_out] [--frames 30]``: the whole pipeline on the embedded synthetic data.

1. Makes a RealSense-style rosbag2 recording of a procedural room that training never saw (640x480 colour,
   aligned 16UC1 depth, camera info, ``/tf`` + ``/tf_static`` and ScanNet200 ground-truth images; see
   :mod:`bifusion_ros.synthetic_bag`), once: it is cached under ``~/.cache/bifusion/demo/`` (or
   ``$XDG_CACHE_HOME/bifusion/demo``), keyed by the generator parameters and a hash of the generator's source,
   so a changed generator makes a new one.
2. Replays it through the shipped demo checkpoint (``bifusion_core/assets/demo/synthetic_small.pt``) with
   :mod:`bifusion_ros.replay`, exactly as the ROS node would process it.
3. Prints the metrics table (semantic mIoU, instance AP / AP50 / AP25, frame counts, per-stage latency) and
   where the outputs are: ``OUT/output_bag`` (what the node publishes), ``OUT/frames`` (PNG overlays, α heat
   maps, PLY clouds of every ``--save-every``-th frame) and ``OUT/metrics.json``.

``make demo`` runs this with ``--out demo_out``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("bifusion.demo")

DEMO_SEED = 100_100
"""Room of the demo recording: held out (training rooms use seeds 0-11, validation rooms 100000-100001)."""

GENERATOR_VERSION = 1
"""Bump to invalidate cached recordings when the way they are written changes outside the hashed sources."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/bifusion/demo`` (default ``~/.cache/bifusion/demo``)."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "bifusion" / "demo"


def _source_hash() -> str:
    """Hash of the source files that determine a recording's bytes: the synthetic generator, the bag writer and
    the message converters it builds every message with (a changed one = a new recording)."""
    import bifusion_core.data.synthetic as synth
    import bifusion_ros.convert as convert
    import bifusion_ros.synthetic_bag as bagmod

    h = hashlib.sha256()
    files = (sorted(Path(synth.__file__).parent.glob("*.py")) + [Path(bagmod.__file__)]
             + sorted(Path(convert.__file__).parent.glob("*.py")))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def generator_params(frames: int, seed: int = DEMO_SEED, width: int = 640, height: int = 480, fps: float = 30.0,
                     loop: float = 0.25) -> dict:
    """The parameters that determine the recording (the cache key is derived from them)."""
    return {"seed": int(seed), "frames": int(frames), "width": int(width), "height": int(height), "fps": float(fps),
            "loop": float(loop), "version": GENERATOR_VERSION, "source": _source_hash()}


def cache_key(params: dict) -> str:
    """Directory name of a recording: readable parameters plus a digest of all of them."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return (f"synth{params['seed']}_{params['frames']}f_{params['width']}x{params['height']}"
            f"_loop{params['loop']:g}_{digest}")


def ensure_recording(params: dict, root: Path | None = None, progress: bool = True) -> Path:
    """The bag directory of the recording for ``params``, written first if it is not cached yet.

    Written into a temporary directory and renamed into place, so an interrupted run never leaves a half
    recording in the cache.
    """
    from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
    from bifusion_ros.synthetic_bag import write_sequence

    root = Path(root) if root is not None else cache_root()
    final = root / cache_key(params)
    bag = final / "bag"
    if (bag / "metadata.yaml").is_file():
        log.info("using the cached recording %s", bag)
        return bag
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        w, h = params["width"], params["height"]
        camera = CameraConfig.scaled(w, h)  # as the generator CLI makes it
        seq = SyntheticSequence(params["seed"], SequenceConfig(n_frames=params["frames"], fps=params["fps"],
                                                               loop_fraction=params["loop"], camera=camera))
        log.info("rendering the demo recording (%d frames, %dx%d, seed %d) into %s", params["frames"], w, h,
                 params["seed"], final)
        t0 = time.perf_counter()
        # the bag holds everything (no ScanNet-layout copy); as `python -m bifusion_ros.synthetic_bag` writes it
        write_sequence(seq, tmp / "bag.mcap", progress=progress, desc="demo recording")
        (tmp / "params.json").write_text(json.dumps(params, indent=1))
        if final.exists():  # an incomplete earlier one
            shutil.rmtree(final)
        tmp.rename(final)
        log.info("recording written in %.1f s", time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bag


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bifusion_ros.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--frames", type=int, default=30, help="frames of the recording (default 30)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped demo checkpoint)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="inference device (default auto)")
    p.add_argument("--half", action="store_true",
                   help="half precision: fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 / AMX)")
    p.add_argument("--save-every", type=int, default=5,
                   help="write PNG/PLY outputs of every k-th frame (0: none; default 5)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"room seed (default {DEMO_SEED}, a held-out room)")
    p.add_argument("--cache-dir", type=Path, help=f"recording cache (default {cache_root()})")
    p.add_argument("--no-map", action="store_true", help="do not build the online instance map (OUT/map)")
    p.add_argument("--classes", help="class names / prompts instead of the checkpoint's ('a,b,c' or '[a, b, c]'; the "
                                     "shipped model scores them with its text tower)")
    p.add_argument("--classes-at", action="append", default=[], metavar="K=LIST",
                   help="before the K-th frame switch to the classes LIST, as `ros2 param set` on the node (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, no per-class tables")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from bifusion_ros import replay

    replay.setup_logging()
    if args.frames < 1:
        log.error("--frames must be >= 1, got %d", args.frames)
        return 2
    try:
        classes = replay.parse_classes(args.classes)
        classes_at = replay.parse_classes_at(args.classes_at)
        bag = ensure_recording(generator_params(args.frames, args.seed), args.cache_dir, progress=not args.quiet)
        cfg = replay.ReplayConfig(bag=bag, out=args.out, checkpoint=args.checkpoint, device=args.device,
                                  half=args.half, save_every=args.save_every, progress=not args.quiet, map=not args.no_map,
                                  classes=classes, classes_at=classes_at)
    except (OSError, ValueError, replay.ReplayError) as exc:
        log.error("%s", exc)
        return 2
    status = replay.run(cfg, per_class=not args.quiet)
    if status == 0:
        print("-" * 64)
        print("look at: the *_labels.png / *_instances.png / *_alpha.png overlays and the *.ply clouds (label, "
              "instance, score, alpha per point) in the frames directory; the output bag in Foxglove or RViz "
              "(fixed frame 'map')" + ("" if args.no_map else f"; the merged map {Path(args.out) / 'map' / 'map.png'} "
                                       "(seen from above, instances by id), map.ply (label, instance per 5 cm "
                                       "voxel) and instances.json"))
    elif status == 2 and not args.checkpoint:
        from bifusion_core.pipeline.processor import DEMO_CHECKPOINT

        if not DEMO_CHECKPOINT.is_file():
            print("the demo needs the shipped checkpoint (trained with config/train/synthetic_open.yaml) or "
                  "--checkpoint FILE", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
