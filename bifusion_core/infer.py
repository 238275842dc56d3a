"""``python -m bifusion_core.infer``: segment one RGB-D frame and write what a person can look at.

Writes DIR/NAME.ply (points with rgb, label, instance, score, alpha), DIR/NAME_labels.png and
DIR/NAME_instances.png (overlays), DIR/NAME_alpha.png (the 2D/3D gate α as a heat map; red = trusts the
image), and DIR/NAME_instances.json.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from .data.scannet.layout import read_matrix
from .io.class_list import parse_class_list

log = logging.getLogger("bifusion.infer")


def read_frame(color: str, depth: str, depth_scale: float):
    rgb = cv2.imread(color, cv2.IMREAD_COLOR)
    if rgb is None:
        raise FileNotFoundError(f"cannot read colour image {color}")
    d = cv2.imread(depth, cv2.IMREAD_UNCHANGED)
    if d is None:
        raise FileNotFoundError(f"cannot read depth image {depth}")
    if d.ndim != 2:
        raise ValueError(f"{depth}: depth must be a single-channel image (16-bit PNG), got shape {d.shape}")
    if d.dtype == np.uint16:
        d = d.astype(np.float32) * depth_scale
    elif d.dtype == np.float32:
        pass
    else:
        raise ValueError(f"{depth}: depth must be uint16 (scaled by --depth-scale) or float32 metres, got {d.dtype}")
    rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    if rgb.shape[:2] != d.shape:
        raise ValueError(f"colour {rgb.shape[:2]} and depth {d.shape} sizes differ (aligned depth expected)")
    return rgb, d


def parse_intrinsics(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"--intrinsics must be fx,fy,cx,cy, got {text!r}")
    return vals


def positive_scale(text: str) -> float:
    """``--depth-scale``: metres per depth unit, a finite number > 0."""
    try:
        val = float(text)
    except ValueError:
        val = math.nan
    if not (math.isfinite(val) and val > 0):
        raise argparse.ArgumentTypeError(f"--depth-scale must be a finite number of metres per unit > 0 "
                                         f"(0.001 for millimetre PNGs), got {text!r}")
    return val


def class_list(text: str) -> list[str]:
    try:
        return parse_class_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--classes: {exc}") from exc


def check_out_dir(path: str) -> Path:
    """The output directory: created if missing; an existing file there is an error."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bifusion_core.infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--color", required=True, help="colour image (PNG/JPG)")
    ap.add_argument("--depth", required=True, help="depth image aligned to the colour image (16-bit PNG)")
    ap.add_argument("--intrinsics", required=True, type=parse_intrinsics, help="fx,fy,cx,cy of the colour camera")
    ap.add_argument("--depth-scale", type=positive_scale, default=0.001,
                    help="metres per unit of a 16-bit depth PNG, > 0 (default 0.001: millimetres)")
    ap.add_argument("--pose", help="optional 4x4 camera->world text file (ScanNet pose format)")
    ap.add_argument("--checkpoint", help="model checkpoint (default: the shipped demo checkpoint)")
    ap.add_argument("--classes", type=class_list,
                    help="class names / prompts replacing the checkpoint's: 'a,b,c' or '[a, b, c]' (open-vocabulary "
                         "checkpoints; a fixed-class one takes only as many names as it has classes, a renaming)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--name", help="output file stem (default: the colour image's stem)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from .pipeline import Frame, FrameProcessor
    from .io.render import write_result

    try:
        out = check_out_dir(args.out)
        rgb, depth = read_frame(args.color, args.depth, args.depth_scale)
        pose = read_matrix(args.pose, (4, 4)) if args.pose else np.eye(4)
        proc = FrameProcessor.from_checkpoint(args.checkpoint, args.device, classes=args.classes or None)
        result = proc.process(Frame(rgb, depth, args.intrinsics, pose))
        paths = write_result(out, args.name or Path(args.color).stem, result, rgb)
    except (ValueError, FileNotFoundError, OSError) as exc:
        log.error("%s", exc)
        return 2
    log.info("%d points, %d instances; stages: %s", result.num_points, len(result.instances),
             ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in result.timings.items()))
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
