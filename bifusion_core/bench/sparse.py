"""``sparse`` stage: MinkUNet18A forward and forward+backward on a synthetic ~55k-voxel room at 5 cm.

Each (backend, thread count) runs in a worker process of its own, started once (a fresh process: its own peak
memory, its own ``torch.set_num_threads``), and the parent interleaves them: round ``r`` times one forward on
every worker in turn (A B A B ... for two backends), then one forward+backward on every worker. On a shared,
noisy machine a burst of load then hits every alternative alike instead of one of them. Reported per worker:
the median, min, max and inter-quartile range of ``--repeats`` timed calls after ``--warmup`` untimed ones; the
torch / MinkowskiEngine ratio of the medians per device and thread count; and the machine's load (1-minute
load average and the CPU time other processes took while it ran), so a figure can be read with the load it
was measured under. ``--threads`` lists the thread counts (default: 1 and torch's default here); a worker for
N threads starts with ``OMP_NUM_THREADS=N`` as well as ``torch.set_num_threads(N)``, since MinkowskiEngine's
kernels run on an OpenMP runtime of their own that only the variable reaches; ``cores`` (CPU seconds per wall
second of a call) shows what each one used. ``auto`` is a :class:`~bifusion_core.threads.ThreadGovernor`
starting at torch's default, around every call as the frame pipeline has it around every frame (it sets torch's
count, so a MinkowskiEngine worker under it keeps its start count). ``--busy N`` keeps N other processes
spinning on the CPU for the whole run (a robot's normal state: the camera driver, the planner, ...), so the
figures under contention come from the same one command.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import torch

from ..allocator import keep_heap_blocks
from ..data.synthetic import synthetic_room_cloud
from ..models.minkunet import MinkUNet18A, MinkUNetConfig
from ..sparse import available_backends, get_backend, voxelize
from ..threads import ThreadGovernor, machine_busy_seconds, own_cpu_seconds
from .common import peak_rss_mb, rss_mb, sync

KINDS = ("forward", "forward_backward")


def _worker(backend: str, device: str, threads, voxel_size: float, width: float, conn,
            precision: str = "fp32") -> None:
    """Build the net and input, report ``ready`` (or ``error``), then time one call per ``(kind)`` request.
    ``threads``: a count, or ``"auto"`` (a thread governor, updated before each call); ``precision``
    ``"bf16"``: every call under bfloat16 autocast (forward and backward; weights and BN stay fp32)."""
    try:
        keep_heap_blocks()  # as the frame pipeline does (bifusion_core.allocator), for every backend alike
        governor = ThreadGovernor() if threads == "auto" else None
        if governor is None:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        dev = torch.device(device)
        pts, cols, _ = synthetic_room_cloud(seed=0)
        vox = voxelize(pts.to(dev), cols.to(dev), voxel_size)
        net = MinkUNet18A(MinkUNetConfig(width=width)).to(dev).train()
        be = get_backend(backend)

        amp = precision == "bf16"

        def forward():
            x, _ = be.from_voxels(vox.coords, vox.feats)  # maps are rebuilt every frame, as in real use
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                return net(x).feats

        def fwd():
            with torch.no_grad():
                forward()

        def fwd_bwd():
            net.zero_grad(set_to_none=True)
            forward().square().mean().backward()

        calls = {"forward": fwd, "forward_backward": fwd_bwd}
        base = rss_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        conn.send({"ready": True, "voxels": int(vox.coords.shape[0]), "points": int(pts.shape[0]),
                   "params": sum(p.numel() for p in net.parameters())})
        while True:
            kind = conn.recv()
            if kind is None:
                break
            with governor.work() if governor is not None else nullcontext():
                sync(dev)
                t0, c0 = time.perf_counter(), own_cpu_seconds()
                calls[kind]()
                sync(dev)
                dt, cpu = time.perf_counter() - t0, own_cpu_seconds() - c0
            conn.send((dt, cpu / dt))
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb() - base
        conn.send({"peak_mem_mb": peak, **({"thread_changes": governor.changes, "threads_at_end": governor.threads}
                                           if governor is not None else {})})
    except Exception as exc:  # reported, not raised: one backend failing must not hide the other
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


@contextmanager
def _omp_threads(n: int | None):
    """``OMP_NUM_THREADS=n`` for a worker started meanwhile (None: unset). ``torch.set_num_threads`` reaches
    only the OpenMP runtime torch ships; MinkowskiEngine's kernels run on the system's libgomp, which reads
    this variable when it loads: without it MinkowskiEngine used both cores in a "1 thread" worker (see
    ``cores`` in the results)."""
    old = os.environ.get("OMP_NUM_THREADS")
    if n is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def _thread_list(spec) -> list:
    """``--threads`` values -> sorted counts, then ``"auto"`` if asked (default: 1 and torch's default)."""
    vals = spec or ["1", str(torch.get_num_threads())]
    counts, auto = set(), False
    for v in vals:
        if v == "auto":
            auto = True
        elif v.isdigit() and int(v) >= 1:
            counts.add(int(v))
        else:
            raise SystemExit(f"--threads takes counts >= 1 or 'auto', got {v!r}")
    return sorted(counts) + (["auto"] if auto else [])


def summarise(times: list[float]) -> dict:
    """Median, min, max, inter-quartile range (seconds) and every sample of a list of timings."""
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "iqr_s": q[2] - q[0], "runs_s": times}


def _start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (a pure-Python spin loop) until terminated."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run(args) -> dict:
    if args.busy < 0:
        raise SystemExit("--busy must be >= 0")
    busy = _start_busy(args.busy)
    try:
        return _run(args)
    finally:
        for p in busy:
            p.terminate()
        for p in busy:
            p.wait(timeout=10)


def _run(args) -> dict:
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    backends = args.backends or available_backends()
    threads = _thread_list(args.threads)
    precisions = list(dict.fromkeys(args.precision or ["fp32"]))
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1, --warmup >= 0")
    ctx = mp.get_context("spawn")
    load_before = os.getloadavg()
    busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
    t_start = time.perf_counter()
    workers, results = [], []
    for device in devices:
        for n in threads if device == "cpu" else [torch.get_num_threads()]:
            for backend, prec in [(b, q) for b in backends for q in precisions if b == "torch" or q == "fp32"]:
                parent, child = ctx.Pipe()  # MinkowskiEngine has no bf16 kernels: fp32 only
                p = ctx.Process(target=_worker, args=(backend, device, n, args.voxel_size, args.width, child, prec),
                                daemon=True)
                with _omp_threads(None if n == "auto" else n):
                    p.start()
                info = parent.recv()
                res = {"backend": backend, "device": device, "threads": n, "width": args.width, "precision": prec}
                if "error" in info:
                    res["error"] = info["error"]
                    p.join()
                    results.append(res)
                    continue
                res.update({k: v for k, v in info.items() if k != "ready"})
                workers.append((res, parent, p, {k: [] for k in KINDS}))
    for rnd in range(args.warmup + args.repeats):
        for kind in KINDS:  # every worker in turn: A B A B ...
            for res, conn, _, times in workers:
                if "error" in res:
                    continue
                conn.send(kind)
                reply = conn.recv()
                if isinstance(reply, dict):  # the worker failed mid-run
                    res["error"] = reply.get("error", "worker failed")
                elif rnd >= args.warmup:
                    times[kind].append(reply)
    for res, conn, p, times in workers:
        if "error" not in res:
            conn.send(None)
            res.update(conn.recv())
            for kind in KINDS:
                res[kind] = summarise([t for t, _ in times[kind]])
                res[kind]["cores"] = round(statistics.median(c for _, c in times[kind]), 2)  # CPU s / wall s
        p.join(timeout=30)
        results.append(res)
    wall = time.perf_counter() - t_start
    busy1, own = machine_busy_seconds(), own_cpu_seconds() - own0
    ncpu = os.cpu_count() or 1
    # CPU seconds the rest of the machine used meanwhile, in cores (jiffies are 1/100 s on Linux)
    others = max(0.0, busy1 - busy0 - own) / wall if busy0 is not None and busy1 is not None else None
    machine_load = {"cpus": ncpu, "loadavg_1min_before": round(load_before[0], 2),
                    "loadavg_1min_after": round(os.getloadavg()[0], 2),
                    "other_processes_cores": None if others is None else round(others, 2), "wall_s": round(wall, 1),
                    "busy_processes": args.busy,
                    "openmp_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}}

    table = ["backend         device threads  voxels  fwd med [s] (min-max)   fwd+bwd med [s] (min-max)  peak [MB]  "
             "cores"]
    for r in results:
        name = r["backend"] + ("" if r["precision"] == "fp32" else f" {r['precision']}")
        if "error" in r:
            table.append(f"{name:<15} {r['device']:<6} {r['threads']:>7}  error: {r['error']}")
            continue
        f, b = r["forward"], r["forward_backward"]
        table.append(f"{name:<15} {r['device']:<6} {r['threads']:>7} {r['voxels']:>7} "
                     f"{f['median_s']:>8.3f} ({f['min_s']:.3f}-{f['max_s']:.3f}) "
                     f"{b['median_s']:>10.3f} ({b['min_s']:.3f}-{b['max_s']:.3f}) {r['peak_mem_mb']:>9.0f}  "
                     f"{f['cores']:.2f}/{b['cores']:.2f}")
    ratios = {}
    for r in results:
        if r["backend"] != "torch" or "error" in r:
            continue
        other = [m for m in results if m["backend"] == "minkowski" and m["device"] == r["device"]
                 and m["threads"] == r["threads"] and "error" not in m]
        if other:
            key = f"{r['device']}/{r['threads']}" + ("t" if isinstance(r["threads"], int) else "")
            key += "" if r["precision"] == "fp32" else f"/{r['precision']}"
            ratios[key] = {k: r[k]["median_s"] / other[0][k]["median_s"] for k in KINDS}
            what = "torch/minkowski" if r["precision"] == "fp32" else f"torch {r['precision']}/minkowski fp32"
            table.append(f"{what} time ratio on {r['device']} at {r['threads']} thread(s): forward "
                         f"{ratios[key]['forward']:.2f}, forward+backward {ratios[key]['forward_backward']:.2f} "
                         "(< 1: torch faster)")
    table.append(f"machine: {ncpu} CPUs, load average {machine_load['loadavg_1min_before']} -> "
                 f"{machine_load['loadavg_1min_after']}, other processes used "
                 f"{machine_load['other_processes_cores']} cores meanwhile ({args.busy} spinning on purpose), "
                 f"{wall:.0f} s; OpenMP env {machine_load['openmp_env']}")
    print("\n".join(table))
    return {"stage": "sparse", "results": results, "torch_over_minkowski": ratios, "machine_load": machine_load,
            "interleaved": True, "repeats": args.repeats, "warmup": args.warmup}


def add_args(p) -> None:
    p.add_argument("--backends", nargs="*", choices=["torch", "minkowski"], help="default: every installed backend")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cpu, and cuda when available")
    p.add_argument("--threads", nargs="*", metavar="N|auto",
                   help="CPU thread counts to measure, 'auto' for the adaptive count the pipeline uses "
                        "(default: 1 and torch's default on this machine)")
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0 = MinkUNet18A)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per worker and kind (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    p.add_argument("--precision", nargs="*", choices=["fp32", "bf16"],
                   help="torch backend precisions to measure (default fp32); bf16: bfloat16 autocast, for CPUs "
                        "with AMX / AVX512-BF16 (MinkowskiEngine runs fp32 only, and is compared with each)")
    p.add_argument("--busy", type=int, default=0,
                   help="keep this many other processes spinning on the CPU while measuring (default 0)")
