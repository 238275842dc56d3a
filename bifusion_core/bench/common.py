"""Timing and memory helpers shared by the benchmark stages."""
from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` + ``repeats`` times; seconds per call (median, min, all)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times}


def rss_mb() -> float:
    """Current resident set size (MB), Linux."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))
        print(f"wrote {path}")


def synthetic_frames(n: int, width: int = 640, height: int = 480, seed: int = 0, loop_fraction: float = 0.25):
    """``n`` rendered frames of one synthetic room (RealSense-style camera scaled to ``width`` x ``height``) as
    ``[(rgb (H, W, 3) uint8, depth (H, W) float32 metres, (fx, fy, cx, cy), pose (4, 4)), ...]``."""
    from ..data.synthetic import SequenceConfig, SyntheticSequence
    from ..data.synthetic.render import CameraConfig
    from ..geometry import as_intrinsics

    seq = SyntheticSequence(seed, SequenceConfig(n_frames=n, loop_fraction=loop_fraction,
                                                 camera=CameraConfig.scaled(width, height)))
    return [(f.rgb, f.depth, as_intrinsics(f.intrinsics).as_tuple(), f.pose) for f in map(seq.frame, range(n))]
