"""``python -m bifusion_core.train.ablate --config config/train/synthetic_open.yaml --steps N --out DIR``

What each branch adds: trains the config's model once per variant, with the same data, seed and step budget
(``--steps``: S0 takes ``--s0`` of them, S1 the rest; no S2/S3), and scores every variant on the same unseen
synthetic rooms (``--test-seed``: rooms ``test_seed + 100000 ...``, ``--test-rooms`` of them, never trained or
validated on):

==============  ======================================================================
``gate``        the design: the learned point-wise gate mixes f2D and f3D
``3d_only``     ``gate.fixed_alpha = 0``: the fused feature is f3D (after FiLM) alone
``2d_only``     ``gate.fixed_alpha = 1``: f2D alone
``no_pe_film``  ``pe_film.enabled = false``: the gate sees the features without FiLM
``fixed_rooms`` the design on a fixed set of 12 rooms x 20 frames instead of the room stream
==============  ======================================================================

and, without retraining, ``gate`` with instance classes from the decoder's queries (``instance_class=query``)
against the mask-pooled per-point semantics (``semantic``, the shipped setting). Writes ``DIR/ablations.json``
and prints a Markdown table (mIoU, AP, AP50, AP25). Each variant's run directory is ``DIR/VARIANT``; re-running
resumes or reuses finished runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "gate": [],
    "3d_only": ["model.gate.fixed_alpha=0"],
    "2d_only": ["model.gate.fixed_alpha=1"],
    "no_pe_film": ["model.pe_film.enabled=false"],
    "fixed_rooms": ["data.stream.rooms=0", "data.scenes=12", "data.frames_per_scene=20"],
}


def held_out_pool(cfg, seed: int, rooms: int, frames: int):
    """``(data config, FramePool)`` of ``rooms`` held-out synthetic rooms of data seed ``seed`` (frames rendered once
    and shared by every variant scored on them)."""
    from .data import FramePool

    data = replace(cfg.data, seed=seed, val_scenes=rooms, val_frames_per_scene=frames)
    return data, FramePool(data, "val")


def score(model, data, pool, post: dict | None = None) -> dict:
    """Validation figures of ``model`` on the frames of ``pool`` (:func:`held_out_pool`)."""
    from ..config import from_dict, to_dict
    from ..models.postprocess import PostprocessConfig
    from .data import BatchSampler
    from .validate import validate

    if post:
        model.cfg.postprocess = from_dict(PostprocessConfig, {**to_dict(model.cfg.postprocess), **post}, "post")
    res = validate(model, BatchSampler(pool, data, model.cfg, model.class_names), details=True)
    sem = res.pop("semantic")
    res["per_class_iou"] = {n: float(v) for n, v in zip(sem.class_names, sem.iou)}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bifusion_core.train.ablate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="training YAML (e.g. config/train/synthetic_open.yaml)")
    ap.add_argument("--out", required=True, help="directory for the variants' runs and ablations.json")
    ap.add_argument("--steps", type=int, default=600, help="training steps per variant (default 600)")
    ap.add_argument("--s0", type=int, default=100, help="of which stage S0 (default 100)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--test-seed", type=int, default=7, help="data seed of the unseen rooms (default 7: 100007...)")
    ap.add_argument("--test-rooms", type=int, default=4)
    ap.add_argument("--test-frames", type=int, default=6, help="frames per unseen room")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("overrides", nargs="*", help="overrides for every variant, e.g. data.batch_size=2")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from ..config import one_line
    from ..models.checkpoint import CheckpointError, load_model
    from .config import load_train_config
    from .loop import Trainer

    log = logging.getLogger("bifusion.ablate")
    out = Path(args.out)
    results: dict = {}
    try:
        if not 0 <= args.s0 < args.steps:
            raise ValueError(f"need 0 <= --s0 < --steps, got {args.s0} and {args.steps}")
        budget = [f"stages.s0_iters={args.s0}", f"stages.s1_iters={args.steps - args.s0}", "stages.s2_iters=0",
                  "stages.s3_iters=0", f"log.val_every={args.steps}", f"log.ckpt_every={max(1, args.steps // 4)}"]
        test = None
        for name in args.variants:
            cfg = load_train_config(args.config, list(args.overrides) + budget + VARIANTS[name])
            if test is None:
                test = held_out_pool(cfg, args.test_seed, args.test_rooms, args.test_frames)
            run = out / name
            t0 = time.perf_counter()
            if not (run / "model.pt").is_file():
                Trainer(cfg, run, args.device).run()
            model, _ = load_model(run / "model.pt", args.device)
            r = {"overrides": VARIANTS[name], "train_seconds": time.perf_counter() - t0}
            r["test"] = score(model, *test)
            if name == "gate":
                other = "query" if model.cfg.postprocess.instance_class != "query" else "semantic"
                r[f"test_instance_class_{other}"] = score(model, *test, {"instance_class": other})
            results[name] = r
            log.info("%s: mIoU %.3f AP50 %.3f", name, r["test"]["miou"], r["test"]["ap50"])
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        log.error("%s", one_line(exc))
        return 2
    summary = {"config": args.config, "steps": args.steps, "s0": args.s0, "overrides": args.overrides,
               "test_rooms": f"synthetic seeds {args.test_seed + 100000}-{args.test_seed + 100000 + args.test_rooms - 1}"
                             f" ({args.test_frames} frames each)", "variants": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))
    return 0


def table(summary: dict) -> str:
    """The Markdown table of an ``ablations.json``."""
    rows = ["| variant | mIoU | AP | AP50 | AP25 |", "|---|---|---|---|---|"]
    for name, r in summary["variants"].items():
        for key, label in (("test", name), ("test_instance_class_query", f"{name}, query classes"),
                           ("test_instance_class_semantic", f"{name}, pooled-semantic classes")):
            if key in r:
                t = r[key]
                rows.append(f"| {label} | {t['miou']:.3f} | {t['ap']:.3f} | {t['ap50']:.3f} | {t['ap25']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
