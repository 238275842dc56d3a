"""Named model configurations: the full design and a tiny one for CPU tests."""
from __future__ import annotations

from .bifusion import BiFusionConfig, FrameConfig
from .clip2d import TINY_MODEL, Clip2DConfig
from .decoder import DecoderConfig
from .fusion_gate import FusionGateConfig
from .minkunet import Backbone3DConfig, MinkUNetConfig


def full_config(**kw) -> BiFusionConfig:
    """DESIGN.md: ViT-B/16 (OpenAI weights from the local cache), MinkUNet18A at 5 cm, ScanNet200."""
    return BiFusionConfig(**kw)


def tiny_config(class_names: list[str] | None = None, width: float = 0.25, early_steps: int = 0) -> BiFusionConfig:
    """A tiny randomly initialised ViT, a quarter-width U-Net and a small decoder (CPU tests, demos)."""
    names = class_names or ["wall", "floor", "chair", "table"]
    return BiFusionConfig(
        clip=Clip2DConfig(model_name=TINY_MODEL, pretrained=None),
        backbone=Backbone3DConfig(unet=MinkUNetConfig(width=width)),
        gate=FusionGateConfig(early_steps=early_steps),
        decoder=DecoderConfig(d_model=64, n_heads=4, ffn_dim=128, n_layers=2, n_learnable_queries=8,
                              num_classes=len(names)),
        frame=FrameConfig(stride=4, max_points=20000),
        class_names=list(names),
    )
