"""Checkpoints (round trip, corrupt, foreign), the frame processor and the single-frame CLI."""
import json

import cv2
import numpy as np
import pytest
import torch

from bifusion_core.infer import main as infer_main
from bifusion_core.io.ply import read_ply
from bifusion_core.models.bifusion import BiFusionModel
from bifusion_core.models.checkpoint import CheckpointError, load_model, save_checkpoint
from bifusion_core.models.presets import tiny_config
from bifusion_core.pipeline import Frame, FrameProcessor


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = BiFusionModel(tiny_config())
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint(path, model, meta={"note": "test"})
    return path, model


def frame(h=60, w=80):
    rng = np.random.default_rng(0)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, w // 2:] = 1.2
    return rgb, depth, (60.0, 60.0, w / 2, h / 2)


def test_checkpoint_round_trip(ckpt):
    path, model = ckpt
    loaded, data = load_model(path)
    assert data["meta"] == {"note": "test"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_corrupt_and_foreign_checkpoints(tmp_path, ckpt):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt[0].read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a BiFusion checkpoint"):
        load_model(foreign)
    data = torch.load(ckpt[0], weights_only=True)
    data["model"]["decoder.obj.weight"] = torch.zeros(3, 3)
    torch.save(data, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(tmp_path / "shape.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_processor_result_contract(ckpt):
    proc = FrameProcessor.from_checkpoint(ckpt[0], "cpu")
    rgb, depth, intr = frame()
    res = proc.process(Frame(rgb, depth, intr, np.eye(4), stamp=3.5))
    n = res.num_points
    assert n == (60 // 4) * (80 // 4)  # stride 4 in the tiny config
    assert res.points.shape == (n, 3) and res.colours.dtype == np.uint8
    for arr in (res.semantic, res.instance, res.score, res.alpha):
        assert arr.shape == (n,)
    assert (res.instance >= 0).all() and res.stamp == 3.5
    assert np.isfinite(res.alpha_image).sum() == 60 * 80  # every pixel's block is covered at stride 4
    assert {"clip", "backbone", "decoder", "superpoints", "total"} <= set(res.timings)
    # depth 1.2 m on the right half: z of those points
    right = res.pixels[:, 0] >= 40
    assert np.allclose(res.points[right, 2], 1.2, atol=1e-5)
    with pytest.raises(ValueError):
        proc.process(Frame(rgb[:30], depth, intr, np.eye(4)))


def test_infer_cli_writes_outputs(ckpt, tmp_path):
    rgb, depth, intr = frame()
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "d.png"), (depth * 1000).astype(np.uint16))
    out = tmp_path / "out"
    rc = infer_main(["--color", str(tmp_path / "c.png"), "--depth", str(tmp_path / "d.png"),
                     "--intrinsics", "60,60,40,30", "--checkpoint", str(ckpt[0]), "--device", "cpu",
                     "--out", str(out)])
    assert rc == 0
    ply = read_ply(out / "c.ply")
    assert {"x", "y", "z", "red", "label", "instance", "score", "alpha"} <= set(ply.dtype.names)
    assert len(ply) == 300 and np.allclose(np.sort(np.unique(ply["z"].round(3))), [1.2, 2.0])
    for png in ("c_labels.png", "c_instances.png", "c_alpha.png"):
        img = cv2.imread(str(out / png))
        assert img is not None and img.shape == (60, 80, 3)
    info = json.loads((out / "c_instances.json").read_text())
    assert info["classes"] == ["wall", "floor", "chair", "table"]
    # bad input: clear error and a non-zero exit, no crash
    cv2.imwrite(str(tmp_path / "small.png"), (depth[:30] * 1000).astype(np.uint16))
    assert infer_main(["--color", str(tmp_path / "c.png"), "--depth", str(tmp_path / "small.png"),
                       "--intrinsics", "60,60,40,30", "--checkpoint", str(ckpt[0]), "--out", str(out)]) == 2
    with pytest.raises(SystemExit):
        infer_main(["--color", "c", "--depth", "d", "--intrinsics", "1,2", "--out", str(out)])


def test_shipped_demo_checkpoint_loads_and_fits_this_code():
    """The default checkpoint of make demo / infer / replay must load (weights fit, current format version)."""
    from bifusion_core.pipeline.processor import DEMO_CHECKPOINT

    model, data = load_model(DEMO_CHECKPOINT)
    assert len(model.class_names) == model.cfg.decoder.num_classes == 22
    assert DEMO_CHECKPOINT.stat().st_size <= 20 * 2**20
    # open vocabulary through the stand-in towers it carries (no other file needed)
    assert model.open_vocab and model.cfg.clip.embed_weights and model.cfg.clip.weights_path is None
    metrics = json.loads((DEMO_CHECKPOINT.parent / "metrics.json").read_text())
    # the trained model whose merge head alone was then trained by the merge stage (metrics.json: merge_head)
    assert metrics["steps"] == data["meta"]["init"]["step"] and 0 < metrics["val"]["miou"] <= 1
    assert metrics["merge_head"]["steps"] == data["meta"]["step"] and model.decoder.merge_head is not None
    after = metrics["merge_head"]["cosine_after"]
    assert after["same_object"] > after["same_class_other_object"] + 0.2


def test_old_checkpoint_version_is_refused(tmp_path, ckpt):
    data = torch.load(ckpt[0], weights_only=True)
    data["version"] = 1
    torch.save(data, tmp_path / "v1.pt")
    with pytest.raises(CheckpointError, match="version 1"):
        load_model(tmp_path / "v1.pt")


def test_checkpoint_from_before_the_merge_head_loads_without_one(tmp_path):
    """A checkpoint whose config has no decoder.merge_dim predates the merge head: it loads as a model without one
    (its instances carry no embedding); current checkpoints keep their head; broken ones still fail clearly."""
    from dataclasses import replace

    from bifusion_core.models.bifusion import frames_to_input
    from bifusion_core.models.postprocess import PostprocessConfig

    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.decoder = replace(cfg.decoder, merge_dim=0)
    old = BiFusionModel(cfg)
    save_checkpoint(tmp_path / "old.pt", old)
    data = torch.load(tmp_path / "old.pt", weights_only=True)
    del data["config"]["decoder"]["merge_dim"], data["config"]["decoder"]["merge_hidden"]
    torch.save(data, tmp_path / "old.pt")
    model, _ = load_model(tmp_path / "old.pt")
    assert model.cfg.decoder.merge_dim == 0 and model.decoder.merge_head is None
    new = BiFusionModel(tiny_config())
    save_checkpoint(tmp_path / "new.pt", new)
    model_new, _ = load_model(tmp_path / "new.pt")
    assert model_new.cfg.decoder.merge_dim == 256 and model_new.decoder.merge_head is not None
    rgb, depth, intr = frame()
    inp = frames_to_input([(rgb, depth, intr, np.eye(4))], model.cfg.frame, model.cfg.superpoints)
    post = PostprocessConfig(score_threshold=0.0, mask_threshold=0.0, min_points=1, stuff_classes=())
    a, b = model.segment(inp, cfg=post)[0], model_new.segment(inp, cfg=post)[0]
    assert a.instances and b.instances
    assert all(i.embedding is None for i in a.instances)
    for i in b.instances:
        assert i.embedding.shape == (256,) and abs(float(i.embedding.norm()) - 1) < 1e-5
    # a head-less model's weights in a checkpoint that claims a head, or a corrupt config, are refused
    data["config"]["decoder"]["merge_dim"] = 64
    torch.save(data, tmp_path / "claims.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "claims.pt")
    data["config"] = ["not", "a", "mapping"]
    torch.save(data, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match="config"):
        load_model(tmp_path / "cfg.pt")


def test_half_on_the_cpu_is_bf16_autocast_where_the_cpu_has_it(ckpt, tmp_path, monkeypatch, caplog):
    """``half`` on the CPU: bf16 autocast when the CPU multiplies bf16 natively (forced here, so the path runs on
    any CPU), float32 with a warning otherwise; the bf16 frame is finite and labels points as float32 does."""
    import bifusion_core.pipeline.processor as P

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert P.cpu_has_native_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert not P.cpu_has_native_bf16(str(info)) and not P.cpu_has_native_bf16(str(tmp_path / "missing"))

    rgb, depth, intr = frame()
    ref = FrameProcessor.from_checkpoint(ckpt[0], "cpu").process(Frame(rgb, depth, intr, np.eye(4)))
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        plain = FrameProcessor.from_checkpoint(ckpt[0], "cpu", half=True)
    assert not plain.half and plain.amp_dtype is None and "native bfloat16" in caplog.text
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    proc = FrameProcessor.from_checkpoint(ckpt[0], "cpu", half=True)
    assert proc.half and proc.amp_dtype == torch.bfloat16
    res = proc.process(Frame(rgb, depth, intr, np.eye(4)))
    assert np.array_equal(res.points, ref.points) and np.isfinite(res.alpha).all()
    assert (res.semantic == ref.semantic).mean() > 0.9
    assert not np.array_equal(res.alpha, ref.alpha)  # it did run in bf16


def test_prompts_of_the_shipped_model_change_its_labels_between_two_frames():
    """The shipped model classifies through its text tower: a subset of its classes keeps the labels of the points
    of those classes, synonyms it was taught name the same things, and the checkpoint's list comes back exactly."""
    from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
    from bifusion_core.data.synthetic.captions import SYNONYMS
    from bifusion_core.pipeline import FrameProcessor

    proc = FrameProcessor.from_checkpoint(device="cpu")
    names = proc.class_names
    frame = SyntheticSequence(100_007, SequenceConfig(n_frames=6, camera=CameraConfig.scaled(320, 240))).frame(3)
    base = proc.process(frame)
    lab = np.where(base.semantic >= 0, np.array(names, dtype=object)[np.clip(base.semantic, 0, None)], None)
    counts = {n: int((lab == n).sum()) for n in names}
    top = [n for n, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:3]]
    assert counts[top[-1]] > 50
    # 1. only the three most frequent classes: nothing else comes out, and their points keep their labels
    proc.set_classes(top)
    sub = proc.process(frame)
    assert set(np.unique(sub.semantic).tolist()) <= {-1, 0, 1, 2}
    keep = np.isin(lab, top)
    got = np.where(sub.semantic >= 0, np.array(top, dtype=object)[np.clip(sub.semantic, 0, None)], None)
    assert (got[keep] == lab[keep]).mean() > SUBSET_AGREEMENT
    # 2. every class under a synonym it was taught (sofa, bookcase, bin, ...): the same labels, mostly
    proc.set_classes([SYNONYMS[n][1] if len(SYNONYMS[n]) > 1 else n for n in names])
    syn = proc.process(frame)
    assert (syn.semantic == base.semantic).mean() > SYNONYM_AGREEMENT
    # 3. back to the checkpoint's list: exactly the first result (no stale text cache)
    proc.set_classes(names)
    again = proc.process(frame)
    assert np.array_equal(again.semantic, base.semantic) and np.array_equal(again.instance, base.instance)


SUBSET_AGREEMENT = 0.95  # measured 0.999 and 0.995 on two held-out rooms (0.996 and 0.993 with the first run)
SYNONYM_AGREEMENT = 0.9  # measured 0.986 and 0.966 (0.991 and 0.981 with the first run)
