"""A synthetic recording written as a rosbag2 reads back through rosbags with RealSense topics, types, stamps,
frames, encodings, TF and ground truth."""
import json

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from bifusion_core.data.scannet import ScanNetFrames
from bifusion_core.data.synthetic import CameraConfig, SequenceConfig, SyntheticSequence
from bifusion_core.data.synthetic.__main__ import main as synth_main
from bifusion_ros.interfaces import typestore
from bifusion_ros.synthetic_bag import (BODY_FRAME, MAP_FRAME, OPTICAL_FRAME, TOPIC_COLOR, TOPIC_COLOR_INFO,
                                        TOPIC_DEPTH, TOPIC_DEPTH_INFO, TOPIC_GT_INSTANCE, TOPIC_GT_SEMANTIC,
                                        TOPIC_TF, TOPIC_TF_STATIC, SyntheticBagWriter, bag_location, image_message,
                                        image_to_numpy, transform_to_matrix)

CAM = CameraConfig(width=160, height=120, fx=615 / 4, fy=615 / 4, cx=80, cy=60)
TYPES = {TOPIC_COLOR: "sensor_msgs/msg/Image", TOPIC_DEPTH: "sensor_msgs/msg/Image",
         TOPIC_COLOR_INFO: "sensor_msgs/msg/CameraInfo", TOPIC_DEPTH_INFO: "sensor_msgs/msg/CameraInfo",
         TOPIC_TF: "tf2_msgs/msg/TFMessage", TOPIC_TF_STATIC: "tf2_msgs/msg/TFMessage",
         TOPIC_GT_SEMANTIC: "sensor_msgs/msg/Image", TOPIC_GT_INSTANCE: "sensor_msgs/msg/Image"}


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
    out = tmp_path_factory.mktemp("synth")
    assert synth_main(["--out", str(out), "--frames", "4", "--seed", "5", "--width", "160", "--height", "120",
                       "--no-cloud", "--bag", str(out / "rec.mcap"), "-q"]) == 0
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
    assert np.allclose(info.p.reshape(3, 4)[:, :3], CAM.intrinsics)
    assert (info.height, info.width) == (120, 160)


def test_bag_content_matches_the_render_and_the_files(recording):
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
        depth = image_to_numpy(msgs[TOPIC_DEPTH][i][1])
        assert depth.dtype == np.uint16 and np.array_equal(depth, r.depth_mm)
        assert np.array_equal(depth / np.float32(1000), frames[i].depth)
        assert np.array_equal(image_to_numpy(msgs[TOPIC_GT_SEMANTIC][i][1]), r.semantic)
        assert np.array_equal(image_to_numpy(msgs[TOPIC_GT_INSTANCE][i][1]), r.instance)
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


def test_sqlite3_bag_and_locations(tmp_path):
    assert bag_location(tmp_path / "a.mcap") == (tmp_path / "a", "mcap")
    assert bag_location(tmp_path / "a.db3") == (tmp_path / "a", "sqlite3")
    assert bag_location(tmp_path / "a") == (tmp_path / "a", "mcap")
    with pytest.raises(ValueError, match="contradicts"):
        bag_location(tmp_path / "a.db3", "mcap")
    seq = SyntheticSequence(1, SequenceConfig(n_frames=2, camera=CAM))
    with SyntheticBagWriter(tmp_path / "b.db3") as w:
        for i in range(2):
            r = seq.render(i)
            w.write_frame(int(seq.stamps_ns[i]), r.rgb, r.depth_mm, r.intrinsics, r.pose)
    assert (tmp_path / "b" / "b.db3").is_file()
    conns, msgs = read_bag(tmp_path / "b")
    assert len(msgs[TOPIC_DEPTH]) == 2 and TOPIC_GT_SEMANTIC not in msgs
    with pytest.raises(FileExistsError, match="already exists"):
        SyntheticBagWriter(tmp_path / "b.db3")
    with pytest.raises(ValueError, match="does not match|sizes differ"):
        with SyntheticBagWriter(tmp_path / "c") as w:
            w.write_frame(0, np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.uint16), np.eye(3), np.eye(4))


def test_image_round_trip_encodings():
    store = typestore()
    for enc, arr in (("rgb8", np.arange(24, dtype=np.uint8).reshape(2, 4, 3)),
                     ("16UC1", np.arange(8, dtype=np.uint16).reshape(2, 4) * 1000),
                     ("32SC1", np.arange(8, dtype=np.int32).reshape(2, 4) - 3)):
        msg = image_message(store, arr, enc, 5)
        back = store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
        assert np.array_equal(image_to_numpy(back), arr) and back.encoding == enc
    with pytest.raises(ValueError, match="encoding"):
        image_message(store, np.zeros((2, 2)), "yuv422", 0)


def test_cli_refuses_to_overwrite_a_bag(recording, caplog):
    assert synth_main(["--out", str(recording), "--frames", "1", "--seed", "5", "--width", "160", "--height", "120",
                       "--no-cloud", "--bag", str(recording / "rec.mcap"), "-q"]) == 2
    assert "already exists" in caplog.text
