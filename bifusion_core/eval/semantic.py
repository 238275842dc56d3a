"""Semantic segmentation metrics: per-class IoU and mIoU from a confusion matrix, as the ScanNet benchmark
computes them.

Ground-truth points with the ignore label (or any label outside ``[0, C)``) are left out. A prediction
outside ``[0, C)`` on a labelled point is a miss for that point's class (a false negative) and a false
positive for no class, as in ``evaluate_semantic_label.py``. A class with neither ground truth nor
predictions has IoU NaN and is left out of the mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.scannet.classes import IGNORE_INDEX, split_means


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Confusion of one prediction.

    Args:
        gt, pred: integer class indices of the same shape (``(N,)``, or e.g. ``(H, W)`` per pixel).
        num_classes: C.
        ignore_index: ground-truth value to skip (any value outside ``[0, C)`` is skipped too).

    Returns:
        ``confusion (C, C)`` int64 (rows ground truth, columns prediction) and ``missed (C,)`` int64, the
        points of each ground-truth class whose prediction is outside ``[0, C)``.

    Raises:
        ValueError: ``gt`` and ``pred`` differ in shape (not only in size: an ``(N, 3)`` ground truth, say a
            three-channel label image read at N points, is refused against an ``(N,)`` prediction), or hold
            something other than integer class indices (floats must be whole numbers).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has shape {gt.shape} ({gt.size} values), prediction {pred.shape} "
                         f"({pred.size} values); they must match (one class index per point)")
    for what, a in (("ground truth", gt), ("prediction", pred)):
        if a.dtype.kind == "f" and a.size and not (np.isfinite(a).all() and (a == np.rint(a)).all()):
            raise ValueError(f"{what} must hold integer class indices, got non-integer values ({a.dtype})")
        if a.dtype.kind not in "uibf":
            raise ValueError(f"{what} must hold integer class indices, got dtype {a.dtype}")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    in_range = (pred >= 0) & (pred < num_classes)
    conf = np.bincount(gt[in_range] * num_classes + pred[in_range], minlength=num_classes ** 2)
    missed = np.bincount(gt[~in_range], minlength=num_classes)
    return conf.reshape(num_classes, num_classes).astype(np.int64), missed.astype(np.int64)


def iou_from_confusion(confusion: np.ndarray, missed: np.ndarray | None = None) -> np.ndarray:
    """``(C,)`` IoU = TP / (TP + FP + FN); NaN where the denominator is 0."""
    conf = np.asarray(confusion, np.float64)
    tp = np.diag(conf)
    fn = conf.sum(1) - tp + (0 if missed is None else np.asarray(missed, np.float64))
    fp = conf.sum(0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


@dataclass
class SemanticResult:
    """mIoU (NaN-free mean over classes with ground truth or predictions), overall accuracy, per-class IoU."""

    miou: float
    accuracy: float
    iou: np.ndarray
    class_names: tuple[str, ...]
    confusion: np.ndarray

    def splits(self) -> dict[str, dict]:
        """mIoU over ScanNet200's head / common / tail classes (those of this result with an IoU):
        ``{split: {"miou", "classes"}}``, empty for a class list outside ScanNet200."""
        return {k: {"miou": v["mean"], "classes": v["classes"]}
                for k, v in split_means(self.class_names, self.iou).items()}

    def to_dict(self) -> dict:
        tp = np.diag(self.confusion)
        return {"miou": _f(self.miou), "accuracy": _f(self.accuracy), "splits": self.splits(),
                "classes": {n: {"iou": _f(i), "gt_points": int(g), "tp": int(t)}
                            for n, i, g, t in zip(self.class_names, self.iou, self.confusion.sum(1), tp)}}

    def table(self) -> str:
        """Per-class IoU table (classes with ground truth or predictions), then the summary."""
        lines = [f"{'class':<28}{'IoU':>8}{'GT pts':>12}", "-" * 48]
        gt = self.confusion.sum(1)
        for n, i, g in zip(self.class_names, self.iou, gt):
            if not np.isnan(i):
                lines.append(f"{n:<28}{i:>8.3f}{int(g):>12d}")
        lines += ["-" * 48, f"{'mIoU':<28}{self.miou:>8.3f}", f"{'accuracy':<28}{self.accuracy:>8.3f}"]
        for split, v in self.splits().items():
            if v["miou"] is not None:
                lines.append(f"{'mIoU ' + split + ' (' + str(v['classes']) + ' classes)':<28}{v['miou']:>8.3f}")
        return "\n".join(lines)


def _f(x) -> float | None:
    return None if np.isnan(x) else float(x)


class SemanticEvaluator:
    """Accumulates confusion over scenes; :meth:`result` gives IoUs."""

    def __init__(self, num_classes: int, class_names=None, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.missed = np.zeros(num_classes, np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one scene: ``gt``/``pred`` ``(N,)`` contiguous class indices (same shape, else ``ValueError``)."""
        c, m = confusion_matrix(gt, pred, self.num_classes, self.ignore_index)
        self.confusion += c
        self.missed += m

    def result(self) -> SemanticResult:
        iou = iou_from_confusion(self.confusion, self.missed)
        total = self.confusion.sum() + self.missed.sum()
        acc = float(np.trace(self.confusion) / total) if total else float("nan")
        miou = float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan")
        return SemanticResult(miou=miou, accuracy=acc, iou=iou, class_names=self.class_names,
                              confusion=self.confusion.copy())
