"""``map`` stage: the online instance map (:mod:`bifusion_core.mapping`).

- **Merge latency**: one :meth:`InstanceMap.update` of ``--observations`` new instances (half of them
  re-observations of instances already in memory, shifted by a few centimetres as from a new viewpoint, half
  new objects) with 10 / 50 / 100 instances in memory (``max_instances`` = that number, so the memory stays
  full), 256-d merge embeddings, box IoU and voxel IoU; median and p95 over ``--repeats`` updates.
- **Memory over a long run**: ``--frames`` frames of a camera sweeping a large synthetic hall (a new patch of
  floor and objects every frame) through :class:`SceneMap` with ``--max-voxels``; the labelled voxel map's and
  the instances' bytes every 100 frames: they grow, then stay flat once the caps bite.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..mapping import MapConfig, Observation, SceneMap
from ..mapping.config import OVERLAP_KINDS
from ..mapping.instance_map import InstanceMap

_EMB = 256


def add_args(p) -> None:
    p.add_argument("--observations", type=int, default=20, help="observations per timed update (default 20)")
    p.add_argument("--points", type=int, default=1500, help="points per observation (default 1500)")
    p.add_argument("--repeats", type=int, default=50, help="timed updates per setting (default 50)")
    p.add_argument("--frames", type=int, default=1000, help="frames of the memory run (default 1000)")
    p.add_argument("--max-voxels", type=int, default=100_000, help="voxel cap of the memory run (default 100000)")


def _box_points(rng, centre, size, n) -> np.ndarray:
    """``(n, 3)`` points on the surface-ish volume of an axis-aligned box (metres)."""
    return (np.asarray(centre) + (rng.random((n, 3)) - 0.5) * np.asarray(size)).astype(np.float32)


def _observation(rng, centre, size, n, class_id, embedding) -> Observation:
    return Observation(points=_box_points(rng, centre, size, n), class_id=int(class_id), score=0.8,
                       embedding=embedding)


def _unit(rng, n) -> np.ndarray:
    e = rng.standard_normal((n, _EMB))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _merge_latency(n_memory: int, overlap: str, args, rng) -> dict:
    cfg = MapConfig(max_instances=n_memory, overlap=overlap)
    imap = InstanceMap(cfg)
    # objects on a 2 m grid (never overlapping each other), 0.4-1.2 m boxes, 5 classes
    side = int(np.ceil(np.sqrt(n_memory)))
    centres = np.array([[2.0 * (i % side), 2.0 * (i // side), 0.5] for i in range(n_memory)])
    sizes = rng.uniform(0.4, 1.2, (n_memory, 3))
    classes = rng.integers(0, 5, n_memory)
    embeddings = _unit(rng, n_memory)
    imap.update([_observation(rng, c, s, args.points, k, e) for c, s, k, e in zip(centres, sizes, classes, embeddings)],
                stamp=0.0)
    assert len(imap) == n_memory
    times = []
    next_centre = 2.0 * side
    for r in range(args.repeats):
        obs = []
        for _ in range(args.observations // 2):  # seen again: shifted, noisy embedding
            i = int(rng.integers(n_memory))
            e = embeddings[i] + 0.1 * rng.standard_normal(_EMB)
            obs.append(_observation(rng, centres[i] + rng.normal(0, 0.05, 3), sizes[i], args.points, classes[i],
                                    e / np.linalg.norm(e)))
        for _ in range(args.observations - len(obs)):  # new objects, far from the others
            next_centre += 2.0
            obs.append(_observation(rng, (next_centre, -5.0, 0.5), rng.uniform(0.4, 1.2, 3), args.points,
                                    int(rng.integers(5)), _unit(rng, 1)[0]))
        t0 = time.perf_counter()
        imap.update(obs, stamp=float(r + 1))
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"instances_in_memory": n_memory, "overlap": overlap, "observations": args.observations,
            "points_per_observation": args.points, "median_ms": statistics.median(times) * 1e3,
            "p95_ms": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))] * 1e3,
            "max_ms": times[-1] * 1e3, "held_after": len(imap)}


def _memory_run(args, rng) -> dict:
    smap = SceneMap(MapConfig(max_voxels=args.max_voxels))
    samples = []
    for f in range(args.frames):
        x0 = 0.25 * f  # the camera moves 25 cm a frame along a long hall
        floor = np.column_stack([x0 + rng.random(6000) * 4.0, rng.random(6000) * 6.0, np.zeros(6000)]).astype(np.float32)
        obs = [_observation(rng, (x0 + 1.0 + 2.0 * k, 1.0 + 2.0 * k, 0.4), (0.6, 0.6, 0.8), 800, k % 5, None)
               for k in range(2)]
        pts = np.concatenate([floor] + [o.points for o in obs])
        sem = np.concatenate([np.zeros(len(floor), np.int64)] + [np.full(len(o.points), 1 + o.class_id, np.int64)
                                                                 for o in obs])
        owner = np.concatenate([np.full(len(floor), -1, np.int64)] + [np.full(len(o.points), k, np.int64)
                                                                       for k, o in enumerate(obs)])
        smap.update(obs, stamp=float(f), points=pts, semantic=sem, point_observation=owner)
        if (f + 1) % 100 == 0 or f == 0:
            inst_bytes = sum(i.voxel_keys.nbytes for i in smap.instances)
            samples.append({"frame": f + 1, "voxels": len(smap.voxel_map.keys), "voxel_map_mb": smap.voxel_map.nbytes / 2**20,
                            "instances": len(smap.instances), "instance_voxels_mb": inst_bytes / 2**20})
    return {"frames": args.frames, "max_voxels": args.max_voxels, "samples": samples}


def run(args) -> dict:
    rng = np.random.default_rng(0)
    latency = []
    for n in (10, 50, 100):
        for overlap in OVERLAP_KINDS:  # interleaved per memory size, same machine state
            r = _merge_latency(n, overlap, args, rng)
            latency.append(r)
            print(f"map merge: {n:3d} in memory, {overlap:9s}, {args.observations} observations x {args.points} "
                  f"points: median {r['median_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms")
    memory = _memory_run(args, rng)
    for s in memory["samples"]:
        print(f"map memory: frame {s['frame']:5d}: {s['voxels']:7d} voxels {s['voxel_map_mb']:6.2f} MB, "
              f"{s['instances']:3d} instances {s['instance_voxels_mb']:.2f} MB")
    return {"stage": "map", "merge_latency": latency, "memory": memory}
