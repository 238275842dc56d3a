"""The benchmark CLI runs and writes its JSON (figures themselves are not asserted: they belong to benchmarks)."""
import json

from bifusion_core.bench.__main__ import main


def test_bench_superpoints_and_decoder_write_json(tmp_path):
    out = tmp_path / "sp.json"
    assert main(["superpoints", "--points", "3000", "--repeats", "1", "--device", "cpu", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["stage"] == "superpoints" and data["points"] == 3000 and data["superpoints"] > 1
    assert data["time"]["median_s"] > 0 and "machine" in data


def test_bench_sparse_small_width(tmp_path):
    out = tmp_path / "sparse.json"
    assert main(["sparse", "--backends", "torch", "--width", "0.125", "--voxel-size", "0.1", "--repeats", "1",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"][0]
    assert res["backend"] == "torch" and res["voxels"] > 5000 and res["forward"]["median_s"] > 0


def test_bench_train_times_the_requested_stage(tmp_path):
    out = tmp_path / "train.json"
    small = ["data.scenes=1", "data.frames_per_scene=2", "data.width=96", "data.height=72", "model.frame.stride=2"]
    assert main(["train", "--config", "synthetic_small", "--device", "cpu", "--steps", "1", "--batch-size", "2",
                 "--json", str(out), *small]) == 0
    res = json.loads(out.read_text())
    assert res["train_stage"] == 1 and res["batch_size"] == 2 and res["it_per_s"] > 0 and not res["amp"]
