"""Training configuration (YAML files in config/train/, ``key.sub=value`` overrides on the command line)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import apply_overrides, from_dict
from ..losses.criterion import LossConfig
from ..models.bifusion import BiFusionConfig
from .data import DataConfig
from .stages import StageConfig


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.05
    warmup_iters: int = 500
    min_lr_ratio: float = 0.01
    grad_clip: float = 10.0
    amp: bool = True           # mixed precision on CUDA (ignored on the CPU)
    max_bad_steps: int = 20    # consecutive NaN/inf losses before the run stops

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_iters < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("need lr > 0, weight_decay >= 0, warmup_iters >= 0, 0 <= min_lr_ratio <= 1")


@dataclass
class LogConfig:
    log_every: int = 10
    val_every: int = 1000
    ckpt_every: int = 500
    val_frames: int | None = None  # cap on validation frames (None: all held-out frames)


@dataclass
class TrainConfig:
    model: BiFusionConfig = field(default_factory=BiFusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StageConfig = field(default_factory=StageConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0

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
    """Read a YAML config (``None``: defaults), apply overrides, validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{p}: the top level must be a mapping")
    apply_overrides(data, overrides or [])
    return from_dict(TrainConfig, data, str(path or "config"))
