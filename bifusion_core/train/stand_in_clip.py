"""Pre-training of the stand-in CLIP towers: a small open_clip ViT and text transformer taught, on the procedural
rooms, to put image regions and captions of the same class close together.

No pretrained CLIP weights can ship with BiFusion, and a randomly initialised frozen tower gives the 2D branch,
the gate and the text prompts nothing to say. This module trains the tiny towers with an honest CLIP-style
objective on rendered rooms, after which they are frozen as the design freezes CLIP:

* images: whole frames of a :class:`~bifusion_core.data.synthetic.stream.RoomStream` (fresh varied rooms);
  the tower's dense tokens, through its ``ln_post`` and ``proj`` (``Clip2DConfig.use_final_proj``), are the
  region features the BiFusion 2D branch samples;
* texts: one caption per class and step, a random template around a random name of the class
  (:mod:`bifusion_core.data.synthetic.captions`);
* **region-text contrast**: each instance of a frame (and each wall, floor and ceiling) pools the tokens it
  covers (weighted by the share of each patch it covers) into one unit vector; a symmetric InfoNCE between
  the batch's regions and the step's captions (region -> its class's caption among all classes' captions;
  caption -> the regions of its class among the batch's regions), logits scaled by CLIP's learned
  ``logit_scale``;
* **patch-text contrast**: every patch covered to ``patch_purity`` or more by one class is classified among
  the captions the same way, so the dense tokens carry meaning patch by patch, which is how BiFusion uses them.

Held-out evaluation (rooms no training step sees): regions are classified by their similarity to the prompts
``a photo of a {class}.`` (zero-shot accuracy, against the majority-class rate), and each class prompt ranks
all held-out regions (text -> image retrieval, mean average precision, against chance = the share of the
class's regions); the same with each class's synonyms as prompts.

Output: ``OUT/tower.pt`` (the open_clip state dict, for ``Clip2DConfig.weights_path``; loaded with
``weights_only=True``), ``OUT/metrics.json``, ``OUT/tb`` (TensorBoard). A run is short (minutes) and is not
resumable: re-running starts over.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import configclass, spec, to_dict
from ..data.scannet.classes import index_lookup
from ..data.synthetic.captions import CLASSES, SYNONYMS, TEMPLATES, caption
from ..data.synthetic.render import CameraConfig
from ..data.synthetic.sequence import SequenceConfig, SyntheticSequence
from ..data.synthetic.stream import RoomStream, StreamConfig
from ..models.clip2d import Clip2D, Clip2DConfig
from .loop import lr_factor

log = logging.getLogger("bifusion.stand_in_clip")

STAND_IN_MODEL = "bifusion-stand-in-vit"
"""The stand-in towers' open_clip architecture (``clip_configs/bifusion-stand-in-vit.json``): ViT width 96,
3 layers, patch 16 at 320 x 240 (a 20 x 15 token grid without interpolation); text width 32, 2 layers;
embedding 64."""
VAL_SEED_BASE = 200_000
"""Held-out rooms of the evaluation: seeds ``VAL_SEED_BASE + k`` (training uses the stream's seeds)."""


@configclass
class StandInConfig:
    """Attributes:
        model_name: open_clip architecture of the towers.
        width / height: render size (the BiFusion 2D branch sees frames at this size: ``clip.max_side``).
        steps / batch_frames: optimisation steps and frames per step.
        stream: the training rooms (fresh rooms keep entering the pool).
        frames_per_room: views per room.
        lr / weight_decay / warmup: AdamW with linear warm-up and cosine decay to 1 % of ``lr``.
        region_weight / patch_weight: weights of the two contrastive terms.
        patch_purity: a patch takes part in the patch term when one class covers at least this share of it.
        min_region_pixels: smaller regions are left out (per 320 x 240 frame; scaled with the image area).
        val_rooms / val_frames: held-out rooms and views per room for the evaluation.
        seed: seeds the stream, the captions and the initialisation.
    """

    model_name: str = STAND_IN_MODEL
    width: int = spec(320, ge=32)
    height: int = spec(240, ge=32)
    steps: int = spec(1500, ge=1)
    batch_frames: int = spec(8, ge=1)
    stream: StreamConfig = field(default_factory=lambda: StreamConfig(rooms=64, renew=2))
    frames_per_room: int = spec(20, ge=1)
    lr: float = spec(2e-3, gt=0)
    weight_decay: float = spec(0.05, ge=0)
    warmup: int = spec(50, ge=0)
    region_weight: float = spec(1.0, ge=0)
    patch_weight: float = spec(1.0, ge=0)
    patch_purity: float = spec(0.6, gt=0, le=1)
    min_region_pixels: int = spec(100, ge=1)
    val_rooms: int = spec(6, ge=1)
    val_frames: int = spec(4, ge=1)
    seed: int = spec(0, ge=0)

    def __post_init__(self) -> None:
        if self.stream.rooms < 1:
            raise ValueError("stream.rooms must be >= 1: the towers train on a room stream")


@dataclass
class Regions:
    """Pooled region features of a batch: ``feats (M, E)`` unit rows, ``labels (M,)`` class indices into
    :data:`CLASSES`; patch features ``patch_feats (Q, E)`` unit rows with ``patch_labels (Q,)``."""

    feats: torch.Tensor
    labels: torch.Tensor
    patch_feats: torch.Tensor
    patch_labels: torch.Tensor


def build_towers(cfg: StandInConfig) -> Clip2D:
    """The towers to train: a randomly initialised :class:`Clip2D` of ``cfg.model_name`` whose open_clip
    parameters are made trainable (Clip2D freezes them; the 2D branch's own heads are not used here)."""
    torch.manual_seed(cfg.seed)
    c = Clip2D(Clip2DConfig(model_name=cfg.model_name, pretrained=None, use_final_proj=True,
                            max_side=max(cfg.width, cfg.height)))
    for p in c.clip.parameters():
        p.requires_grad_(True)
    return c


def region_features(tokens: torch.Tensor, semantic: np.ndarray, instance: np.ndarray, lut: np.ndarray,
                    patch: int, min_pixels: int, purity: float) -> Regions:
    """Pool ``tokens (B, E, Hp, Wp)`` over the regions of the frames' ground truth.

    ``semantic`` / ``instance``: ``(B, H, W)`` label ids and instance ids (0 = none) of images whose tower
    input was ``(Hp P, Wp P)`` (zero-padded at the bottom / right); ``lut``: label id -> class index (< 0:
    none). A region is one instance id of one frame with at least ``min_pixels`` pixels; its feature is the
    patch tokens weighted by the share of each patch it covers, normalised."""
    B, E, Hp, Wp = tokens.shape
    tok = F.normalize(tokens, dim=1)
    cls_map = torch.from_numpy(lut[np.clip(semantic, 0, len(lut) - 1)])  # (B, H, W)
    H, W = cls_map.shape[1:]
    pad = (0, Wp * patch - W, 0, Hp * patch - H)
    feats, labels, pfeats, plabels = [], [], [], []
    K = len(CLASSES)
    for b in range(B):
        inst = torch.from_numpy(instance[b].astype(np.int64))
        ids, inverse, counts = torch.unique(inst, return_inverse=True, return_counts=True)
        onehot = F.one_hot(inverse, len(ids)).permute(2, 0, 1).float()  # (R, H, W)
        share = F.avg_pool2d(F.pad(onehot, pad), patch)  # (R, Hp, Wp): share of each patch
        cls_b = cls_map[b]
        for r, (i, n) in enumerate(zip(ids.tolist(), counts.tolist())):
            if i == 0 or n < min_pixels:
                continue
            c = int(torch.mode(cls_b[inst == i]).values)
            if c < 0:
                continue
            w = share[r].flatten()
            feats.append(F.normalize(tok[b].flatten(1) @ w, dim=0))
            labels.append(c)
        valid = cls_b >= 0
        conehot = F.one_hot(cls_b.clamp_min(0), K).permute(2, 0, 1).float() * valid
        cshare = F.avg_pool2d(F.pad(conehot, pad), patch)  # (K, Hp, Wp)
        best, arg = cshare.max(0)
        sel = (best >= purity).flatten()
        pfeats.append(tok[b].flatten(1).t()[sel])
        plabels.append(arg.flatten()[sel])
    e = tokens.new_zeros(0, E)
    return Regions(torch.stack(feats) if feats else e, torch.tensor(labels, dtype=torch.int64),
                   torch.cat(pfeats) if pfeats else e, torch.cat(plabels) if plabels else torch.zeros(0, dtype=torch.int64))


def contrastive_loss(reg: Regions, text: torch.Tensor, scale: torch.Tensor, region_weight: float = 1.0,
                     patch_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Region-text and patch-text InfoNCE (module docstring); ``text (K, E)`` unit rows, one per class."""
    parts = {}
    loss = text.new_zeros(())
    if len(reg.labels):
        logits = scale * reg.feats @ text.t()  # (M, K)
        i2t = F.cross_entropy(logits, reg.labels)
        # caption -> regions: multi-positive (all regions of its class), classes present in the batch only
        lt = logits.t().log_softmax(1)  # (K, M)
        pos = F.one_hot(reg.labels, text.shape[0]).t().bool()  # (K, M)
        present = pos.any(1)
        t2i = -(torch.logsumexp(lt.masked_fill(~pos, -math.inf), 1)[present]).mean()
        loss = loss + region_weight * (i2t + t2i) / 2
        parts.update(region_i2t=float(i2t.detach()), region_t2i=float(t2i.detach()))
    if len(reg.patch_labels):
        p = F.cross_entropy(scale * reg.patch_feats @ text.t(), reg.patch_labels)
        loss = loss + patch_weight * p
        parts["patch"] = float(p.detach())
    return loss, parts


def caption_batch(rng: np.random.Generator) -> list[str]:
    """One random caption per class of :data:`CLASSES`, in that order."""
    return [caption(c, rng) for c in CLASSES]


def text_features(towers: Clip2D, prompts: list[str]) -> torch.Tensor:
    """``(K, E)`` unit rows from the (trainable) text tower."""
    tokens = towers.tokenizer(prompts)
    return F.normalize(towers.clip.encode_text(tokens), dim=-1)


def render_frames(stream: RoomStream, step: int, n: int, rng: np.random.Generator):
    view = stream.at(step)
    idx = rng.choice(len(view), size=min(n, len(view)), replace=False)
    return [view.get(int(i)) for i in idx]


def held_out_frames(cfg: StandInConfig):
    cam = CameraConfig.scaled(cfg.width, cfg.height)
    frames = []
    for k in range(cfg.val_rooms):
        seq = SyntheticSequence(VAL_SEED_BASE + cfg.seed + k,
                                SequenceConfig(n_frames=cfg.val_frames * 5, camera=cam))
        frames += [seq.frame(i * 5) for i in range(cfg.val_frames)]
    return frames


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve of a ranking (mean of the precision at each positive)."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((prec * hits).sum() / hits.sum())


@torch.no_grad()
def evaluate(towers: Clip2D, frames, cfg: StandInConfig) -> dict:
    """Zero-shot region classification and text -> region retrieval on held-out frames (module docstring)."""
    lut = index_lookup(CLASSES)
    min_px = _min_pixels(cfg)
    regs = []
    for k in range(0, len(frames), 8):
        chunk = frames[k:k + 8]
        tok, _, _ = towers.dense_tokens(torch.from_numpy(np.stack([f.rgb for f in chunk])).permute(0, 3, 1, 2))
        regs.append(region_features(tok, np.stack([f.semantic for f in chunk]),
                                    np.stack([f.instance for f in chunk]), lut, towers.patch, min_px, cfg.patch_purity))
    feats = torch.cat([r.feats for r in regs]).numpy()
    labels = torch.cat([r.labels for r in regs]).numpy()
    out: dict = {"regions": int(len(labels))}
    canon = text_features(towers, [TEMPLATES[0].format(name=c) for c in CLASSES]).numpy()
    sim = feats @ canon.T
    out["region_accuracy"] = float((sim.argmax(1) == labels).mean())
    counts = np.bincount(labels, minlength=len(CLASSES))
    out["majority_rate"] = float(counts.max() / counts.sum())
    present = [c for c in range(len(CLASSES)) if counts[c]]
    ap = {CLASSES[c]: average_precision(sim[:, c], labels == c) for c in present}
    out["retrieval_map"] = float(np.mean(list(ap.values())))
    out["retrieval_chance"] = float(np.mean([counts[c] / counts.sum() for c in present]))
    out["retrieval_ap"] = ap
    syn_aps = []
    for c in present:
        for word in SYNONYMS[CLASSES[c]][1:]:
            t = text_features(towers, [TEMPLATES[0].format(name=word)]).numpy()[0]
            syn_aps.append(average_precision(feats @ t, labels == c))
    out["synonym_retrieval_map"] = float(np.mean(syn_aps)) if syn_aps else float("nan")
    pf = torch.cat([r.patch_feats for r in regs]).numpy()
    pl = torch.cat([r.patch_labels for r in regs]).numpy()
    out["patch_accuracy"] = float(((pf @ canon.T).argmax(1) == pl).mean()) if len(pl) else float("nan")
    return out


def _min_pixels(cfg: StandInConfig) -> int:
    return max(1, round(cfg.min_region_pixels * cfg.width * cfg.height / (320 * 240)))


def pretrain(cfg: StandInConfig, out: str | Path | None = None, progress: bool = True) -> tuple[Clip2D, dict]:
    """Train the towers; returns ``(towers, metrics)`` and, with ``out``, writes ``tower.pt``, ``metrics.json``
    and TensorBoard scalars there."""
    towers = build_towers(cfg)
    params = [p for p in towers.clip.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, cfg.steps, cfg.warmup, 0.01))
    stream = RoomStream(cfg.stream, cfg.frames_per_room, CameraConfig.scaled(cfg.width, cfg.height), cfg.seed)
    lut = index_lookup(CLASSES)
    min_px = _min_pixels(cfg)
    writer = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="stand-in CLIP", disable=not progress, unit="step")
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, 0xC11])
        frames = render_frames(stream, step, cfg.batch_frames, rng)
        images = torch.from_numpy(np.stack([f.rgb for f in frames])).permute(0, 3, 1, 2)
        with torch.enable_grad():
            tok, _, _ = towers.dense_tokens(images)
            reg = region_features(tok, np.stack([f.semantic for f in frames]), np.stack([f.instance for f in frames]),
                                  lut, towers.patch, min_px, cfg.patch_purity)
            text = text_features(towers, caption_batch(rng))
            scale = towers.clip.logit_scale.exp().clamp(max=100.0)
            loss, parts = contrastive_loss(reg, text, scale, cfg.region_weight, cfg.patch_weight)
            optim.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optim.step()
        sched.step()
        with torch.no_grad():
            towers.clip.logit_scale.clamp_(0, math.log(100.0))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if writer is not None:
                writer.add_scalar("loss/total", float(loss.detach()), step)
                for k, v in parts.items():
                    writer.add_scalar(f"loss/{k}", v, step)
                writer.add_scalar("logit_scale", float(scale), step)
    for p in towers.clip.parameters():
        p.requires_grad_(False)
    metrics = evaluate(towers, held_out_frames(cfg), cfg)
    metrics.update(steps=cfg.steps, seconds=time.perf_counter() - t0,
                   rooms_seen=int(cfg.stream.rooms + cfg.stream.renew * cfg.steps),
                   held_out_rooms=f"seeds {VAL_SEED_BASE + cfg.seed}-{VAL_SEED_BASE + cfg.seed + cfg.val_rooms - 1}",
                   config=to_dict(cfg))
    if out is not None:
        torch.save({k: v.detach().clone() for k, v in towers.clip.state_dict().items()}, out / "tower.pt")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        for k in ("region_accuracy", "retrieval_map", "synonym_retrieval_map", "patch_accuracy"):
            writer.add_scalar(f"held_out/{k}", metrics[k], cfg.steps)
        writer.close()
    return towers, metrics


def main(argv=None) -> int:
    import argparse
    import sys

    from ..config import apply_overrides, from_dict, one_line

    ap = argparse.ArgumentParser(prog="python -m bifusion_core.train.stand_in_clip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (tower.pt, metrics.json, tb/)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("overrides", nargs="*", help="key=value settings of StandInConfig, e.g. steps=300 stream.rooms=32")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        data: dict = {}
        apply_overrides(data, args.overrides)
        cfg = from_dict(StandInConfig, data, "config")
    except (ValueError, TypeError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    _, m = pretrain(cfg, args.out)
    print(f"held-out: region accuracy {m['region_accuracy']:.3f} (majority {m['majority_rate']:.3f}); text->region "
          f"mAP {m['retrieval_map']:.3f} (chance {m['retrieval_chance']:.3f}), synonyms {m['synonym_retrieval_map']:.3f}; "
          f"patch accuracy {m['patch_accuracy']:.3f}; {m['seconds']:.0f} s; towers in {args.out}/tower.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
