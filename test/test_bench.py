"""The benchmark CLI runs and writes its JSON (figures themselves are not asserted: they belong to benchmarks)."""
import json
import os

from bifusion_core.bench.__main__ import main


def test_bench_superpoints_and_decoder_write_json(tmp_path):
    out = tmp_path / "sp.json"
    assert main(["superpoints", "--points", "3000", "--repeats", "1", "--device", "cpu", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["stage"] == "superpoints" and data["points"] == 3000 and data["superpoints"] > 1
    assert data["time"]["median_s"] > 0 and "machine" in data


def test_bench_sparse_interleaves_workers_and_reports_spread_and_load(tmp_path, monkeypatch):
    """Every (backend, threads) worker gets exactly --repeats timed calls per kind, taken in turn; the JSON has
    medians with their spread per thread count and the machine's load (figures themselves are not asserted);
    the ``--busy`` spinners run during the measurement and are gone after it."""
    from bifusion_core.bench import sparse
    from bifusion_core.sparse import available_backends

    spinners = []

    def start_busy(n):
        spinners.extend(real_start(n))
        assert all(p.poll() is None for p in spinners)  # spinning while the workers are timed
        return spinners

    real_start = sparse._start_busy
    monkeypatch.setattr(sparse, "_start_busy", start_busy)
    out = tmp_path / "sparse.json"
    assert main(["sparse", "--width", "0.125", "--voxel-size", "0.1", "--repeats", "2", "--warmup", "0",
                 "--threads", "1", "2", "auto", "--device", "cpu", "--busy", "1", "--precision", "fp32", "bf16",
                 "--json", str(out)]) == 0
    assert len(spinners) == 1 and all(p.poll() is not None for p in spinners)
    r = json.loads(out.read_text())
    backends = available_backends()
    # bf16 (autocast) for the torch backend only: MinkowskiEngine has no bf16 kernels
    assert sorted((x["backend"], str(x["threads"]), x["precision"]) for x in r["results"]) == sorted(
        [(b, n, "fp32") for b in backends for n in ("1", "2", "auto")] + [("torch", n, "bf16") for n in ("1", "2", "auto")])
    for res in r["results"]:
        assert "error" not in res, res
        assert res["voxels"] > 5000
        for kind in ("forward", "forward_backward"):
            t = res[kind]
            assert len(t["runs_s"]) == 2 and t["min_s"] <= t["median_s"] <= t["max_s"] and t["iqr_s"] >= 0
            assert 0 < t["cores"] <= (os.cpu_count() or 1) + 0.5  # CPU seconds per wall second of the call
    assert r["interleaved"] and r["machine_load"]["cpus"] >= 1 and r["machine_load"]["wall_s"] > 0
    assert r["machine_load"]["busy_processes"] == 1 and "GOMP_SPINCOUNT" in r["machine_load"]["openmp_env"]
    if "minkowski" in backends:
        assert set(r["torch_over_minkowski"]) == {"cpu/1t", "cpu/2t", "cpu/auto", "cpu/1t/bf16", "cpu/2t/bf16",
                                                  "cpu/auto/bf16"}
    auto = [x for x in r["results"] if x["threads"] == "auto"]
    assert all(1 <= x["threads_at_end"] <= (os.cpu_count() or 1) and x["thread_changes"] >= 0 for x in auto)


def test_bench_train_times_the_requested_stage(tmp_path):
    out = tmp_path / "train.json"
    small = ["data.scenes=1", "data.frames_per_scene=2", "data.width=96", "data.height=72", "model.frame.stride=2"]
    assert main(["train", "--config", "synthetic_small", "--device", "cpu", "--steps", "1", "--batch-size", "2",
                 "--json", str(out), *small]) == 0
    res = json.loads(out.read_text())
    assert res["train_stage"] == 1 and res["batch_size"] == 2 and res["it_per_s"] > 0 and not res["amp"]


def test_bench_map_keeps_the_memory_full_and_flat_once_capped(tmp_path):
    out = tmp_path / "map.json"
    assert main(["map", "--repeats", "2", "--observations", "4", "--points", "200", "--frames", "200",
                 "--max-voxels", "20000", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["stage"] == "map"
    assert [(r["instances_in_memory"], r["overlap"]) for r in res["merge_latency"]] == [
        (n, o) for n in (10, 50, 100) for o in ("box_iou", "box_iom", "voxel_iou")]
    assert all(r["held_after"] == r["instances_in_memory"] and r["p95_ms"] >= r["median_ms"] > 0
               for r in res["merge_latency"])
    samples = res["memory"]["samples"]
    assert [s["frame"] for s in samples] == [1, 100, 200]
    assert samples[-1]["voxels"] == samples[-2]["voxels"] == 20000  # capped
    # bounded: the per-(voxel, class) evidence may shift a little, the voxel arrays do not grow
    assert abs(samples[-1]["voxel_map_mb"] - samples[-2]["voxel_map_mb"]) <= 0.05 * samples[-2]["voxel_map_mb"]
    # the two objects slide along with the camera and keep merging: their voxel sets stop at the cap
    assert samples[-1]["instance_voxels_mb"] == samples[-2]["instance_voxels_mb"] > samples[0]["instance_voxels_mb"]


def test_bench_soak_accounts_for_every_set_and_fails_on_a_broken_counter(tmp_path, monkeypatch):
    """A short soak through the node's session: every set fed is processed or skipped for its injected reason,
    every posed frame reaches the map, and the JSON says so; a session that loses a skip fails the run."""
    out = tmp_path / "soak.json"
    args = ["soak", "--frames", "35", "--warmup", "4", "--loop", "4", "--width", "64", "--height", "48",
            "--sample-every", "2", "--no-pose-every", "5", "--empty-depth-every", "7", "--max-growth", "1.0",
            "--json", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    # no pose at 4, 9, ..., 34 (7 sets); no depth at 6, 13, 20, 27 (34 is both: skipped for its pose first)
    assert r["skipped"]["missing_tf"] == 7 and r["skipped"]["processor_error"] == 4
    assert r["processed"] == 35 - 7 - 4 and r["injected"] == {"missing_tf": 7, "processor_error": 4}
    assert r["map"]["merged_frames"] == r["processed"] and r["checks"]["ok"]
    assert len(r["frame_time"]["deciles"]) == 10 and r["rss_mb"]["end"] > 0

    from bifusion_core.pipeline.session import FrameSession

    real_skip = FrameSession.skip
    monkeypatch.setattr(FrameSession, "skip", lambda self, reason, detail: None if reason == "missing_tf"
                        else real_skip(self, reason, detail))
    assert main(args) == 1
    r = json.loads(out.read_text())
    assert not r["checks"]["every_set_accounted"] and not r["checks"]["ok"]


def test_bench_gpu_dry_run_on_the_cpu_reports_every_part(tmp_path):
    """``bench gpu`` is meant for a lent GPU; on the CPU (``--device cpu``) the same code path runs with small
    settings: frame latency per config and precision, and a training step; a zero budget skips every part."""
    import pytest

    from bifusion_core.pipeline.processor import cpu_has_native_bf16

    out = tmp_path / "gpu.json"
    assert main(["gpu", "--device", "cpu", "--configs", "synthetic_small", "--frames", "2", "--warmup", "1",
                 "--width", "160", "--height", "120", "--sparse-repeats", "0", "--train-config", "synthetic_small",
                 "--train-batch", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [(f["config"], f["precision"]) for f in r["frames"]] == [("synthetic_small", "fp32"), ("synthetic_small", "fp16")]
    fp32, half = r["frames"]
    assert not fp32["half_active"] and fp32["autocast"] is None
    # on the CPU "fp16" means bf16 autocast where the CPU has native bf16, float32 elsewhere
    assert half["autocast"] == ("bfloat16" if cpu_has_native_bf16() else None) and half["half_active"] == bool(half["autocast"])
    assert all(f["fps"] > 0 and "backbone" in f["stages_p50_ms"] for f in r["frames"])
    assert r["train"]["batch_size"] == 1 and r["train"]["it_per_s"] > 0 and not r["errors"]
    assert main(["gpu", "--device", "cpu", "--budget-s", "0", "--configs", "synthetic_small", "--frames", "1",
                 "--width", "64", "--height", "48", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["frames"] == [] and r["train"] is None and len(r["skipped"]) == 4
    if not __import__("torch").cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA"):
            main(["gpu"])
