"""``python -m bifusion_core.eval {instance,semantic} --pred DIR --gt DIR [--json FILE]``: score predictions in
the ScanNet benchmark's submission format (see :mod:`bifusion_core.eval.io`) and print per-class tables.

instance: ``PRED/SCENE.txt`` lists ``MASK_FILE LABEL_ID CONFIDENCE``; ``GT/SCENE.txt`` holds
``label_id * 1000 + instance`` per vertex. Prints AP (0.50:0.95), AP50, AP25.
semantic: ``PRED/SCENE.txt`` and ``GT/SCENE.txt`` hold one label id per vertex. Prints IoU per class, mIoU
(a class with neither ground truth nor predictions has no IoU and stays out of the mean).

Exit status 0, or 2 with a one-line error for unusable input: a missing file, a value that is not a 64-bit
integer, files of different lengths, a mask file listed twice (in one scene or two), or ground truth with
nothing to score (no labelled point / no instance of the evaluated classes in any scene; a single such scene is
only a warning). With ScanNet200 classes the tables and JSON also give the means over the benchmark's head /
common / tail classes.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from ..data.scannet.classes import CLASS_SETS, get_class_set
from .instance import InstanceEvalConfig, evaluate_matches, match_scene, summarize
from .io import pair_scene_files, read_ids, read_instance_predictions
from .semantic import SemanticEvaluator

log = logging.getLogger("bifusion_core.eval")


def run_instance(args) -> dict:
    cfg = InstanceEvalConfig(min_region_size=args.min_region_size, classes=args.classes,
                             class_agnostic=args.class_agnostic)
    pairs = pair_scene_files(args.pred, args.gt)
    _warn_unpaired(args.gt, pairs)
    matches, uid, seen = [], 0, {}
    for scene, pred_file, gt_file in tqdm(pairs, desc="scenes", unit="scene", disable=args.quiet):
        gt = read_ids(gt_file)
        preds = read_instance_predictions(pred_file, args.pred, n_vertices=len(gt), seen=seen)
        m = match_scene(gt, preds, cfg, uid)
        uid += sum(len(v) for v in m.pred.values())
        matches.append(m)
    n_gt = sum(1 for m in matches for gts in m.gt.values() for g in gts
               if g.instance_id >= 1000 and g.vert_count >= cfg.min_region_size)
    if n_gt == 0:
        raise ValueError(f"the ground truth ({args.gt}) has no instance of the {cfg.class_set.name} classes with at "
                         f"least {cfg.min_region_size} vertices in any of the {len(pairs)} scene(s): nothing to "
                         "score (all unlabelled, empty files, or the wrong --classes / format?)")
    result = summarize(evaluate_matches(matches, cfg), cfg)
    print(result.table())
    return {"task": "instance", "scenes": len(pairs), "classes": cfg.class_set.name,
            "min_region_size": cfg.min_region_size, **result.to_dict()}


def run_semantic(args) -> dict:
    classes = get_class_set(args.classes)
    pairs = pair_scene_files(args.pred, args.gt)
    _warn_unpaired(args.gt, pairs)
    ev = SemanticEvaluator(len(classes), classes.names)
    for scene, pred_file, gt_file in tqdm(pairs, desc="scenes", unit="scene", disable=args.quiet):
        gt, pred = read_ids(gt_file), read_ids(pred_file)
        if len(gt) != len(pred):
            raise ValueError(f"{pred_file}: {len(pred)} values, but {gt_file} has {len(gt)}")
        if args.gt_instance_ids:
            gt = gt // 1000
        gt_index = classes.to_index(gt)
        if not (gt_index >= 0).any():
            log.warning("%s: no labelled point of the %s classes (%d values)", gt_file, classes.name, len(gt))
        ev.update(gt_index, classes.to_index(pred))
    if ev.confusion.sum() + ev.missed.sum() == 0:
        raise ValueError(f"the ground truth ({args.gt}) has no labelled points of the {classes.name} classes in any "
                         f"of the {len(pairs)} scene(s): nothing to score (all 0 = unannotated, empty files, or the "
                         "wrong --classes / --gt-instance-ids?)")
    result = ev.result()
    print(result.table())
    return {"task": "semantic", "scenes": len(pairs), "classes": classes.name, **result.to_dict()}


def _warn_unpaired(gt_dir, pairs) -> None:
    names = {p[0] for p in pairs}
    missing = [p.stem for p in Path(gt_dir).glob("*.txt") if p.stem not in names]
    if missing:
        log.warning("%d ground-truth scene(s) have no prediction and are not evaluated (e.g. %s)", len(missing),
                    missing[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bifusion_core.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    for name, helptext, default in (("instance", "3D instance segmentation AP / AP50 / AP25", "scannet200_instance"),
                                    ("semantic", "3D semantic segmentation IoU / mIoU", "scannet200")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--pred", required=True, type=Path, help="directory of SCENE.txt prediction files")
        p.add_argument("--gt", required=True, type=Path, help="directory of SCENE.txt ground-truth files")
        p.add_argument("--classes", default=default, choices=sorted(CLASS_SETS),
                       help=f"evaluated class set (default {default})")
        p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        if name == "instance":
            p.add_argument("--min-region-size", type=int, default=100,
                           help="smallest instance counted, in vertices (default 100)")
            p.add_argument("--class-agnostic", action="store_true",
                           help="ignore predicted labels: all instances of the class set form one class")
        else:
            p.add_argument("--gt-instance-ids", action="store_true",
                           help="ground truth holds label*1000+instance (the instance format)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = run_instance(args) if args.task == "instance" else run_semantic(args)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
