"""``python -m bifusion_core.train --config config/train/NAME.yaml [key=value ...] --out RUN_DIR``

Trains BiFusion (DESIGN.md §3-4). Re-running with the same --out resumes from RUN_DIR/last.pt exactly; with
another config (file or overrides; log.* settings excepted) it is refused, naming the keys that differ,
unless --allow-config-change (the change is then logged and recorded in RUN_DIR/config_history.json;
RUN_DIR/config.json is the config in use now). Every config value is checked (types and ranges) before anything trains.
``--init CHECKPOINT`` starts a new run from a checkpoint's weights (not its training state), e.g. only the merge
stage on the shipped demo model (``--config config/train/synthetic_merge.yaml --init
bifusion_core/assets/demo/synthetic_small.pt``); a checkpoint without a merge head is accepted (the head starts
from its random init), any other mismatch is an error.
Multi-GPU: ``torchrun --nproc_per_node=N -m bifusion_core.train ...`` (DistributedDataParallel).
Outputs: RUN_DIR/last.pt (resumable; written atomically), RUN_DIR/model.pt (weights only),
RUN_DIR/metrics.json, RUN_DIR/config.json, RUN_DIR/config_history.json, RUN_DIR/tb
(TensorBoard: ``tensorboard --logdir RUN_DIR/tb``).
Errors (bad config values, overrides, checkpoints, a changed config on resume) are one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bifusion_core.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="training YAML (config/train/scannet200.yaml, config/train/synthetic_small.yaml)")
    ap.add_argument("--out", required=True, help="run directory (checkpoints, logs, metrics)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--max-steps", type=int, help="stop after this many steps (the schedule still spans the config)")
    ap.add_argument("--no-resume", action="store_true", help="start over even if RUN_DIR/last.pt exists")
    ap.add_argument("--allow-config-change", action="store_true",
                    help="resume RUN_DIR/last.pt even though it was trained with another config (logged, and "
                         "recorded in RUN_DIR/config_history.json)")
    ap.add_argument("--init", metavar="CHECKPOINT",
                    help="start from this checkpoint's weights (a missing merge head starts from its init)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. data.batch_size=4 optim.lr=1e-4")
    args = ap.parse_intermixed_args(argv)  # overrides may come before and after the options
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from .config import load_train_config
    from .loop import NonFiniteLoss, Trainer
    from ..config import one_line
    from ..models.checkpoint import CheckpointError

    try:
        if args.max_steps is not None and args.max_steps < 0:
            raise ValueError(f"--max-steps must be >= 0, got {args.max_steps}")
        cfg = load_train_config(args.config, args.overrides)
        trainer = Trainer(cfg, args.out, args.device, args.max_steps, init=args.init,
                          allow_config_change=args.allow_config_change)
        summary = trainer.run(resume=not args.no_resume)
    except (ValueError, FileNotFoundError, CheckpointError, NonFiniteLoss) as exc:
        logging.getLogger("bifusion.train").error("%s", one_line(exc))
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if summary:
        v = summary.get("val") or {}
        print(f"done: {summary['steps']} steps in {summary['seconds']:.0f} s; validation mIoU {v.get('miou', float('nan')):.3f} "
              f"AP50 {v.get('ap50', float('nan')):.3f}; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
