"""Merge-embedding figures (bifusion_core.eval.merge) on hand cases, and the merge_check CLI on tiny checkpoints."""
import json

import numpy as np
import pytest
import torch

from bifusion_core.eval.merge import FrameEmbeddings, assign_ground_truth, embedding_separation, frame_embeddings


def test_assign_ground_truth_by_point_iou():
    gt = np.array([0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    sets = [np.array([1, 2, 3, 4]),      # exactly object 1
            np.array([4, 5, 6, 7, 8]),   # 4 of object 2's 5 points + one of object 1: IoU 4/6
            np.array([0, 1, 5]),         # best overlap object 1 (1 point): IoU 1/6
            np.array([], np.int64)]
    assert assign_ground_truth(sets, gt).tolist() == [1, 2, -1, -1]
    assert assign_ground_truth(sets, gt, min_iou=0.7).tolist() == [1, -1, -1, -1]


class _Inst:
    def __init__(self, idx, emb):
        self.point_indices = torch.as_tensor(idx)
        self.embedding = None if emb is None else torch.tensor(emb, dtype=torch.float32)


def test_embedding_separation_hand_case():
    # frame a: chair 1, chair 2, table 3; frame b: chair 1 and table 3 (and an unassigned instance)
    a = FrameEmbeddings(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), np.array([1, 2, 3]), np.array([4, 4, 5]))
    b = FrameEmbeddings(np.array([[0.8, 0.6], [0.6, 0.8]]), np.array([1, 3]), np.array([4, 5]))
    r = embedding_separation([(a, b)])
    # same object: chair 1 (a0.b0 = 0.8), table 3 (a2.b1 = 1.0); same class, other object: chair 2 vs chair 1 (0.6)
    assert r["same_object"] == pytest.approx(0.9) and r["n_same_object"] == 2
    assert r["same_class_other_object"] == pytest.approx(0.6) and r["n_same_class_other_object"] == 1
    assert r["separation"] == pytest.approx(0.3) and r["pairs"] == 1
    empty = embedding_separation([])
    assert np.isnan(empty["same_object"]) and empty["n_same_object"] == 0
    # from instances: unassigned ones and ones without an embedding are left out, classes from the points
    gt_inst = np.array([1, 1, 1, 2, 2, 2, 0, 0])
    gt_sem = np.array([4, 4, -1, 5, 5, 5, 0, 0])
    fe = frame_embeddings([_Inst([0, 1, 2], [0.0, 2.0]), _Inst([3, 4, 5], None), _Inst([6, 7], [1.0, 0.0])],
                          gt_inst, gt_sem)
    assert fe.gt_ids.tolist() == [1] and fe.gt_classes.tolist() == [4] and fe.embeddings.tolist() == [[0.0, 2.0]]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny model; a copy whose merge head differs (same segmentation); a copy whose semantics differ."""
    from bifusion_core.models.bifusion import BiFusionModel
    from bifusion_core.models.checkpoint import save_checkpoint
    from bifusion_core.models.presets import tiny_config

    d = tmp_path_factory.mktemp("merge_ck")
    torch.manual_seed(0)
    names = ["wall", "floor", "chair", "table"]
    model = BiFusionModel(tiny_config(names))
    save_checkpoint(d / "a.pt", model)
    with torch.no_grad():
        for p in model.decoder.merge_head.parameters():
            p.add_(0.1)
    save_checkpoint(d / "head.pt", model)
    with torch.no_grad():
        model.sem_head.prototypes.mul_(-1)
    save_checkpoint(d / "sem.pt", model)
    return d


def test_merge_check_cli_checks_identical_outputs_and_reports_cosines(checkpoints, tmp_path, capsys):
    from bifusion_core.train.merge_check import main

    small = ["--rooms", "1", "--frames", "3", "--gap", "2", "--width", "96", "--height", "72"]
    out = tmp_path / "m.json"
    n_threads = torch.get_num_threads()
    try:
        rc = main([str(checkpoints / "head.pt"), "--reference", str(checkpoints / "a.pt"), "--json", str(out)] + small)
        assert rc == 0
        rep = json.loads(out.read_text())
        entry = rep["checkpoints"][str(checkpoints / "head.pt")]
        assert entry["identical_to_reference"] and rep["frame_pairs"] == 3
        assert entry["instances_with_embedding"] == entry["instances"]
        assert main([str(checkpoints / "sem.pt"), "--reference", str(checkpoints / "a.pt")] + small) == 1
        assert '"identical_to_reference": false' in capsys.readouterr().out
        assert main([str(tmp_path / "missing.pt")] + small) == 2
    finally:
        torch.set_num_threads(n_threads)
