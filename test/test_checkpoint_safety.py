"""Checkpoint safety (issue 13): saves are atomic (a write interrupted by an error or a SIGKILL leaves the
previous checkpoint loadable and nothing half-written in its place) and non-finite weights are refused at load."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import bifusion_core.models.checkpoint as ckpt
from bifusion_core.models.bifusion import BiFusionModel
from bifusion_core.models.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from bifusion_core.models.presets import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return BiFusionModel(tiny_config())


def partial_writer(fraction=0.5, then=None):
    """A ``torch.save`` stand-in that writes the first ``fraction`` of the real bytes, then calls ``then``."""
    real = torch.save

    def save(obj, f, *a, **k):
        import io

        buf = io.BytesIO()
        real(obj, buf, *a, **k)
        data = buf.getvalue()
        f.write(data[: int(len(data) * fraction)])
        f.flush()
        then()

    return save


def test_a_save_that_fails_midway_leaves_the_old_checkpoint_and_no_partial_file(tmp_path, model, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, meta={"step": 1})

    def disk_full():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", partial_writer(0.5, disk_full))
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, meta={"step": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["meta"]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the partial temporary file is gone
    load_model(path)


def test_save_fsyncs_the_file_and_its_directory_before_and_after_the_rename(tmp_path, model, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None))
        real_fsync(fd)

    def replace(a, b):
        calls.append(("replace", Path(a).name, Path(b).name))
        real_replace(a, b)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    save_checkpoint(tmp_path / "m.pt", model)
    kinds = [c[0] for c in calls]
    assert kinds == ["fsync", "replace", "fsync"], calls
    assert calls[1] == ("replace", "m.pt.tmp", "m.pt")
    if calls[0][1] is not None:  # on Linux: the first fsync is the file's, the last the directory's
        assert calls[0][1] is False and calls[2][1] is True


def test_a_process_killed_mid_write_leaves_the_old_checkpoint_loadable(tmp_path, model):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, meta={"step": 1})
    good = path.read_bytes()
    # a real process, really killed (SIGKILL: no cleanup runs) after writing 40 % of a newer checkpoint
    script = textwrap.dedent(f"""
        import os, signal, sys, io
        import torch
        sys.path.insert(0, {str(REPO)!r})
        import bifusion_core.models.checkpoint as ckpt
        real = torch.save
        def save(obj, f, *a, **k):
            buf = io.BytesIO()
            real(obj, buf, *a, **k)
            data = buf.getvalue()
            f.write(data[: int(len(data) * 0.4)])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
        data = torch.load({str(path)!r}, weights_only=True)
        data["meta"] = {{"step": 2}}
        ckpt.write_atomic({str(path)!r}, data)
        print("not killed")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "not killed" not in proc.stdout
    assert path.read_bytes() == good and read_checkpoint(path)["meta"]["step"] == 1
    load_model(path)
    stale = tmp_path / "last.pt.tmp"  # the half-written file is only ever the temporary one
    assert stale.is_file() and 0 < stale.stat().st_size < len(good)
    with pytest.raises(CheckpointError):
        read_checkpoint(stale)
    save_checkpoint(path, model, meta={"step": 3})  # the next save replaces both
    assert read_checkpoint(path)["meta"]["step"] == 3 and not stale.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, model, value):
    save_checkpoint(tmp_path / "ok.pt", model)
    data = torch.load(tmp_path / "ok.pt", weights_only=True)
    names = [k for k, v in data["model"].items() if v.is_floating_point()]
    first, second = names[3], names[10]
    data["model"][first].view(-1)[0] = value
    data["model"][second].fill_(value)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="NaN or inf") as exc:
        load_model(tmp_path / "bad.pt")
    assert first in str(exc.value) and second in str(exc.value) and "2 weight tensor" in str(exc.value)
    load_model(tmp_path / "ok.pt")


def test_all_nan_checkpoint_is_refused_by_the_processor_and_training_resume(tmp_path, model):
    from bifusion_core.models.checkpoint import load_weights

    save_checkpoint(tmp_path / "ok.pt", model)
    data = torch.load(tmp_path / "ok.pt", weights_only=True)
    for v in data["model"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(data, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        load_weights(BiFusionModel(tiny_config()), data["model"], "nan.pt")
    from bifusion_core.pipeline import FrameProcessor

    with pytest.raises(CheckpointError, match="NaN or inf"):
        FrameProcessor.from_checkpoint(tmp_path / "nan.pt", device="cpu")


def test_shipped_demo_checkpoint_still_loads():
    from bifusion_core.pipeline import FrameProcessor

    proc = FrameProcessor.from_checkpoint()
    assert proc.model.decoder is not None
