"""DistributedDataParallel on the CPU (gloo, two processes): gradients are the mean over ranks, replicas stay
identical, frozen stages stay frozen (in the merge stage S3 all but the merge head), a NaN on one rank skips the
step on all, and ``torchrun`` runs the CLI."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bifusion_core.train.config import load_train_config
from bifusion_core.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.scenes=2", "data.frames_per_scene=12", "data.pair_gap=1", "data.val_scenes=0", "data.width=96",
    "data.height=72",
    "data.batch_size=1", "model.frame.stride=2", "model.frame.max_points=3000", "model.superpoints.seed_size=0.5",
    "optim.warmup_iters=1", "optim.grad_clip=1e9", "log.log_every=1", "log.ckpt_every=1000",
    "log.val_every=1000", "stages.s0_iters=1", "stages.s1_iters=2", "stages.s2_iters=0", "stages.s3_iters=1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_grads(trainer: Trainer, sink: list) -> None:
    """Capture the (synchronised) gradients the optimizer is about to apply."""
    real = trainer.optim.step
    names = {id(p): n for n, p in trainer.model.named_parameters()}

    def step(*a, **k):
        sink.append({names[id(p)]: p.grad.detach().clone() for g in trainer.optim.param_groups
                     for p in g["params"] if p.grad is not None})
        return real(*a, **k)

    trainer.optim.step = step


def _worker(rank: int, world: int, port: int, out: str, poison_rank1_at: int) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_train_config(ROOT / "config/train/synthetic_small.yaml", TINY)
    tr = Trainer(cfg, Path(out) / f"rank{rank}", "cpu")
    grads: list = []
    _record_grads(tr, grads)
    if rank == 1:
        real = tr.criterion.__class__.__call__

        def poisoned(self, *a, **k):
            terms = real(self, *a, **k)
            if tr.step == poison_rank1_at:
                terms["total"] = terms["total"] * float("nan")
            return terms

        tr.criterion.__class__ = type("Poisoned", (tr.criterion.__class__,), {"__call__": poisoned})
    states = [{k: v.detach().clone() for k, v in tr.model.state_dict().items()}]
    results = []
    for _ in range(cfg.stages.total):
        results.append(tr.train_step())
        states.append({k: v.detach().clone() for k, v in tr.model.state_dict().items()})
    torch.save({"states": states, "grads": grads, "results": results}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    # rank 1's loss is NaN at step 1 (the first S1 step): both ranks must skip it together
    mp.start_processes(_worker, args=(2, _free_port(), str(out), 1), nprocs=2, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_replicas_stay_identical_and_frozen_stage_stays_frozen(ddp_run):
    r0, r1 = ddp_run
    # every rank starts from rank 0's weights (DDP broadcasts them) and stays equal to it after each step
    for s0, s1 in zip(r0["states"], r1["states"]):
        for k in s0:
            if "num_batches_tracked" in k or "running_" in k:
                continue  # batch-norm statistics are per rank (DDP broadcasts rank 0's before each forward)
            assert torch.equal(s0[k], s1[k]), k
    before, after_s0 = r0["states"][0], r0["states"][1]
    frozen = ("encoder.backbone.unet.", "encoder.pe_film.", "encoder.gate.", "encoder.clip.clip.")
    changed = [k for k in before if not torch.equal(before[k], after_s0[k]) and "num_batches" not in k]
    assert changed and not [k for k in changed if k.startswith(frozen)], changed
    assert not [k for k in r0["grads"][0] if k.startswith(frozen)]
    # S3 (the last step): only the merge head moves, on every rank alike
    changed = [k for k in r0["states"][3] if not torch.equal(r0["states"][3][k], r0["states"][4][k])]
    assert changed and all(k.startswith("decoder.merge_head.") for k in changed), changed
    assert all(k.startswith("decoder.merge_head.") for k in r0["grads"][2])


def test_nan_on_one_rank_skips_the_step_on_all(ddp_run):
    r0, r1 = ddp_run
    assert len(r0["grads"]) == len(r1["grads"]) == 3  # 4 steps, the poisoned one never reached the optimizer
    assert r0["results"][1]["total"] != r0["results"][1]["total"]  # NaN reported on the healthy rank too
    for k in r0["states"][1]:
        if k != "encoder.gate.step":  # the gate's warm-up counter follows the schedule, which still advances
            assert torch.equal(r0["states"][1][k], r0["states"][2][k]), k
    assert any(not torch.equal(r0["states"][2][k], r0["states"][3][k]) for k in r0["states"][2])


@pytest.mark.parametrize("step, n_grad", [(0, 0), (2, 1), (3, 2)], ids=["S0", "S1", "S3"])
def test_gradients_are_the_mean_of_the_ranks_gradients(ddp_run, tmp_path, step, n_grad):
    """Independent reference: one process computes each rank's batch separately from the same weights."""
    r0, r1 = ddp_run
    torch.set_num_threads(1)
    per_rank = []
    for rank in range(2):
        cfg = load_train_config(ROOT / "config/train/synthetic_small.yaml", TINY)
        tr = Trainer(cfg, tmp_path / f"ref{rank}", "cpu")
        tr.model.load_state_dict(r0["states"][step])
        tr.step = step
        tr.sampler.rank = rank  # the batches rank `rank` drew
        grads: list = []
        _record_grads(tr, grads)
        tr.train_step()
        per_rank.append(grads[0])
    ddp = r0["grads"][n_grad]
    assert ddp.keys() == per_rank[0].keys() == per_rank[1].keys()
    if step == 2:
        assert any(k.startswith("encoder.backbone.unet.") for k in ddp)  # S1: the U-Net is synchronised too
    if step == 3:
        assert ddp and all(k.startswith("decoder.merge_head.") for k in ddp)  # S3: the merge head alone
    for k, g in ddp.items():
        mean = (per_rank[0][k] + per_rank[1][k]) / 2
        assert torch.allclose(g, mean, rtol=1e-4, atol=1e-6 * (1 + float(mean.abs().max()))), k
        assert torch.equal(g, r1["grads"][n_grad][k]), k
    assert any(not torch.allclose(per_rank[0][k], per_rank[1][k]) for k in per_rank[0])  # different batches
    assert all(any(float(g.abs().sum()) > 0 for g in pr.values()) for pr in per_rank)  # S3: pairs share objects


def test_torchrun_runs_the_training_cli(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "bifusion_core.train", "--config", "config/train/synthetic_small.yaml", "--out", str(out), "--device", "cpu", *TINY]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # gloo on the CPU, also on GPU hosts
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    assert proc.stdout.count("done: 4 steps") == 1  # only rank 0 reports
