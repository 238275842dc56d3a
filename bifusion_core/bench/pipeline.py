"""``pipeline`` and ``train`` stages.

``pipeline``: end-to-end per-frame latency (p50/p95, per stage) and throughput of the ROS-free frame processor
on rendered 640x480 synthetic frames, with the full design config and with ``synthetic_small``.
``train``: iterations/s and peak memory of training steps (``synthetic_small`` on the CPU; the full design at
batch 8 on a GPU when there is one; synthetic 640x480 frames stand in for ScanNet there).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..models.bifusion import BiFusionModel
from ..models.clip2d import Clip2DConfig
from .common import peak_rss_mb, rss_mb, synthetic_frames


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def _model(config: str) -> BiFusionModel:
    from ..train.config import load_train_config, named_config

    if config == "full":
        cfg = load_train_config(named_config("scannet200")).model
        cfg.clip = Clip2DConfig(pretrained=None)  # timing does not depend on the (absent) pretrained weights
    else:
        cfg = load_train_config(named_config("synthetic_small")).model
    return BiFusionModel(cfg)


def run_pipeline(args) -> dict:
    from ..pipeline import Frame, FrameProcessor

    frames = synthetic_frames(args.frames + 1)
    out = {"stage": "pipeline", "device": args.device, "image": [480, 640], "configs": {}}
    for name in args.configs:
        proc = FrameProcessor(_model(name), args.device)
        lat, stages = [], []
        for i, (rgb, depth, intr, pose) in enumerate(frames):
            res = proc.process(Frame(rgb, depth, intr, pose))
            if i:  # the first frame warms up
                lat.append(res.timings["total"])
                stages.append(res.timings)
        per_stage = {k: {"p50_ms": 1e3 * _pct([s[k] for s in stages], 50), "p95_ms": 1e3 * _pct([s[k] for s in stages], 95)}
                     for k in stages[0]}
        r = {"points": int(res.num_points), "p50_ms": 1e3 * _pct(lat, 50), "p95_ms": 1e3 * _pct(lat, 95),
             "fps": 1.0 / float(np.mean(lat)), "stages": per_stage}
        out["configs"][name] = r
        print(f"pipeline {name} on {args.device}: {r['points']} points/frame, p50 {r['p50_ms']:.0f} ms, "
              f"p95 {r['p95_ms']:.0f} ms, {r['fps']:.2f} frames/s")
        for k, v in per_stage.items():
            print(f"  {k:<15} p50 {v['p50_ms']:8.1f} ms   p95 {v['p95_ms']:8.1f} ms")
    return out


def run_train(args) -> dict:
    from ..train.config import load_train_config, named_config
    from ..train.loop import Trainer

    name = args.config
    path = named_config(name)
    over = ["data.val_scenes=0", "log.ckpt_every=100000", "log.val_every=100000"]
    if name != "synthetic_small":  # no ScanNet here: rendered 640x480 synthetic frames with the full model
        over += ["data.source=synthetic", "data.root=null", "data.width=640", "data.height=480", "data.scenes=2",
                 "data.frames_per_scene=8", "model.clip.pretrained=null", f"data.batch_size={args.batch_size or 8}"]
    elif args.batch_size:
        over.append(f"data.batch_size={args.batch_size}")
    cfg = load_train_config(path, over + list(args.overrides or []))
    tr = Trainer(cfg, "/tmp/bifusion_bench_train", args.device)
    pool = tr.train_pool.at(0)
    for i in range(len(pool)):  # render the frames before timing
        pool.get(i)
    dev = torch.device(args.device)
    st = cfg.stages
    tr.step = {0: 0, 1: st.s0_iters, 2: st.s0_iters + st.s1_iters}[args.train_stage]  # time the requested stage
    if cfg.stages.stage_at(tr.step) != args.train_stage:
        raise ValueError(f"{name} has no stage S{args.train_stage} (stage lengths {st.s0_iters}/{st.s1_iters}/{st.s2_iters})")
    base = rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    tr.train_step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        tr.train_step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb() - base
    r = {"stage": "train", "config": name, "device": args.device, "batch_size": cfg.data.batch_size,
         "train_stage": args.train_stage, "amp": tr.use_amp,
         "steps": args.steps, "it_per_s": 1.0 / float(np.mean(times)), "s_per_it_p50": _pct(times, 50),
         "peak_mem_mb": peak}
    print(f"train {name} S{args.train_stage} on {args.device}, batch {cfg.data.batch_size}: {r['it_per_s']:.3f} it/s "
          f"({r['s_per_it_p50']:.2f} s/it median), peak memory {peak:.0f} MB "
          f"({'CUDA allocated' if dev.type == 'cuda' else 'RSS growth'})")
    return r


def add_pipeline_args(p) -> None:
    p.add_argument("--configs", nargs="+", choices=["full", "synthetic_small"], default=["full", "synthetic_small"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=5)


def add_train_args(p) -> None:
    p.add_argument("--config", choices=["synthetic_small", "scannet200"],
                   default="scannet200" if torch.cuda.is_available() else "synthetic_small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--train-stage", type=int, choices=[0, 1, 2], default=1,
                   help="training stage to time (S1, the longest, trains the whole U-Net: the memory peak)")
    p.add_argument("overrides", nargs="*", help="training-config overrides, e.g. data.width=320 data.height=240")
