"""``python -m bifusion_core.train.evaluate --checkpoint CK --config config/train/NAME.yaml [key=value ...]``

Scores a checkpoint on held-out frames of a training config's data source, exactly as training validation does
(semantic mIoU and per-class IoU, instance AP/AP50/AP25 under the ScanNet protocol). ``--seed`` picks other
held-out synthetic rooms than the ones validation used (rooms ``seed + 100000 ...``), so post-processing can be
tuned on one set and reported on another. ``--post key=value`` overrides the checkpoint's post-processing
(e.g. ``--post score_threshold=0.05 --post instance_class=mean``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bifusion_core.train.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="checkpoint (default: the shipped demo checkpoint)")
    ap.add_argument("--config", required=True, help="training YAML whose data section names the held-out frames")
    ap.add_argument("--seed", type=int, help="data seed of the held-out rooms (synthetic; default: the config's)")
    ap.add_argument("--post", action="append", default=[], metavar="KEY=VALUE",
                    help="post-processing override (repeatable), e.g. --post score_threshold=0.05")
    ap.add_argument("--max-frames", type=int, help="evaluate at most this many frames")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the figures (with per-class IoU) to this file")
    ap.add_argument("overrides", nargs="*", help="training-config overrides, e.g. data.val_scenes=4")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from ..config import apply_overrides, from_dict, one_line, to_dict
    from ..models.checkpoint import CheckpointError, load_model
    from ..models.postprocess import PostprocessConfig
    from ..pipeline.processor import DEMO_CHECKPOINT
    from .config import load_train_config
    from .data import BatchSampler, FramePool
    from .validate import validate

    log = logging.getLogger("bifusion.evaluate")
    try:
        cfg = load_train_config(args.config, args.overrides)
        if args.seed is not None:
            cfg.data = replace(cfg.data, seed=args.seed)
        model, _ = load_model(args.checkpoint or DEMO_CHECKPOINT, args.device)
        post = apply_overrides(to_dict(model.cfg.postprocess), args.post)
        model.cfg.postprocess = from_dict(PostprocessConfig, post, "--post")
        pool = FramePool(cfg.data, "val")
        if len(pool) == 0:
            raise ValueError("the config has no held-out frames (data.val_scenes / data.val_root)")
        sampler = BatchSampler(pool, cfg.data, model.cfg, model.class_names)
        res = validate(model, sampler, args.max_frames, args.device, details=True)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        log.error("%s", one_line(exc))
        return 2
    sem = res.pop("semantic")
    print(sem.table())
    print(f"instances: AP {res['ap']:.3f}  AP50 {res['ap50']:.3f}  AP25 {res['ap25']:.3f}  ({res['frames']} frames)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**res, "semantic": sem.to_dict(), "seed": cfg.data.seed,
                                               "postprocess": to_dict(model.cfg.postprocess)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
