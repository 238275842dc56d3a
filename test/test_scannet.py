"""ScanNet readers on tiny fixtures in ScanNet layout, the class tables, and the training crop sampler."""
import json
import logging

import cv2
import numpy as np
import pytest

from bifusion_core.data.frame import Frame
from bifusion_core.geometry import backproject
from bifusion_core.data.scannet import (IGNORE_INDEX, SCANNET20, SCANNET200, SCANNET200_INSTANCE,
                                        FrameReaderConfig, ScanNetFrames, ScenePoints, list_scenes,
                                        load_label_map, load_scene, raw_category_to_id, write_labelled_cloud)
from bifusion_core.data.scannet.layout import read_intrinsics, read_matrix, write_matrix

H, W = 24, 32
K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])


def pose_at(x):
    p = np.eye(4)
    p[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]  # optical z along world y
    p[0, 3] = x
    return p


def make_scene(root, n=4, colour_scale=2, bad_pose=2):
    """A ScanNet-export scene: colour at twice the depth resolution (as ScanNet's 1296x968 vs 640x480)."""
    d = root / "scene0001_00"
    for sub in ("color", "depth", "pose", "intrinsic", "label-filt", "instance-filt"):
        (d / sub).mkdir(parents=True)
    k4 = np.eye(4)
    k4[:3, :3] = K
    write_matrix(d / "intrinsic" / "intrinsic_depth.txt", k4)
    for i in range(n):
        rgb = np.zeros((H * colour_scale, W * colour_scale, 3), np.uint8)
        rgb[..., 0] = 200  # red
        rgb[..., 1] = 10 * i
        cv2.imwrite(str(d / "color" / f"{i}.jpg"), rgb[..., ::-1])
        depth = np.full((H, W), 1000 + 100 * i, np.uint16)
        depth[0, 0] = 0
        cv2.imwrite(str(d / "depth" / f"{i}.png"), depth)
        label = np.full((H * colour_scale, W * colour_scale), 5, np.uint16)
        label[: H * colour_scale // 2] = 2
        cv2.imwrite(str(d / "label-filt" / f"{i}.png"), label)
        cv2.imwrite(str(d / "instance-filt" / f"{i}.png"), (label > 2).astype(np.uint8) * 3)
        pose = pose_at(0.1 * i)
        if i == bad_pose:
            (d / "pose" / f"{i}.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
        else:
            write_matrix(d / "pose" / f"{i}.txt", pose)
    return d


def test_exported_frames(tmp_path, caplog):
    d = make_scene(tmp_path)
    with caplog.at_level(logging.WARNING):
        frames = ScanNetFrames(d)
    assert frames.frame_ids == ["0", "1", "3"] and frames.skipped == ["2"]
    assert "skipped 1 of 4 frames" in caplog.text
    assert frames.size == (H, W) and np.allclose(frames.intrinsics, K)
    f = frames[2]
    assert isinstance(f, Frame) and f.name == "3"
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
    assert abs(int(f.rgb[5, 5, 0]) - 200) < 8 and f.rgb[5, 5, 2] < 10  # RGB order, resized from 2x
    assert f.depth.dtype == np.float32 and f.depth[0, 0] == 0 and f.depth[5, 5] == pytest.approx(1.3)
    assert np.allclose(f.pose, pose_at(0.3))
    assert f.semantic.shape == (H, W) and set(np.unique(f.semantic)) == {2, 5}
    assert set(np.unique(f.instance)) == {0, 3}
    assert len(list(frames)) == 3 and list_scenes(tmp_path) == [d]
    sub = ScanNetFrames(d, FrameReaderConfig(frame_step=2, labels=False))
    assert sub.frame_ids == ["0", "3"] and sub[0].semantic is None


def test_colour_intrinsics_are_rescaled_without_depth_intrinsics(tmp_path):
    d = make_scene(tmp_path)
    (d / "intrinsic" / "intrinsic_depth.txt").unlink()
    kc = np.eye(4)
    kc[:3, :3] = K * [[2], [2], [1]]
    write_matrix(d / "intrinsic" / "intrinsic_color.txt", kc)
    assert np.allclose(ScanNetFrames(d).intrinsics, K)


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ScanNetFrames(tmp_path / "nowhere")
    d = make_scene(tmp_path)
    (d / "color" / "1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"color/1\.jpg"):
        ScanNetFrames(d)
    d2 = make_scene(tmp_path / "b")
    (d2 / "pose" / "3.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"pose/3\.txt"):
        ScanNetFrames(d2)
    d3 = make_scene(tmp_path / "c")
    (d3 / "intrinsic" / "intrinsic_depth.txt").unlink()
    with pytest.raises(FileNotFoundError, match="intrinsic"):
        ScanNetFrames(d3)
    d4 = make_scene(tmp_path / "d")
    (d4 / "depth" / "1.png").unlink()
    frames = ScanNetFrames(d4)
    assert frames.frame_ids == ["0", "3"]  # frames are the depth images that exist
    for f in (d4 / "depth").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no depth frames"):
        ScanNetFrames(d4)


def test_malformed_pose_files_name_the_file(tmp_path):
    d = make_scene(tmp_path)
    (d / "pose" / "1.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match=r"pose/1\.txt.*4x4"):
        ScanNetFrames(d)
    (d / "pose" / "1.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 zero\n0 0 0 1\n")
    with pytest.raises(ValueError, match=r"pose/1\.txt.*malformed"):
        ScanNetFrames(d)
    write_matrix(d / "pose" / "1.txt", np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"pose/1\.txt.*rigid"):
        ScanNetFrames(d)


def test_wrong_image_sizes_name_the_file(tmp_path):
    d = make_scene(tmp_path)
    cv2.imwrite(str(d / "depth" / "1.png"), np.zeros((H + 2, W), np.uint16))
    frames = ScanNetFrames(d)
    with pytest.raises(ValueError, match=r"depth/1\.png.*32x26"):
        frames[1]
    d2 = make_scene(tmp_path / "b")
    cv2.imwrite(str(d2 / "color" / "0.jpg"), np.zeros((H, 3 * W, 3), np.uint8))  # wrong aspect ratio
    with pytest.raises(ValueError, match=r"color/0\.jpg.*does not match"):
        ScanNetFrames(d2)[0]
    d3 = make_scene(tmp_path / "c")
    cv2.imwrite(str(d3 / "depth" / "3.png"), np.zeros((H, W), np.uint8))  # 8-bit depth
    with pytest.raises(ValueError, match=r"depth/3\.png.*16-bit"):
        ScanNetFrames(d3)[-1]
    (d3 / "color" / "1.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot decode colour image .*color/1\.jpg"):
        ScanNetFrames(d3)[1]


def test_matrix_and_intrinsics_files(tmp_path):
    write_matrix(tmp_path / "m.txt", np.arange(16.0).reshape(4, 4))
    assert np.array_equal(read_matrix(tmp_path / "m.txt"), np.arange(16.0).reshape(4, 4))
    with pytest.raises(ValueError, match="m.txt.*3x3"):
        read_matrix(tmp_path / "m.txt", (3, 3))
    (tmp_path / "k.txt").write_text("1 0 0\n0 1 0\n0 0 0\n")
    with pytest.raises(ValueError, match="k.txt.*pinhole"):
        read_intrinsics(tmp_path / "k.txt")


# -- classes -----------------------------------------------------------------------------------------------


def test_scannet200_table():
    assert len(SCANNET200) == 200 and len(set(SCANNET200.ids)) == 200 and len(set(SCANNET200.names)) == 200
    assert SCANNET200.ids[:5] == (1, 2, 3, 4, 5) and SCANNET200.names[:5] == ("wall", "chair", "floor", "table", "door")
    assert SCANNET200.id_of("mattress") == 1191 and SCANNET200.id_of("trash can") == 56
    assert SCANNET200.id_of("bookshelf") == 18 and SCANNET200.id_of("couch") == 6
    assert len(SCANNET200_INSTANCE) == 198 and "wall" not in SCANNET200_INSTANCE.names
    assert len(SCANNET20) == 20 and SCANNET20.id_of("otherfurniture") == 39
    idx = SCANNET200.to_index([1, 3, 12, 0, 1191, 99999, -5])
    assert idx.tolist() == [0, 2, IGNORE_INDEX, IGNORE_INDEX, 199, IGNORE_INDEX, IGNORE_INDEX]
    assert SCANNET200.to_id(idx).tolist() == [1, 3, 0, 0, 1191, 0, 0]
    with pytest.raises(KeyError, match="scannet200"):
        SCANNET200.id_of("spaceship")


def test_raw_category_mapping(tmp_path):
    assert raw_category_to_id("Sofa") == SCANNET200.id_of("couch")
    assert raw_category_to_id("chairs") == 2 and raw_category_to_id("  office   chair ") == 10
    assert raw_category_to_id("kitchen cabinets") == SCANNET200.id_of("kitchen cabinet")
    assert raw_category_to_id("flux capacitor") == 0
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("id\traw_category\tcategory\tcount\tnyu40id\n2\tchair\tchair\t100\t5\n"
                   "22\tcomputer chair\tchair\t10\t5\n")
    assert load_label_map(tsv) == {"chair": 2, "computer chair": 22}
    assert load_label_map(tsv, target="nyu40id") == {"chair": 5, "computer chair": 5}
    with pytest.raises(ValueError, match="labels.tsv.*columns"):
        load_label_map(tsv, target="eigen13id")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        load_label_map(tmp_path / "nope.tsv")


# -- labelled clouds ------------------------------------------------------------------------------------------


def write_scannet_mesh(d, name, n=6):
    """A binary PLY with vertices (x y z red green blue alpha) followed by a face list, as ScanNet's."""
    header = (f"ply\nformat binary_little_endian 1.0\ncomment test\nelement vertex {n}\nproperty float x\n"
              "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property uchar alpha\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    v = np.zeros(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                     ("alpha", "u1")])
    v["x"] = np.arange(n)
    v["red"] = 255
    face = np.array([3], np.uint8).tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    (d / f"{name}_vh_clean_2.ply").write_bytes(header.encode() + v.tobytes() + face)


def test_scannet_scene_with_segments_and_aggregation(tmp_path):
    d = tmp_path / "scene0002_00"
    d.mkdir()
    write_scannet_mesh(d, d.name)
    (d / f"{d.name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [7, 7, 9, 9, 4, 11]}))
    (d / f"{d.name}.aggregation.json").write_text(json.dumps({"segGroups": [
        {"id": 0, "objectId": 0, "segments": [7], "label": "sofa"},
        {"id": 1, "objectId": 1, "segments": [9, 4], "label": "chair"},
        {"id": 2, "objectId": 2, "segments": [11], "label": "flux capacitor"}]}))
    s = load_scene(d)
    assert s.name == "scene0002_00" and s.points.shape == (6, 3) and s.points[:, 0].tolist() == list(range(6))
    assert np.allclose(s.colours[:, 0], 1.0)
    assert s.semantic.tolist() == [6, 6, 2, 2, 2, 0] and s.instance.tolist() == [1, 1, 2, 2, 2, 3]
    assert s.benchmark_ids().tolist() == [6001, 6001, 2002, 2002, 2002, 3]
    tsv = tmp_path / "l.tsv"
    tsv.write_text("id\traw_category\nfake\tx\n")
    with pytest.raises(ValueError, match="l.tsv:2"):
        load_scene(d, label_map=tsv)
    tsv.write_text("id\traw_category\n39\tsofa\n")
    assert load_scene(d, label_map=tsv).semantic.tolist() == [39, 39, 0, 0, 0, 0]
    (d / f"{d.name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [7, 7]}))
    with pytest.raises(ValueError, match="segs.json.*2 segment indices for 6"):
        load_scene(d)


def test_labelled_cloud_round_trip_and_ascii_ply(tmp_path):
    rng = np.random.default_rng(0)
    sp = ScenePoints("room", rng.random((50, 3)).astype(np.float32), rng.random((50, 3)).astype(np.float32),
                     rng.integers(0, 40, 50), rng.integers(0, 5, 50))
    (tmp_path / "room").mkdir()
    write_labelled_cloud(tmp_path / "room" / "room_labelled.ply", sp)
    back = load_scene(tmp_path / "room")
    assert np.array_equal(back.points, sp.points) and np.array_equal(back.semantic, sp.semantic)
    assert np.array_equal(back.instance, sp.instance) and np.abs(back.colours - sp.colours).max() <= 0.5 / 255 + 1e-6
    (tmp_path / "a.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                    "property float z\nproperty int label\nend_header\n0 1 2 5\n3 4 5 6\n")
    a = load_scene(tmp_path / "a.ply")
    assert a.points.tolist() == [[0, 1, 2], [3, 4, 5]] and a.semantic.tolist() == [5, 6]
    (tmp_path / "t.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\nproperty float x\n"
                                     b"property float y\nproperty float z\nend_header\n" + bytes(12))
    with pytest.raises(ValueError, match="t.ply.*truncated"):
        load_scene(tmp_path / "t.ply")
    with pytest.raises(FileNotFoundError, match="scene_x"):
        load_scene(tmp_path / "scene_x")
