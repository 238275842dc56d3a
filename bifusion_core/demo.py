"""``python -m bifusion_core.demo``: the main job on the embedded default data.

Until the full pipeline lands, this runs the 3D branch (MinkUNet18A + 256-d head) on a synthetic room and
prints shapes and timing; it writes a PLY of the points coloured by their first three feature principal
components so the output can be looked at.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .data.synthetic import synthetic_room_cloud
from .io.ply import write_ply
from .models.minkunet import Backbone3D, Backbone3DConfig, MinkUNetConfig
from .sparse import available_backends

log = logging.getLogger("bifusion.demo")


def feature_colours(f: torch.Tensor) -> np.ndarray:
    """``(N, C)`` features -> ``(N, 3)`` uint8 colours from their first 3 principal components."""
    x = f - f.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(x, q=3, center=False)
    p = x @ v[:, :3]
    p = (p - p.min(0).values) / (p.max(0).values - p.min(0).values).clamp_min(1e-9)
    return (p.numpy() * 255).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bifusion_core.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    ap.add_argument("--backend", default="torch", choices=["torch", "minkowski"])
    ap.add_argument("--width", type=float, default=1.0, help="U-Net channel multiplier (1.0 = MinkUNet18A)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.backend not in available_backends():
        ap.error(f"backend {args.backend!r} is not installed (available: {available_backends()}); try `make minkowski`")
    torch.manual_seed(args.seed)
    pts, cols, _ = synthetic_room_cloud(seed=args.seed)
    log.info("synthetic room: %d points", len(pts))
    model = Backbone3D(Backbone3DConfig(backend=args.backend, unet=MinkUNetConfig(width=args.width))).eval()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("3D branch: MinkUNet18A (width %.2f) + 1x1 head, %.2f M parameters, backend %s",
             args.width, n_params / 1e6, args.backend)
    with torch.inference_mode():
        t0 = time.perf_counter()
        f3d, vox = model(pts, cols)
        dt = time.perf_counter() - t0
    print(f"points {tuple(pts.shape)} -> voxels {vox.coords.shape[0]} (5 cm) -> f3D {tuple(f3d.shape)} "
          f"unit-norm={bool(torch.allclose(f3d.norm(dim=1), torch.ones(len(f3d)), atol=1e-4))} in {dt:.2f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ply = out / "room_features.ply"
    write_ply(ply, pts.numpy(), colours=feature_colours(f3d))
    print(f"wrote {ply} (points coloured by the first 3 principal components of f3D)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
