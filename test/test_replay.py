"""Rosbag replay without ROS (bifusion_ros.replay) and the demo CLI.

A 4-frame 160x120 synthetic recording (``python -m bifusion_ros.synthetic_bag``) is replayed end to end with a
tiny random checkpoint; an oracle processor that answers with the ground truth checks the scoring (mIoU and AP
of 1); copies of the bag without camera info or without TF check the errors and the skip counting.
"""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from bifusion_core.data.scannet.classes import SCANNET200
from bifusion_core.data.synthetic import OBJECT_CLASSES, CameraConfig, SequenceConfig, SyntheticSequence
from bifusion_ros.convert import cloud_to_numpy, image_to_numpy
from bifusion_ros.interfaces import typestore
from bifusion_core.pipeline.session import SKIP_REASONS
from bifusion_ros.replay import OUTPUT_TOPICS, ReplayConfig, ReplayError, format_metrics, main, replay, run
from bifusion_ros.synthetic_bag import OPTICAL_FRAME, TOPIC_COLOR_INFO, TOPIC_DEPTH_INFO, TOPIC_TF, TOPIC_TF_STATIC
from bifusion_ros.synthetic_bag import main as bag_main

ROOT = Path(__file__).resolve().parents[1]
SEED, FRAMES, W, H = 7, 4, 160, 120
CAM = CameraConfig.scaled(W, H)  # what the generator CLI makes
CLASSES = ["wall", "floor", "ceiling", *OBJECT_CLASSES]
OUTPUT_TYPES = {OUTPUT_TOPICS["cloud"]: "sensor_msgs/msg/PointCloud2",
                OUTPUT_TOPICS["markers"]: "visualization_msgs/msg/MarkerArray",
                OUTPUT_TOPICS["instances"]: "bifusion_ros/msg/InstanceArray",
                OUTPUT_TOPICS["alpha"]: "sensor_msgs/msg/Image"}
MAP_TYPES = {OUTPUT_TOPICS["map_cloud"]: "sensor_msgs/msg/PointCloud2",
             OUTPUT_TOPICS["map_markers"]: "visualization_msgs/msg/MarkerArray"}


def read_bag(path):
    store = typestore()
    with Reader(Path(path)) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        msgs: dict[str, list] = {t: [] for t in types}
        for c, t, raw in reader.messages():
            msgs[c.topic].append((t, store.deserialize_cdr(raw, c.msgtype)))
    return types, msgs


def copy_bag(src, dst, drop=(), shift_ns=0):
    """``src`` without the ``drop`` topics, as a sqlite3 bag (so that both storages are read); ``shift_ns`` moves
    every receive time (not the header stamps), as a bag re-recorded later would."""
    store = typestore()
    with Reader(Path(src)) as reader, Writer(Path(dst), version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store)
                 for c in reader.connections if c.topic not in drop}
        for c, t, raw in reader.messages():
            if c.id in conns:
                writer.write(conns[c.id], t + shift_ns, raw)
    return Path(dst)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec")
    assert bag_main(["--out", str(out / "rec.mcap"), "--frames", str(FRAMES), "--seed", str(SEED), "--width", str(W),
                     "--height", str(H), "--loop", "0.25", "-q"]) == 0
    return out / "rec"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from bifusion_core.models.bifusion import BiFusionModel
    from bifusion_core.models.checkpoint import save_checkpoint
    from bifusion_core.models.presets import tiny_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, BiFusionModel(tiny_config(CLASSES)))
    return path


@pytest.fixture(scope="module")
def processor(checkpoint):
    from bifusion_core.pipeline import FrameProcessor

    return FrameProcessor.from_checkpoint(checkpoint, "cpu")


@pytest.fixture(scope="module")
def replayed(recording, checkpoint, tmp_path_factory):
    """The CLI end to end (model loaded from the checkpoint), MCAP input, every 2nd frame saved."""
    out = tmp_path_factory.mktemp("out")
    rc = main(["--bag", str(recording), "--out", str(out), "--checkpoint", str(checkpoint), "--device", "cpu",
               "--save-every", "2", "--min-region-size", "20", "-q"])
    return rc, out


def test_replay_end_to_end(replayed, checkpoint):
    rc, out = replayed
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint"] == str(checkpoint)
    f = m["frames"]
    assert (f["colour_images"], f["synchronised"], f["processed"], f["skipped"]) == (FRAMES, FRAMES, FRAMES, 0)
    assert f["sync_dropped_colour"] == 0 and set(f["skipped_by_reason"]) == set(SKIP_REASONS)
    assert f["evaluated"] == FRAMES and f["without_gt"] == 0
    for value in (m["semantic"]["miou"], m["semantic"]["accuracy"], m["instance"]["ap"], m["instance"]["ap50"],
                  m["instance"]["ap25"]):
        assert value is not None and np.isfinite(value) and 0.0 <= value <= 1.0
    assert m["instance"]["frames"] == FRAMES and m["classes"] == CLASSES
    lat = m["latency_ms"]
    for stage in ("convert", "tf", "process", "outputs", "save", "eval", "frame_total", "model/total"):
        assert set(lat[stage]) == {"mean", "p50", "p95", "max", "n"} and np.isfinite(lat[stage]["p95"])
    assert lat["process"]["n"] == FRAMES and lat["save"]["n"] == 2
    assert m["seconds_per_processed_frame"] > 0
    # per-frame outputs of frames 0 and 2
    assert m["outputs"]["saved_frames"] == ["frame_00000", "frame_00002"]
    for name in ("frame_00000.ply", "frame_00000_labels.png", "frame_00002_alpha.png", "frame_00002_instances.json"):
        assert (out / "frames" / name).stat().st_size > 0


def test_output_bag_holds_what_the_node_publishes(replayed, recording):
    _, out = replayed
    types, msgs = read_bag(out / "output_bag")
    map_types = MAP_TYPES
    assert types == {**OUTPUT_TYPES, **map_types}  # the map is on by default, as in the node
    _, inputs = read_bag(recording)
    colour_stamps = [t for t, _ in inputs["/camera/camera/color/image_raw"]]
    # the map goes out with the first frame and then once a second of image stamps has passed
    due, last = [], None
    for t in colour_stamps:
        if last is None or t - last >= 10**9:
            due.append(t)
            last = t
    assert {t: len(v) for t, v in msgs.items()} == {**{t: FRAMES for t in OUTPUT_TYPES},
                                                    **{t: len(due) for t in map_types}}
    map_clouds = msgs[OUTPUT_TOPICS["map_cloud"]]
    assert [c.header.stamp.sec * 10**9 + c.header.stamp.nanosec for _, c in map_clouds] == due
    first_map = cloud_to_numpy(map_clouds[0][1])
    assert list(first_map.dtype.names) == ["x", "y", "z", "rgb", "label", "instance"] and len(first_map) > 50
    # the first frame's cloud and the map it built carry the same (persistent) instance ids
    first_cloud = cloud_to_numpy(msgs[OUTPUT_TOPICS["cloud"]][0][1])
    assert set(first_cloud["instance"]) - {0} <= set(first_map["instance"])
    map_ids = {m.id for _, ms in msgs[OUTPUT_TOPICS["map_markers"]] for m in ms.markers if m.ns == "boxes"}
    frame_ids = {i.id for _, ia in msgs[OUTPUT_TOPICS["instances"]] for i in ia.instances}
    assert frame_ids - map_ids == set() or len(due) < FRAMES  # ids seen after the last map message may be new
    seq = SyntheticSequence(SEED, SequenceConfig(n_frames=FRAMES, loop_fraction=0.25, camera=CAM))
    for i, (t, cloud) in enumerate(msgs[OUTPUT_TOPICS["cloud"]]):
        stamp = cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec
        assert stamp == colour_stamps[i] and t >= stamp and cloud.header.frame_id == "map"
        pts = cloud_to_numpy(cloud)
        assert list(pts.dtype.names) == ["x", "y", "z", "rgb", "label", "instance", "score", "alpha"]
        # the points are in map: taken back into the camera with the true pose they lie in front of it, in view
        xyz = np.stack([pts["x"], pts["y"], pts["z"], np.ones(len(pts))], 1).astype(np.float64)
        cam = (np.linalg.inv(seq.poses[i]) @ xyz.T).T
        assert len(pts) > 100 and (cam[:, 2] > 0.05).all()
        u, v = CAM.fx * cam[:, 0] / cam[:, 2] + CAM.cx, CAM.fy * cam[:, 1] / cam[:, 2] + CAM.cy
        assert (u > -1).all() and (u < W + 1).all() and (v > -1).all() and (v < H + 1).all()
    for (_, markers), (_, instances) in zip(msgs[OUTPUT_TOPICS["markers"]], msgs[OUTPUT_TOPICS["instances"]]):
        assert markers.markers[0].action == 3  # DELETEALL first, as the node publishes
        assert instances.header.frame_id == "map"
    _, alpha = msgs[OUTPUT_TOPICS["alpha"]][0]
    assert (alpha.encoding, alpha.width, alpha.height, alpha.header.frame_id) == ("32FC1", W, H, OPTICAL_FRAME)
    a = image_to_numpy(alpha, zero_is_invalid=False)
    assert np.isfinite(a).any() and np.nanmax(a) <= 1.0


class Oracle:
    """A processor answering with the recording's ground truth (every 4th pixel), to check the scoring."""

    def __init__(self, seed=SEED, frames=FRAMES, camera=CAM):
        from bifusion_core.data.scannet.classes import index_lookup

        self.class_names = list(CLASSES)
        self.lut = index_lookup(CLASSES)
        self.seq = SyntheticSequence(seed, SequenceConfig(n_frames=frames, loop_fraction=0.25, camera=camera))

    def process(self, frame):
        import torch

        from bifusion_core.models.postprocess import Instance
        from bifusion_core.pipeline.types import FrameResult

        i = int(np.flatnonzero(np.abs(self.seq.stamps_ns - round(frame.stamp * 1e9)) < 1000)[0])
        r = self.seq.render(i)
        valid = np.zeros(frame.depth.shape, bool)
        valid[::4, ::4] = np.isfinite(frame.depth[::4, ::4])
        v, u = np.nonzero(valid)
        fx, fy, cx, cy = frame.intrinsics
        z = frame.depth[v, u].astype(np.float64)
        pts = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z, np.ones_like(z)], 1) @ frame.pose.T
        ids = r.semantic[v, u].astype(np.int64)
        semantic = np.where(self.lut[ids] >= 0, self.lut[ids], -1)
        inst_gt = r.instance[v, u].astype(np.int64)
        instances, instance = [], np.zeros(len(u), np.int64)
        for k, gid in enumerate(np.unique(inst_gt[(inst_gt > 0) & (semantic >= 0)]), start=1):
            idx = np.flatnonzero(inst_gt == gid)
            cls = int(np.bincount(semantic[idx][semantic[idx] >= 0]).argmax())
            p = pts[idx, :3]
            instances.append(Instance(k, cls, CLASSES[cls], 0.9, torch.from_numpy(idx), torch.from_numpy(p.mean(0)),
                                      torch.from_numpy(p.max(0) - p.min(0))))
            instance[idx] = k
        n = len(u)
        return FrameResult(points=pts[:, :3].astype(np.float32), colours=frame.rgb[v, u],
                           semantic=semantic, instance=instance, score=np.ones(n, np.float32),
                           alpha=np.full(n, 0.5, np.float32), pixels=np.stack([u, v], 1), instances=instances,
                           class_names=list(CLASSES), stamp=frame.stamp, frame_id=frame.frame_id,
                           timings={"total": 0.0}, alpha_image=np.full(frame.depth.shape, 0.5, np.float32), stride=4)


def test_scores_of_a_perfect_prediction_are_one(recording, tmp_path):
    m = replay(ReplayConfig(bag=recording, out=tmp_path, save_every=0, min_region_size=20, progress=False),
               processor=Oracle())
    assert m["frames"]["evaluated"] == FRAMES and m["checkpoint"] == "(a processor given by the caller)"
    assert m["semantic"]["miou"] == pytest.approx(1.0) and m["semantic"]["accuracy"] == pytest.approx(1.0)
    assert (m["instance"]["ap"], m["instance"]["ap50"], m["instance"]["ap25"]) == pytest.approx((1.0, 1.0, 1.0))
    scored = {name for name, d in m["semantic"]["classes"].items() if d["iou"] is not None}
    present = {SCANNET200.id_to_name[i] for i in np.unique(Oracle().seq.render(0).semantic) if i}
    assert present & set(CLASSES) <= scored and len(m["instance"]["classes"]) >= 2
    assert json.loads((tmp_path / "metrics.json").read_text())["semantic"]["miou"] == pytest.approx(1.0)


def test_a_bag_without_camera_info_is_refused_with_its_topics(recording, tmp_path, caplog):
    bag = copy_bag(recording, tmp_path / "no_info", drop=(TOPIC_DEPTH_INFO,))
    assert main(["--bag", str(bag), "--out", str(tmp_path / "out"), "--checkpoint", "unused.pt", "-q"]) == 2
    text = caplog.text
    assert f"no camera info topic {TOPIC_DEPTH_INFO!r}" in text
    assert TOPIC_COLOR_INFO in text and "/camera/camera/color/image_raw" in text and TOPIC_TF in text
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def test_missing_tf_is_skipped_and_counted_or_replaced_by_the_identity(recording, processor, tmp_path, caplog):
    bag = copy_bag(recording, tmp_path / "no_tf", drop=(TOPIC_TF, TOPIC_TF_STATIC))
    cfg = ReplayConfig(bag=bag, out=tmp_path / "skip", save_every=0, progress=False)
    assert run(cfg, processor) == 1  # nothing processed
    m = json.loads((tmp_path / "skip" / "metrics.json").read_text())["frames"]
    assert m["skipped_by_reason"]["missing_tf"] == FRAMES and m["skipped"] == FRAMES and m["processed"] == 0
    assert "neither /tf nor /tf_static" in caplog.text and "'map' <- 'camera_color_optical_frame'" in caplog.text
    types, msgs = read_bag(tmp_path / "skip" / "output_bag")
    assert types == {**OUTPUT_TYPES, **MAP_TYPES} and all(not v for v in msgs.values())

    cfg = ReplayConfig(bag=bag, out=tmp_path / "identity", on_missing_tf="identity", max_frames=2, save_every=0,
                       progress=False)
    assert run(cfg, processor) == 0
    metrics = json.loads((tmp_path / "identity" / "metrics.json").read_text())
    m = metrics["frames"]
    assert (m["processed"], m["identity_pose"], m["skipped"], m["synchronised"]) == (2, 2, 0, 2)
    # frames in the camera frame stay out of the world map, as in the node
    assert metrics["map"]["frames_without_pose"] == 2 and metrics["map"]["instances"] == 0
    _, msgs = read_bag(tmp_path / "identity" / "output_bag")
    clouds = msgs[OUTPUT_TOPICS["cloud"]]
    assert len(clouds) == 2 and clouds[0][1].header.frame_id == OPTICAL_FRAME
    assert (cloud_to_numpy(clouds[0][1])["z"] > 0).all()  # camera frame: z forward


def _cli(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_a_missing_bag_is_exit_code_2_without_traceback(tmp_path):
    proc = _cli("-m", "bifusion_ros.replay", "--bag", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "bag not found" in proc.stderr and str(tmp_path / "nope") in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("module, option", [("bifusion_ros.demo", "--classes-at"),
                                            ("bifusion_ros.replay", "--mask-topic"),
                                            ("bifusion_ros.synthetic_bag", "--masks"),
                                            ("bifusion_core.train.stand_in_clip", "--out"),
                                            ("bifusion_core.train.ablate", "--variants")])
def test_help(module, option):
    proc = _cli("-m", module, "--help")
    assert proc.returncode == 0 and "usage: python -m " + module in proc.stdout
    assert option in proc.stdout


def test_a_bag_from_the_synthetic_bag_cli_is_replayed_and_scored(tmp_path):
    """``python -m bifusion_ros.synthetic_bag`` (a subprocess, as a user runs it) writes a bag that replay reads,
    synchronises, locates with TF and scores against its ground truth, named as the CLI was given it."""
    seed, frames, w, h = 3, 2, 64, 48
    proc = _cli("-m", "bifusion_ros.synthetic_bag", "--out", str(tmp_path / "small.mcap"), "--frames", str(frames),
                "--seed", str(seed), "--width", str(w), "--height", str(h), "--loop", "0.25", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "small")]
    assert (tmp_path / "small" / "metadata.yaml").is_file() and (tmp_path / "small" / "small.mcap").is_file()
    m = replay(ReplayConfig(bag=tmp_path / "small.mcap", out=tmp_path / "out", save_every=0, min_region_size=1,
                            progress=False), processor=Oracle(seed, frames, CameraConfig.scaled(w, h)))
    assert m["bag"] == str(tmp_path / "small")
    f = m["frames"]
    assert (f["colour_images"], f["synchronised"], f["processed"], f["skipped"]) == (frames, frames, frames, 0)
    assert f["evaluated"] == frames and f["without_gt"] == 0 and f["identity_pose"] == 0
    assert m["semantic"]["miou"] == pytest.approx(1.0)
    _, msgs = read_bag(tmp_path / "out" / "output_bag")
    clouds = msgs[OUTPUT_TOPICS["cloud"]]
    assert len(clouds) == frames and all(c.header.frame_id == "map" for _, c in clouds)
    assert msgs[OUTPUT_TOPICS["alpha"]][0][1].width == w


def test_early_stop_waits_for_ground_truth_by_bag_time_not_header_stamps(recording, tmp_path):
    """With --max-frames the replay stops reading once nothing waits; that wait is measured in bag time, so a
    bag recorded long after its header stamps still scores every processed frame."""
    bag = copy_bag(recording, tmp_path / "late", shift_ns=1000 * 10**9)
    m = replay(ReplayConfig(bag=bag, out=tmp_path / "out", save_every=0, min_region_size=20, max_frames=2,
                            progress=False), processor=Oracle())
    assert m["frames"]["processed"] == 2 and m["frames"]["evaluated"] == 2
    assert m["semantic"]["miou"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [{"depth_scale": 0.0}, {"score_threshold": 5.0}, {"sync_queue_size": 1000},
                                 {"on_missing_tf": "wait"}, {"info_topic": 3}, {"storage": "zip"},
                                 {"max_frames": 0}, {"save_every": -1}])
def test_replay_settings_are_checked_as_the_node_checks_its_parameters(bad):
    from bifusion_ros.replay import ReplayError

    with pytest.raises(ReplayError, match=next(iter(bad)).replace("info_topic", "camera_info_topic")):
        ReplayConfig(bag="b", out="o", **bad)


def test_replay_builds_scores_and_saves_the_online_map(recording, tmp_path):
    """--map with a processor answering the ground truth per frame (frame-local ids): merged across the frames,
    each object keeps one map id and the map scores as the ground truth does."""
    m = replay(ReplayConfig(bag=recording, out=tmp_path, device="cpu", min_region_size=20, save_every=0,
                            progress=False, map=True), processor=Oracle())
    mp = m["map"]
    assert mp["source"] == "model instances" and mp["instances"] > 0 and mp["voxels"] > 0
    sc = mp["scene"]
    assert sc["gt_instances"] > 0  # the oracle targets: consistency >= 0.95, fragmentation <= 1.1, AP50 >= 0.9
    assert sc["id_consistency"] >= 0.95 and sc["fragmentation"] <= 1.1
    assert sc["ap50"] >= 0.9
    assert m["latency_ms"]["map"]["n"] == FRAMES
    for name in ("map.ply", "instances.json", "map_state.npz"):
        assert (tmp_path / "map" / name).stat().st_size > 0
    assert "map AP / AP50 / AP25" in format_metrics(m) and "ID consistency" in format_metrics(m)


def test_replay_oracle_instances_feed_the_map_from_ground_truth(recording, processor, tmp_path):
    m = replay(ReplayConfig(bag=recording, out=tmp_path, device="cpu", min_region_size=20, save_every=0,
                            progress=False, oracle_instances=True), processor=processor)
    mp = m["map"]
    assert mp["source"].startswith("ground-truth") and mp["scene"]["ap50"] >= 0.9
    assert mp["scene"]["id_consistency"] >= 0.95 and mp["scene"]["fragmentation"] <= 1.1
    # without ground truth in the bag --oracle-instances is refused before anything runs
    bare = tmp_path / "bare"
    copy_bag(recording, bare, drop=("/bifusion/gt/instance",))
    with pytest.raises(ReplayError, match="oracle-instances"):
        replay(ReplayConfig(bag=bare, out=tmp_path / "o2", device="cpu", progress=False, oracle_instances=True),
               processor=processor)


# -- hardening (issue 13) -----------------------------------------------------------------------------------
def rewrite_bag(src, dst, edit, drop=()):
    """``src`` copied to ``dst`` with ``edit(topic, t_ns, msg, i)`` -> ``(t_ns, msg)`` (``i``: the index of the
    message within its topic) applied to every message of topics other than ``drop``."""
    store = typestore()
    seen: dict[str, int] = {}
    with Reader(Path(src)) as reader, Writer(Path(dst), version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store)
                 for c in reader.connections if c.topic not in drop}
        for c, t, raw in reader.messages():
            if c.id not in conns:
                continue
            i = seen[c.topic] = seen.get(c.topic, -1) + 1
            t2, msg = edit(c.topic, t, store.deserialize_cdr(raw, c.msgtype), i)
            writer.write(conns[c.id], t2, store.serialize_cdr(msg, c.msgtype))
    return Path(dst)


def _restamp(msg, stamp):
    from dataclasses import replace

    return replace(msg, header=replace(msg.header, stamp=stamp))


GT_TOPICS = ("/bifusion/gt/semantic", "/bifusion/gt/instance")


def test_bad_ground_truth_images_are_counted_skips_of_scoring_not_an_abort(recording, tmp_path, caplog):
    """A 3-channel (rgb8) label image used to end the replay with "ground truth has 3420 values, prediction
    1140" and no metrics.json; now each unusable ground-truth image is a logged, counted skip of that frame's
    scoring, and the other single-channel integer encodings are read."""
    from dataclasses import replace

    from bifusion_ros.convert import numpy_to_image, raw_image_array, rosbags_factory

    msgs = rosbags_factory(typestore())

    def edit(topic, t, msg, i):
        if topic == GT_TOPICS[0] and i == 0:  # another size than the colour image
            small = raw_image_array(msg)[::2, ::2]
            msg = numpy_to_image(small, "16UC1", msg.header, msgs)
        elif topic == GT_TOPICS[0] and i == 1:  # rgb8: three values per pixel
            ids = raw_image_array(msg)
            msg = numpy_to_image(np.repeat((ids % 256)[..., None], 3, axis=2), "rgb8", msg.header, msgs)
        elif topic == GT_TOPICS[1] and i == 2:  # truncated data
            msg = replace(msg, data=msg.data[:-2])
        elif topic == GT_TOPICS[0] and i == 3:  # 32SC1 is a valid id image
            ids = raw_image_array(msg).astype("<i4")
            msg = replace(msg, encoding="32SC1", step=msg.width * 4, data=ids.view(np.uint8).ravel())
        return t, msg

    bag = rewrite_bag(recording, tmp_path / "bad_gt", edit)
    cfg = ReplayConfig(bag=bag, out=tmp_path / "out", save_every=0, min_region_size=20, progress=False)
    assert run(cfg, Oracle(), per_class=False) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    f = m["frames"]
    assert f["processed"] == FRAMES and f["evaluated"] == 1 and f["without_gt"] == 0
    assert f["gt_skipped"] == {"bad_encoding": 1, "bad_image": 1, "size_mismatch": 1, "classes_changed": 0}
    assert m["semantic"]["miou"] == pytest.approx(1.0)  # the 32SC1 frame, read right
    assert "encoding 'rgb8'" in caplog.text and "single-channel integer" in caplog.text
    assert "80x60" in caplog.text and "Traceback" not in caplog.text


def test_classes_the_checkpoint_refuses_are_a_one_line_error(recording, checkpoint, processor, tmp_path, caplog):
    names = ",".join(f"class{i}" for i in range(500))
    rc = main(["--bag", str(recording), "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
               "--device", "cpu", "--classes", names, "-q"])
    assert rc == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "500 names" in errors[0]
    assert "Traceback" not in caplog.text and not (tmp_path / "out" / "metrics.json").exists()
    with pytest.raises(ReplayError, match="--classes"):  # a processor given by the caller: the same error
        replay(ReplayConfig(bag=recording, out=tmp_path / "o2", classes=names.split(","), progress=False),
               processor=processor)
    assert processor.class_names == CLASSES


@pytest.mark.parametrize("same_value", [False, True], ids=["conflicting", "identical"])
def test_repeated_tf_stamps_are_counted_and_an_ambiguous_pose_is_not_used(recording, tmp_path, caplog, same_value):
    """Frames 1 and 2 share a header stamp, each with its own /tf. tf2 keeps the first transform of a stamp
    (TF_REPEATED_DATA), so frame 2 used to be published at frame 1's pose, silently. Now the repeat is counted
    and logged; when the two transforms disagree frame 2 gets no pose (skipped as missing_tf); an identical
    repeat is harmless."""
    _, inputs = read_bag(recording)
    tf1 = inputs[TOPIC_TF][1][1]
    stamp1 = inputs["/camera/camera/color/image_raw"][1][1].header.stamp

    def edit(topic, t, msg, i):
        if i == 2 and topic != TOPIC_TF_STATIC:
            if topic == TOPIC_TF and same_value:
                return t, tf1
            if topic == TOPIC_TF:
                return t, replace_transforms(msg, stamp1)
            return t, _restamp(msg, stamp1)
        return t, msg

    def replace_transforms(msg, stamp):
        from dataclasses import replace

        return replace(msg, transforms=[_restamp(x, stamp) for x in msg.transforms])

    bag = rewrite_bag(recording, tmp_path / "repeat", edit, drop=GT_TOPICS)
    m = replay(ReplayConfig(bag=bag, out=tmp_path / "out", save_every=0, progress=False), processor=Oracle())
    f = m["frames"]
    assert f["synchronised"] == FRAMES and f["tf_repeated"] == 1
    assert "TF_REPEATED_DATA" in caplog.text
    _, out = read_bag(tmp_path / "out" / "output_bag")
    stamps = [c.header.stamp for _, c in out[OUTPUT_TOPICS["cloud"]]]
    if same_value:
        assert f["tf_repeated_conflicting"] == 0 and f["processed"] == FRAMES and f["skipped"] == 0
        assert len(stamps) == FRAMES
    else:
        assert f["tf_repeated_conflicting"] == 1
        assert f["processed"] == FRAMES - 1 and f["skipped_by_reason"]["missing_tf"] == 1
        assert "received twice with different values" in f["skip_examples"]["missing_tf"]
        assert stamps.count(stamp1) == 1  # frame 1 only; frame 2 is not published at frame 1's pose


@pytest.mark.parametrize("late_s, processed", [(1.9, FRAMES - 1), (-0.05, FRAMES)], ids=["after", "within"])
def test_tf_arriving_after_tf_timeout_is_not_used(recording, tmp_path, late_s, processed):
    """The last frame's /tf is received ``tf_timeout + late_s`` after its set: the node (tf_timeout on its
    worker) skips the frame when that is after the timeout, and so does replay now (it used the late transform,
    because it looked TF up only when the next message came)."""
    timeout = ReplayConfig(bag="b", out="o").tf_timeout
    delay = int(round((timeout + late_s) * 1e9))

    def edit(topic, t, msg, i):
        return (t + delay if topic == TOPIC_TF and i == FRAMES - 1 else t), msg

    bag = rewrite_bag(recording, tmp_path / "late_tf", edit, drop=GT_TOPICS)
    m = replay(ReplayConfig(bag=bag, out=tmp_path / "out", save_every=0, progress=False), processor=Oracle())
    f = m["frames"]
    assert f["processed"] == processed and f["skipped_by_reason"]["missing_tf"] == FRAMES - processed
    if processed < FRAMES:
        assert "extrapolation into the future" in f["skip_examples"]["missing_tf"]


def test_classes_at_changes_the_label_space_between_frames_as_the_node_does(recording, tmp_path, caplog):
    import torch

    from bifusion_core.models.bifusion import BiFusionModel
    from bifusion_core.models.checkpoint import save_checkpoint
    from bifusion_core.models.presets import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(CLASSES)
    cfg.decoder.open_vocab = True  # free prompts: the text tower scores any list
    save_checkpoint(tmp_path / "open.pt", BiFusionModel(cfg))
    caplog.set_level(logging.INFO, logger="bifusion")
    m = replay(ReplayConfig(bag=recording, out=tmp_path / "o", checkpoint=str(tmp_path / "open.pt"), device="cpu",
                            classes_at=[(2, ["chair", "table"])], save_every=0, progress=False))
    f = m["frames"]
    assert f["processed"] == FRAMES and f["class_changes"] == 1
    assert f["gt_skipped"]["classes_changed"] == FRAMES - 2 and m["instance"]["frames"] == 2
    assert m["classes"] == CLASSES  # the list the figures are over
    assert "classes set to ['chair', 'table']" in caplog.text and "map reset" in caplog.text
    _, msgs = read_bag(tmp_path / "o" / "output_bag")
    labels = [np.unique(cloud_to_numpy(c)["label"]) for _, c in msgs[OUTPUT_TOPICS["cloud"]]]
    assert max(labels[0].max(), labels[1].max()) >= 2  # the 22 classes before the change
    assert all(set(lab.tolist()) <= {0, 1, -1} for lab in labels[2:])  # only the two prompts after it
    names = {i.class_name for _, a in msgs[OUTPUT_TOPICS["instances"]][2:] for i in a.instances}
    assert names <= {"chair", "table"}
    # a fixed-class checkpoint refuses a list of another length before anything is processed
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "fixed.pt", BiFusionModel(tiny_config(CLASSES)))
    with pytest.raises(ReplayError, match="--classes-at 1: .*fixed 22-class"):
        replay(ReplayConfig(bag=recording, out=tmp_path / "o2", checkpoint=str(tmp_path / "fixed.pt"), device="cpu",
                            classes_at=[(1, ["chair"])], progress=False))
    with pytest.raises(ReplayError, match="distinct"):
        ReplayConfig(bag=recording, out=tmp_path / "o3", classes_at=[(1, ["a"]), (1, ["b"])])
    bad = _cli("-m", "bifusion_ros.replay", "--bag", str(recording), "--out", str(tmp_path / "o4"), "--classes-at", "x=chair")
    assert bad.returncode == 2 and "--classes-at 'x=chair'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def mask_recording(tmp_path_factory):
    out = tmp_path_factory.mktemp("mrec")
    assert bag_main(["--out", str(out / "rec.mcap"), "--frames", str(FRAMES), "--seed", str(SEED), "--width", str(W),
                     "--height", str(H), "--loop", "0.25", "--masks", "noisy", "-q"]) == 0
    return out / "rec"


@pytest.mark.parametrize("from_masks", [False, True], ids=["cut", "esam"])
def test_replay_with_a_mask_topic_equals_the_pipeline_on_the_same_frames(mask_recording, processor, tmp_path,
                                                                          from_masks):
    from dataclasses import replace

    from bifusion_core.pipeline import Frame
    from bifusion_ros.convert import id_image_to_numpy
    from bifusion_ros.synthetic_bag import TOPIC_MASKS

    sp_before = processor.model.cfg.superpoints
    processor.model.cfg.superpoints = replace(sp_before, from_masks=from_masks)
    # without TF, in the camera frame (identity pose), so that the pipeline can be given the very same frames
    bag = copy_bag(mask_recording, tmp_path / "no_tf", drop=(TOPIC_TF, TOPIC_TF_STATIC))
    try:
        m = replay(ReplayConfig(bag=bag, out=tmp_path / "o", mask_topic=TOPIC_MASKS, save_every=0, map=False,
                                on_missing_tf="identity", progress=False), processor=processor)
        assert m["frames"]["processed"] == FRAMES
        assert m["frames"]["masks"] == {"received": FRAMES, "used": FRAMES, "frames_without_mask": 0,
                                        "skipped": {"bad_encoding": 0, "bad_image": 0, "size_mismatch": 0}}
        _, out = read_bag(tmp_path / "o" / "output_bag")
        _, inp = read_bag(mask_recording)
        colour = [image_to_numpy(x) for _, x in inp["/camera/camera/color/image_raw"]]
        depth = [image_to_numpy(x) for _, x in inp["/camera/camera/aligned_depth_to_color/image_raw"]]
        masks = [id_image_to_numpy(x) for _, x in inp[TOPIC_MASKS]]
        info = inp["/camera/camera/color/camera_info"][0][1]
        k = np.asarray(info.k).reshape(3, 3)
        clouds = [cloud_to_numpy(c) for _, c in out[OUTPUT_TOPICS["cloud"]]]
        for i in range(FRAMES):  # the same labels as the pipeline on the frame with its mask (camera frame: no pose)
            ref = processor.process(Frame(colour[i], depth[i], (k[0, 0], k[1, 1], k[0, 2], k[1, 2]), np.eye(4),
                                          masks=masks[i]))
            assert len(clouds[i]) == ref.num_points
            assert np.array_equal(clouds[i]["instance"], ref.instance)
            assert np.array_equal(clouds[i]["label"].astype(np.int64), np.where(ref.semantic >= 0, ref.semantic, 2**32 - 1))
            np.testing.assert_array_equal(clouds[i]["score"], ref.score)
    finally:
        processor.model.cfg.superpoints = sp_before


def test_bad_masks_are_counted_skips_of_the_mask_not_of_the_frame(mask_recording, processor, tmp_path, caplog):
    from dataclasses import replace

    from bifusion_ros.convert import numpy_to_image, raw_image_array, rosbags_factory
    from bifusion_ros.synthetic_bag import TOPIC_MASKS

    msgs = rosbags_factory(typestore())

    def edit(topic, t, msg, i):
        if topic == TOPIC_MASKS and i == 0:  # another size than the colour image
            msg = numpy_to_image(raw_image_array(msg)[::2, ::2], "16UC1", msg.header, msgs)
        elif topic == TOPIC_MASKS and i == 1:  # a colour image on the mask topic
            ids = raw_image_array(msg)
            msg = numpy_to_image(np.repeat((ids % 256)[..., None].astype(np.uint8), 3, axis=2), "rgb8", msg.header, msgs)
        elif topic == TOPIC_MASKS and i == 2:  # truncated
            msg = replace(msg, data=msg.data[:-3])
        return t, msg

    bag = rewrite_bag(mask_recording, tmp_path / "bad_masks", edit)
    m = replay(ReplayConfig(bag=bag, out=tmp_path / "o", mask_topic=TOPIC_MASKS, save_every=0, progress=False),
               processor=processor)
    f = m["frames"]
    assert f["processed"] == FRAMES and sum(f["skipped_by_reason"].values()) == 0
    assert f["masks"] == {"received": FRAMES, "used": FRAMES - 3, "frames_without_mask": 3,
                          "skipped": {"bad_encoding": 1, "bad_image": 1, "size_mismatch": 1}}
    assert "2D mask skipped (bad_encoding" in caplog.text and "Traceback" not in caplog.text
    # a mask topic the bag does not have is refused up front, naming the bag's topics
    with pytest.raises(ReplayError, match="/no/masks"):
        replay(ReplayConfig(bag=bag, out=tmp_path / "o2", mask_topic="/no/masks", progress=False), processor=processor)
