"""``gpu`` stage: everything worth knowing on a GPU machine, in one command of a few minutes.

1. **Frames**: per-stage latency (p50) and end-to-end frames/s of the frame processor at 640x480 on rendered
   synthetic RealSense-style frames, for each of ``--configs`` (default: the full design, ViT-B/16 + MinkUNet18A,
   randomly initialised since the timing does not depend on the weights; and ``synthetic_small``), in fp32 and
   fp16 (``FrameProcessor(half=True)``: fp16 autocast on CUDA; bf16 in a CPU dry run where the CPU has it).
2. **Sparse backends**: the ``sparse`` stage (MinkUNet18A forward and forward+backward on a ~55k-voxel room,
   backends interleaved) on the device, for every backend installed there, the torch backend in fp32 and
   under bf16 autocast.
3. **Training**: one ``scannet200`` step (stage S1, the memory peak) at batch 8 on rendered 640x480 frames, its
   time and peak CUDA memory (the design says it fits in 24 GB).

Each part reports an error instead of stopping the others, and a part that would start after ``--budget-s``
seconds is skipped (and says so), so the command ends in bounded time. Without CUDA it refuses to run unless
``--device cpu`` is given (a dry run: the same code path, small settings advised).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from .common import machine, synthetic_frames


def add_args(p) -> None:
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only as a dry run")
    p.add_argument("--configs", nargs="+", choices=["full", "synthetic_small"], default=["full", "synthetic_small"])
    p.add_argument("--precisions", nargs="+", choices=["fp32", "fp16"], default=["fp32", "fp16"])
    p.add_argument("--frames", type=int, default=20, help="timed frames per config and precision (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first (default 3)")
    p.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    p.add_argument("--height", type=int, default=480, help="frame height (default 480)")
    p.add_argument("--sparse-repeats", type=int, default=3, help="timed calls per sparse backend (default 3; 0: skip)")
    p.add_argument("--train-config", choices=["scannet200", "synthetic_small"], default="scannet200")
    p.add_argument("--train-batch", type=int, default=8, help="batch of the timed training step (default 8)")
    p.add_argument("--train-steps", type=int, default=1, help="timed training steps (default 1; 0: skip)")
    p.add_argument("--budget-s", type=float, default=220.0,
                   help="a part that would start after this many seconds is skipped (default 220)")


def _frame_latency(name: str, precision: str, frames, args) -> dict:
    from ..pipeline import Frame, FrameProcessor
    from .pipeline import _model

    proc = FrameProcessor(_model(name), args.device, half=precision == "fp16")
    dev = proc.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    totals, stages = [], []
    for i in range(args.warmup + args.frames):
        rgb, depth, intr, pose = frames[i % len(frames)]
        res = proc.process(Frame(rgb, depth, intr, pose))
        if i >= args.warmup:
            totals.append(res.timings["total"])
            stages.append(res.timings)
    per_stage = {k: round(1e3 * statistics.median(s[k] for s in stages), 2) for k in stages[0]}
    r = {"config": name, "precision": precision, "half_active": proc.half,
         "autocast": None if proc.amp_dtype is None else str(proc.amp_dtype).removeprefix("torch."),
         "points": int(res.num_points),
         "p50_ms": round(1e3 * statistics.median(totals), 2), "p95_ms": round(1e3 * float(np.percentile(totals, 95)), 2),
         "fps": round(1.0 / float(np.mean(totals)), 2), "stages_p50_ms": per_stage}
    if dev.type == "cuda":
        r["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    del proc
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return r


def run(args) -> dict:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench gpu: no CUDA device here (pass --device cpu for a dry run)")
    for name in ("frames", "width", "height"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1")
    if min(args.warmup, args.sparse_repeats, args.train_steps) < 0 or args.train_batch < 1:
        raise SystemExit("--warmup, --sparse-repeats and --train-steps must be >= 0, --train-batch >= 1")
    t0 = time.perf_counter()
    out = {"stage": "gpu", "device": args.device, "machine": machine(), "image": [args.height, args.width],
           "frames": [], "sparse": None, "train": None, "skipped": [], "errors": []}

    def over_budget(part: str) -> bool:
        if time.perf_counter() - t0 > args.budget_s:
            out["skipped"].append(part)
            print(f"gpu: skipping {part} (past the {args.budget_s:.0f} s budget)")
            return True
        return False

    frames = synthetic_frames(min(args.frames + args.warmup, 12), args.width, args.height)
    for name in args.configs:
        for precision in args.precisions:
            part = f"frames {name} {precision}"
            if over_budget(part):
                continue
            try:
                r = _frame_latency(name, precision, frames, args)
            except Exception as exc:  # noqa: BLE001 - one part failing must not hide the others
                out["errors"].append(f"{part}: {type(exc).__name__}: {exc}")
                print(f"gpu: {part} failed: {type(exc).__name__}: {exc}")
                continue
            out["frames"].append(r)
            print(f"gpu: {name} {precision}: {r['points']} points, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                  f"{r['fps']:.1f} frames/s; " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_p50_ms"].items()))
    if args.sparse_repeats and not over_budget("sparse"):
        from . import sparse

        try:
            out["sparse"] = sparse.run(argparse.Namespace(
                device=args.device.split(":")[0], backends=None, threads=None, voxel_size=0.05, width=1.0,
                repeats=args.sparse_repeats, warmup=1, precision=["fp32", "bf16"]))
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"sparse: {type(exc).__name__}: {exc}")
    if args.train_steps and not over_budget("train"):
        from .pipeline import run_train

        try:
            overrides = [] if args.train_config == "scannet200" else ["data.width=%d" % args.width,
                                                                        "data.height=%d" % args.height]
            out["train"] = run_train(argparse.Namespace(config=args.train_config, device=args.device,
                                                        steps=args.train_steps, batch_size=args.train_batch,
                                                        train_stage=1, overrides=overrides))
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"train: {type(exc).__name__}: {exc}")
            print(f"gpu: train failed: {type(exc).__name__}: {exc}")
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"gpu: done in {out['wall_s']:.0f} s" + (f"; skipped {out['skipped']}" if out["skipped"] else "")
          + (f"; {len(out['errors'])} part(s) failed" if out["errors"] else ""))
    if out["errors"]:
        out["exit_code"] = 1
    return out
