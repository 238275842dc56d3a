"""The training loop: staged unfreezing, AdamW with warm-up + cosine decay, exact resume, NaN guard,
TensorBoard scalars, tqdm progress, periodic validation, DistributedDataParallel under ``torchrun``.

``init``: a new run may start from another checkpoint's weights (not its training state), e.g. to run only the
merge stage S3 on a trained model (:func:`~bifusion_core.models.checkpoint.init_weights`).

Resuming (``RUN_DIR/last.pt``) needs the config the run was trained with: another one is refused
(:class:`ConfigChanged`, naming the keys that differ; ``log.*`` settings excepted) unless
``allow_config_change``; then the change is
logged and recorded: ``RUN_DIR/config.json`` is the config in use now, ``RUN_DIR/config_history.json`` (also kept
in ``last.pt``) lists every config of the run with the step it took over from."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import from_dict, to_dict
from ..losses.criterion import BiFusionCriterion
from ..models.bifusion import BiFusionModel
from ..models.checkpoint import (CheckpointError, checkpoint_config, init_weights, load_weights, read_checkpoint,
                                 save_checkpoint)
from ..threads import ThreadGovernor, adaptive_threads_enabled
from .config import OptimConfig, TrainConfig
from .data import BatchSampler, training_pool
from .stages import StageConfig, apply_stage, lora_parameters, stage_modules
from .validate import merge_separation, validate

log = logging.getLogger("bifusion.train")


class NonFiniteLoss(RuntimeError):
    pass


class ConfigChanged(ValueError):
    """Resuming a run with a config other than the one it was trained with (without ``allow_config_change``)."""


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def schedule_factor(step: int, stages: StageConfig, optim: OptimConfig) -> float:
    """The LR factor at ``step``: :func:`lr_factor` over S0-S2; the merge stage S3 (a fresh head) restarts it,
    warm-up and cosine over its own ``s3_iters``."""
    enc = stages.encoder_total
    if stages.s3_iters and step >= enc:
        return lr_factor(step - enc, stages.s3_iters, optim.warmup_iters, optim.min_lr_ratio)
    return lr_factor(step, enc, optim.warmup_iters, optim.min_lr_ratio)


def rng_state() -> dict:
    """RNG states as tensors and builtins only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "gauss": float(gauss)},
          "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(st["python"]), None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _dist(device: str) -> tuple[int, int, str]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL for CUDA devices, gloo
    for the CPU. Returns ``(world size, rank, device)`` with ``auto``/``cuda`` resolved to ``cuda:LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local if world > 1 else 0}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return world, rank, device


def build_model(cfg: TrainConfig, init: dict | None = None) -> BiFusionModel:
    """The model of a run. The gate's warm-up is stage S0 (``gate.early_steps = s0_iters``), except in a run
    that starts from the checkpoint ``init`` (a :func:`read_checkpoint` dict) and trains no encoder stage
    (S3 only): there the warm-up length the checkpoint was trained with is kept, so that with its step counter
    (a buffer among the weights) the encoder behaves exactly as the checkpoint's."""
    mc = cfg.model
    if init is not None and cfg.stages.encoder_total == 0:
        gate = checkpoint_config(init).get("gate", {})
        early = gate.get("early_steps") if isinstance(gate, dict) else None
        if isinstance(early, bool) or not isinstance(early, int) or early < 0:
            raise CheckpointError(f"the init checkpoint's config has no valid gate.early_steps ({early!r})")
        mc.gate.early_steps = early
    else:
        mc.gate.early_steps = cfg.stages.s0_iters  # the gate's warm-up is stage S0
    if cfg.stages.s2_iters and not mc.clip_lora_rank:
        mc.clip_lora_rank = cfg.stages.lora_rank
    return BiFusionModel(mc)


_ABSENT = object()


def config_changes(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, value in a, value in b)`` for every value that differs between two nested config dicts
    (keys of either; a key missing on one side has the value :data:`_ABSENT` there)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_changes(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def config_differences(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (keys of either)."""
    return [k for k, _, _ in config_changes(a, b, prefix)]


def describe_changes(changes) -> list[str]:
    """``["model.backbone.voxel_size: 0.05 -> 0.1", ...]`` for :func:`config_changes` output."""

    def show(v):
        text = "(absent)" if v is _ABSENT else repr(v)
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{k}: {show(a)} -> {show(b)}" for k, a, b in changes]


FREE_TO_CHANGE = ("log.",)
"""Config keys a resumed run may change without ``allow_config_change`` (how often it logs, validates and
saves does not change what it trains); the change is still recorded in ``config_history``."""


class Trainer:
    """One training run (see the module doc). ``init``: a checkpoint whose weights the run starts from (its
    training state is not used; the merge head may be missing from it, anything else must fit exactly or
    :class:`CheckpointError` is raised). A resumable ``last.pt`` in ``out_dir`` still wins over ``init``.
    ``allow_config_change``: :meth:`resume` a checkpoint trained with another config (logged and recorded in
    ``config_history``) instead of raising :class:`ConfigChanged`."""

    def __init__(self, cfg: TrainConfig, out_dir, device: str = "auto", max_steps: int | None = None,
                 init=None, allow_config_change: bool = False):
        self.cfg = cfg
        self.allow_config_change = allow_config_change
        self.out = Path(out_dir)
        self.world, self.rank, device = _dist(device)
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        random.seed(cfg.seed + self.rank)
        self.init = Path(init) if init is not None else None
        self.init_meta: dict = {}
        init_data = read_checkpoint(self.init) if self.init is not None else None
        self.model = build_model(cfg, init_data)
        if init_data is not None:
            self._init_from(init_data)
        self.model.to(self.device)
        # every config this run has trained with and the step each took over from (a resume may add one)
        self.config_history: list[dict] = [{"from_step": 0, "config": to_dict(cfg)}]
        self.total = cfg.stages.total
        self.max_steps = self.total if max_steps is None else min(self.total, max_steps)
        # every parameter any stage trains: S1's modules include the whole decoder (its merge head: S3)
        params = [p for m in stage_modules(self.model, 1)[0] for p in m.parameters()] + lora_parameters(self.model)
        self.optim = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        st, o = cfg.stages, cfg.optim
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, lambda s: schedule_factor(s, st, o))
        self.use_amp = o.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.criterion = BiFusionCriterion(cfg.loss)
        self.train_pool = training_pool(cfg.data, "train", self.rank)
        self.sampler = BatchSampler(self.train_pool, cfg.data, cfg.model, self.model.class_names, self.rank)
        self.val_sampler = None
        if cfg.data.val_scenes or cfg.data.val_root:
            self.val_sampler = BatchSampler(training_pool(cfg.data, "val"), cfg.data, cfg.model, self.model.class_names)
        self.step = 0
        self.bad_steps = 0
        self.skipped = 0
        self.ddp = None
        # on the CPU each step runs on the cores other processes leave free (bifusion_core.threads): at a fixed
        # 2 threads a step took 13.6 s instead of 1.2 s while a compiler held the other core (OpenMP barriers).
        # BIFUSION_ADAPTIVE_THREADS=0 keeps torch's count (bifusion_core.threads.adaptive_threads_enabled).
        self.threads = ThreadGovernor() if self.device.type == "cpu" and adaptive_threads_enabled() else None
        if self.world > 1:
            # DDP synchronises the parameters that require grad when it is built: every parameter any stage
            # trains (apply_stage toggles them per step; unused ones are found each step and keep no grad)
            for p in params:
                p.requires_grad_(True)
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _init_from(self, data: dict) -> None:
        path = self.init
        left = init_weights(self.model, data, path)
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        self.init_meta = {"checkpoint": str(path), "step": meta.get("step")}
        from ..models.bifusion import BiFusionConfig

        try:
            theirs = to_dict(from_dict(BiFusionConfig, checkpoint_config(data, path), "checkpoint config"))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: invalid config: {exc}") from exc
        diff = [k for k in config_differences(to_dict(self.model.cfg), theirs)
                if k not in ("decoder.merge_dim", "decoder.merge_hidden", "gate.early_steps")]
        if diff:
            log.warning("the model config differs from the init checkpoint's in %s", ", ".join(diff))
        log.info("weights from %s (step %s)%s", path, meta.get("step"),
                 f"; {len(left)} merge-head tensors start from their init" if left else "")

    def save(self, path: Path, metrics: dict | None = None, with_train_state: bool = True) -> None:
        if self.rank:
            return
        state = None
        if with_train_state:
            state = {"step": self.step, "optimizer": self.optim.state_dict(), "scheduler": self.sched.state_dict(),
                     "scaler": self.scaler.state_dict(), "rng": rng_state(), "skipped": self.skipped,
                     "train_config": to_dict(self.cfg), "config_history": self.config_history}
        meta = {"step": self.step, "metrics": metrics or {}}
        if self.init_meta:
            meta["init"] = self.init_meta
        save_checkpoint(path, self.model, meta=meta, train_state=state)

    def resume(self, path: Path) -> None:
        data = read_checkpoint(path)
        st = data.get("train")
        if not isinstance(st, dict) or "optimizer" not in st:
            raise CheckpointError(f"{path}: no training state to resume from (a model-only checkpoint?)")
        self._check_config(path, st)
        load_weights(self.model, data["model"], path)
        self.optim.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.step = int(st["step"])
        self.skipped = int(st.get("skipped", 0))
        log.info("resumed from %s at step %d", path, self.step)

    def _check_config(self, path: Path, st: dict) -> None:
        """Compare the config ``last.pt`` was trained with to this run's: equal, or refused
        (:class:`ConfigChanged`) unless ``allow_config_change``, where the change joins ``config_history``."""
        new = to_dict(self.cfg)
        saved = st.get("train_config")
        step = int(st.get("step", 0))
        history = st.get("config_history")
        if not (isinstance(history, list) and history and all(isinstance(h, dict) for h in history)):
            history = [{"from_step": 0, "config": saved}]
        if not isinstance(saved, dict):
            log.warning("%s holds no training config: cannot check that it was trained with this one", path)
            self.config_history = history + [{"from_step": step, "config": new, "changed": ["(unknown)"]}]
            return
        try:  # read as this code reads configs: keys added since then take their defaults
            saved = to_dict(from_dict(TrainConfig, saved, "saved config"))
        except ValueError:
            pass
        found = config_changes(saved, new)
        changes = describe_changes(found)
        if not changes:
            self.config_history = history
            return
        if all(k.startswith(FREE_TO_CHANGE) for k, _, _ in found):
            log.info("resuming %s at step %d with new logging settings: %s", path, step, "; ".join(changes))
            self.config_history = history + [{"from_step": step, "config": new, "changed": changes}]
            return
        if not self.allow_config_change:
            raise ConfigChanged(
                f"{path} was trained (to step {step}) with another config: {'; '.join(changes)}. Resume with the "
                "same config, start over with --no-resume or another --out, or pass --allow-config-change to "
                "continue with the new one")
        log.warning("resuming %s at step %d with a changed config (recorded in config_history.json): %s", path,
                    step, "; ".join(changes))
        self.config_history = history + [{"from_step": step, "config": new, "changed": changes}]

    def _all_ranks_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (ranks must skip a step together or DDP deadlocks)."""
        ok = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.world > 1:
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        return bool(ok.item() > 0)

    # -- one step -------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        stage = cfg.stages.stage_at(self.step)
        merge = stage == 3
        self.model.train()
        apply_stage(self.model, stage)
        if not merge:  # S3 leaves the encoder (and the gate's counter) exactly as it is
            self.model.encoder.set_training_step(self.step)
        batch = self.sampler.batch(self.step, pairs=merge)
        inp = batch.inp.to(self.device)
        # batch-norm statistics (and the gate counter) move during the forward: keep them to undo a bad step
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        net = self.ddp or self.model
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            out = net(inp)
            terms = self.criterion(out, inp, batch.targets, progress=self.step / max(1, cfg.stages.encoder_total),
                                   stage=stage)
        loss = terms["total"]
        self.optim.zero_grad(set_to_none=True)
        if not self._all_ranks_finite(loss):
            if self.ddp is not None:  # DDP expects a backward after each forward; these gradients are discarded
                loss.backward()
                self.optim.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.skipped += 1
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["on another rank"]
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    b.copy_(buffers[k])
            log.error("step %d: non-finite loss (%s); the step is skipped, weights and statistics untouched",
                      self.step, ", ".join(bad))
            if self.bad_steps >= cfg.optim.max_bad_steps:
                raise NonFiniteLoss(f"{self.bad_steps} consecutive non-finite losses (last at step {self.step}); "
                                    "stopping: lower the learning rate or check the data")
            with warnings.catch_warnings():  # the schedule advances without an optimizer step, on purpose
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                self.sched.step()
            self.step += 1
            return {k: float("nan") for k in terms}
        self.bad_steps = 0
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optim)
        params = [p for g in self.optim.param_groups for p in g["params"] if p.grad is not None]
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip) if params else torch.tensor(0.0)
        self.scaler.step(self.optim)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        res = {k: float(v.detach()) for k, v in terms.items()}
        res.update(grad_norm=float(gnorm), lr=self.sched.get_last_lr()[0], stage=stage,
                   alpha=float(out.enc.alpha.detach().mean()))
        return res

    # -- the run --------------------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if resume and last.is_file():
            self.resume(last)
        writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"))
            # config.json: the config in use from now on; config_history.json: every config of the run and the
            # step it took over from (more than one entry only after a resume with --allow-config-change)
            (self.out / "config.json").write_text(json.dumps(to_dict(self.cfg), indent=2))
            (self.out / "config_history.json").write_text(json.dumps(self.config_history, indent=2))
        lg = self.cfg.log
        metrics: dict = {}
        history = []
        bar = tqdm(total=self.max_steps, initial=self.step, disable=self.rank != 0, desc="train", unit="it",
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        while self.step < self.max_steps:
            with self.threads.work() if self.threads is not None else nullcontext():
                res = self.train_step()
            bar.update(1)
            if self.rank == 0 and (self.step % lg.log_every == 0 or self.step == self.max_steps):
                for k, v in res.items():
                    if isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(f"train/{k}", v, self.step)
                shown = {k: f"{res[k]:.3f}" for k in ("sem", "merge") if k in res}
                bar.set_postfix(loss=f"{res['total']:.3f}", **shown, stage=res.get("stage", "-"))
                history.append({"step": self.step, **{k: v for k, v in res.items() if isinstance(v, (int, float))}})
            if self.val_sampler is not None and self.rank == 0 and (
                    self.step % lg.val_every == 0 or self.step == self.max_steps):
                metrics = validate(self.model, self.val_sampler, lg.val_frames, self.device)
                for k in ("miou", "ap", "ap50", "ap25"):
                    if metrics[k] == metrics[k]:
                        writer.add_scalar(f"val/{k}", metrics[k], self.step)
                log.info("step %d validation: mIoU %.3f AP %.3f AP50 %.3f AP25 %.3f (%d frames)", self.step,
                         metrics["miou"], metrics["ap"], metrics["ap50"], metrics["ap25"], metrics["frames"])
                if self.cfg.stages.s3_iters:  # the merge stage: how well the embeddings tell objects apart
                    sep = merge_separation(self.model, self.val_sampler, self.cfg.data.pair_gap, lg.val_frames,
                                           self.device)
                    metrics["merge"] = sep
                    for k in ("same_object", "same_class_other_object"):
                        if sep[k] == sep[k]:
                            writer.add_scalar(f"val/merge_cos_{k}", sep[k], self.step)
                    log.info("step %d merge embeddings: cosine %.3f same object vs %.3f other objects of its class "
                             "(%d / %d instance pairs)", self.step, sep["same_object"], sep["same_class_other_object"],
                             sep["n_same_object"], sep["n_same_class_other_object"])
            if self.step % lg.ckpt_every == 0 or self.step == self.max_steps:
                self.save(last, metrics)
        bar.close()
        elapsed = time.perf_counter() - t0
        if self.rank == 0:
            self.save(self.out / "model.pt", metrics, with_train_state=False)
            summary = {"steps": self.step, "seconds": elapsed, "skipped_steps": self.skipped, "val": metrics,
                       "history": history}
            if self.init_meta:
                summary["init"] = self.init_meta
            if len(self.config_history) > 1:
                summary["config_changes"] = [{"from_step": h.get("from_step"), "changed": h.get("changed")}
                                             for h in self.config_history[1:]]
            (self.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
            writer.close()
            return summary
        return {}
