"""Staged unfreezing (DESIGN.md §4).

S0 (first ``s0_iters``): Proj2D (and the text projection), the 3D head (1x1 conv + BN), the semantic head and
the decoder train; the U-Net, FiLM and the gate are frozen, the gate's α is fixed at 0.5 (its warm-up length
is ``s0_iters``). S1 (next ``s1_iters``): FiLM, the whole U-Net and the gate join. S2 (``s2_iters``, optional):
LoRA adapters on the CLIP image tower join as well. S3 (``s3_iters``, the merge stage, default 0): only the
decoder's merge head (DESIGN.md §5b; frozen in S0-S2) trains, on frame pairs, with the merge loss alone; everything else is frozen
and in eval mode, so the encoder's outputs, batch-norm statistics and the gate's step counter stay exactly as
they were (fine-tuning a trained checkpoint this way changes nothing but the instances' embeddings). Frozen
modules are also kept in eval mode so their batch-norm statistics do not move.
"""
from __future__ import annotations

from torch import nn

from ..config import configclass, spec
from ..models.bifusion import BiFusionModel


@configclass
class StageConfig:
    s0_iters: int = spec(3000, ge=0)
    s1_iters: int = spec(20000, ge=0)
    s2_iters: int = spec(10000, ge=0)
    lora_rank: int = spec(8, ge=0)
    s3_iters: int = spec(0, ge=0)

    def __post_init__(self) -> None:
        if self.s2_iters and not self.lora_rank:
            raise ValueError("stage S2 trains LoRA adapters: set lora_rank > 0 or s2_iters = 0")

    @property
    def encoder_total(self) -> int:
        """Iterations of S0-S2 (the stages that train more than the merge head)."""
        return self.s0_iters + self.s1_iters + self.s2_iters

    @property
    def total(self) -> int:
        return self.encoder_total + self.s3_iters

    def stage_at(self, step: int) -> int:
        if step < self.s0_iters:
            return 0
        if step < self.s0_iters + self.s1_iters:
            return 1
        if self.s3_iters and step >= self.encoder_total:
            return 3
        return 2


def stage_modules(model: BiFusionModel, stage: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """(trainable modules, frozen modules) of a stage; CLIP's own weights are always frozen. In S3 the frozen
    list is the whole model (the merge head, inside it, is set trainable after)."""
    if stage == 3:
        if model.decoder.merge_head is None:
            raise ValueError("stage S3 trains the merge head: the model has none (decoder.merge_dim = 0)")
        return [model.decoder.merge_head], [model]
    enc = model.encoder
    heads = [enc.clip.proj2d, enc.clip.text_proj, enc.backbone.head, enc.backbone.head_bn, model.sem_head,
             model.decoder]
    later = [enc.pe_film, enc.backbone.unet, enc.gate]
    if stage == 0:
        return heads, later
    return heads + later, []


def lora_parameters(model: BiFusionModel):
    return [p for n, p in model.encoder.clip.clip.named_parameters() if ".lora_" in n]


def apply_stage(model: BiFusionModel, stage: int) -> None:
    """Set ``requires_grad`` (and train/eval mode of frozen parts) for ``stage``."""
    train_mods, frozen = stage_modules(model, stage)
    training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    for m in frozen:  # first: a trainable module may sit inside a frozen one (S3)
        m.eval()
    for m in train_mods:
        for p in m.parameters():
            p.requires_grad_(True)
        m.train(training)
    for p in lora_parameters(model):
        p.requires_grad_(stage == 2)
    if stage != 3 and model.decoder.merge_head is not None:
        # only S3 trains the merge head; S0-S2's loss does not reach it (and DDP needs every parameter that
        # requires grad to get one)
        for p in model.decoder.merge_head.parameters():
            p.requires_grad_(False)
