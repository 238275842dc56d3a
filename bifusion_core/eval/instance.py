"""3D instance segmentation AP, AP50 and AP25 exactly as the ScanNet benchmark
(``BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py``) computes them.

Inputs per scene: ground truth ``ids (N,)`` with ``label_id * 1000 + instance`` per vertex (0 = unannotated),
and predicted instances (binary vertex mask, label id, confidence). The procedure:

* Ground-truth instances are the distinct non-zero ids whose label (``id // 1000``) is in the evaluated class
  set; those smaller than ``min_region_size`` (100) vertices are not counted (neither TP nor FN).
  Vertices whose label is outside the set (unannotated, or wall/floor for the instance benchmarks) are *void*.
* Predictions with a label outside the set, or fewer than ``min_region_size`` vertices, are dropped.
* For each overlap threshold (0.50, 0.55, ..., 0.90 and 0.25) and class: every ground-truth instance takes
  the first not yet used prediction of its class whose IoU exceeds the threshold; further predictions above
  the threshold for the same instance are false positives (the instance keeps the higher confidence);
  ground truth left without a match is a false negative. A prediction that overlaps no ground truth of its
  class above the threshold is a false positive unless the share of its vertices on void, on ground truth
  of another group (id < 1000) or on too-small instances exceeds the threshold.
* AP is the area under the precision-recall curve over confidence thresholds, with the benchmark's
  step widths (half the recall difference of the neighbours). A class with ground truth but no prediction
  has AP 0; a class without ground truth has AP NaN and is left out of the means.
* AP averages the thresholds 0.50:0.95 (not 0.25) and the classes; AP50 / AP25 are the class means at 0.5 /
  0.25.

The benchmark's distance filters (``distance_threshes = inf``, ``distance_confs = -inf``) never filter
anything and are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import configclass, spec
from ..data.scannet.classes import ClassSet, get_class_set, split_means

DEFAULT_OVERLAPS = tuple(float(x) for x in np.append(np.arange(0.5, 0.95, 0.05), 0.25))


@configclass
class InstanceEvalConfig:
    """Attributes:
        overlaps: IoU thresholds; AP averages all but 0.25, AP50 / AP25 read 0.5 / 0.25.
        min_region_size: smallest instance (vertices) counted, ground truth and prediction alike.
        classes: name of the evaluated class set (:data:`~bifusion_core.data.scannet.classes.CLASS_SETS`).
        class_agnostic: score every prediction against every ground-truth instance of the set as one class.
    """

    overlaps: tuple[float, ...] = spec(DEFAULT_OVERLAPS, ge=0, lt=1)
    min_region_size: int = spec(100, ge=0)
    classes: str = "scannet200_instance"
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if not self.overlaps:
            raise ValueError(f"overlaps must be thresholds in [0, 1), got {self.overlaps}")
        get_class_set(self.classes)

    @property
    def class_set(self) -> ClassSet:
        if self.class_agnostic:
            return ClassSet("class_agnostic", (1,), ("object",))
        return get_class_set(self.classes)


@dataclass
class PredictedInstance:
    """One predicted instance: ``mask (N,)`` (non-zero = member), label id, confidence."""

    mask: np.ndarray
    label_id: int
    confidence: float


@dataclass
class _Gt:
    instance_id: int
    label_id: int
    vert_count: int
    matched_pred: list = field(default_factory=list)  # [(pred, intersection)]


@dataclass
class _Pred:
    uid: int
    label_id: int
    vert_count: int
    confidence: float
    void_intersection: int
    matched_gt: list = field(default_factory=list)  # [(gt, intersection)]


@dataclass
class SceneMatches:
    """Ground-truth and predicted instances of one scene with their overlaps, by class label id."""

    gt: dict[int, list[_Gt]]
    pred: dict[int, list[_Pred]]


def _class_agnostic_gt(gt_ids: np.ndarray, valid: set[int]) -> np.ndarray:
    ids = np.asarray(gt_ids, np.int64)
    keep = np.isin(ids // 1000, list(valid)) & (ids > 0)
    uniq, inv = np.unique(ids[keep], return_inverse=True)
    if len(uniq) > 999:
        raise ValueError(f"class-agnostic evaluation supports at most 999 instances per scene, got {len(uniq)}")
    out = np.zeros_like(ids)
    out[keep] = 1000 + inv + 1
    return out


def match_scene(gt_ids: np.ndarray, predictions: list[PredictedInstance], config: InstanceEvalConfig,
                uid_start: int = 0) -> SceneMatches:
    """Overlaps of one scene's predictions with its ground truth (the benchmark's ``assign_instances_for_scan``).

    Args:
        gt_ids: ``(N,)`` ``label_id * 1000 + instance`` per vertex.
        predictions: the scene's predictions (masks of length N).
        uid_start: first id given to this scene's predictions (unique across scenes).
    """
    classes = config.class_set
    gt_ids = np.asarray(gt_ids, np.int64).ravel()
    if config.class_agnostic:
        gt_ids = _class_agnostic_gt(gt_ids, set(get_class_set(config.classes).ids))
    valid = np.asarray(classes.ids, np.int64)
    gt: dict[int, list[_Gt]] = {c: [] for c in classes.ids}
    ids, counts = np.unique(gt_ids, return_counts=True)
    by_id: dict[int, _Gt] = {}
    for i, c in zip(ids, counts):
        if i == 0 or (i // 1000) not in gt:
            continue
        by_id[int(i)] = g = _Gt(int(i), int(i // 1000), int(c))
        gt[g.label_id].append(g)
    void = ~np.isin(gt_ids // 1000, valid)
    pred: dict[int, list[_Pred]] = {c: [] for c in classes.ids}
    uid = uid_start
    for p in predictions:
        label = 1 if config.class_agnostic else int(p.label_id)
        if label not in pred:
            continue
        mask = np.asarray(p.mask).ravel() != 0
        if mask.shape != gt_ids.shape:
            raise ValueError(f"prediction mask has {mask.size} values for {gt_ids.size} ground-truth vertices")
        n = int(mask.sum())
        if n < config.min_region_size:
            continue
        pr = _Pred(uid, label, n, float(p.confidence), int(np.count_nonzero(void & mask)))
        uid += 1
        hit_ids, hit_counts = np.unique(gt_ids[mask], return_counts=True)
        for i, c in zip(hit_ids, hit_counts):
            g = by_id.get(int(i))
            if g is not None and g.label_id == label:
                pr.matched_gt.append((g, int(c)))
                g.matched_pred.append((pr, int(c)))
        pred[label].append(pr)
    return SceneMatches(gt, pred)


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """The benchmark's area under the precision-recall curve."""
    if len(y_true) == 0:
        return 0.0
    order = np.argsort(y_score, kind="stable")
    y_score_sorted, y_true_sorted = y_score[order], y_true[order]
    cumsum = np.cumsum(y_true_sorted)
    _, unique_indices = np.unique(y_score_sorted, return_index=True)
    n_pr = len(unique_indices) + 1
    n_examples, n_true = len(y_score_sorted), cumsum[-1]
    precision, recall = np.zeros(n_pr), np.zeros(n_pr)
    cumsum = np.append(cumsum, 0)  # index -1 reads 0
    for k, idx in enumerate(unique_indices):
        below = cumsum[idx - 1]
        tp = n_true - below
        fp = n_examples - idx - tp
        fn = below + hard_false_negatives
        precision[k] = tp / (tp + fp)
        recall[k] = tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    r = np.concatenate([[recall[0]], recall, [0.0]])
    step_widths = np.convolve(r, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, step_widths))


def evaluate_matches(scenes: list[SceneMatches], config: InstanceEvalConfig) -> np.ndarray:
    """``(C, O)`` AP per class and overlap threshold (the benchmark's ``evaluate_matches``)."""
    classes = config.class_set
    ap = np.zeros((len(classes), len(config.overlaps)))
    min_size = config.min_region_size
    for oi, th in enumerate(config.overlaps):
        visited: set[int] = set()
        for ci, label in enumerate(classes.ids):
            y_true, y_score = [], []
            hard_fn = 0
            has_gt = has_pred = False
            for sc in scenes:
                preds = sc.pred[label]
                gts = [g for g in sc.gt[label] if g.instance_id >= 1000 and g.vert_count >= min_size]
                has_gt |= bool(gts)
                has_pred |= bool(preds)
                cur_true = [1.0] * len(gts)
                cur_score = [-np.inf] * len(gts)
                cur_match = [False] * len(gts)
                for gi, g in enumerate(gts):
                    found = False
                    for p, inter in g.matched_pred:
                        if p.uid in visited:
                            continue
                        iou = inter / (g.vert_count + p.vert_count - inter)
                        if iou > th:
                            if cur_match[gi]:  # the lower-scored of two matches is a false positive
                                lo, hi = sorted((cur_score[gi], p.confidence))
                                cur_score[gi] = hi
                                cur_true.append(0.0)
                                cur_score.append(lo)
                                cur_match.append(True)
                            else:
                                found = True
                                cur_match[gi] = True
                                cur_score[gi] = p.confidence
                                visited.add(p.uid)
                    if not found:
                        hard_fn += 1
                keep = np.asarray(cur_match, bool)
                y_true.extend(np.asarray(cur_true)[keep])
                y_score.extend(np.asarray(cur_score)[keep])
                # predictions matching no ground truth are false positives unless mostly on ignored vertices
                for p in preds:
                    if any(inter / (g.vert_count + p.vert_count - inter) > th for g, inter in p.matched_gt):
                        continue
                    ignored = p.void_intersection
                    for g, inter in p.matched_gt:
                        if g.instance_id < 1000:
                            ignored += inter
                        if g.vert_count < min_size:
                            ignored += inter
                    if ignored / p.vert_count <= th:
                        y_true.append(0.0)
                        y_score.append(p.confidence)
            if has_gt and has_pred:
                ap[ci, oi] = _average_precision(np.asarray(y_true), np.asarray(y_score), hard_fn)
            elif has_gt:
                ap[ci, oi] = 0.0
            else:
                ap[ci, oi] = np.nan
    return ap


@dataclass
class InstanceResult:
    """Summary and per-class AP.

    Attributes:
        ap, ap50, ap25: class means (NaN classes left out).
        ap_table: ``(C, O)`` AP per class and overlap; ``overlaps``: the thresholds; ``class_names``.
    """

    ap: float
    ap50: float
    ap25: float
    ap_table: np.ndarray
    overlaps: tuple[float, ...]
    class_names: tuple[str, ...]

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{class: {"ap", "ap50", "ap25"}}`` (NaN for classes without ground truth)."""
        o = np.asarray(self.overlaps)
        i50, i25 = np.flatnonzero(np.isclose(o, 0.5)), np.flatnonzero(np.isclose(o, 0.25))
        main = ~np.isclose(o, 0.25)
        out = {}
        for name, row in zip(self.class_names, self.ap_table):
            out[name] = {"ap": float(np.mean(row[main])) if main.any() else float("nan"),
                         "ap50": float(row[i50].mean()) if len(i50) else float("nan"),
                         "ap25": float(row[i25].mean()) if len(i25) else float("nan")}
        return out

    def splits(self) -> dict[str, dict]:
        """AP / AP50 / AP25 over ScanNet200's head / common / tail classes (those of this result with ground
        truth): ``{split: {"ap", "ap50", "ap25", "classes"}}``, empty for a class list outside ScanNet200."""
        per = self.per_class()
        table = np.array([[per[n][k] for k in ("ap", "ap50", "ap25")] for n in self.class_names]).reshape(-1, 3)
        return {k: {"ap": v["mean"][0], "ap50": v["mean"][1], "ap25": v["mean"][2], "classes": v["classes"]}
                for k, v in split_means(self.class_names, table).items()}

    def to_dict(self) -> dict:
        def f(x):
            return None if np.isnan(x) else float(x)

        return {"ap": f(self.ap), "ap50": f(self.ap50), "ap25": f(self.ap25), "overlaps": list(self.overlaps),
                "splits": self.splits(),
                "classes": {n: {k: f(v) for k, v in d.items()} for n, d in self.per_class().items()}}

    def table(self) -> str:
        """Per-class table (classes with ground truth), then the means."""
        lines = [f"{'class':<28}{'AP':>8}{'AP50':>8}{'AP25':>8}", "-" * 52]
        for name, d in self.per_class().items():
            if not all(np.isnan(v) for v in d.values()):
                lines.append(f"{name:<28}{d['ap']:>8.3f}{d['ap50']:>8.3f}{d['ap25']:>8.3f}")
        lines += ["-" * 52, f"{'average':<28}{self.ap:>8.3f}{self.ap50:>8.3f}{self.ap25:>8.3f}"]
        for split, v in self.splits().items():
            if v["ap"] is not None:
                name = f"{split} ({v['classes']} classes)"
                lines.append(f"{name:<28}{v['ap']:>8.3f}{v['ap50']:>8.3f}{v['ap25']:>8.3f}")
        return "\n".join(lines)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if x.size and not np.isnan(x).all() else float("nan")


def summarize(ap_table: np.ndarray, config: InstanceEvalConfig) -> InstanceResult:
    """AP / AP50 / AP25 from the ``(C, O)`` table (the benchmark's ``compute_averages``)."""
    o = np.asarray(config.overlaps)
    main, i50, i25 = ~np.isclose(o, 0.25), np.isclose(o, 0.5), np.isclose(o, 0.25)
    return InstanceResult(ap=_nanmean(ap_table[:, main]), ap50=_nanmean(ap_table[:, i50]),
                          ap25=_nanmean(ap_table[:, i25]), ap_table=ap_table, overlaps=tuple(config.overlaps),
                          class_names=config.class_set.names)


class InstanceAccumulator:
    """Streaming form of :func:`evaluate_instances`: :meth:`add` one scene (or frame) at a time, then
    :meth:`result`."""

    def __init__(self, config: InstanceEvalConfig | None = None):
        self.config = config or InstanceEvalConfig()
        self.matches: list[SceneMatches] = []
        self._uid = 0

    def add(self, gt_ids: np.ndarray, predictions: list[PredictedInstance]) -> None:
        m = match_scene(gt_ids, predictions, self.config, self._uid)
        self._uid += sum(len(v) for v in m.pred.values())
        self.matches.append(m)

    def __len__(self) -> int:
        return len(self.matches)

    def result(self) -> InstanceResult:
        return summarize(evaluate_matches(self.matches, self.config), self.config)


def evaluate_instances(scenes, config: InstanceEvalConfig | None = None) -> InstanceResult:
    """Evaluate ``scenes``: an iterable of ``(gt_ids (N,), [PredictedInstance, ...])`` pairs (or a dict of them
    by scene name)."""
    acc = InstanceAccumulator(config)
    for gt_ids, preds in (scenes.values() if isinstance(scenes, dict) else scenes):
        acc.add(gt_ids, preds)
    return acc.result()


def frame_instance_inputs(sem_gt: np.ndarray, inst_gt: np.ndarray, instances, to_id: np.ndarray):
    """One segmented point set in the benchmark's terms.

    Args:
        sem_gt: ``(N,)`` contiguous class index per point (negative: unlabelled).
        inst_gt: ``(N,)`` ground-truth instance id per point (<= 0: none).
        instances: predicted instances with ``point_indices`` (indices into the N points), ``class_id``
            (contiguous index) and ``score`` (``bifusion_core.models.postprocess.Instance``).
        to_id: :func:`~bifusion_core.data.scannet.classes.label_ids` of the class list.

    Returns:
        ``(gt_ids (N,), [PredictedInstance, ...])`` for :func:`match_scene` / :func:`evaluate_instances`.
    """
    sem_gt = np.asarray(sem_gt, np.int64)
    inst_gt = np.asarray(inst_gt, np.int64)
    gt_label = np.where(sem_gt >= 0, to_id[np.clip(sem_gt, 0, len(to_id) - 1)], 0)
    has = (inst_gt > 0) & (gt_label > 0)
    # the benchmark packs label * 1000 + instance: ids up to 999 are kept, larger ones (per-scene ids of a big
    # dataset) renumber the frame's instances 1..K instead of colliding
    inst = inst_gt[has]
    if inst.size and inst.max() > 999:
        uniq, inv = np.unique(inst, return_inverse=True)
        if len(uniq) > 999:
            raise ValueError(f"the benchmark's id format holds at most 999 instances per scene, got {len(uniq)}")
        inst = inv.reshape(-1) + 1
    gt_ids = np.zeros_like(inst_gt)
    gt_ids[has] = gt_label[has] * 1000 + inst
    preds = []
    for ins in instances:
        mask = np.zeros(len(sem_gt), bool)
        idx = ins.point_indices
        mask[idx.cpu().numpy() if hasattr(idx, "cpu") else np.asarray(idx, np.int64)] = True
        cid = int(ins.class_id)
        preds.append(PredictedInstance(mask, int(to_id[cid]) if 0 <= cid < len(to_id) else 0, float(ins.score)))
    return gt_ids, preds
