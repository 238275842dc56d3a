"""ScanNet-standard metrics on hand-computed cases: instance AP / AP50 / AP25 and semantic IoU / mIoU."""
import json
import re

import numpy as np
import pytest

from bifusion_core.data.scannet.classes import CLASS_SETS, ClassSet
from bifusion_core.eval import (DEFAULT_OVERLAPS, InstanceEvalConfig, PredictedInstance, SemanticEvaluator,
                                confusion_matrix, evaluate_instances, iou_from_confusion)
from bifusion_core.eval.__main__ import main as eval_main
from bifusion_core.eval.io import read_instance_predictions, write_ids, write_instance_predictions

# a small class set so hand-computed cases stay readable: label ids 3 ("a"), 4 ("b"), 5 ("c")
CLASS_SETS.setdefault("test_abc", ClassSet("test_abc", (3, 4, 5), ("a", "b", "c")))
CFG = InstanceEvalConfig(classes="test_abc")
A, B, C = 3, 4, 5


def scene(*objects, n=2000):
    """GT ids with consecutive vertex ranges: objects = (label, size) ...; returns ids and slices."""
    gt = np.zeros(n, np.int64)
    spans, pos = [], 0
    for i, (label, size) in enumerate(objects):
        gt[pos:pos + size] = label * 1000 + i + 1
        spans.append(slice(pos, pos + size))
        pos += size
    return gt, spans


def mask(n, *parts):
    m = np.zeros(n, bool)
    for p in parts:
        m[p] = True
    return m


def per_class(result, name):
    return result.per_class()[name]


def test_overlaps_are_the_benchmarks():
    assert np.allclose(DEFAULT_OVERLAPS, np.append(np.arange(0.5, 0.95, 0.05), 0.25))
    assert len(DEFAULT_OVERLAPS) == 10 and CFG.min_region_size == 100


def test_perfect_prediction_scores_one():
    gt, (s1, s2, s3) = scene((A, 300), (A, 200), (B, 400))
    preds = [PredictedInstance(gt == v, v // 1000, c) for v, c in ((A * 1000 + 1, 0.9), (A * 1000 + 2, 0.4),
                                                                  (B * 1000 + 3, 0.7))]
    r = evaluate_instances([(gt, preds)], CFG)
    assert (r.ap, r.ap50, r.ap25) == (1.0, 1.0, 1.0)
    assert np.isnan(per_class(r, "c")["ap"])  # no ground truth: NaN, excluded from the mean


def test_false_positive_below_the_true_positive_costs_nothing():
    gt, (sa, sb) = scene((A, 300), (B, 300))
    preds = [PredictedInstance(gt == A * 1000 + 1, A, 0.9),
             PredictedInstance(mask(len(gt), sb), A, 0.5)]  # labelled a on the b object: a false positive
    r = evaluate_instances([(gt, preds)], CFG)
    # precision (0.5, 1, 1), recall (1, 1, 0) -> step widths (0, .5, .5) -> AP 1
    assert per_class(r, "a")["ap"] == pytest.approx(1.0)


def test_one_false_positive_above_the_true_positive():
    gt, (sa, sb) = scene((A, 300), (B, 300))
    preds = [PredictedInstance(gt == A * 1000 + 1, A, 0.9),
             PredictedInstance(mask(len(gt), sb), A, 0.95)]
    r = evaluate_instances([(gt, preds)], CFG)
    # ascending scores (0.9 TP, 0.95 FP): precision (0.5, 0, 1), recall (1, 0, 0); recall padded
    # (1, 1, 0, 0, 0) -> step widths (0.5, 0.5, 0) -> AP = 0.5 * 0.5 = 0.25 (the benchmark's interpolation)
    a = per_class(r, "a")
    assert a == pytest.approx({"ap": 0.25, "ap50": 0.25, "ap25": 0.25})
    assert per_class(r, "b")["ap"] == 0.0  # b has ground truth but no prediction
    assert r.ap == pytest.approx((0.25 + 0.0) / 2)


def test_duplicate_predictions_of_one_object():
    gt, (s1, s2) = scene((A, 300), (A, 300))
    preds = [PredictedInstance(gt == A * 1000 + 1, A, 0.9),
             PredictedInstance(gt == A * 1000 + 1, A, 0.8),  # duplicate: a false positive at 0.8
             PredictedInstance(gt == A * 1000 + 2, A, 0.7)]
    r = evaluate_instances([(gt, preds)], CFG)
    # ascending (0.7 TP, 0.8 FP, 0.9 TP): precision (2/3, 1/2, 1, 1), recall (1, 1/2, 1/2, 0)
    # step widths (1/4, 1/4, 1/4, 1/4) -> AP = 1/6 + 1/8 + 1/4 + 1/4 = 19/24
    assert r.ap == pytest.approx(19 / 24) and r.ap50 == pytest.approx(19 / 24)
    # order does not matter: the instance keeps the higher score, the lower one is the false positive
    r2 = evaluate_instances([(gt, [preds[1], preds[0], preds[2]])], CFG)
    assert r2.ap == pytest.approx(19 / 24)
    # without the third prediction the second object is a false negative: ascending (0.8 FP, 0.9 TP),
    # precision (1/2, 1, 1), recall (1/2, 1/2, 0) -> step widths (0, 1/4, 1/4) -> AP 1/2
    r3 = evaluate_instances([(gt, [preds[0], preds[1]])], CFG)
    assert r3.ap50 == pytest.approx(0.5)


def test_prediction_on_ignored_labels_is_not_a_false_positive():
    # vertices 700.. are unannotated (0) and 600..699 are label 1 (wall: outside the evaluated set) -> void
    gt, (sa,) = scene((A, 300))
    gt[600:700] = 1 * 1000 + 7
    void_pred = PredictedInstance(mask(len(gt), slice(600, 900)), A, 0.99)
    r = evaluate_instances([(gt, [PredictedInstance(gt == A * 1000 + 1, A, 0.5), void_pred])], CFG)
    assert (r.ap, r.ap50, r.ap25) == (1.0, 1.0, 1.0)


def test_partly_void_prediction_is_ignored_only_above_the_threshold_share():
    gt, (sa, sb) = scene((A, 300), (B, 300))
    # 100 vertices: 40 unannotated (void) + 60 on the b object; labelled a, confidence above the TP
    fp = PredictedInstance(mask(len(gt), slice(1000, 1040), slice(300, 360)), A, 0.95)
    r = evaluate_instances([(gt, [PredictedInstance(gt == A * 1000 + 1, A, 0.5), fp])], CFG)
    a = per_class(r, "a")
    # void share 0.4: a false positive at thresholds >= 0.5 (AP 0.25 there), ignored at 0.25
    assert a["ap50"] == pytest.approx(0.25) and a["ap"] == pytest.approx(0.25) and a["ap25"] == 1.0


def test_class_without_prediction_and_class_without_ground_truth():
    gt, _ = scene((A, 300), (B, 300))
    preds = [PredictedInstance(gt == A * 1000 + 1, A, 0.9),
             PredictedInstance(mask(len(gt), slice(1000, 1200)), C, 0.9)]  # c has no ground truth
    r = evaluate_instances([(gt, preds)], CFG)
    assert per_class(r, "a")["ap"] == 1.0
    assert per_class(r, "b")["ap"] == 0.0
    assert np.isnan(per_class(r, "c")["ap"])
    assert r.ap == pytest.approx(0.5) and r.ap50 == pytest.approx(0.5) and r.ap25 == pytest.approx(0.5)
    d = r.to_dict()
    assert d["classes"]["c"]["ap"] is None and d["ap"] == pytest.approx(0.5)


def test_small_regions_are_filtered():
    gt, (big, small, other) = scene((A, 300), (A, 60), (B, 300))
    preds = [PredictedInstance(gt == A * 1000 + 1, A, 0.5),
             # covers the 60-vertex object and 60 void vertices: IoU 0.5 with it, but all of it is ignored
             PredictedInstance(mask(len(gt), small, slice(1500, 1560)), A, 0.9),
             # a 99-vertex prediction (labelled a, on the b object) is dropped before matching
             PredictedInstance(mask(len(gt), slice(other.start, other.start + 99)), A, 0.99)]
    r = evaluate_instances([(gt, preds)], CFG)
    assert per_class(r, "a") == {"ap": 1.0, "ap50": 1.0, "ap25": 1.0}
    # without the size rule the small object is a ground-truth instance and the 99-vertex mask a false positive
    # above every true positive
    r0 = evaluate_instances([(gt, preds)], InstanceEvalConfig(classes="test_abc", min_region_size=0))
    assert per_class(r0, "a")["ap25"] < 1.0 and per_class(r0, "a")["ap50"] < 1.0


def test_several_scenes_pool_before_ap():
    gt1, _ = scene((A, 300))
    gt2, _ = scene((A, 300))
    r = evaluate_instances({"s1": (gt1, [PredictedInstance(gt1 == 3001, A, 0.9)]), "s2": (gt2, [])}, CFG)
    # one TP of two instances: precision (1, 1), recall (1/2, 0) -> widths (1/4, 1/4) -> 0.5
    assert r.ap == pytest.approx(0.5)


def test_class_agnostic_ignores_labels():
    gt, _ = scene((A, 300), (B, 300))
    preds = [PredictedInstance(gt == 3001, B, 0.9), PredictedInstance(gt == 4002, B, 0.8)]
    # class-aware: a has no prediction (0); b has its TP at 0.8 under a FP at 0.9 (0.25)
    assert evaluate_instances([(gt, preds)], CFG).ap == pytest.approx(0.125)
    agn = evaluate_instances([(gt, preds)], InstanceEvalConfig(classes="test_abc", class_agnostic=True))
    assert agn.ap == 1.0 and agn.class_names == ("object",)


def test_mask_length_mismatch_is_an_error():
    gt, _ = scene((A, 300))
    with pytest.raises(ValueError, match="2000 ground-truth vertices"):
        evaluate_instances([(gt, [PredictedInstance(np.ones(10, bool), A, 1.0)])], CFG)


def test_invalid_config():
    with pytest.raises(ValueError, match="unknown class set"):
        InstanceEvalConfig(classes="nope")
    with pytest.raises(ValueError, match="overlaps"):
        InstanceEvalConfig(overlaps=(1.5,))


# -- semantic --------------------------------------------------------------------------------------------


def test_confusion_and_iou_by_hand():
    gt = np.array([0, 0, 1, 1, 2, -100])
    pred = np.array([0, 1, 1, 1, 0, 2])
    conf, missed = confusion_matrix(gt, pred, 4)
    assert conf[0].tolist() == [1, 1, 0, 0] and conf[1].tolist() == [0, 2, 0, 0] and conf[2].tolist() == [1, 0, 0, 0]
    assert missed.sum() == 0
    iou = iou_from_confusion(conf, missed)
    # class 0: tp 1, fp 1 (a "2" point), fn 1 -> 1/3; class 1: 2 / (2 + 1) ; class 2: 0; class 3: absent (NaN)
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 0.0]) and np.isnan(iou[3])
    ev = SemanticEvaluator(4, ["w", "x", "y", "z"])
    ev.update(gt, pred)
    res = ev.result()
    assert res.miou == pytest.approx(1 / 3) and res.accuracy == pytest.approx(3 / 5)


def test_prediction_outside_the_classes_is_a_miss():
    ev = SemanticEvaluator(2)
    ev.update(np.array([0, 0, 1]), np.array([0, 7, 1]))
    res = ev.result()
    assert res.iou == pytest.approx([0.5, 1.0]) and res.accuracy == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="values"):
        ev.update(np.zeros(3), np.zeros(4))


# -- files and CLI -----------------------------------------------------------------------------------------


def write_gt(dirpath, name, ids):
    write_ids(dirpath / f"{name}.txt", ids)


def test_instance_cli_reads_benchmark_format(tmp_path, capsys):
    gt, _ = scene((A, 300), (B, 300))
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_gt(gt_dir, "scene0000_00", gt)
    write_instance_predictions(pred_dir, "scene0000_00", [gt == 3001, gt == 4002, mask(len(gt), slice(400, 600))],
                               [A, B, A], [0.9, 0.8, 0.95])
    lines = (pred_dir / "scene0000_00.txt").read_text().splitlines()
    assert lines[0].startswith("pred_mask/scene0000_00_0.txt 3 0.9")
    assert len(read_instance_predictions(pred_dir / "scene0000_00.txt", pred_dir, len(gt))) == 3
    out = tmp_path / "res.json"
    rc = eval_main(["instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "--json",
                    str(out), "-q"])
    assert rc == 0
    res = json.loads(out.read_text())
    # a: TP 0.9, FP 0.95 (on b) -> 0.25; b: 1
    assert res["classes"]["a"]["ap"] == pytest.approx(0.25) and res["classes"]["b"]["ap"] == 1.0
    assert res["ap"] == pytest.approx(0.625) and res["scenes"] == 1
    printed = capsys.readouterr().out
    assert "AP50" in printed and "average" in printed


def test_semantic_cli(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_ids(gt_dir / "s.txt", [3, 3, 4, 4, 0])
    write_ids(pred_dir / "s.txt", [3, 4, 4, 4, 5])
    out = tmp_path / "sem.json"
    assert eval_main(["semantic", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "--json",
                      str(out), "-q"]) == 0
    res = json.loads(out.read_text())
    assert res["classes"]["a"]["iou"] == pytest.approx(0.5) and res["classes"]["b"]["iou"] == pytest.approx(2 / 3)
    assert res["classes"]["c"]["iou"] is None and res["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_cli_bad_input_names_the_file(tmp_path, caplog):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_ids(gt_dir / "s.txt", np.full(200, 3001))
    (pred_dir).mkdir()
    (pred_dir / "s.txt").write_text("pred_mask/missing.txt 3 0.5\n")
    assert eval_main(["instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "-q"]) == 2
    assert "missing.txt" in caplog.text
    write_ids(pred_dir / "pred_mask" / "short.txt", np.ones(10))
    (pred_dir / "s.txt").write_text("pred_mask/short.txt 3 0.5\n")
    caplog.clear()
    assert eval_main(["instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "-q"]) == 2
    assert "short.txt" in caplog.text and "200" in caplog.text
    (pred_dir / "s.txt").write_text("pred_mask/short.txt 3\n")
    with pytest.raises(ValueError, match=r"s\.txt:1"):
        read_instance_predictions(pred_dir / "s.txt")
    (pred_dir / "s.txt").write_text("../outside.txt 3 0.5\n")
    with pytest.raises(ValueError, match="outside"):
        read_instance_predictions(pred_dir / "s.txt")
    (pred_dir / "t.txt").write_text("")
    caplog.clear()
    assert eval_main(["semantic", "--pred", str(pred_dir), "--gt", str(gt_dir), "-q"]) == 2
    assert "t.txt" in caplog.text  # a prediction without ground truth


def test_cli_help():
    with pytest.raises(SystemExit) as exc:
        eval_main(["instance", "--help"])
    assert exc.value.code == 0


def test_frame_instance_inputs_encode_ground_truth_and_predictions():
    from types import SimpleNamespace

    import torch

    from bifusion_core.data.scannet.classes import label_ids
    from bifusion_core.eval import frame_instance_inputs

    names = ["wall", "chair", "my gizmo"]  # "my gizmo" is no ScanNet class: label id 0, never evaluated
    to_id = label_ids(names)
    assert to_id[0] == 1 and to_id[1] == 2 and to_id[2] == 0  # ScanNet200 label ids of wall, chair
    sem = np.array([1, 1, 0, -100, 2])
    inst = np.array([3, 3, 5, 7, 9])
    preds = [SimpleNamespace(point_indices=torch.tensor([0, 1]), class_id=1, score=0.8),
             SimpleNamespace(point_indices=np.array([4]), class_id=2, score=0.3)]
    gt_ids, out = frame_instance_inputs(sem, inst, preds, to_id)
    assert gt_ids.tolist() == [2003, 2003, 1005, 0, 0]
    assert out[0].mask.tolist() == [True, True, False, False, False] and out[0].label_id == 2
    assert out[0].confidence == pytest.approx(0.8) and out[1].label_id == 0


# -- hardening (issue 13): bad input is a clear error -------------------------------------------------------


def test_confusion_compares_full_shapes_not_only_sizes():
    """A three-channel ground truth read at N points is (N, 3): refused against an (N,) prediction with both
    shapes named (it used to be flattened to 3N values and reported as a size mismatch by chance only)."""
    gt = np.zeros((4, 3), np.int64)
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*\(12,\)"):
        confusion_matrix(gt, np.zeros(12, np.int64), 2)  # same size, different shape: was accepted
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*\(4,\)"):
        SemanticEvaluator(2).update(gt, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix(np.array([0.5, 1.0]), np.array([0, 1]), 2)
    conf, _ = confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]), 2)  # whole-number floats are fine
    assert conf.tolist() == [[1, 0], [0, 1]]


def test_read_ids_refuses_values_outside_int64_with_the_file_and_line(tmp_path, caplog):
    from bifusion_core.eval.io import read_ids

    (tmp_path / "big.txt").write_text("3\n99999999999999999999999\n")
    with pytest.raises(ValueError, match=r"big\.txt: value 2 .*64-bit"):
        read_ids(tmp_path / "big.txt")
    (tmp_path / "neg.txt").write_text(f"{-2**63}\n{2**63 - 1}\n")
    assert read_ids(tmp_path / "neg.txt").tolist() == [-2**63, 2**63 - 1]
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_ids(gt_dir / "s.txt", [3, 4])
    pred_dir.mkdir()
    (pred_dir / "s.txt").write_text("3\n99999999999999999999999\n")
    assert eval_main(["semantic", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "-q"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "64-bit" in errors[0].getMessage() and "s.txt" in errors[0].getMessage()


@pytest.mark.parametrize("gt_values", [[0, 0, 0], []], ids=["all-unlabelled", "empty"])
def test_semantic_cli_without_labelled_ground_truth_is_an_error(tmp_path, caplog, gt_values):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    (gt_dir / "s.txt").write_text("".join(f"{v}\n" for v in gt_values))
    (pred_dir / "s.txt").write_text("".join("3\n" for _ in gt_values))
    out = tmp_path / "sem.json"
    rc = eval_main(["semantic", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "--json",
                    str(out), "-q"])
    assert rc == 2 and not out.exists()
    assert "no labelled points" in caplog.text and not re.search(r"\bnan\b", caplog.text.lower())


def test_semantic_cli_warns_about_one_unlabelled_scene_but_scores_the_others(tmp_path, caplog):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_ids(gt_dir / "a.txt", [3, 3, 4])
    write_ids(pred_dir / "a.txt", [3, 3, 4])
    write_ids(gt_dir / "b.txt", [0, 0])
    write_ids(pred_dir / "b.txt", [3, 4])
    out = tmp_path / "sem.json"
    assert eval_main(["semantic", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "--json",
                      str(out), "-q"]) == 0
    assert "b.txt: no labelled point" in caplog.text
    assert json.loads(out.read_text())["miou"] == pytest.approx(1.0)


def test_instance_cli_without_ground_truth_instances_is_an_error(tmp_path, caplog):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    n = 300
    write_ids(gt_dir / "s.txt", np.zeros(n, np.int64))
    write_instance_predictions(pred_dir, "s", [np.ones(n, bool)], [A], [0.9])
    assert eval_main(["instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "-q"]) == 2
    assert "no instance" in caplog.text


def test_frame_instance_inputs_keeps_large_instance_ids_apart():
    """Ground-truth instance ids above 999 (per-scene ids of a big dataset) used to be clipped to 999, merging
    distinct objects silently; they are renumbered within the frame instead."""
    from bifusion_core.eval.instance import frame_instance_inputs

    sem = np.array([0, 0, 0, 0, 1, 1])
    inst = np.array([1000, 1000, 2000, 2000, 5, -1])
    to_id = np.array([3, 5])
    gt_ids, preds = frame_instance_inputs(sem, inst, [], to_id)
    assert preds == []
    assert gt_ids[0] == gt_ids[1] != gt_ids[2] == gt_ids[3]
    assert set(gt_ids[:4] // 1000) == {3} and gt_ids[4] // 1000 == 5 and gt_ids[5] == 0
    assert len(np.unique(gt_ids[gt_ids > 0] % 1000)) == 3


# -- ScanNet200 head / common / tail -----------------------------------------------------------------------------


def test_scannet200_splits_partition_the_200_classes():
    from bifusion_core.data.scannet.classes import SCANNET200, SCANNET200_SPLITS

    head, common, tail = (SCANNET200_SPLITS[k] for k in ("head", "common", "tail"))
    assert (len(head), len(common), len(tail)) == (66, 68, 66)
    assert head | common | tail == set(SCANNET200.names) and not (head & common or head & tail or common & tail)
    assert {"wall", "floor", "chair", "table"} <= head and {"cushion", "mattress"} <= common
    assert {"paper", "luggage"} <= tail


def test_semantic_means_per_split_follow_the_per_class_ious(tmp_path, capsys):
    """chair 1, wall 0.5 (head), cushion 0.25 (common), paper 0 (tail): the split means are the plain means."""
    from bifusion_core.data.scannet.classes import SCANNET200

    ids = SCANNET200.name_to_id
    gt = [ids["chair"]] * 4 + [ids["wall"]] * 2 + [ids["cushion"]] * 4 + [ids["paper"]] * 2
    pred = [ids["chair"]] * 4 + [ids["wall"], ids["floor"]] + [ids["cushion"]] + [ids["bed"]] * 3 + [ids["bed"]] * 2
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_ids(gt_dir / "s.txt", gt)
    write_ids(pred_dir / "s.txt", pred)
    out = tmp_path / "sem.json"
    assert eval_main(["semantic", "--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out), "-q"]) == 0
    res = json.loads(out.read_text())
    c = res["classes"]
    assert (c["chair"]["iou"], c["wall"]["iou"], c["cushion"]["iou"], c["paper"]["iou"]) == (1.0, 0.5, 0.25, 0.0)
    # head also holds floor and bed, predicted but never true: IoU 0 each
    assert res["splits"]["head"] == {"miou": pytest.approx((1.0 + 0.5 + 0 + 0) / 4), "classes": 4}
    assert res["splits"]["common"] == {"miou": 0.25, "classes": 1} and res["splits"]["tail"] == {"miou": 0.0, "classes": 1}
    assert "mIoU head (4 classes)" in capsys.readouterr().out


def test_instance_means_per_split_and_an_empty_split(tmp_path):
    """A chair found (AP 1, head), a piece of paper missed (AP 0, tail), no common class in the ground truth."""
    from bifusion_core.data.scannet.classes import SCANNET200

    chair, paper = SCANNET200.name_to_id["chair"], SCANNET200.name_to_id["paper"]
    gt = np.zeros(1000, np.int64)
    gt[:300], gt[300:600] = chair * 1000 + 1, paper * 1000 + 2
    res = evaluate_instances([(gt, [PredictedInstance(gt == chair * 1000 + 1, chair, 0.9)])],
                             InstanceEvalConfig(classes="scannet200_instance"))
    s = res.splits()
    assert s["head"] == {"ap": 1.0, "ap50": 1.0, "ap25": 1.0, "classes": 1}
    assert s["tail"] == {"ap": 0.0, "ap50": 0.0, "ap25": 0.0, "classes": 1}
    assert s["common"] == {"ap": None, "ap50": None, "ap25": None, "classes": 0}
    assert res.to_dict()["splits"] == s and "head (1 classes)" in res.table()
    assert evaluate_instances([(gt, [])], CFG).splits() == {}  # a class list outside ScanNet200


def test_a_mask_file_listed_twice_is_refused_in_one_scene_and_across_scenes(tmp_path, caplog):
    gt, _ = scene((A, 300), (B, 300))
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_gt(gt_dir, "s1", gt)
    write_gt(gt_dir, "s2", gt)
    write_instance_predictions(pred_dir, "s1", [gt == 3001], [A], [0.9])
    (pred_dir / "s2.txt").write_text("pred_mask/s1_0.txt 3 0.8\n")  # s2 names s1's mask
    args = ["instance", "--pred", str(pred_dir), "--gt", str(gt_dir), "--classes", "test_abc", "-q"]
    assert eval_main(args) == 2
    assert "already listed" in caplog.text and "s1.txt:1" in caplog.text and "s2.txt:1" in caplog.text
    (pred_dir / "s2.txt").write_text("")
    (pred_dir / "s1.txt").write_text("pred_mask/s1_0.txt 3 0.9\n./pred_mask/s1_0.txt 4 0.5\n")  # same file, twice
    with pytest.raises(ValueError, match=r"s1\.txt:2: mask './pred_mask/s1_0.txt' is already listed at .*s1\.txt:1"):
        read_instance_predictions(pred_dir / "s1.txt")
    (pred_dir / "s1.txt").write_text("pred_mask/s1_0.txt 3 0.9\n")
    caplog.clear()
    assert eval_main(args) == 0  # each mask once: fine


def test_label_ids_and_index_lookup_are_inverse_on_scannet_names():
    from bifusion_core.data.scannet.classes import IGNORE_INDEX, SCANNET200, index_lookup, label_ids

    names = ["chair", "my gizmo", "wall", "paper"]
    ids, lut = label_ids(names), index_lookup(names)
    assert ids.tolist() == [SCANNET200.name_to_id[n] if n != "my gizmo" else 0 for n in names]
    assert [int(lut[i]) for i in ids] == [0, IGNORE_INDEX, 2, 3]  # the unknown name maps to id 0: ignored
    assert (lut >= 0).sum() == 3 and lut.shape == (max(SCANNET200.ids) + 1,)
