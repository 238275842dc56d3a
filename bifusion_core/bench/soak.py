"""``soak`` stage: a long run through the node's per-frame path, to show bounded memory and steady frame time.

``--frames`` frames (default 10,000) go through :class:`~bifusion_core.pipeline.session.FrameSession` exactly
as the ROS node runs them, minus the ROS transport: the missing-pose policy, ``process`` (the shipped demo
checkpoint unless ``--checkpoint``), the online map (``map_frame``, a snapshot whenever ``due``), ``done``.
The frames are a rendered synthetic RealSense-style loop around one room (``--loop`` distinct frames of
``--width`` x ``--height``, replayed in order with ever-increasing stamps at 30 Hz, so the camera circles the
room again and again, as a robot patrolling it). Bad sets are mixed in, as a camera and TF deliver them:
every ``--no-pose-every``-th set has no pose (counted ``missing_tf``), every ``--empty-depth-every``-th has no
valid depth (``processor_error``; a set that is both has no pose first).

Reported (and written with ``--json``): resident memory (RSS) sampled every ``--sample-every`` frames; its
growth from the end of the warm-up (``--warmup`` frames) to the end (medians of the first and last tenth of
the samples after the warm-up, so one allocator hiccup does not count); the frame time (median and p95 of the
processed frames in each tenth of the run, and the last tenth's median over the first's); the map's size;
and the counter checks: every set fed is either processed or skipped for one reason, the skip counts equal
the bad sets injected, every processed frame with a pose was merged into the map, and the map keeps to its
caps. ``checks.ok`` is false, and the exit status 1, when a check fails or RSS grew by ``--max-growth`` or
more.
"""
from __future__ import annotations

import gc
import statistics
import time

import numpy as np

from .common import peak_rss_mb, rss_mb, synthetic_frames


def add_args(p) -> None:
    p.add_argument("--frames", type=int, default=10_000, help="sets fed through the session (default 10000)")
    p.add_argument("--width", type=int, default=160, help="frame width (default 160)")
    p.add_argument("--height", type=int, default=120, help="frame height (default 120)")
    p.add_argument("--loop", type=int, default=120, help="distinct rendered frames of the loop (default 120)")
    p.add_argument("--warmup", type=int, default=500, help="frames before memory growth is measured (default 500)")
    p.add_argument("--sample-every", type=int, default=50, help="RSS sample period in frames (default 50)")
    p.add_argument("--no-pose-every", type=int, default=50, help="every N-th set has no pose (0: never)")
    p.add_argument("--empty-depth-every", type=int, default=97, help="every N-th set has no depth (0: never)")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped demo checkpoint)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--max-growth", type=float, default=0.05,
                   help="RSS growth after the warm-up that fails the run (default 0.05 = 5 %%)")
    p.add_argument("--seed", type=int, default=7, help="synthetic room seed (default 7)")


def _check_args(args) -> None:
    for name in ("frames", "width", "height", "loop", "sample_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= args.warmup < args.frames:
        raise SystemExit("--warmup must be in [0, --frames)")
    if args.no_pose_every < 0 or args.empty_depth_every < 0:
        raise SystemExit("--no-pose-every and --empty-depth-every must be >= 0")


def _render_loop(args):
    """The loop's frames, depth NaN where there is no reading (as the node's converter gives it)."""
    frames = synthetic_frames(args.loop, args.width, args.height, seed=args.seed, loop_fraction=1.0)
    return [(rgb, np.where(depth > 0, depth, np.nan).astype(np.float32), intr, pose)
            for rgb, depth, intr, pose in frames]


def _tenths(values: list[float]) -> list[list[float]]:
    n = len(values)
    return [values[n * k // 10: n * (k + 1) // 10] for k in range(10)]


def run(args) -> dict:
    from ..mapping import MapConfig
    from ..pipeline import FrameProcessor
    from ..pipeline.session import FrameInputs, FrameSession, FrameSkipped

    _check_args(args)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    print(f"soak: rendering a {args.loop}-frame loop at {args.width}x{args.height} ...")
    loop = _render_loop(args)
    proc = FrameProcessor.from_checkpoint(args.checkpoint, args.device)
    session = FrameSession(proc, world_frame="map", latency_window=100, log=None)  # as the node
    map_cfg = MapConfig()
    smap = session.enable_map(map_cfg, publish_period=1.0)

    injected = {"missing_tf": 0, "processor_error": 0}
    frame_ms: list[float] = []      # processed frames: session.process + map_frame, milliseconds
    frame_index: list[int] = []
    stage_ms: dict[str, list[float]] = {"process": [], "map": []}
    rss: list[tuple[int, float]] = []
    merged = snapshots = 0
    max_instances = max_voxels = 0
    gc.collect()
    t_start = time.perf_counter()
    bar = tqdm(total=args.frames, unit="frame", mininterval=2.0) if tqdm else None
    for i in range(args.frames):
        rgb, depth, intr, pose = loop[i % len(loop)]
        stamp = i / 30.0
        no_pose = bool(args.no_pose_every and i % args.no_pose_every == args.no_pose_every - 1)
        if no_pose:  # skipped before the model runs, whatever its depth
            injected["missing_tf"] += 1
        elif args.empty_depth_every and i % args.empty_depth_every == args.empty_depth_every - 1:
            depth = np.full_like(depth, np.nan)
            injected["processor_error"] += 1
        inputs = FrameInputs(rgb, depth, intr, stamp, "camera_color_optical_frame")
        t0 = time.perf_counter()
        try:
            if no_pose:
                pose_i, out_frame = session.without_pose(inputs, "no transform in the buffer")
            else:
                pose_i, out_frame = pose, "map"
            result = session.process(inputs, pose_i, out_frame)
            mf = session.map_frame(inputs, result, out_frame)
            merged += mf is not None
            if smap.due(stamp):
                snap = smap.snapshot()
                snapshots += 1
                max_voxels = max(max_voxels, len(snap.centres))
                max_instances = max(max_instances, len(snap.instances))
            session.done(inputs, result)
            frame_ms.append((time.perf_counter() - t0) * 1e3)
            frame_index.append(i)
            for k in stage_ms:
                stage_ms[k].append(inputs.timings.get(k, 0.0) * 1e3)
        except FrameSkipped as exc:
            session.skip(exc.reason, exc.detail)
        if i % args.sample_every == 0 or i == args.frames - 1:
            rss.append((i, rss_mb()))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start

    skipped = session.skipped
    processed = session.counter("processed")
    after = [mb for i, mb in rss if i >= args.warmup]
    tenth = max(1, len(after) // 10)
    rss_start, rss_end = statistics.median(after[:tenth]), statistics.median(after[-tenth:])
    growth = (rss_end - rss_start) / rss_start
    times_after = [ms for ms, i in zip(frame_ms, frame_index) if i >= args.warmup]
    deciles = [{"p50_ms": round(statistics.median(t), 2), "p95_ms": round(float(np.percentile(t, 95)), 2),
                "n": len(t)} for t in _tenths(times_after) if t]
    time_ratio = deciles[-1]["p50_ms"] / deciles[0]["p50_ms"]
    stage_deciles = {k: [round(statistics.median(t), 2) for t in
                         _tenths([ms for ms, i in zip(v, frame_index) if i >= args.warmup]) if t]
                     for k, v in stage_ms.items()}
    scene = smap.scene
    map_state = {"instances": len(scene.instance_map), "voxels": len(scene.voxel_map),
                 "instance_voxels": int(sum(i.num_voxels for i in scene.instances)),
                 "most_instances_published": max_instances, "most_voxels_published": max_voxels,
                 "max_instances": map_cfg.max_instances, "max_voxels": map_cfg.max_voxels,
                 "max_instance_voxels": map_cfg.max_instance_voxels, "merged_frames": merged,
                 "snapshots": snapshots}
    checks = {
        "every_set_accounted": processed + sum(skipped.values()) == args.frames,
        "skips_match_injected": all(skipped[r] == n for r, n in injected.items())
        and sum(skipped.values()) == sum(injected.values()),
        "every_posed_frame_merged": merged == processed and session.counter("map_errors") == 0,
        "map_within_caps": max(max_voxels, map_state["voxels"]) <= map_cfg.max_voxels
        and max(max_instances, map_state["instances"]) <= map_cfg.max_instances
        and all(i.num_voxels <= map_cfg.max_instance_voxels for i in scene.instances),
        "rss_growth_below_limit": growth < args.max_growth,
    }
    checks["ok"] = all(checks.values())
    out = {
        "stage": "soak", "frames": args.frames, "size": [args.height, args.width], "loop": args.loop,
        "device": str(proc.device), "checkpoint": str(proc.checkpoint), "wall_s": round(wall, 1),
        "processed": processed, "skipped": skipped, "injected": injected,
        "counters": {k: session.counter(k) for k in ("identity_pose", "map_errors", "map_without_pose")},
        "rss_mb": {"after_warmup": round(rss_start, 1), "end": round(rss_end, 1), "growth": round(growth, 4),
                   "peak": round(peak_rss_mb(), 1), "samples": [[i, round(mb, 1)] for i, mb in rss]},
        "frame_time": {"deciles": deciles, "last_over_first_p50": round(time_ratio, 3),
                       "p50_ms": round(statistics.median(times_after), 2),
                       "p95_ms": round(float(np.percentile(times_after, 95)), 2),
                       "stage_p50_ms_by_tenth": stage_deciles},
        "map": map_state, "checks": checks,
    }
    print(f"soak: {args.frames} sets in {wall:.0f} s: {processed} processed, skipped "
          + ", ".join(f"{r} {n}" for r, n in skipped.items() if n))
    print(f"  RSS after warm-up {rss_start:.1f} MB -> end {rss_end:.1f} MB ({100 * growth:+.2f} %), "
          f"peak {peak_rss_mb():.1f} MB")
    print(f"  frame time p50 {out['frame_time']['p50_ms']:.1f} ms, p95 {out['frame_time']['p95_ms']:.1f} ms; "
          f"last/first tenth p50 {time_ratio:.3f}")
    for k, v in stage_deciles.items():
        print(f"  {k:<8} p50 by tenth (ms): " + " ".join(f"{x:.1f}" for x in v))
    print(f"  map: {map_state['instances']} instances, {map_state['voxels']} voxels, {merged} frames merged")
    print("  checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items() if k != "ok"))
    if not checks["ok"]:
        out["exit_code"] = 1
    return out

