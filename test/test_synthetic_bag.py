"""A synthetic recording written as a rosbag2 (``python -m bifusion_ros.synthetic_bag``) reads back through
rosbags with RealSense topics, types, stamps, frames, encodings, TF and ground truth, agreeing with the ScanNet
layout the core generator CLI writes for the same scene; bag naming (bifusion_ros.bag_paths)."""
import json

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from bifusion_core.data.scannet import ScanNetFrames
from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
from bifusion_core.data.synthetic.__main__ import main as synth_main
from bifusion_ros.bag_paths import bag_location, resolve_bag_path, scene_bag_path
from bifusion_ros.convert import (camera_info_to_intrinsics, image_to_numpy, make_header, numpy_to_image,
                                  raw_image_array, rosbags_factory, transform_to_matrix)
from bifusion_ros.interfaces import typestore
from bifusion_ros.synthetic_bag import (BODY_FRAME, MAP_FRAME, OPTICAL_FRAME, TOPIC_COLOR, TOPIC_COLOR_INFO,
                                        TOPIC_DEPTH, TOPIC_DEPTH_INFO, TOPIC_GT_INSTANCE, TOPIC_GT_SEMANTIC,
                                        TOPIC_TF, TOPIC_TF_STATIC, SyntheticBagWriter)
from bifusion_ros.synthetic_bag import main as bag_main

CAM = CameraConfig(width=160, height=120, fx=615 / 4, fy=615 / 4, cx=80, cy=60)
TYPES = {TOPIC_COLOR: "sensor_msgs/msg/Image", TOPIC_DEPTH: "sensor_msgs/msg/Image",
         TOPIC_COLOR_INFO: "sensor_msgs/msg/CameraInfo", TOPIC_DEPTH_INFO: "sensor_msgs/msg/CameraInfo",
         TOPIC_TF: "tf2_msgs/msg/TFMessage", TOPIC_TF_STATIC: "tf2_msgs/msg/TFMessage",
         TOPIC_GT_SEMANTIC: "sensor_msgs/msg/Image", TOPIC_GT_INSTANCE: "sensor_msgs/msg/Image"}
SCENE = ["--frames", "4", "--seed", "5", "--width", "160", "--height", "120", "-q"]


def read_bag(path):
    store = typestore()
    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        msgs = {}
        for c, t, raw in reader.messages():
            msgs.setdefault(c.topic, []).append((t, store.deserialize_cdr(raw, c.msgtype)))
    return conns, msgs


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The bag CLI's recording ``rec/`` and the core CLI's ScanNet export of the same scene."""
    out = tmp_path_factory.mktemp("synth")
    assert bag_main(["--out", str(out / "rec.mcap"), *SCENE]) == 0
    assert synth_main(["--out", str(out), "--no-cloud", *SCENE]) == 0
    return out


def test_bag_topics_types_stamps_and_encodings(recording):
    bag = recording / "rec"
    assert (bag / "metadata.yaml").is_file() and (bag / "rec.mcap").is_file()
    conns, msgs = read_bag(bag)
    assert {t: c.msgtype for t, c in conns.items()} == TYPES
    meta = json.loads((recording / "synth0005_00" / "meta.json").read_text())
    stamps = meta["stamps_ns"]
    assert np.all(np.diff(stamps) == pytest.approx(1e9 / 30, abs=1))
    for topic in TYPES:
        expected = 1 if topic == TOPIC_TF_STATIC else 4
        assert len(msgs[topic]) == expected, topic
        for t, msg in msgs[topic]:
            header = msg.transforms[0].header if topic in (TOPIC_TF, TOPIC_TF_STATIC) else msg.header
            assert header.stamp.sec * 10**9 + header.stamp.nanosec == t  # receive time = stamp
    for topic in (TOPIC_COLOR, TOPIC_DEPTH, TOPIC_COLOR_INFO, TOPIC_DEPTH_INFO, TOPIC_GT_SEMANTIC):
        assert [t for t, _ in msgs[topic]] == stamps
        assert all(m.header.frame_id == OPTICAL_FRAME for _, m in msgs[topic])
    assert [m.encoding for _, m in msgs[TOPIC_COLOR]] == ["rgb8"] * 4
    assert [m.encoding for _, m in msgs[TOPIC_DEPTH]] == ["16UC1"] * 4
    assert msgs[TOPIC_GT_INSTANCE][0][1].encoding == "16UC1"
    img = msgs[TOPIC_COLOR][0][1]
    assert (img.height, img.width, img.step, img.is_bigendian) == (120, 160, 480, 0)
    info = msgs[TOPIC_DEPTH_INFO][2][1]
    assert info.distortion_model == "plumb_bob" and np.all(info.d == 0) and len(info.d) == 5
    assert np.allclose(info.k.reshape(3, 3), CAM.intrinsics)
    assert np.allclose(info.p.reshape(3, 4)[:, :3], CAM.intrinsics) and np.all(info.p.reshape(3, 4)[:, 3] == 0)
    assert np.array_equal(info.r.reshape(3, 3), np.eye(3))
    assert (info.height, info.width) == (120, 160)
    assert np.allclose(camera_info_to_intrinsics(info).K, CAM.intrinsics)  # what the node reads back


def test_bag_content_matches_the_render_and_the_scannet_export(recording):
    _, msgs = read_bag(recording / "rec")
    seq = SyntheticSequence(5, SequenceConfig(n_frames=4, camera=CAM))
    frames = ScanNetFrames(recording / "synth0005_00")
    static = msgs[TOPIC_TF_STATIC][0][1].transforms[0]
    assert (static.header.frame_id, static.child_frame_id) == (BODY_FRAME, OPTICAL_FRAME)
    link_optical = transform_to_matrix(static)
    assert np.allclose(link_optical[:3, 3], 0)
    assert np.allclose(link_optical[:3, :3] @ [0, 0, 1], [1, 0, 0])  # optical z = camera_link x (forward)
    assert np.allclose(link_optical[:3, :3] @ [1, 0, 0], [0, -1, 0])  # optical x = -y (right)
    for i in range(4):
        r = seq.render(i)
        assert np.array_equal(image_to_numpy(msgs[TOPIC_COLOR][i][1]), r.rgb)
        depth = raw_image_array(msgs[TOPIC_DEPTH][i][1])
        assert depth.dtype == np.uint16 and np.array_equal(depth, r.depth_mm)
        assert np.array_equal(depth / np.float32(1000), frames[i].depth)
        metres = image_to_numpy(msgs[TOPIC_DEPTH][i][1])  # the node's reading: metres, NaN = no reading
        assert np.array_equal(np.isnan(metres), r.depth_mm == 0)
        assert np.allclose(metres[r.depth_mm > 0], r.depth_mm[r.depth_mm > 0] * np.float32(0.001))
        for topic, gt in ((TOPIC_GT_SEMANTIC, r.semantic), (TOPIC_GT_INSTANCE, r.instance)):
            ids = raw_image_array(msgs[topic][i][1])
            assert ids.dtype == np.uint16 and ids.shape == (120, 160) and np.array_equal(ids, gt)
        assert np.array_equal(raw_image_array(msgs[TOPIC_GT_SEMANTIC][i][1]), frames[i].semantic)
        tf = msgs[TOPIC_TF][i][1].transforms[0]
        assert (tf.header.frame_id, tf.child_frame_id) == (MAP_FRAME, BODY_FRAME)
        pose = transform_to_matrix(tf) @ link_optical
        assert np.allclose(pose, frames[i].pose, atol=1e-6) and np.allclose(pose, r.pose, atol=1e-9)
        # camera_link is REP 103: x forward (optical z), z up-ish for a level camera
        assert transform_to_matrix(tf)[2, 2] > 0.8


def test_tf_static_is_transient_local(recording):
    text = (recording / "rec" / "metadata.yaml").read_text()
    block = text[text.index("name: /tf_static"):]
    assert "durability: 1" in block[:400]  # TRANSIENT_LOCAL


def test_bag_paths(tmp_path):
    assert bag_location(tmp_path / "a.mcap") == (tmp_path / "a", "mcap")
    assert bag_location(tmp_path / "a.db3") == (tmp_path / "a", "sqlite3")
    assert bag_location(tmp_path / "a.MCAP", "mcap") == (tmp_path / "a", "mcap")
    assert bag_location(tmp_path / "a") == (tmp_path / "a", "mcap")
    assert bag_location(tmp_path / "a", "sqlite3") == (tmp_path / "a", "sqlite3")
    with pytest.raises(ValueError, match="contradicts"):
        bag_location(tmp_path / "a.db3", "mcap")
    with pytest.raises(ValueError, match="storage must be"):
        bag_location(tmp_path / "a", "rosbag1")
    assert scene_bag_path(tmp_path / "r.mcap", "synth0001_00", 1) == tmp_path / "r.mcap"
    assert scene_bag_path(tmp_path / "r.mcap", "synth0001_00", 2) == tmp_path / "r_synth0001_00.mcap"
    assert scene_bag_path(tmp_path / "r.db3", "s", 3) == tmp_path / "r_s.db3"
    assert scene_bag_path(tmp_path / "r", "s", 2) == tmp_path / "r_s"
    # reading: the directory, its metadata.yaml, its storage file or the NAME.mcap it was written as
    bag = tmp_path / "b"
    with pytest.raises(FileNotFoundError, match="bag not found"):
        resolve_bag_path(tmp_path / "b.mcap")
    bag.mkdir()
    with pytest.raises(ValueError, match="no metadata.yaml"):
        resolve_bag_path(bag)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (bag / "b.mcap").write_bytes(b"")
    for name in (bag, bag / "metadata.yaml", bag / "b.mcap", tmp_path / "b.mcap", tmp_path / "b.db3"):
        assert resolve_bag_path(name) == bag, name
    (tmp_path / "loose.db3").write_bytes(b"")
    with pytest.raises(ValueError, match="without a metadata.yaml"):
        resolve_bag_path(tmp_path / "loose.db3")


def test_sqlite3_bag_and_writer_checks(tmp_path):
    seq = SyntheticSequence(1, SequenceConfig(n_frames=2, camera=CAM))
    with SyntheticBagWriter(tmp_path / "b.db3") as w:
        for i in range(2):
            r = seq.render(i)
            w.write_frame(int(seq.stamps_ns[i]), r.rgb, r.depth_mm, r.intrinsics, r.pose)
        # a bad frame is refused before anything of it is written (the bag stays consistent)
        r = seq.render(0)
        bad_pose = r.pose.copy()
        bad_pose[:3, :3] *= 2.0
        for args, match in (((r.rgb, r.depth_mm, r.intrinsics, bad_pose), "proper rotation"),
                            ((r.rgb, r.depth_mm, np.zeros((3, 3)), r.pose), "uncalibrated"),
                            ((r.rgb, r.depth_mm.astype(np.float32), r.intrinsics, r.pose), "integer"),
                            ((r.rgb[:-1], r.depth_mm, r.intrinsics, r.pose), "colour image is 160x119"),
                            ((r.rgb, r.depth_mm, r.intrinsics, r.pose, r.semantic.astype(np.int32) + 70000),
                             "0..65535"),
                            ((r.rgb, r.depth_mm, r.intrinsics, r.pose, r.semantic[:, :-1]), "sizes differ")):
            with pytest.raises(ValueError, match=match):
                w.write_frame(int(seq.stamps_ns[1]) + 1, *args)
        assert w.frames == 2
    assert (tmp_path / "b" / "b.db3").is_file()
    conns, msgs = read_bag(tmp_path / "b")
    assert {t: len(v) for t, v in msgs.items()} == {TOPIC_TF_STATIC: 1, TOPIC_TF: 2, TOPIC_COLOR: 2, TOPIC_DEPTH: 2,
                                                   TOPIC_COLOR_INFO: 2, TOPIC_DEPTH_INFO: 2}
    with pytest.raises(FileExistsError, match="already exists"):
        SyntheticBagWriter(tmp_path / "b.db3")


def test_raw_image_array_round_trips_what_numpy_to_image_writes():
    store = typestore()
    F = rosbags_factory(store)
    h = make_header(F, OPTICAL_FRAME, 5)
    for enc, arr in (("rgb8", np.arange(24, dtype=np.uint8).reshape(2, 4, 3)),
                     ("bgr8", np.arange(24, dtype=np.uint8).reshape(2, 4, 3)),
                     ("16UC1", np.arange(8, dtype=np.uint16).reshape(2, 4) * 9000),
                     ("32FC1", np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4))):
        msg = numpy_to_image(arr, enc, h, F)
        back = store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
        raw = raw_image_array(back)
        assert back.encoding == enc and raw.dtype == arr.dtype and raw.flags.writeable
        # as stored: bgr8 keeps the message's channel order (image_to_numpy would give RGB back)
        assert np.array_equal(raw, arr[..., ::-1] if enc == "bgr8" else arr)
    # 32SC1 / mono16 id images, big-endian and padded rows are read as stored
    ids = np.array([[1, -2, 70000], [0, 5, 6]], dtype=np.int32)
    data = np.zeros((2, 16), np.uint8)
    data[:, :12] = np.frombuffer(ids.astype(">i4").tobytes(), np.uint8).reshape(2, 12)
    msg = F("sensor_msgs/msg/Image")(header=h, height=2, width=3, encoding="32SC1", is_bigendian=1, step=16,
                                     data=data.reshape(-1))
    assert np.array_equal(raw_image_array(msg), ids) and raw_image_array(msg).dtype == np.int32
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_to_numpy(msg)  # not a colour or depth image
    mono16 = F("sensor_msgs/msg/Image")(header=h, height=1, width=2, encoding="mono16", is_bigendian=0, step=4,
                                        data=np.array([1, 1, 255, 255], np.uint8))
    assert raw_image_array(mono16).tolist() == [[257, 65535]]
    for bad, match in (({"encoding": "yuv422"}, "unsupported image encoding"), ({"step": 3}, "step 3 < width 2"),
                       ({"data": np.zeros(3, np.uint8)}, "data has 3 bytes")):
        fields = {"header": h, "height": 1, "width": 2, "encoding": "mono16", "is_bigendian": 0, "step": 4,
                  "data": np.zeros(4, np.uint8), **bad}
        with pytest.raises(ValueError, match=match):
            raw_image_array(F("sensor_msgs/msg/Image")(**fields))


def test_cli_scenes_naming_and_refusal(recording, tmp_path, capsys, caplog):
    out = tmp_path / "many.db3"
    assert bag_main(["--out", str(out), "--scenes", "2", "--frames", "1", "--seed", "3", "--width", "32",
                     "--height", "24", "-q"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "many_synth0003_00"), str(tmp_path / "many_synth0004_00")]
    for d in written:
        conns, msgs = read_bag(d)
        assert {t: c.msgtype for t, c in conns.items()} == TYPES and len(msgs[TOPIC_COLOR]) == 1
        assert any(p.suffix == ".db3" for p in (tmp_path / d).iterdir())
        assert msgs[TOPIC_COLOR][0][1].width == 32
    # an existing bag is refused before anything is rendered or written
    assert bag_main(["--out", str(recording / "rec.mcap"), *SCENE]) == 2
    assert "already exists" in caplog.text
    assert bag_main(["--out", str(tmp_path / "none.mcap"), "--frames", "0", "-q"]) == 2
    assert "n_frames" in caplog.text and not (tmp_path / "none").exists()
    assert bag_main(["--out", str(tmp_path / "x.mcap"), "--storage", "sqlite3", "-q"]) == 2
    assert "contradicts" in caplog.text and not (tmp_path / "x").exists()
