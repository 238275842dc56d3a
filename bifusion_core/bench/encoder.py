"""``encoder`` / ``frame`` stages: per-stage latency and peak memory of one 640x480 frame with the full design
(ViT-B/16 + MinkUNet18A, randomly initialised: timing does not depend on the weights) or a preset."""
from __future__ import annotations

import statistics

import numpy as np
import torch

from ..models.bifusion import BiFusionModel, StageTimer, batch_superpoints, frames_to_input
from ..models.clip2d import Clip2DConfig
from ..models.presets import full_config, tiny_config
from .common import peak_rss_mb, rss_mb


def synthetic_frame(h: int = 480, w: int = 640, seed: int = 0):
    """A 640x480 RGB-D frame of a box room seen by a RealSense-like camera (for timing)."""
    rng = np.random.default_rng(seed)
    fx = fy = 615.0
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    ray = np.stack([(u - w / 2) / fx, (v - h / 2) / fy, np.ones_like(u, float)], -1)
    # camera looks along +z at walls 3 m away, floor 1.3 m below (y down in the optical frame)
    t_wall = 3.0 / ray[..., 2]
    t_floor = np.where(ray[..., 1] > 1e-6, 1.3 / np.maximum(ray[..., 1], 1e-6), np.inf)
    depth = np.minimum(t_wall, t_floor) * ray[..., 2]
    depth[rng.random((h, w)) < 0.02] = 0  # dropouts
    rgb = (np.clip(rng.normal(0.5, 0.15, (h, w, 3)), 0, 1) * 255).astype(np.uint8)
    return rgb, depth.astype(np.float32), (fx, fy, w / 2, h / 2), np.eye(4)


def _config(name: str):
    if name == "full":
        cfg = full_config()
        cfg.clip = Clip2DConfig(pretrained=None)  # no weights ship with the repo; the timing is the same
        return cfg
    if name == "tiny":
        return tiny_config()
    raise ValueError(name)


def _run(args, with_decoder: bool) -> dict:
    dev = torch.device(args.device)
    torch.manual_seed(0)
    cfg = _config(args.config)
    cfg.frame.stride = args.stride
    cfg.frame.max_points = args.max_points
    model = BiFusionModel(cfg).to(dev).eval()
    frame = synthetic_frame()
    base = rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    runs = []
    for i in range(args.repeats + 1):
        timer = StageTimer(True)
        with timer("backproject"):
            inp = frames_to_input([frame], cfg.frame)
        if with_decoder:
            with timer("superpoints"):
                inp.superpoints = batch_superpoints(inp.points, inp.colours, inp.batch, cfg.superpoints)
        inp = inp.to(dev)
        with torch.inference_mode():
            if with_decoder:
                out = model(inp, timer)
                with timer("postprocess", dev):
                    model.segment(inp, out)
            else:
                model.encoder(inp, timer)
        if i:  # first run is warm-up
            runs.append(timer.times)
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    stages["total"] = statistics.median(sum(r.values()) for r in runs)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb() - base
    res = {"stage": "frame" if with_decoder else "encoder", "config": args.config, "device": args.device,
           "points": int(inp.points.shape[0]), "image": [480, 640], "stride": args.stride,
           "median_s": stages, "peak_mem_mb": peak}
    print(f"{res['stage']} ({args.config}, {args.device}, {res['points']} points from 640x480 at stride "
          f"{args.stride}):")
    for k, v in stages.items():
        print(f"  {k:<15} {v * 1e3:9.1f} ms")
    print(f"  peak memory     {peak:9.0f} MB ({'CUDA allocated' if dev.type == 'cuda' else 'RSS growth'})")
    return res


def run_encoder(args) -> dict:
    return _run(args, with_decoder=False)


def run_frame(args) -> dict:
    return _run(args, with_decoder=True)


def add_args(p) -> None:
    p.add_argument("--config", choices=["full", "tiny"], default="full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--stride", type=int, default=2, help="pixel stride of the back-projection")
    p.add_argument("--max-points", type=int, default=80000)
    p.add_argument("--repeats", type=int, default=3)
