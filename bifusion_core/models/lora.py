"""LoRA adapters (Hu et al. 2021) for the frozen CLIP image tower (training stage S2)."""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``y = W x + b + (alpha / r) * B(A(x))`` with the base ``nn.Linear`` frozen; ``B`` starts at zero so the
    wrapped layer starts exactly as the base layer."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def add_lora(module: nn.Module, rank: int = 8, alpha: float = 16.0,
             targets: tuple[str, ...] = ("c_fc", "c_proj")) -> list[str]:
    """Wrap every ``nn.Linear`` child whose attribute name is in ``targets`` (open_clip's ViT
    MLP layers; attention projections are used by weight inside nn.MultiheadAttention and cannot be wrapped)
    with :class:`LoRALinear`; idempotent. Returns the wrapped module paths."""
    wrapped = []
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in targets and isinstance(child, nn.Linear) and not isinstance(parent, LoRALinear):
                setattr(parent, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    return wrapped
