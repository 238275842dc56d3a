"""2D instance masks for the synthetic recordings that behave like a real 2D segmenter's (SAM, FastSAM), not an
oracle's: a noisy version of the ground-truth instance image.

:func:`noisy_masks` starts from the rendered instance ids and, per instance, with the probabilities of
:class:`MaskNoise`: drops it (no mask: a missed object), merges it with a neighbouring instance it touches
(under-segmentation), splits it in two along a random line through its centre (over-segmentation), and moves its
border by a pixel or two (masks never follow depth edges exactly); instances smaller than ``min_pixels`` get no
mask (segmenters miss small things). Mask ids are renumbered ``1..M`` in random order, as a segmenter's carry no
meaning; 0 = no mask.
"""
from __future__ import annotations

import numpy as np

from ...config import configclass, spec


@configclass
class MaskNoise:
    """Attributes:
        drop / merge / split: per-instance probabilities of a missed, merged and split mask.
        border: the largest number of pixels a mask's border moves by (0: exact borders).
        min_pixels: instances with fewer pixels get no mask.
    """

    drop: float = spec(0.15, ge=0, le=1)
    merge: float = spec(0.1, ge=0, le=1)
    split: float = spec(0.1, ge=0, le=1)
    border: int = spec(2, ge=0)
    min_pixels: int = spec(30, ge=0)


ORACLE = MaskNoise(drop=0.0, merge=0.0, split=0.0, border=0, min_pixels=0)
"""Ground-truth masks (the upper bound): every instance is its own exact mask."""


def _shift_borders(ids: np.ndarray, rng: np.random.Generator, border: int) -> np.ndarray:
    """Each pass, every pixel takes, with probability 1/2, the id of a neighbour in one random direction."""
    out = ids.copy()
    for _ in range(border):
        dy, dx = ((0, 1), (0, -1), (1, 0), (-1, 0))[int(rng.integers(4))]
        shifted = np.roll(out, (dy, dx), axis=(0, 1))
        take = rng.random(out.shape) < 0.5
        out = np.where(take, shifted, out)
    return out


def noisy_masks(instance: np.ndarray, rng: np.random.Generator, noise: MaskNoise | None = None) -> np.ndarray:
    """``(H, W)`` int32 mask ids (0 = none) from an ``(H, W)`` ground-truth instance image (0 = none)."""
    noise = noise or MaskNoise()
    inst = np.asarray(instance).astype(np.int64)
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    label = {int(i): int(i) for i in ids}
    H, W = inst.shape
    out = inst.copy()
    # merges: an instance joins a neighbour it touches (4-neighbourhood) in the image
    if noise.merge > 0 and len(ids) > 1:
        a = np.concatenate([inst[:, :-1].ravel(), inst[:-1, :].ravel()])
        b = np.concatenate([inst[:, 1:].ravel(), inst[1:, :].ravel()])
        touch = (a != b) & (a > 0) & (b > 0)
        pairs = np.unique(np.stack([np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])], 1), axis=0)
        for i in ids.tolist():
            if rng.random() < noise.merge:
                nb = pairs[(pairs[:, 0] == i) | (pairs[:, 1] == i)]
                if len(nb):
                    j = int(nb[int(rng.integers(len(nb)))].sum() - i)
                    label[i] = label[j]
    next_id = int(ids.max()) + 1 if len(ids) else 1
    for i, n in zip(ids.tolist(), counts.tolist()):
        sel = inst == i
        if n < noise.min_pixels or rng.random() < noise.drop:
            out[sel] = 0
            continue
        out[sel] = label[i]
        if noise.split > 0 and rng.random() < noise.split and n >= 2 * max(1, noise.min_pixels):
            v, u = np.nonzero(sel)
            theta = rng.uniform(0, np.pi)
            side = (u - u.mean()) * np.cos(theta) + (v - v.mean()) * np.sin(theta) > 0
            out[v[side], u[side]] = next_id
            next_id += 1
    if noise.border:
        out = _shift_borders(out, rng, noise.border)
    used = np.unique(out[out > 0])
    perm = np.zeros(int(out.max()) + 1 if out.size else 1, np.int64)
    perm[used] = rng.permutation(len(used)) + 1
    return perm[out].astype(np.int32).reshape(H, W)
