"""Config validation (issue 13): every config dataclass checks its fields' types and ranges at construction;
the train CLI turns bad values, bad override YAML and a changed config on resume into one-line errors, exit 2,
before anything trains."""
import dataclasses
import glob
import json
import logging
import math

import pytest
import torch

from bifusion_core.config import (FieldError, apply_overrides, configclass, from_dict, is_configclass, load_yaml,
                                  spec, to_dict)
from bifusion_core.data.scannet.frames import FrameReaderConfig
from bifusion_core.data.synthetic.export import ExportConfig
from bifusion_core.data.synthetic.render import CameraConfig
from bifusion_core.data.synthetic.scene import SceneConfig
from bifusion_core.data.synthetic.sequence import SequenceConfig
from bifusion_core.eval.instance import InstanceEvalConfig
from bifusion_core.losses.criterion import LossConfig
from bifusion_core.losses.matcher import MatcherConfig
from bifusion_core.mapping.config import MapConfig
from bifusion_core.models.bifusion import BiFusionConfig, FrameConfig
from bifusion_core.models.clip2d import Clip2DConfig
from bifusion_core.models.decoder import DecoderConfig
from bifusion_core.models.fusion_gate import FusionGateConfig
from bifusion_core.models.minkunet import Backbone3DConfig, MinkUNetConfig
from bifusion_core.models.pe_film import PEFiLMConfig
from bifusion_core.models.postprocess import PostprocessConfig
from bifusion_core.models.superpoints import SuperpointConfig
from bifusion_core.train.config import LogConfig, OptimConfig, TrainConfig, load_train_config
from bifusion_core.train.data import DataConfig
from bifusion_core.train.stages import StageConfig
from bifusion_core.data.synthetic.masks import MaskNoise
from bifusion_core.data.synthetic.stream import StreamConfig
from bifusion_core.train.stand_in_clip import StandInConfig

ALL_CONFIGS = [LossConfig, MatcherConfig, MapConfig, StageConfig, OptimConfig, LogConfig, TrainConfig, DataConfig,
               MinkUNetConfig, Backbone3DConfig, Clip2DConfig, DecoderConfig, FrameConfig, BiFusionConfig,
               PEFiLMConfig, SuperpointConfig, PostprocessConfig, FusionGateConfig, CameraConfig, SceneConfig,
               SequenceConfig, ExportConfig, FrameReaderConfig, InstanceEvalConfig, StreamConfig, StandInConfig,
               MaskNoise]

SMALL = "config/train/synthetic_small.yaml"
TINY = ["data.scenes=2", "data.frames_per_scene=3", "data.val_scenes=0", "data.width=96", "data.height=72",
        "data.batch_size=2", "model.frame.stride=2", "model.frame.max_points=3000", "model.superpoints.seed_size=0.5",
        "optim.warmup_iters=1", "log.log_every=1", "log.ckpt_every=1000", "log.val_every=1000",
        "stages.s0_iters=1", "stages.s1_iters=1", "stages.s2_iters=0"]


# ---------------------------------------------------------------------------------------------- the classes
@pytest.mark.parametrize("cls", ALL_CONFIGS, ids=lambda c: c.__name__)
def test_every_config_class_is_a_validated_configclass_and_round_trips(cls):
    assert is_configclass(cls)
    obj = cls()
    again = from_dict(cls, to_dict(obj))
    assert to_dict(again) == to_dict(obj)


def test_int_fields_refuse_floats_and_bools_and_float_fields_take_ints():
    with pytest.raises(ValueError, match=r"s0_iters must be an int, got float 1\.5"):
        StageConfig(s0_iters=1.5)
    with pytest.raises(ValueError, match="s1_iters must be an int, got bool True"):
        StageConfig(s1_iters=True)
    with pytest.raises(ValueError, match="width must be an int, got float 64.5"):
        DataConfig(width=64.5)
    with pytest.raises(ValueError, match="stride"):
        FrameConfig(stride=2.0)
    o = OptimConfig(lr=1, weight_decay=0)
    assert type(o.lr) is float and o.lr == 1.0 and type(o.weight_decay) is float


@pytest.mark.parametrize("bad", ["x", "1e-3", True, float("nan"), float("inf"), -float("inf"), None, [1e-3]])
def test_float_fields_refuse_strings_bools_and_non_finite_values(bad):
    with pytest.raises(ValueError, match="lr"):
        OptimConfig(lr=bad)


def test_inf_only_where_a_field_allows_it():
    assert OptimConfig(grad_clip=float("inf")).grad_clip == math.inf  # .inf: no gradient clipping
    assert PostprocessConfig(fill_radius=float("inf")).fill_radius == math.inf  # inf: no distance limit
    with pytest.raises(ValueError, match="grad_clip must be finite, got nan"):
        OptimConfig(grad_clip=float("nan"))
    with pytest.raises(ValueError, match="voxel_size must be finite"):
        Backbone3DConfig(voxel_size=float("inf"))


def test_bool_str_optional_tuple_and_list_fields():
    with pytest.raises(ValueError, match="open_vocab must be a bool, got int 1"):
        DecoderConfig(open_vocab=1)
    with pytest.raises(ValueError, match="model_name must be a str"):
        Clip2DConfig(model_name=3)
    assert LogConfig(val_frames=None).val_frames is None
    for bad, match in ((0, "must be >= 1"), (2.5, "must be an int")):
        with pytest.raises(ValueError, match=f"val_frames {match}"):
            LogConfig(val_frames=bad)
    d = DataConfig(scale=[0.8, 1.2])  # lists (YAML, JSON) become tuples
    assert d.scale == (0.8, 1.2) and isinstance(d.scale, tuple)
    with pytest.raises(ValueError, match=r"scale must have 2 entries"):
        DataConfig(scale=[1.0])
    with pytest.raises(ValueError, match=r"scale\[0\] must be > 0"):
        DataConfig(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="scale range"):  # the cross-field rule still runs
        DataConfig(scale=(1.2, 0.8))
    u = MinkUNetConfig(planes=[8] * 8)
    assert u.planes == (8,) * 8 and isinstance(u.planes, tuple)
    with pytest.raises(ValueError, match=r"planes\[3\] must be an int, got float 8\.5"):
        MinkUNetConfig(planes=[8, 8, 8, 8.5, 8, 8, 8, 8])
    with pytest.raises(ValueError, match="planes and layers need 8"):
        MinkUNetConfig(planes=[8] * 7)
    with pytest.raises(ValueError, match=r"class_names\[1\] must be a str"):
        BiFusionConfig(class_names=["a", 2], decoder=DecoderConfig(num_classes=2))
    with pytest.raises(ValueError, match=r"resize_to must have 2 entries"):
        Clip2DConfig(resize_to=(224,))
    assert Clip2DConfig(resize_to=[224, 224]).resize_to == (224, 224)


def test_nested_configs_take_instances_or_mappings_and_nothing_else():
    with pytest.raises(ValueError, match="optim: expected a mapping for OptimConfig, got int 3"):
        TrainConfig(optim=3)
    with pytest.raises(ValueError) as exc:
        from_dict(TrainConfig, {"optim": 3})
    assert str(exc.value) == "config.optim: expected a mapping for OptimConfig, got int 3"
    with pytest.raises(ValueError, match="config.model.backbone: expected a mapping for Backbone3DConfig"):
        from_dict(TrainConfig, {"model": {"backbone": [0.05]}})
    b = Backbone3DConfig(unet={"width": 0.5})
    assert isinstance(b.unet, MinkUNetConfig) and b.unet.width == 0.5
    with pytest.raises(ValueError, match=r"unet\.width must be a number"):
        Backbone3DConfig(unet={"width": "wide"})
    assert from_dict(TrainConfig, {"optim": None}).optim == OptimConfig()  # an empty YAML section: defaults
    assert Backbone3DConfig(unet=None).unet == MinkUNetConfig()


def test_from_dict_names_the_key_path():
    with pytest.raises(FieldError) as exc:
        from_dict(TrainConfig, {"model": {"decoder": {"d_model": 1.5}}})
    assert str(exc.value) == "config.model.decoder.d_model must be an int, got float 1.5"
    assert exc.value.key == "config.model.decoder.d_model"
    with pytest.raises(ValueError, match="config.log.ckpt_every must be > 0, got 0"):
        from_dict(TrainConfig, {"log": {"ckpt_every": 0}})


@pytest.mark.parametrize("cls,name,bad", [
    (LogConfig, "log_every", 0), (LogConfig, "ckpt_every", 0), (LogConfig, "val_every", -5),
    (StageConfig, "s1_iters", -1), (OptimConfig, "min_lr_ratio", 1.5), (OptimConfig, "warmup_iters", -1),
    (OptimConfig, "max_bad_steps", 0), (PostprocessConfig, "nms_iou", -0.1), (FusionGateConfig, "warmup_alpha", 2.0),
    (DecoderConfig, "dropout", 1.0), (LossConfig, "knn", 0), (MatcherConfig, "cost_dice", -1.0),
    (DataConfig, "batch_size", 0), (DataConfig, "source", "kinect"), (CameraConfig, "hole_fraction", 1.5),
    (SceneConfig, "n_boxes", (-1, 2)), (SequenceConfig, "fps", 0.0), (ExportConfig, "jpeg_quality", 101),
    (FrameReaderConfig, "frame_step", 0), (InstanceEvalConfig, "overlaps", (0.5, 1.0)),
    (PEFiLMConfig, "num_freqs", 33), (SuperpointConfig, "refine_iters", -1), (TrainConfig, "seed", -1),
])
def test_range_rules_name_the_field(cls, name, bad):
    with pytest.raises(ValueError, match=name):
        cls(**{name: bad})


def test_configclass_decorator_frozen_literal_and_own_post_init():
    from typing import Literal

    seen = []

    @configclass(frozen=True)
    class Demo:
        n: int = spec(1, ge=1)
        mode: Literal["a", "b"] = "a"
        ratio: float = spec(0.5, ge=0, le=1)

        def __post_init__(self):
            seen.append(type(self.ratio))  # runs after the field checks: ratio is already a float
            if self.mode == "b" and self.n < 2:
                raise ValueError("mode b needs n >= 2")

    d = Demo(ratio=1)
    assert d.ratio == 1.0 and seen == [float]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.n = 3
    with pytest.raises(ValueError, match="mode must be one of"):
        Demo(mode="c")
    with pytest.raises(ValueError, match="mode b needs"):
        Demo(mode="b")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        Demo(n=0)
    assert len(seen) == 2  # the own __post_init__ does not run for values its fields refuse


# ---------------------------------------------------------------------------------------------- files, overrides
def test_every_shipped_training_config_and_the_demo_checkpoint_load():
    files = sorted(glob.glob("config/train/*.yaml"))
    assert len(files) >= 3
    for f in files:
        assert isinstance(load_train_config(f), TrainConfig), f
    data = torch.load("bifusion_core/assets/demo/synthetic_small.pt", map_location="cpu", weights_only=True)
    from bifusion_core.models.checkpoint import checkpoint_config

    cfg = from_dict(BiFusionConfig, checkpoint_config(data), "checkpoint config")
    assert cfg.decoder.num_classes == len(cfg.resolved_class_names())


def test_override_yaml_errors_are_value_errors_naming_the_override():
    with pytest.raises(ValueError, match=r"override 'optim\.lr=\[1,': the value is not valid YAML") as exc:
        apply_overrides({}, ["optim.lr=[1,"])
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="must look like key.sub=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ValueError, match="'optim' is not a section"):
        apply_overrides({"optim": 3}, ["optim.lr=1"])
    assert apply_overrides({"optim": None}, ["optim.lr=0.1"]) == {"optim": {"lr": 0.1}}
    # exponents without a dot are floats (plain YAML 1.1 reads "1e-4" as a string)
    assert load_yaml("1e-4") == 1e-4 and load_yaml("2E3") == 2000.0 and load_yaml("1e") == "1e"
    assert load_train_config(SMALL, ["optim.lr=1e-4"]).optim.lr == 1e-4


def test_bad_yaml_file_error_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim: {lr: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML") as exc:
        load_train_config(tmp_path / "bad.yaml")
    assert "\n" not in str(exc.value) and "bad.yaml" in str(exc.value)


# ---------------------------------------------------------------------------------------------- the train CLI
def run_cli(tmp_path, caplog, *extra, out="run"):
    from bifusion_core.train.__main__ import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = main(["--config", SMALL, "--out", str(tmp_path / out), "--device", "cpu"] + TINY + list(extra))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return rc, errors


@pytest.mark.parametrize("override,message", [
    ("optim=3", "config.optim: expected a mapping for OptimConfig, got int 3"),
    ("optim.lr=[1,", "override 'optim.lr=[1,': the value is not valid YAML"),
    ("data.width=64.5", "config.data.width must be an int, got float 64.5"),
    ("log.ckpt_every=0", "config.log.ckpt_every must be > 0, got 0"),
    ("log.log_every=0", "config.log.log_every must be > 0, got 0"),
    ("stages.s0_iters=1.5", "config.stages.s0_iters must be an int, got float 1.5"),
    ("optim.lr=fast", "config.optim.lr must be a number, got str 'fast'"),
])
def test_cli_reports_bad_values_in_one_line_before_training(tmp_path, caplog, capsys, override, message):
    rc, errors = run_cli(tmp_path, caplog, override)
    assert rc == 2
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_resume_with_another_config_is_refused_unless_allowed_and_then_recorded(tmp_path, caplog):
    from bifusion_core.models.checkpoint import read_checkpoint

    rc, errors = run_cli(tmp_path, caplog, "--max-steps", "1")
    assert rc == 0 and not errors
    run = tmp_path / "run"
    before = (run / "last.pt").read_bytes()
    coarse = ["model.backbone.voxel_size=0.1", "model.pe_film.voxel_size=0.1"]
    rc, errors = run_cli(tmp_path, caplog, *coarse)
    assert rc == 2 and len(errors) == 1, errors
    assert "model.backbone.voxel_size: 0.05 -> 0.1" in errors[0] and "--allow-config-change" in errors[0]
    assert "\n" not in errors[0]
    assert (run / "last.pt").read_bytes() == before  # untouched
    assert json.loads((run / "config.json").read_text())["model"]["backbone"]["voxel_size"] == 0.05

    rc, errors = run_cli(tmp_path, caplog, "--allow-config-change", *coarse)
    assert rc == 0 and not errors
    assert any("changed config" in r.getMessage() and "voxel_size" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    assert json.loads((run / "config.json").read_text())["model"]["backbone"]["voxel_size"] == 0.1
    history = json.loads((run / "config_history.json").read_text())
    assert [h["from_step"] for h in history] == [0, 1]
    assert [h["config"]["model"]["backbone"]["voxel_size"] for h in history] == [0.05, 0.1]
    assert "model.backbone.voxel_size: 0.05 -> 0.1" in history[1]["changed"]
    st = read_checkpoint(run / "last.pt")["train"]
    assert st["step"] == 2 and [h["from_step"] for h in st["config_history"]] == [0, 1]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["config_changes"][0]["from_step"] == 1

    # the run now carries the new config: resuming with it needs no flag, the old one is refused again
    rc, errors = run_cli(tmp_path, caplog, *coarse)
    assert rc == 0 and not errors
    rc, errors = run_cli(tmp_path, caplog)
    assert rc == 2 and "model.backbone.voxel_size: 0.1 -> 0.05" in errors[0]
    # how often it logs / validates / saves may change on resume without the flag; the change is recorded
    rc, errors = run_cli(tmp_path, caplog, *coarse, "log.log_every=3")
    assert rc == 0 and not errors
    history = json.loads((run / "config_history.json").read_text())
    assert len(history[-1]["changed"]) == 1 and history[-1]["changed"][0].startswith("log.log_every: ")
