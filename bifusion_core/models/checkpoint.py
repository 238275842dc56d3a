"""Checkpoints: a plain dict of tensors and builtins, loaded with ``torch.load(weights_only=True)``.

Layout: ``{"format": "bifusion-checkpoint", "version": 1, "config": {...}, "model": state_dict,
"class_names": [...], "meta": {...}}`` (training adds ``"train"`` state: optimizer, scheduler, RNG, step).
A checkpoint is untrusted input: anything else is rejected with a clear error.

Checkpoints written before the merge head (DESIGN.md §5b) have no ``decoder.merge_dim`` in their config; they
load as models without one (``merge_dim = 0``, instances carry no embedding). :func:`init_weights` starts a new
training run from a checkpoint's weights, where the merge head may be missing (it starts from its random init).

Writes are atomic (:func:`save_checkpoint`): a process killed while saving leaves the previous file intact.
Weights that are not finite (NaN/inf) are refused at load (:func:`load_weights`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config import from_dict, to_dict
from .bifusion import BiFusionConfig, BiFusionModel

FORMAT = "bifusion-checkpoint"
# 2: cosine-prototype semantic head; position-aware mask embeddings (same shapes as 1, other meaning)
VERSION = 2


class CheckpointError(ValueError):
    """The file is not a usable BiFusion checkpoint (corrupt, foreign, or incompatible)."""


def save_checkpoint(path, model: BiFusionModel, meta: dict | None = None, train_state: dict | None = None) -> None:
    """Write ``model`` (and optional training state) atomically to ``path`` (:func:`write_atomic`)."""
    config = to_dict(model.cfg)
    meta = dict(meta or {})
    if model.cfg.clip.embed_weights:  # the towers travel in this file: its config names no other
        src = model.cfg.clip.weights_path or model.cfg.clip.pretrained
        if src is not None:
            meta.setdefault("clip_weights_from", str(src))
        config["clip"].update(weights_path=None, pretrained=None)
    payload = {"format": FORMAT, "version": VERSION, "config": config,
               "model": model.trainable_state_dict(), "class_names": list(model.class_names), "meta": meta}
    if train_state is not None:
        payload["train"] = train_state
    write_atomic(path, payload)


def write_atomic(path, payload) -> None:
    """``torch.save(payload)`` to ``path`` so that ``path`` always holds either its old content or the complete
    new one: the bytes go to ``PATH.tmp`` in the same directory, are flushed and fsynced, the file is renamed
    over ``path`` (``os.replace``, atomic on POSIX and Windows) and the directory is fsynced so the rename
    survives a power cut. On an error the temporary file is removed; a process killed mid-write leaves at most
    a stale ``PATH.tmp`` (overwritten by the next save, never read as a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened (nor need to be synced)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path) -> dict:
    """Load and validate the checkpoint dict (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not a safe, valid checkpoint
        raise CheckpointError(f"{path}: not a readable BiFusion checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a BiFusion checkpoint (no format tag {FORMAT!r}); "
                              "plain state dicts or other projects' checkpoints are not accepted")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}, this code reads {VERSION}")
    for key in ("config", "model", "class_names"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return data


def load_model(path, device: str | torch.device = "cpu", config_overrides: dict | None = None) -> tuple[BiFusionModel, dict]:
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, checkpoint dict)``."""
    data = read_checkpoint(path)
    cfg_dict = checkpoint_config(data, path)
    if config_overrides:
        cfg_dict = _merge(cfg_dict, config_overrides)
    try:
        cfg = from_dict(BiFusionConfig, cfg_dict, "checkpoint config")
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid config: {exc}") from exc
    model = BiFusionModel(cfg)
    load_weights(model, data["model"], path)
    model.class_names = [str(c) for c in data["class_names"]]
    return model.to(device).eval(), data


def checkpoint_config(data: dict, path="checkpoint") -> dict:
    """The model config dict stored in a checkpoint, as this code reads it: one written before the merge head
    (no ``decoder.merge_dim`` key) gets ``merge_dim = 0``, so it builds the model its weights were trained for."""
    cfg = data["config"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("decoder", {}), dict):
        raise CheckpointError(f"{path}: invalid config: expected a mapping with a decoder section")
    if "merge_dim" not in cfg.get("decoder", {}):
        cfg = _merge(cfg, {"decoder": {"merge_dim": 0}})
    return cfg


MERGE_HEAD_PREFIX = "decoder.merge_head."


def init_weights(model: BiFusionModel, data: dict, path="checkpoint") -> list[str]:
    """Start a training run from a checkpoint's weights (``data`` from :func:`read_checkpoint`; its training
    state is ignored): every weight must fit ``model`` exactly except the merge head's, which may be absent
    (they keep their random init). The class names must agree. Returns the names of the weights left at their
    init; raises :class:`CheckpointError` for anything else that does not fit."""
    names = [str(c) for c in data["class_names"]]
    if names != list(model.class_names):
        raise CheckpointError(f"{path}: the checkpoint's classes {names[:5]}... ({len(names)}) differ from the "
                              f"config's {list(model.class_names)[:5]}... ({len(model.class_names)})")
    sd = data["model"]
    left = [k for k in model.state_dict() if k.startswith(MERGE_HEAD_PREFIX) and isinstance(sd, dict) and k not in sd]
    load_weights(model, sd, path, allow_missing=left)
    return left


def load_weights(model: BiFusionModel, sd: dict, path="checkpoint", allow_missing=()) -> None:
    """Load a checkpoint's weights, which must fit the model exactly (a frozen CLIP tower that comes from its
    own weights file, :attr:`~BiFusionModel.tower_from_file`, may be absent; so may the names in
    ``allow_missing``) and be finite. Raises :class:`CheckpointError` naming what does not fit, or the first
    tensors with NaN/inf values."""
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: the model entry is not a state dict of tensors")
    own = model.state_dict()
    allow = set(allow_missing)
    from_file = model.tower_from_file
    missing = [k for k in own if k not in sd and k not in allow
               and (not from_file or not k.startswith("encoder.clip.clip.") or ".lora_" in k)]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise CheckpointError(f"{path}: weights do not fit the config: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}, wrong shape {bad_shape[:5]}")
    bad = non_finite_tensors(sd)
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or inf values, first {bad[:5]}: "
                              "the checkpoint is unusable (a diverged run?)")
    model.load_state_dict(sd, strict=False)


def non_finite_tensors(sd: dict) -> list[str]:
    """Names of the floating-point (or complex) tensors of ``sd`` with any NaN or inf entry, in order."""
    return [k for k, v in sd.items()
            if (v.is_floating_point() or v.is_complex()) and v.numel() and not bool(torch.isfinite(v).all())]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
