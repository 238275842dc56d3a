"""Training configuration (YAML files in config/train/, ``key.sub=value`` overrides on the command line)."""
from __future__ import annotations

from dataclasses import field
from pathlib import Path

import yaml

from ..config import apply_overrides, configclass, from_dict, load_yaml, one_line, spec
from ..losses.criterion import LossConfig
from ..models.bifusion import BiFusionConfig
from .data import DataConfig
from .stages import StageConfig


@configclass
class OptimConfig:
    lr: float = spec(2e-4, gt=0)
    weight_decay: float = spec(0.05, ge=0)
    warmup_iters: int = spec(500, ge=0)
    min_lr_ratio: float = spec(0.01, ge=0, le=1)
    grad_clip: float = spec(10.0, gt=0, allow_inf=True)  # max gradient norm (.inf: no clipping)
    amp: bool = True           # mixed precision on CUDA (ignored on the CPU)
    max_bad_steps: int = spec(20, ge=1)  # consecutive NaN/inf losses before the run stops


@configclass
class LogConfig:
    log_every: int = spec(10, gt=0)    # steps between logged training scalars
    val_every: int = spec(1000, gt=0)  # steps between validations
    ckpt_every: int = spec(500, gt=0)  # steps between last.pt checkpoints
    val_frames: int | None = spec(None, ge=1)  # cap on validation frames (None: all held-out frames)


@configclass
class TrainConfig:
    model: BiFusionConfig = field(default_factory=BiFusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StageConfig = field(default_factory=StageConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = spec(0, ge=0)

    def __post_init__(self) -> None:
        if self.stages.s3_iters and not self.model.decoder.merge_dim:
            raise ValueError("stage S3 (stages.s3_iters > 0) trains the merge head: set model.decoder.merge_dim > 0")


CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "train"


def named_config(name: str) -> Path:
    """``config/train/NAME.yaml`` of this checkout."""
    p = CONFIG_DIR / f"{name}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"no training config named {name!r} in {CONFIG_DIR}")
    return p


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (``None``: defaults), apply overrides, validate. ``ValueError`` (one line, naming
    the key path from ``config``, e.g. ``config.optim.lr must be > 0, got 0``) for anything that does not fit."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config not found: {p}")
        try:
            data = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML ({one_line(exc)})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{p}: the top level must be a mapping")
    apply_overrides(data, overrides or [])
    return from_dict(TrainConfig, data, "config")
