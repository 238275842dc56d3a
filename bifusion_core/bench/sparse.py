"""``sparse`` stage: MinkUNet18A forward and forward+backward on a synthetic ~55k-voxel room at 5 cm."""
from __future__ import annotations

import multiprocessing as mp

import torch

from ..data.synthetic import synthetic_room_cloud
from ..models.minkunet import MinkUNet18A, MinkUNetConfig
from ..sparse import available_backends, get_backend, voxelize
from .common import peak_rss_mb, rss_mb, sync, time_fn


def _measure(backend: str, device: str, voxel_size: float, repeats: int, width: float, queue) -> None:
    try:
        torch.manual_seed(0)
        dev = torch.device(device)
        pts, cols, _ = synthetic_room_cloud(seed=0)
        vox = voxelize(pts.to(dev), cols.to(dev), voxel_size)
        net = MinkUNet18A(MinkUNetConfig(width=width)).to(dev).train()
        be = get_backend(backend)

        def forward():
            x, _ = be.from_voxels(vox.coords, vox.feats)  # maps are rebuilt every frame, as in real use
            return net(x).feats

        def fwd():
            with torch.no_grad():
                forward()

        def fwd_bwd():
            net.zero_grad(set_to_none=True)
            forward().square().mean().backward()

        base = rss_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        res = {"backend": backend, "device": device, "voxels": int(vox.coords.shape[0]), "points": int(pts.shape[0]),
               "params": sum(p.numel() for p in net.parameters()), "width": width}
        res["forward"] = time_fn(fwd, dev, repeats)
        res["forward_backward"] = time_fn(fwd_bwd, dev, repeats)
        sync(dev)
        if dev.type == "cuda":
            res["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            res["peak_mem_mb"] = peak_rss_mb() - base  # growth of the process peak over the set-up
        queue.put(res)
    except Exception as exc:  # reported, not raised: one backend failing must not hide the other
        queue.put({"backend": backend, "device": device, "error": f"{type(exc).__name__}: {exc}"})


def run(args) -> dict:
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    backends = args.backends or available_backends()
    ctx = mp.get_context("spawn")  # one fresh process per measurement: clean peak memory
    results = []
    for device in devices:
        for backend in backends:
            q = ctx.Queue()
            p = ctx.Process(target=_measure, args=(backend, device, args.voxel_size, args.repeats, args.width, q))
            p.start()
            res = q.get()
            p.join()
            results.append(res)
    table = ["backend    device  voxels  fwd [s]  fwd+bwd [s]  peak [MB]"]
    for r in results:
        if "error" in r:
            table.append(f"{r['backend']:<10} {r['device']:<6}  error: {r['error']}")
            continue
        table.append(f"{r['backend']:<10} {r['device']:<6} {r['voxels']:>7} {r['forward']['median_s']:>8.3f} "
                     f"{r['forward_backward']['median_s']:>12.3f} {r['peak_mem_mb']:>10.0f}")
    ratios = {}
    for device in devices:
        by = {r["backend"]: r for r in results if r["device"] == device and "error" not in r}
        if "torch" in by and "minkowski" in by:
            ratios[device] = {
                k: by["torch"][k]["median_s"] / by["minkowski"][k]["median_s"] for k in ("forward", "forward_backward")
            }
            table.append(f"torch/minkowski time ratio on {device}: forward {ratios[device]['forward']:.2f}, "
                         f"forward+backward {ratios[device]['forward_backward']:.2f} (< 1: torch faster)")
    print("\n".join(table))
    return {"stage": "sparse", "results": results, "torch_over_minkowski": ratios}


def add_args(p) -> None:
    p.add_argument("--backends", nargs="*", choices=["torch", "minkowski"], help="default: every installed backend")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cpu, and cuda when available")
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0 = MinkUNet18A)")
    p.add_argument("--repeats", type=int, default=3)
