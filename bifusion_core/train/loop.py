"""The training loop: staged unfreezing, AdamW with warm-up + cosine decay, exact resume, NaN guard,
TensorBoard scalars, tqdm progress, periodic validation, DistributedDataParallel under ``torchrun``."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import to_dict
from ..losses.criterion import BiFusionCriterion
from ..models.bifusion import BiFusionModel
from ..models.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import BatchSampler, FramePool
from .stages import apply_stage, lora_parameters, stage_modules
from .validate import validate

log = logging.getLogger("bifusion.train")


class NonFiniteLoss(RuntimeError):
    pass


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


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


def build_model(cfg: TrainConfig) -> BiFusionModel:
    mc = cfg.model
    mc.gate.early_steps = cfg.stages.s0_iters  # the gate's warm-up is stage S0
    if cfg.stages.s2_iters and not mc.clip_lora_rank:
        mc.clip_lora_rank = cfg.stages.lora_rank
    return BiFusionModel(mc)


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir, device: str = "auto", max_steps: int | None = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.world, self.rank, device = _dist(device)
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        random.seed(cfg.seed + self.rank)
        self.model = build_model(cfg).to(self.device)
        self.total = cfg.stages.total
        self.max_steps = self.total if max_steps is None else min(self.total, max_steps)
        params = [p for m in stage_modules(self.model, 1)[0] for p in m.parameters()] + lora_parameters(self.model)
        self.optim = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        o = cfg.optim
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim, lambda s: lr_factor(s, self.total, o.warmup_iters, o.min_lr_ratio))
        self.use_amp = o.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.criterion = BiFusionCriterion(cfg.loss)
        self.train_pool = FramePool(cfg.data, "train")
        self.sampler = BatchSampler(self.train_pool, cfg.data, cfg.model, self.model.class_names, self.rank)
        self.val_sampler = None
        if cfg.data.val_scenes or cfg.data.val_root:
            self.val_sampler = BatchSampler(FramePool(cfg.data, "val"), cfg.data, cfg.model, self.model.class_names)
        self.step = 0
        self.bad_steps = 0
        self.skipped = 0
        self.ddp = None
        if self.world > 1:
            # DDP synchronises the parameters that require grad when it is built: every parameter any stage
            # trains (apply_stage toggles them per step; unused ones are found each step and keep no grad)
            for p in params:
                p.requires_grad_(True)
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def save(self, path: Path, metrics: dict | None = None, with_train_state: bool = True) -> None:
        if self.rank:
            return
        state = None
        if with_train_state:
            state = {"step": self.step, "optimizer": self.optim.state_dict(), "scheduler": self.sched.state_dict(),
                     "scaler": self.scaler.state_dict(), "rng": rng_state(), "skipped": self.skipped,
                     "train_config": to_dict(self.cfg)}
        save_checkpoint(path, self.model, meta={"step": self.step, "metrics": metrics or {}}, train_state=state)

    def resume(self, path: Path) -> None:
        data = read_checkpoint(path)
        st = data.get("train")
        if not isinstance(st, dict) or "optimizer" not in st:
            raise CheckpointError(f"{path}: no training state to resume from (a model-only checkpoint?)")
        load_weights(self.model, data["model"], path)
        self.optim.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.step = int(st["step"])
        self.skipped = int(st.get("skipped", 0))
        log.info("resumed from %s at step %d", path, self.step)

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
        self.model.train()
        apply_stage(self.model, stage)
        self.model.encoder.set_training_step(self.step)
        batch = self.sampler.batch(self.step)
        inp = batch.inp.to(self.device)
        # batch-norm statistics (and the gate counter) move during the forward: keep them to undo a bad step
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        net = self.ddp or self.model
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            out = net(inp)
            terms = self.criterion(out, inp, batch.targets, progress=self.step / max(1, self.total))
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
            (self.out / "config.json").write_text(json.dumps(to_dict(self.cfg), indent=2))
        lg = self.cfg.log
        metrics: dict = {}
        history = []
        bar = tqdm(total=self.max_steps, initial=self.step, disable=self.rank != 0, desc="train", unit="it",
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        while self.step < self.max_steps:
            res = self.train_step()
            bar.update(1)
            if self.rank == 0 and (self.step % lg.log_every == 0 or self.step == self.max_steps):
                for k, v in res.items():
                    if isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(f"train/{k}", v, self.step)
                bar.set_postfix(loss=f"{res['total']:.3f}", sem=f"{res['sem']:.3f}", stage=res.get("stage", "-"))
                history.append({"step": self.step, **{k: v for k, v in res.items() if isinstance(v, (int, float))}})
            if self.val_sampler is not None and self.rank == 0 and (
                    self.step % lg.val_every == 0 or self.step == self.max_steps):
                metrics = validate(self.model, self.val_sampler, lg.val_frames, self.device)
                for k in ("miou", "ap", "ap50", "ap25"):
                    if metrics[k] == metrics[k]:
                        writer.add_scalar(f"val/{k}", metrics[k], self.step)
                log.info("step %d validation: mIoU %.3f AP %.3f AP50 %.3f AP25 %.3f (%d frames)", self.step,
                         metrics["miou"], metrics["ap"], metrics["ap50"], metrics["ap25"], metrics["frames"])
            if self.step % lg.ckpt_every == 0 or self.step == self.max_steps:
                self.save(last, metrics)
        bar.close()
        elapsed = time.perf_counter() - t0
        if self.rank == 0:
            self.save(self.out / "model.pt", metrics, with_train_state=False)
            summary = {"steps": self.step, "seconds": elapsed, "skipped_steps": self.skipped, "val": metrics,
                       "history": history}
            (self.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
            writer.close()
            return summary
        return {}
