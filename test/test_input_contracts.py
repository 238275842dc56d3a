"""Issue #13: the pipeline's input contract (Frame), its output check (non-finite -> a counted skip), bounded
cost per frame, one class-list rule set, and the single-frame CLI's bad inputs (clear error, exit 2)."""
import logging

import cv2
import numpy as np
import pytest
import torch

from bifusion_core.geometry import backproject
from bifusion_core.infer import main as infer_main
from bifusion_core.io.class_list import MAX_CLASSES, check_class_names, parse_class_list
from bifusion_core.models.bifusion import BiFusionModel
from bifusion_core.models.checkpoint import save_checkpoint
from bifusion_core.models.clip2d import Clip2D, Clip2DConfig, TINY_MODEL
from bifusion_core.models.presets import tiny_config
from bifusion_core.pipeline import Frame, FrameProcessor
from bifusion_core.pipeline.session import FrameInputs, FrameSession, FrameSkipped
from bifusion_core.pipeline.types import NonFiniteOutput


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint(path, BiFusionModel(tiny_config()))
    return path


def images(h=60, w=80):
    rng = np.random.default_rng(0)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = np.full((h, w), 2.0, np.float32)
    return rgb, depth, (60.0, 60.0, w / 2, h / 2)


# ------------------------------------------------------------------------------------------------ Frame contract
def test_frame_refuses_float_colour_and_other_contract_breaks():
    rgb, depth, intr = images()
    Frame(rgb, depth, intr, np.eye(4))  # the valid one
    with pytest.raises(ValueError, match="uint8"):
        Frame(rgb.astype(np.float32), depth, intr, np.eye(4))  # 0..255 floats used to wrap around silently
    with pytest.raises(ValueError, match="sizes differ"):
        Frame(rgb[:, :40], depth, intr, np.eye(4))
    with pytest.raises(ValueError, match="depth must be uint16"):
        Frame(rgb, depth.astype(np.int8), intr, np.eye(4))
    with pytest.raises(ValueError, match="intrinsics"):
        Frame(rgb, depth, (60.0, float("nan"), 40, 30), np.eye(4))
    with pytest.raises(ValueError, match="intrinsics"):
        Frame(rgb, depth, (0.0, 60.0, 40, 30), np.eye(4))
    with pytest.raises(ValueError, match="intrinsics"):
        Frame(rgb, depth, (60.0, 60.0, 40), np.eye(4))
    bad_pose = np.eye(4)
    bad_pose[0, 3] = np.inf
    with pytest.raises(ValueError, match="pose"):
        Frame(rgb, depth, intr, bad_pose)
    with pytest.raises(ValueError, match="stamp"):
        Frame(rgb, depth, intr, np.eye(4), stamp=float("nan"))
    with pytest.raises(ValueError, match="rgb"):
        Frame(rgb[..., 0], depth, intr, np.eye(4))


def test_backprojection_refuses_float_colour_outside_unit_range():
    rgb, depth, intr = images(8, 8)
    bp = backproject(depth, intr, rgb=rgb.astype(np.float32) / 255)
    assert float(bp.colors.max()) <= 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        backproject(depth, intr, rgb=rgb.astype(np.float32))


# ------------------------------------------------------------------------------------------------ output check
def test_non_finite_outputs_are_refused_and_counted_as_bad_output(ckpt):
    proc = FrameProcessor.from_checkpoint(ckpt, "cpu")
    rgb, depth, intr = images()
    assert np.isfinite(proc.process(Frame(rgb, depth, intr, np.eye(4))).score).all()
    with torch.no_grad():  # a model gone bad after loading (a diverged fine-tune, an fp16 overflow ...)
        for p in proc.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteOutput, match="not finite"):
        proc.process(Frame(rgb, depth, intr, np.eye(4)))
    session = FrameSession(proc, world_frame="map")
    inputs = FrameInputs(rgb, depth, intr, 1.0, "cam")
    with pytest.raises(FrameSkipped) as err:
        session.process(inputs, np.eye(4), "map")
    assert err.value.reason == "bad_output"
    session.skip(err.value.reason, err.value.detail)
    assert session.skipped["bad_output"] == 1 and session.skipped["processor_error"] == 0
    assert session.counter("processed") == 0


def test_check_finite_names_the_bad_instance_field(ckpt):
    proc = FrameProcessor.from_checkpoint(ckpt, "cpu")
    proc.model.cfg.postprocess.score_threshold = 0.0
    proc.model.cfg.postprocess.min_points = 1
    rgb, depth, intr = images()
    res = proc.process(Frame(rgb, depth, intr, np.eye(4)))
    assert res.instances, "the tiny model at threshold 0 gives instances"
    res.check_finite()
    res.instances[0].center = torch.tensor([0.0, float("nan"), 0.0])
    with pytest.raises(NonFiniteOutput, match="center"):
        res.check_finite()


def test_a_set_that_breaks_the_frame_contract_is_a_counted_processor_error(ckpt):
    proc = FrameProcessor.from_checkpoint(ckpt, "cpu")
    session = FrameSession(proc, world_frame="map")
    rgb, depth, intr = images()
    for inputs in (FrameInputs(rgb.astype(np.float32), depth, intr, 1.0, "cam"),
                   FrameInputs(rgb, depth, (60.0, 60.0, 40.0), 1.0, "cam"),
                   FrameInputs(rgb, depth, intr, float("nan"), "cam")):
        with pytest.raises(FrameSkipped) as err:
            session.process(inputs, np.eye(4), "map")
        assert err.value.reason == "processor_error" and "frame" in err.value.detail


# ------------------------------------------------------------------------------------------------ bounded cost
def test_clip_input_size_is_bounded_by_max_side():
    cfg = Clip2DConfig(model_name=TINY_MODEL, pretrained=None)
    clip = Clip2D(cfg)
    assert cfg.max_side == 640
    assert clip.input_size(480, 640) == (480, 640)
    assert clip.input_size(3000, 4000) == (480, 640)
    assert clip.input_size(4000, 3000) == (640, 480)
    x, hw, (sx, sy) = clip.preprocess(torch.zeros(1, 3, 3000, 4000, dtype=torch.uint8))
    assert hw == (3000, 4000) and max(x.shape[-2:]) <= 640 + clip.patch and abs(sx - 0.16) < 1e-9
    assert Clip2D(Clip2DConfig(model_name=TINY_MODEL, pretrained=None, max_side=None)).input_size(3000, 4000) \
        == (3000, 4000)
    with pytest.raises(ValueError, match="max_side"):
        Clip2DConfig(model_name=TINY_MODEL, pretrained=None, max_side=8)


def test_a_4000x3000_frame_runs_with_a_capped_point_count_and_a_small_tower_input(ckpt):
    proc = FrameProcessor.from_checkpoint(ckpt, "cpu")
    seen = []
    hook = proc.model.encoder.clip.clip.visual.conv1.register_forward_hook(
        lambda mod, args, out: seen.append(tuple(args[0].shape[-2:])))
    h, w = 3000, 4000
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, w // 2:] = 200
    depth = np.full((h, w), 2.5, np.float32)
    res = proc.process(Frame(rgb, depth, (3000.0, 3000.0, w / 2, h / 2), np.eye(4)))
    hook.remove()
    assert res.num_points == proc.model.cfg.frame.max_points == 20000
    assert seen and max(seen[0]) <= 640 + 16, seen  # the tower saw the image downscaled to a 640 long side
    assert res.alpha_image.shape == (h, w)  # outputs stay in the camera's pixel grid
    assert res.pixels[:, 0].max() < w and res.pixels[:, 1].max() < h


def test_processor_caps_points_when_the_checkpoint_has_no_cap(tmp_path):
    from bifusion_core.pipeline.processor import DEFAULT_MAX_POINTS

    cfg = tiny_config()
    cfg.frame.max_points = None
    proc = FrameProcessor(BiFusionModel(cfg), "cpu")
    assert proc.model.cfg.frame.max_points == DEFAULT_MAX_POINTS


# ------------------------------------------------------------------------------------------------ class lists
def test_class_lists_share_one_rule_set(ckpt):
    assert parse_class_list(" chair , coffee table ") == ["chair", "coffee table"]
    assert parse_class_list("[chair, 'coffee table']") == ["chair", "coffee table"]
    assert parse_class_list("") == []
    for bad in (",,", "chair,,table", "[chair, '']", "[1, 2]", "chair,chair", "[chair,"):
        with pytest.raises(ValueError):
            parse_class_list(bad)
    with pytest.raises(ValueError, match="at most"):
        check_class_names([f"c{i}" for i in range(MAX_CLASSES + 1)])
    model = BiFusionModel(tiny_config())
    for bad in (["", "", "", ""], ["a", "a", "b", "c"], "wall"):
        with pytest.raises(ValueError):
            model.set_classes(bad)
    model.set_classes([" a", "b ", "c", "d"])
    assert model.class_names == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="fixed 4-class"):
        model.set_classes([f"c{i}" for i in range(500)])


# ------------------------------------------------------------------------------------------------ infer CLI
@pytest.fixture()
def pngs(tmp_path):
    rgb, depth, _ = images()
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "d.png"), (depth * 1000).astype(np.uint16))
    return tmp_path


def run_infer(pngs, ckpt, *extra, out=None):
    return infer_main(["--color", str(pngs / "c.png"), "--depth", str(pngs / "d.png"), "--intrinsics",
                       "60,60,40,30", "--checkpoint", str(ckpt), "--device", "cpu",
                       "--out", str(out or pngs / "out"), *extra])


def test_infer_out_naming_an_existing_file_is_a_clear_error(pngs, ckpt, caplog):
    (pngs / "taken").write_text("x")
    with caplog.at_level(logging.ERROR, "bifusion.infer"):
        assert run_infer(pngs, ckpt, out=pngs / "taken") == 2
    assert "not a directory" in caplog.text
    assert (pngs / "taken").read_text() == "x"


@pytest.mark.parametrize("scale", ["0", "-0.001", "nan", "inf", "x"])
def test_infer_depth_scale_must_be_positive_and_is_named(pngs, ckpt, scale, capsys):
    with pytest.raises(SystemExit) as err:
        run_infer(pngs, ckpt, "--depth-scale", scale)
    assert err.value.code == 2 and "--depth-scale" in capsys.readouterr().err


@pytest.mark.parametrize("classes", [",,", "a,,b", "a,a"])
def test_infer_refuses_empty_or_repeated_class_names(pngs, ckpt, classes, capsys):
    with pytest.raises(SystemExit) as err:
        run_infer(pngs, ckpt, "--classes", classes)
    assert err.value.code == 2 and "--classes" in capsys.readouterr().err


def test_infer_bad_pose_file_and_fixed_class_mismatch_are_clear_errors(pngs, ckpt, caplog):
    (pngs / "pose.txt").write_text("1 0 0\n0 1 0\n")
    with caplog.at_level(logging.ERROR, "bifusion.infer"):
        assert run_infer(pngs, ckpt, "--pose", str(pngs / "pose.txt")) == 2
        assert run_infer(pngs, ckpt, "--classes", ",".join(f"c{i}" for i in range(500))) == 2
    assert "16 numbers" in caplog.text and "fixed 4-class" in caplog.text
    assert run_infer(pngs, ckpt, "--classes", "a,b,c,d") == 0


def test_frame_reads_every_intrinsics_form_the_geometry_reads():
    """``(fx, fy, cx, cy)``, a ``CameraIntrinsics`` and a 3x3 matrix (as data readers give) make the same frame."""
    from bifusion_core.geometry import CameraIntrinsics

    rgb, depth, intr = images()
    K = np.array([[intr[0], 0, intr[2]], [0, intr[1], intr[3]], [0, 0, 1]])
    forms = [intr, CameraIntrinsics(*intr), K, np.asarray(intr)]
    assert {Frame(rgb, depth, f, np.eye(4)).intrinsics for f in forms} == {tuple(float(v) for v in intr)}
    with pytest.raises(ValueError, match="frame intrinsics"):
        Frame(rgb, depth, np.eye(2), np.eye(4))
