"""``python -m bifusion_core.train.merge_check CHECKPOINT [CHECKPOINT ...] [--reference REF] [--json OUT]``

Checks merge-head checkpoints on held-out synthetic rooms (default seeds 100007-100010, never used in
training or tuning), through the frame pipeline (:class:`~bifusion_core.pipeline.processor.FrameProcessor`)
on one CPU thread (so that two runs of one model are bitwise equal):

- with ``--reference`` (e.g. the checkpoint a merge-stage fine-tune started from): whether every frame's
  per-point semantic labels, instance ids and scores, and every instance's class, score and points, are
  exactly equal to the reference's (the merge stage must change nothing but the embeddings); exit code 1
  when they are not;
- for every checkpoint with a merge head: over all pairs of frames of one room at most ``--gap`` frames
  apart, the mean cosine of the embeddings of instances assigned to the same ground-truth object and of
  instances of different objects of the same class (:mod:`bifusion_core.eval.merge`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def _frames(seed: int, rooms: int, n_frames: int, width: int, height: int):
    from ..data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence

    cam = CameraConfig.scaled(width, height)
    for r in range(rooms):
        seq = SyntheticSequence(seed + r, SequenceConfig(n_frames=n_frames, camera=cam))
        for i in range(n_frames):
            yield r, i, seq.frame(i)


def run_checkpoint(path, frames):
    """Process ``frames`` ``[(room, index, Frame)]`` with the checkpoint: ``(results, FrameEmbeddings
    per frame)``."""
    from ..data.scannet.classes import index_lookup
    from ..eval.merge import frame_embeddings
    from ..pipeline.processor import FrameProcessor

    proc = FrameProcessor.from_checkpoint(path, device="cpu")
    lut = index_lookup(proc.class_names)
    results, embs = [], []
    for _, _, f in frames:
        res = proc.process(f)
        u, v = res.pixels[:, 0], res.pixels[:, 1]
        gt_inst = f.instance[v, u].astype(np.int64)
        gt_sem = lut[np.clip(f.semantic[v, u], 0, len(lut) - 1)]
        results.append(res)
        embs.append(frame_embeddings(res.instances, gt_inst, gt_sem))
    return results, embs


def same_outputs(a, b) -> list[str]:
    """What differs between two :class:`FrameResult` of one frame apart from the embeddings (empty: nothing)."""
    bad = [k for k in ("points", "semantic", "instance", "score") if not np.array_equal(getattr(a, k), getattr(b, k))]
    if len(a.instances) != len(b.instances):
        return bad + ["instance count"]
    for x, y in zip(a.instances, b.instances):
        if (x.id, x.class_id, x.score) != (y.id, y.class_id, y.score) or not np.array_equal(
                np.asarray(x.point_indices), np.asarray(y.point_indices)):
            bad.append(f"instance {x.id}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bifusion_core.train.merge_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="checkpoints to measure")
    ap.add_argument("--reference", help="checkpoint whose segmentation the others must reproduce exactly")
    ap.add_argument("--seed", type=int, default=100007, help="first held-out room (synthetic seed)")
    ap.add_argument("--rooms", type=int, default=4)
    ap.add_argument("--frames", type=int, default=20, help="frames per room (spread over its camera loop)")
    ap.add_argument("--gap", type=int, default=5, help="pairs: frames of one room at most this far apart")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    log = logging.getLogger("bifusion.merge_check")
    import torch

    from ..eval.merge import embedding_separation
    from ..models.checkpoint import CheckpointError

    torch.set_num_threads(1)  # multi-threaded scatter reductions differ run to run in the last bits
    if min(args.rooms, args.frames, args.gap) < 1:
        log.error("--rooms, --frames and --gap must be >= 1")
        return 2
    t0 = time.perf_counter()
    frames = list(_frames(args.seed, args.rooms, args.frames, args.width, args.height))
    pairs = [(i, j) for i in range(len(frames)) for j in range(i + 1, len(frames))
             if frames[i][0] == frames[j][0] and frames[j][1] - frames[i][1] <= args.gap]
    report = {"rooms": f"synthetic seeds {args.seed}-{args.seed + args.rooms - 1}, {args.frames} frames each "
                       f"({args.width}x{args.height})", "frame_pairs": len(pairs), "max_gap": args.gap,
              "checkpoints": {}}
    identical = True
    try:
        ref = run_checkpoint(args.reference, frames)[0] if args.reference else None
        for path in args.checkpoints:
            results, embs = run_checkpoint(path, frames)
            entry = embedding_separation([(embs[i], embs[j]) for i, j in pairs])
            entry["instances_with_embedding"] = int(sum(
                sum(getattr(x, "embedding", None) is not None for x in r.instances) for r in results))
            entry["instances"] = int(sum(len(r.instances) for r in results))
            if ref is not None:
                diffs = {f"room {frames[k][0]} frame {frames[k][1]}": d
                         for k, d in enumerate(same_outputs(a, b) for a, b in zip(ref, results)) if d}
                entry["identical_to_reference"] = not diffs
                entry["differences"] = dict(list(diffs.items())[:10])
                identical &= not diffs
            report["checkpoints"][str(path)] = entry
            log.info("%s: cosine %.3f same object (%d) vs %.3f other object of its class (%d)%s", path,
                     entry["same_object"], entry["n_same_object"], entry["same_class_other_object"],
                     entry["n_same_class_other_object"],
                     "" if ref is None else f"; outputs identical to the reference: {entry['identical_to_reference']}")
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        log.error("%s", exc)
        return 2
    report["seconds"] = time.perf_counter() - t0
    if args.reference:
        report["reference"] = str(args.reference)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
