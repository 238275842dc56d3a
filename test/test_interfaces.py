"""The custom messages: parsed from msg/*.msg into a rosbags typestore, CDR round trip, written to a bag."""
import numpy as np
from rosbags.rosbag2 import Reader, Writer

from bifusion_ros.interfaces import message_definitions, typestore


def make_array(store):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Pose = store.types["geometry_msgs/msg/Pose"]
    Point = store.types["geometry_msgs/msg/Point"]
    Quat = store.types["geometry_msgs/msg/Quaternion"]
    Vec = store.types["geometry_msgs/msg/Vector3"]
    Instance = store.types["bifusion_ros/msg/Instance"]
    Array = store.types["bifusion_ros/msg/InstanceArray"]
    inst = [
        Instance(id=i + 1, class_id=3 * i, class_name=name, score=np.float32(0.5 + 0.1 * i),
                 center=Pose(position=Point(x=1.0 * i, y=2.0, z=0.5), orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0)),
                 size=Vec(x=0.4, y=0.5, z=0.9), point_count=100 * (i + 1))
        for i, name in enumerate(["chair", "table"])
    ]
    return Array(header=Header(stamp=Time(sec=12, nanosec=345), frame_id="map"), instances=inst)


def test_definitions_come_from_msg_files():
    defs = message_definitions()
    assert set(defs) == {"bifusion_ros/msg/Instance", "bifusion_ros/msg/InstanceArray"}
    store = typestore()
    fields = [f[0] for f in store.fielddefs["bifusion_ros/msg/Instance"][1]]
    assert fields == ["id", "class_id", "class_name", "score", "center", "size", "point_count"]
    assert [f[0] for f in store.fielddefs["bifusion_ros/msg/InstanceArray"][1]] == ["header", "instances"]


def test_cdr_round_trip():
    store = typestore()
    msg = make_array(store)
    raw = store.serialize_cdr(msg, "bifusion_ros/msg/InstanceArray")
    back = store.deserialize_cdr(raw, "bifusion_ros/msg/InstanceArray")
    assert back.header.frame_id == "map" and back.header.stamp.nanosec == 345
    assert [i.class_name for i in back.instances] == ["chair", "table"]
    assert back.instances[1].point_count == 200 and back.instances[1].center.position.x == 1.0
    assert abs(back.instances[0].score - 0.5) < 1e-6


def test_bag_with_custom_messages(tmp_path):
    store = typestore()
    bag = tmp_path / "bag"
    msg = make_array(store)
    with Writer(bag, version=8) as writer:
        conn = writer.add_connection("/bifusion/instances", "bifusion_ros/msg/InstanceArray", typestore=store)
        for t in range(3):
            writer.write(conn, 1_000 + t, store.serialize_cdr(msg, conn.msgtype))
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/bifusion/instances"]
        assert conns and conns[0].msgtype == "bifusion_ros/msg/InstanceArray"
        got = [(t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]
    assert [t for t, _ in got] == [1000, 1001, 1002]
    assert got[0][1].instances[0].class_name == "chair"
