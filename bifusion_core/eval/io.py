"""The ScanNet benchmark's file formats.

* Ground truth (``GT_DIR/SCENE.txt``): one integer per mesh vertex; ``label_id * 1000 + instance`` for the
  instance task, ``label_id`` for the semantic task (0 = unannotated).
* Instance predictions (``PRED_DIR/SCENE.txt``): one line per instance, ``MASK_FILE LABEL_ID CONFIDENCE``,
  where ``MASK_FILE`` is relative to the ``SCENE.txt`` and lies inside ``PRED_DIR`` (usually
  ``pred_mask/SCENE_K.txt``), holding one integer per vertex (non-zero = member).
* Semantic predictions (``PRED_DIR/SCENE.txt``): one label id per vertex.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .instance import PredictedInstance

RESULT_FILES = {"semantic_instance_evaluation.txt", "semantic_label_evaluation.txt"}


def read_ids(path) -> np.ndarray:
    """``(N,)`` int64 from a file of one integer per line; errors name the file and line.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a value that is not an integer, or one outside the int64 range (the numbers are ids).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    tokens = path.read_text(errors="replace").split()
    try:
        return np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    info = np.iinfo(np.int64)
    for lineno, tok in enumerate(tokens, start=1):
        try:
            value = int(tok)
        except ValueError:
            raise ValueError(f"{path}: value {lineno} ({tok!r}) is not an integer") from None
        if not info.min <= value <= info.max:
            shown = tok if len(tok) <= 40 else tok[:37] + "..."
            raise ValueError(f"{path}: value {lineno} ({shown}) is outside the 64-bit integer range") from None
    raise ValueError(f"{path}: cannot read its values as 64-bit integers")


def write_ids(path, ids: np.ndarray) -> None:
    """One integer per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(ids, np.int64).ravel(), fmt="%d")


def read_instance_predictions(path, pred_dir=None, n_vertices: int | None = None,
                              seen: dict[Path, str] | None = None) -> list[PredictedInstance]:
    """The predictions listed in ``path`` (a ``SCENE.txt``); masks must lie inside ``pred_dir`` (default: the
    directory of ``path``) and, when ``n_vertices`` is given, have that many values.

    A mask file may be listed once: a second line naming it (in this listing, or in another scene's when the
    caller passes the same ``seen`` dict for every scene) is a ``ValueError`` naming both places. The official
    evaluator reads such input differently from how it is written (it keeps one entry per file and counts a file
    matched in one scene as matched in the other), so its scores would not be the listing's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file not found: {path}")
    root = Path(os.path.abspath(pred_dir if pred_dir is not None else path.parent))
    seen = {} if seen is None else seen
    preds = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 'MASK_FILE LABEL_ID CONFIDENCE', got {line!r}")
        rel, label, conf = parts
        if os.path.isabs(rel):
            raise ValueError(f"{path}:{lineno}: mask path {rel!r} must be relative")
        mask_file = Path(os.path.abspath(path.parent / rel))
        if os.path.commonpath([mask_file, root]) != str(root):
            raise ValueError(f"{path}:{lineno}: mask {rel!r} points outside the prediction directory {root}")
        key = Path(os.path.realpath(mask_file))
        if key in seen:
            raise ValueError(f"{path}:{lineno}: mask {rel!r} is already listed at {seen[key]}; list each mask file "
                             "once (the official evaluator would keep one entry and mix the scenes' matches)")
        seen[key] = f"{path}:{lineno}"
        try:
            label_id, confidence = int(float(label)), float(conf)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: label {label!r} / confidence {conf!r} are not numbers") from None
        if not np.isfinite(confidence):
            raise ValueError(f"{path}:{lineno}: confidence {conf!r} is not finite")
        mask = read_ids(mask_file)
        if n_vertices is not None and len(mask) != n_vertices:
            raise ValueError(f"{mask_file}: {len(mask)} values, but the scene's ground truth has {n_vertices} "
                             "vertices")
        preds.append(PredictedInstance(mask=mask != 0, label_id=label_id, confidence=confidence))
    return preds


def write_instance_predictions(pred_dir, scene: str, masks, label_ids, confidences) -> Path:
    """Write one scene's predictions in the benchmark format: ``pred_dir/scene.txt`` and
    ``pred_dir/pred_mask/scene_K.txt``. ``masks`` is ``(K, N)`` (or a list of ``(N,)``)."""
    pred_dir = Path(pred_dir)
    (pred_dir / "pred_mask").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (mask, label, conf) in enumerate(zip(masks, label_ids, confidences)):
        rel = f"pred_mask/{scene}_{k}.txt"
        write_ids(pred_dir / rel, (np.asarray(mask) != 0).astype(np.int64))
        lines.append(f"{rel} {int(label)} {float(conf):.6f}")
    out = pred_dir / f"{scene}.txt"
    out.write_text("".join(line + "\n" for line in lines))
    return out


def pair_scene_files(pred_dir, gt_dir) -> list[tuple[str, Path, Path]]:
    """``[(scene, pred file, gt file)]`` for every ``*.txt`` directly in ``pred_dir`` (as the benchmark does);
    ``FileNotFoundError`` naming a prediction without ground truth."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise FileNotFoundError(f"{what} directory not found: {d}")
    pairs = []
    for p in sorted(pred_dir.glob("*.txt")):
        if p.name in RESULT_FILES:
            continue
        g = gt_dir / p.name
        if not g.is_file():
            raise FileNotFoundError(f"prediction {p} has no ground truth {g}")
        pairs.append((p.stem, p, g))
    if not pairs:
        raise FileNotFoundError(f"no prediction files (SCENE.txt) in {pred_dir}")
    return pairs
