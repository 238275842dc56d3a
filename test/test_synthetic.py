"""Synthetic RGB-D scenes: ground-truth consistency, determinism, sensor model, trajectory and the CLI."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from bifusion_core.geometry import backproject as _backproject
from bifusion_core.data.scannet import SCANNET200, ScanNetFrames, load_scene
from bifusion_core.data.synthetic import (OBJECT_CLASSES, CameraConfig, SceneConfig, SequenceConfig,
                                          SyntheticSequence, generate_scene)
from bifusion_core.data.synthetic.__main__ import main as synth_main
from bifusion_core.data.synthetic.scene import PLANE
from bifusion_core.data.synthetic.trajectory import R_LINK_OPTICAL

SMALL = CameraConfig(width=320, height=240, fx=307.5, fy=307.5, cx=160.0, cy=120.0)


@pytest.fixture(scope="module")
def seq():
    return SyntheticSequence(3, SequenceConfig(n_frames=12, camera=SMALL))


@pytest.fixture(scope="module")
def frames(seq):
    return [seq.render(i) for i in (0, 4, 8)]


def backproject(depth, K, pose):
    bp = _backproject(depth, K, pose=pose)
    return bp.points.numpy().astype(np.float64), bp.pixels.numpy()


def test_backprojected_depth_lies_on_the_rendered_primitives(seq, frames):
    cam = seq.config.camera
    for r in frames:
        valid = r.depth_mm > 0
        assert 0.5 < valid.mean() < 0.995  # mostly measured, with some dropouts
        z = r.depth_mm.astype(np.float64) / 1000.0
        pts, pix = backproject(z, r.intrinsics, r.pose)
        clean, _ = backproject(np.where(valid, r.depth_clean, 0), r.intrinsics, r.pose)
        prim = r.primitive[pix[:, 1], pix[:, 0]]
        assert (prim >= 0).all()
        z_pix = z[pix[:, 1], pix[:, 0]]
        dist = np.empty(len(pts))
        dist_clean = np.empty(len(pts))
        for p in np.unique(prim):
            m = prim == p
            dist[m] = np.abs(seq.scene.primitives[p].sdf(pts[m]))
            dist_clean[m] = np.abs(seq.scene.primitives[p].sdf(clean[m]))
        assert dist_clean.max() < 2e-3  # the noise-free hit is on the primitive
        sigma = cam.sigma(z_pix)
        # along-ray noise of sigma(z) (x ray length <= 1.3) plus 0.5 mm quantisation
        assert np.mean(dist <= 3 * 1.3 * sigma + 5e-4) > 0.99
        assert (dist <= 6 * 1.3 * sigma + 5e-4).all()
        # the noise is really there, and about sigma
        err = z_pix - r.depth_clean[pix[:, 1], pix[:, 0]]
        assert 0.3 < np.std(err / sigma) < 1.5


def test_every_instance_has_one_class(seq, frames):
    table = seq.scene.instance_labels()
    assert len(table) == len(seq.scene.objects)  # instance ids unique in the scene
    for r in frames:
        assert ((r.instance == 0) == (r.semantic == 0)).all()
        pairs = np.unique(np.stack([r.instance.ravel(), r.semantic.ravel()]), axis=1)
        inst, sem = pairs
        assert len(np.unique(inst)) == len(inst)  # one class per instance id
        for i, s in zip(inst, sem):
            if i:
                assert table[int(i)] == int(s)
        assert set(np.unique(r.semantic)) - {0} <= set(SCANNET200.ids)


def test_same_seed_same_frames_and_order_independence(seq):
    other = SyntheticSequence(3, SequenceConfig(n_frames=12, camera=SMALL))
    a, b = seq.render(5), other.render(5)
    for name in ("rgb", "depth_mm", "semantic", "instance", "primitive", "pose"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(seq.render(5).depth_mm, a.depth_mm)  # rendering other frames in between changes nothing
    diff = SyntheticSequence(4, SequenceConfig(n_frames=12, camera=SMALL)).render(5)
    assert not np.array_equal(a.rgb, diff.rgb)


def test_generator_covers_the_classes():
    seen = set()
    for seed in range(6):
        scene = generate_scene(seed)
        names = {o.name for o in scene.objects}
        assert {"wall", "floor", "ceiling"} <= names
        assert len(names & set(OBJECT_CLASSES)) >= 8
        seen |= names
        ids = [o.instance for o in scene.objects]
        assert len(ids) == len(set(ids)) and min(ids) >= 1
        for o in scene.objects:
            assert o.label == SCANNET200.id_of(o.name)
            assert all(scene.primitives[i].instance == o.instance for i in o.primitives)
    assert len(seen & set(OBJECT_CLASSES)) >= 12
    assert {"table", "chair", "bed", "couch", "cabinet", "bookshelf", "desk", "door", "monitor", "lamp",
            "trash can", "box"} <= seen


def test_scene_is_deterministic_and_without_ceiling():
    a, b = generate_scene(11), generate_scene(11)
    assert [p.center.tolist() for p in a.primitives] == [p.center.tolist() for p in b.primitives]
    open_top = SyntheticSequence(11, SequenceConfig(n_frames=2, camera=SMALL, scene=SceneConfig(ceiling=False)))
    assert "ceiling" not in {o.name for o in open_top.scene.objects}
    assert not (open_top.render(0).semantic == SCANNET200.id_of("ceiling")).any()


def test_trajectory_is_smooth_and_inside_free_space(seq):
    poses = SyntheticSequence(3, SequenceConfig(n_frames=200, camera=SMALL)).poses
    r = poses[:, :3, :3]
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(r), 1)
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 0.15 and steps.max() < 2 * steps.mean() + 1e-6
    angle = np.arccos(np.clip((np.einsum("nij,nij->n", r[1:], r[:-1]) - 1) / 2, -1, 1))
    assert np.degrees(angle).max() < 10
    assert ((poses[:, 2, 3] > 1.1) & (poses[:, 2, 3] < 1.7)).all()  # hand-held RealSense height
    # optical z looks slightly downward; the camera stays in the room and outside every object
    assert (poses[:, 2, 2] < 0).mean() > 0.9
    scene = seq.scene
    cams = poses[:, :3, 3]
    assert ((cams > 0) & (cams < scene.size)).all()
    for p in scene.primitives:
        if p.kind != PLANE:
            assert p.sdf(cams).min() > 0.2
    # the optical frame is the REP 103 rotation of camera_link
    assert np.allclose(R_LINK_OPTICAL @ [0, 0, 1], [1, 0, 0]) and np.allclose(R_LINK_OPTICAL @ [1, 0, 0], [0, -1, 0])


def test_depth_model_and_intrinsics():
    cam = CameraConfig()
    assert (cam.width, cam.height) == (640, 480)
    assert cam.intrinsics[0, 0] == pytest.approx(615) and cam.intrinsics[:2, 2].tolist() == [320, 240]
    assert cam.sigma(np.array([1.0, 3.0])) == pytest.approx([0.0025, 0.0145])
    clean = SyntheticSequence(3, SequenceConfig(n_frames=1, camera=CameraConfig(
        width=320, height=240, fx=307.5, fy=307.5, cx=160, cy=120, noise_a=0, noise_b=0, edge_dropout=0,
        shadow=0, hole_fraction=0))).render(0)
    hit = clean.depth_clean > 0
    near = hit & (clean.depth_clean < 6.0)
    scene = SyntheticSequence(3, SequenceConfig(n_frames=1, camera=SMALL)).scene
    drop = np.array([p.dropout for p in scene.primitives])
    solid = near & (drop[np.maximum(clean.primitive, 0)] == 0)
    assert np.abs(clean.depth_mm[solid] / 1000.0 - clean.depth_clean[solid]).max() <= 0.0005 + 1e-6
    with pytest.raises(ValueError, match="min_depth"):
        CameraConfig(min_depth=5, max_depth=1)
    with pytest.raises(ValueError, match="room"):
        SceneConfig(room_min=(1, 1, 1))
    with pytest.raises(ValueError, match="n_frames"):
        SequenceConfig(n_frames=0)


def test_full_resolution_render_time():
    s = SyntheticSequence(0, SequenceConfig(n_frames=100))
    s.render(0)
    t0 = time.perf_counter()
    for i in (10, 50, 90):
        f = s.render(i)
    per_frame = (time.perf_counter() - t0) / 3
    assert f.rgb.shape == (480, 640, 3) and f.depth_mm.dtype == np.uint16
    assert per_frame < 2.0  # about 0.15 s on one core; 100 frames must stay well under a minute


def test_cli_writes_scannet_layout(tmp_path):
    out = tmp_path / "out"
    assert synth_main(["--out", str(out), "--scenes", "2", "--frames", "3", "--seed", "7", "--width", "160",
                       "--height", "120", "-q"]) == 0
    scenes = json.loads((out / "scenes.json").read_text())
    assert [s["name"] for s in scenes] == ["synth0007_00", "synth0008_00"]
    d = out / "synth0007_00"
    for sub, ext in (("color", "jpg"), ("depth", "png"), ("pose", "txt"), ("label-filt", "png"),
                     ("instance-filt", "png")):
        assert sorted(p.name for p in (d / sub).iterdir()) == [f"{i}.{ext}" for i in range(3)]
    frames = ScanNetFrames(d)
    assert len(frames) == 3 and frames.size == (120, 160)
    assert frames.intrinsics[0, 0] == pytest.approx(615 / 4)
    seq = SyntheticSequence(7, SequenceConfig(n_frames=3, camera=CameraConfig(
        width=160, height=120, fx=615 / 4, fy=615 / 4, cx=80, cy=60)))
    r = seq.render(1)
    f = frames[1]
    assert np.array_equal(f.depth, r.depth_mm / np.float32(1000)) and np.allclose(f.pose, r.pose, atol=1e-8)
    assert np.array_equal(f.semantic, r.semantic) and np.array_equal(f.instance, r.instance)
    assert np.abs(f.rgb.astype(int) - r.rgb).mean() < 6  # JPEG
    meta = json.loads((d / "meta.json").read_text())
    assert meta["seed"] == 7 and len(meta["stamps_ns"]) == 3 and meta["fps"] == 30.0
    assert {i["id"]: i["label"] for i in meta["instances"]} == seq.scene.instance_labels()
    cloud = load_scene(d)
    assert len(cloud.points) > 1000 and set(np.unique(cloud.semantic)) <= set(SCANNET200.ids)
    gt = np.loadtxt(out / "gt_instance" / "synth0007_00.txt", dtype=np.int64)
    assert len(gt) == len(cloud.points) and np.array_equal(gt // 1000, cloud.semantic)
    assert np.array_equal(np.loadtxt(out / "gt_semantic" / "synth0007_00.txt", dtype=np.int64), cloud.semantic)
    # fused cloud points lie on the scene (voxel-downsampled from noise-free views)
    dist = np.min([np.abs(p.sdf(cloud.points[:500])) for p in seq.scene.primitives], axis=0)
    assert dist.max() < 1e-3


def test_cli_bad_arguments(tmp_path, caplog, capsys):
    assert synth_main(["--out", str(tmp_path), "--frames", "0", "-q"]) == 2
    assert "n_frames" in caplog.text
    with pytest.raises(SystemExit) as exc:
        synth_main(["--help"])
    assert exc.value.code == 0
    # bags are written on the ROS side (python -m bifusion_ros.synthetic_bag): the core CLI has no --bag
    with pytest.raises(SystemExit) as exc:
        synth_main(["--out", str(tmp_path), "--bag", str(tmp_path / "rec.mcap"), "-q"])
    assert exc.value.code == 2 and "unrecognized arguments: --bag" in capsys.readouterr().err
    assert not (tmp_path / "rec").exists()


def test_core_imports_no_ros_or_bag_library():
    code = ("import sys, bifusion_core.data.synthetic, bifusion_core.data.synthetic.__main__, "
            "bifusion_core.data.scannet, bifusion_core.eval, bifusion_core.eval.__main__\n"
            "bad = [m for m in ('rclpy', 'rosbags', 'message_filters', 'cv_bridge', 'tf2_ros', 'sensor_msgs_py') "
            "if m in sys.modules]\nassert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
