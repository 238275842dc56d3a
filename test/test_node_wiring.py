"""The bifusion node's ROS wiring, driven through the ROS test double (test/ros_double.py) where ROS 2 is absent.

The double records parameters, subscriptions, publishers and timers; its message classes are the rosbags ones,
so every published message is checked by CDR serialisation. A fake processor stands in for the model.
"""
import ast
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ros_double
from bifusion_ros.convert import (
    cloud_to_numpy,
    image_to_numpy,
    make_header,
    matrix_to_transform,
    numpy_to_image,
    rclpy_factory,
)
from bifusion_core.pipeline.session import SKIP_REASONS
from bifusion_ros.params import PARAMS, UNKNOWN_LABEL, resolve_topic

ROOT = Path(__file__).resolve().parents[1]
H, W = 6, 8
FX, FY, CX, CY = 10.0, 11.0, 3.5, 2.5
OPTICAL = "camera_color_optical_frame"
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rigid(R, t):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


YAW90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
T_MAP_LINK = rigid(YAW90, [1.0, 2.0, 0.5])
T_LINK_OPTICAL = rigid(R_LINK_OPTICAL, [0.0, 0.0, 0.0])


# ---------------------------------------------------------------------------------------------------------------
# a fake processor with the FrameProcessor protocol
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FakeInstance:
    id: int
    class_id: int
    class_name: str
    score: float
    center: np.ndarray
    size: np.ndarray
    point_indices: np.ndarray

    @property
    def point_count(self):
        return int(len(self.point_indices))


class FakeProcessor:
    """Back-projects the valid depth pixels into the world and splits them into two instances: class 0 scoring
    0.9 (id 1) and class 1 scoring 0.1 (id 2); the last point has semantic -1."""

    def __init__(self, class_names=("chair", "table"), delay=0.0, fail_on=None):
        self.class_names = list(class_names)
        self.delay = delay
        self.fail_on = fail_on
        self.frames = []
        self.set_calls = []

    def set_classes(self, names):
        if "forbidden" in names:
            raise ValueError("cannot embed 'forbidden'")
        self.set_calls.append(list(names))
        self.class_names = list(names)

    def process(self, frame):
        from bifusion_core.pipeline.types import FrameResult

        self.frames.append(frame)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on(frame):
            raise RuntimeError("CUDA out of memory (fake)")
        fx, fy, cx, cy = frame.intrinsics
        v, u = np.nonzero(np.isfinite(frame.depth))
        z = frame.depth[v, u].astype(np.float64)
        cam = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z, np.ones_like(z)], axis=1)
        pts = (cam @ frame.pose.T)[:, :3].astype(np.float32)
        n = len(pts)
        half = n // 2
        semantic = np.where(np.arange(n) < half, 0, 1).astype(np.int64)
        semantic[-1] = -1
        instance = np.where(np.arange(n) < half, 1, 2).astype(np.int64)
        instances = []
        for iid, cls, score, idx in ((1, 0, 0.9, np.arange(half)), (2, 1, 0.1, np.arange(half, n))):
            p = pts[idx]
            instances.append(FakeInstance(iid, cls, self.class_names[cls], score, (p.min(0) + p.max(0)) / 2,
                                          p.max(0) - p.min(0), idx))
        alpha_image = np.full(frame.depth.shape, np.nan, np.float32)
        alpha_image[v, u] = 0.75
        return FrameResult(
            points=pts, colours=frame.rgb[v, u], semantic=semantic, instance=instance,
            score=np.where(instance == 1, 0.9, 0.1).astype(np.float32), alpha=np.full(n, 0.75, np.float32),
            pixels=np.stack([u, v], 1), instances=instances, class_names=list(self.class_names),
            stamp=frame.stamp, frame_id=frame.frame_id, timings={"clip": 0.001, "decoder": 0.002},
            alpha_image=alpha_image,
        )


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def ros(monkeypatch):
    doubled = ros_double.install(monkeypatch)
    import rclpy
    from rclpy.parameter import Parameter

    rclpy.init()
    msgs = ros_double.MSGS if doubled else rclpy_factory()
    nodes = []

    def make_node(processor=None, **params):
        from bifusion_ros.node import BiFusionNode

        processor = processor or FakeProcessor()
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = BiFusionNode(processor, parameter_overrides=overrides)
        nodes.append(node)
        return node

    yield SimpleNamespace(doubled=doubled, msgs=msgs, rclpy=rclpy, Parameter=Parameter, make_node=make_node)
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


def stamp(ms):
    return ms / 1000.0


def images(msgs, ms, *, color_encoding="rgb8", depth_shape=(H, W), info_k=None, frame=OPTICAL):
    header = make_header(msgs, frame, stamp(ms))
    rgb = (np.arange(H * W * 3).reshape(H, W, 3) % 256).astype(np.uint8)
    depth_mm = np.full(depth_shape, 1500, np.uint16)
    depth_mm[0, 0] = 0  # no reading
    if color_encoding in ("rgb8", "bgr8"):
        color = numpy_to_image(rgb, color_encoding, header, msgs)
    else:
        color = numpy_to_image(depth_mm, color_encoding, header, msgs)
    depth = numpy_to_image(depth_mm, "16UC1", header, msgs)
    k = np.array([FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]) if info_k is None else np.asarray(info_k, float)
    info = msgs("sensor_msgs/msg/CameraInfo")(header=header, height=H, width=W, distortion_model="plumb_bob",
                                              d=np.zeros(5), k=k)
    return color, depth, info


def subscription(node, topic):
    subs = [s for s in node.subscriptions if s.topic_name == topic]
    assert len(subs) == 1, f"expected one subscription on {topic}, got {[s.topic_name for s in node.subscriptions]}"
    return subs[0]


def feed(node, color, depth, info):
    """Deliver a set the way an executor would: through the recorded subscription callbacks."""
    subscription(node, "/camera/camera/color/image_raw").callback(color)
    subscription(node, "/camera/camera/aligned_depth_to_color/image_raw").callback(depth)
    subscription(node, "/camera/camera/aligned_depth_to_color/camera_info").callback(info)


def feed_tf(node, msgs, ms):
    tf_msg = msgs("tf2_msgs/msg/TFMessage")
    static = matrix_to_transform(T_LINK_OPTICAL, msgs, header=make_header(msgs, "camera_link", 0.0),
                                 child_frame_id=OPTICAL)
    subscription(node, "/tf_static").callback(tf_msg(transforms=[static]))
    for t in (ms - 100, ms + 100):
        dyn = matrix_to_transform(T_MAP_LINK, msgs, header=make_header(msgs, "map", stamp(t)),
                                  child_frame_id="camera_link")
        subscription(node, "/tf").callback(tf_msg(transforms=[dyn]))


class Capture:
    """Records what every publisher of the node publishes (wraps ``publish``; works on real rclpy too)."""

    def __init__(self, node):
        self.by_topic = {}
        for pub in node.publishers:
            self.by_topic[pub.topic_name] = []
            original = pub.publish

            def publish(msg, _orig=original, _topic=pub.topic_name):
                _orig(msg)
                self.by_topic[_topic].append(msg)

            pub.publish = publish

    def __getitem__(self, topic):
        return self.by_topic[topic]

    def total(self, *topics):
        return sum(len(self.by_topic[t]) for t in topics)


OUTPUTS = ("/bifusion/cloud", "/bifusion/markers", "/bifusion/instances", "/bifusion/alpha")


def roundtrip(ros, msg):
    """CDR-serialise and read back (proves the message is a complete, well-typed ROS message)."""
    if ros.doubled:
        store = ros_double.STORE
        raw = store.serialize_cdr(msg, msg.__msgtype__)
        assert len(raw) > 4
        return store.deserialize_cdr(raw, msg.__msgtype__)
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


# ---------------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------------
def test_declares_every_parameter_with_description_and_range(ros):
    node = ros.make_node()
    for p in PARAMS:
        assert node.has_parameter(p.name)
        assert node.get_parameter(p.name).value == p.default
        d = node.describe_parameter(p.name)
        assert d.description and d.description == p.description
        assert bool(d.read_only) == p.read_only
        if p.type is float:
            assert p.range is not None, f"{p.name} has no range"
            (r,) = d.floating_point_range
            assert (r.from_value, r.to_value) == p.range
            assert not len(d.integer_range)
        elif p.type is int:
            assert p.range is not None, f"{p.name} has no range"
            (r,) = d.integer_range
            assert (r.from_value, r.to_value) == p.range
        else:
            assert not len(d.floating_point_range) and not len(d.integer_range)
        if p.choices:
            assert all(c in d.additional_constraints for c in p.choices)
    assert node.describe_parameter("classes").dynamic_typing  # an empty default list must accept a string array
    names = {p.name for p in PARAMS}
    assert {"color_topic", "depth_topic", "camera_info_topic", "world_frame", "camera_frame", "checkpoint", "device",
            "half", "voxel_size", "classes", "score_threshold", "sync_slop", "sync_queue_size", "tf_timeout",
            "on_missing_tf", "depth_scale"} <= names


def test_subscriptions_publishers_and_qos(ros):
    from rclpy.qos import qos_profile_sensor_data

    node = ros.make_node()
    expect = {"/camera/camera/color/image_raw": "Image",
              "/camera/camera/aligned_depth_to_color/image_raw": "Image",
              "/camera/camera/aligned_depth_to_color/camera_info": "CameraInfo"}
    for topic, type_name in expect.items():
        sub = subscription(node, topic)
        assert getattr(sub.msg_type, "__msgtype__", getattr(sub.msg_type, "__name__", "")).endswith(type_name)
        assert sub.qos_profile == qos_profile_sensor_data
    subscription(node, "/tf")
    subscription(node, "/tf_static")
    pubs = {p.topic_name: p for p in node.publishers}
    for topic, type_name in (("/bifusion/cloud", "PointCloud2"), ("/bifusion/markers", "MarkerArray"),
                             ("/bifusion/instances", "InstanceArray"), ("/bifusion/alpha", "Image"),
                             ("/diagnostics", "DiagnosticArray")):
        assert topic in pubs, sorted(pubs)
        t = pubs[topic].msg_type
        assert getattr(t, "__msgtype__", getattr(t, "__name__", "")).endswith(type_name)
    assert [p.topic_name for p in node.publishers if p.topic_name in OUTPUTS] == list(OUTPUTS)
    for p in PARAMS:
        if p.name.endswith("_topic") and p.name.split("_")[0] in ("cloud", "markers", "instances", "alpha"):
            assert resolve_topic(p.default) in pubs
    if ros.doubled:
        (timer,) = node.timers
        assert timer.timer_period_ns == 1_000_000_000


def test_a_synchronised_set_with_tf_publishes_the_four_outputs(ros):
    proc = FakeProcessor()
    node = ros.make_node(proc)
    cap = Capture(node)
    feed_tf(node, ros.msgs, 1000)
    color, depth, info = images(ros.msgs, 1000)
    feed(node, color, depth, info)
    assert node.worker.wait_idle(10)
    assert [len(cap[t]) for t in OUTPUTS] == [1, 1, 1, 1], node.skipped

    # what the processor got
    (frame,) = proc.frames
    np.testing.assert_allclose(frame.pose, T_MAP_LINK @ T_LINK_OPTICAL, atol=1e-9)
    assert frame.intrinsics == (FX, FY, CX, CY) and frame.frame_id == "map"
    assert frame.stamp == pytest.approx(1.0)
    assert np.isnan(frame.depth[0, 0]) and frame.depth[1, 1] == pytest.approx(1.5)
    np.testing.assert_array_equal(frame.rgb, image_to_numpy(color))

    cloud = roundtrip(ros, cap["/bifusion/cloud"][0])
    assert cloud.header.frame_id == "map"
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (1, 0)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "label", "instance", "score", "alpha"]
    pts = cloud_to_numpy(cloud)
    n = H * W - 1
    assert len(pts) == n
    assert pts["label"][-1] == UNKNOWN_LABEL and set(pts["label"][:-1]) == {0, 1}
    assert set(pts["instance"]) == {0, 1}  # instance 2 (score 0.1 < score_threshold 0.25) -> 0
    np.testing.assert_allclose(pts["alpha"], 0.75)

    markers = roundtrip(ros, cap["/bifusion/markers"][0]).markers
    assert [(m.ns, m.id) for m in markers] == [("", 0), ("boxes", 1), ("labels", 1)]
    assert markers[2].text == "chair 0.90"
    instances = roundtrip(ros, cap["/bifusion/instances"][0])
    assert [(i.id, i.class_name, i.point_count) for i in instances.instances] == [(1, "chair", n // 2)]
    assert instances.header.frame_id == "map"

    alpha = roundtrip(ros, cap["/bifusion/alpha"][0])
    assert (alpha.encoding, alpha.height, alpha.width, alpha.header.frame_id) == ("32FC1", H, W, OPTICAL)
    a = image_to_numpy(alpha, zero_is_invalid=False)
    assert np.isnan(a[0, 0]) and a[1, 1] == pytest.approx(0.75)

    # diagnostics: counts and per-stage latency
    node.publish_diagnostics()
    (diag,) = cap["/diagnostics"]
    diag = roundtrip(ros, diag)
    (status,) = diag.status
    values = {kv.key: kv.value for kv in status.values}
    assert values["published"] == "1" and values["received"] == "1" and values["dropped"] == "0"
    assert all(f"skipped/{r}" in values for r in SKIP_REASONS)
    assert {"latency_ms/convert", "latency_ms/process", "latency_ms/publish", "latency_ms/model/clip"} <= set(values)
    assert int(status.level if not isinstance(status.level, bytes) else status.level[0]) == 0  # OK


def test_missing_tf_with_skip_counts_and_publishes_nothing(ros):
    node = ros.make_node(tf_timeout=0.0, on_missing_tf="skip")
    cap = Capture(node)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    assert node.skipped["missing_tf"] == 1
    assert cap.total(*OUTPUTS) == 0
    assert node.counters()["published"] == 0
    if ros.doubled:
        assert any("missing_tf" in m for m in node.get_logger().messages("warning"))
    # once TF arrives the next frame goes through
    feed_tf(node, ros.msgs, 2000)
    feed(node, *images(ros.msgs, 2000))
    assert node.worker.wait_idle(10)
    assert [len(cap[t]) for t in OUTPUTS] == [1, 1, 1, 1]
    node.publish_diagnostics()
    values = {kv.key: kv.value for kv in cap["/diagnostics"][0].status[0].values}
    assert values["skipped/missing_tf"] == "1" and values["published"] == "1"


def test_missing_tf_with_identity_publishes_in_the_camera_frame(ros):
    proc = FakeProcessor()
    node = ros.make_node(proc, tf_timeout=0.0, on_missing_tf="identity")
    cap = Capture(node)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    np.testing.assert_array_equal(proc.frames[0].pose, np.eye(4))
    assert cap["/bifusion/cloud"][0].header.frame_id == OPTICAL
    assert node.counters()["identity_pose"] == 1 and node.skipped["missing_tf"] == 0


def test_the_tf_lookup_waits_up_to_tf_timeout(ros):
    """The pose arrives (on the executor) while the worker waits for it: the frame is not skipped."""
    node = ros.make_node(tf_timeout=2.0)
    cap = Capture(node)
    feed(node, *images(ros.msgs, 1000))
    time.sleep(0.05)
    feed_tf(node, ros.msgs, 1000)
    assert node.worker.wait_idle(10)
    assert len(cap["/bifusion/cloud"]) == 1 and node.skipped["missing_tf"] == 0


def test_bad_frames_are_counted_per_reason_and_skipped(ros):
    proc = FakeProcessor(fail_on=lambda frame: frame.stamp == pytest.approx(6.0))
    node = ros.make_node(proc)
    cap = Capture(node)
    for ms in range(0, 8000, 1000):
        feed_tf(node, ros.msgs, ms)
    m = ros.msgs
    feed(node, *images(m, 1000, color_encoding="16UC1"))                # depth on the colour topic
    feed(node, *images(m, 2000, depth_shape=(H, W + 2)))                # depth not aligned
    feed(node, *images(m, 3000, info_k=np.zeros(9)))                    # uncalibrated camera info
    c, d, i = images(m, 4000)
    d.data = d.data[:-3]                                                # truncated image
    feed(node, c, d, i)
    c, d, i = images(m, 5000)
    i.width = W * 2                                                     # camera info of another resolution
    feed(node, c, d, i)
    feed(node, *images(m, 6000))                                        # the processor raises
    assert node.worker.wait_idle(10)
    skipped = node.skipped
    assert skipped["bad_encoding"] == 1 and skipped["size_mismatch"] == 2 and skipped["bad_camera_info"] == 1
    assert skipped["bad_image"] == 1 and skipped["processor_error"] == 1 and skipped["missing_tf"] == 0
    assert cap.total(*OUTPUTS) == 0
    # still alive
    feed(node, *images(m, 7000))
    assert node.worker.wait_idle(10)
    assert len(cap["/bifusion/cloud"]) == 1
    c = node.counters()
    assert (c["received"], c["published"], c["skipped"]) == (7, 1, 6)


def test_frames_are_dropped_under_load_not_queued(ros):
    proc = FakeProcessor(delay=0.05)
    node = ros.make_node(proc)
    cap = Capture(node)
    feed_tf(node, ros.msgs, 1000)
    n = 30
    max_pending = 0
    for k in range(n):
        feed(node, *images(ros.msgs, 950 + 3 * k))  # all inside the buffered TF interval
        max_pending = max(max_pending, node.worker.pending)
    assert node.worker.wait_idle(20)
    c = node.counters()
    assert c["received"] == n and c["skipped"] == 0 and c["failed"] == 0
    assert c["published"] + c["dropped"] == n
    assert c["dropped"] > 0 and max_pending <= 1
    assert len(cap["/bifusion/cloud"]) == c["published"] == len(proc.frames)
    assert proc.frames[-1].stamp == pytest.approx((950 + 3 * (n - 1)) / 1000)  # the newest frame was processed


def test_classes_can_be_changed_at_run_time(ros):
    P = ros.Parameter
    proc = FakeProcessor(class_names=("chair", "table"))
    node = ros.make_node(proc)
    (res,) = node.set_parameters([P("classes", value=["sofa", "lamp"])])
    assert res.successful
    assert proc.class_names == ["sofa", "lamp"] and node.get_parameter("classes").value == ["sofa", "lamp"]
    (res,) = node.set_parameters([P("classes", value=["forbidden"])])
    assert not res.successful and "forbidden" in res.reason
    assert proc.class_names == ["sofa", "lamp"]
    (res,) = node.set_parameters([P("classes", value=["ok", "  "])])
    assert not res.successful
    (res,) = node.set_parameters([P("classes", value=[])])  # empty -> the checkpoint's list again
    assert res.successful and proc.class_names == ["chair", "table"]
    (res,) = node.set_parameters([P("score_threshold", value=0.5)])
    assert res.successful and node.config["score_threshold"] == 0.5
    (res,) = node.set_parameters([P("score_threshold", value=1.5)])
    assert not res.successful
    (res,) = node.set_parameters([P("on_missing_tf", value="sometimes")])
    assert not res.successful and "identity" in res.reason
    (res,) = node.set_parameters([P("color_topic", value="/other")])
    assert not res.successful  # read-only


def test_classes_from_parameters_are_applied_at_start(ros):
    proc = FakeProcessor(class_names=("chair", "table"))
    node = ros.make_node(proc, classes=["mug", "laptop"])
    assert proc.class_names == ["mug", "laptop"]
    assert node.checkpoint_classes == ["chair", "table"]


def test_invalid_parameter_values_fail_at_start(ros):
    from bifusion_ros.node import StartupError

    with pytest.raises(StartupError, match="on_missing_tf"):
        ros.make_node(on_missing_tf="sometimes")
    with pytest.raises(StartupError, match="sync_slop"):
        ros.make_node(sync_slop=5.0)  # outside the range
    with pytest.raises(StartupError, match="sync_queue_size"):
        ros.make_node(sync_queue_size="ten")  # rclpy refuses a string for an integer at declare time
    with pytest.raises(StartupError, match="tf_timeout"):
        ros.make_node(tf_timeout="soon")


def test_integers_are_accepted_for_float_parameters(ros):
    """``-p tf_timeout:=0`` / ``-p depth_scale:=1``: real rclpy types a parameter from its default and would
    refuse an integer override for a double at declare time; the node accepts it as a float."""
    P = ros.Parameter
    node = ros.make_node(tf_timeout=0, depth_scale=1, sync_slop=0, voxel_size=0)
    assert node.config["tf_timeout"] == 0.0 and isinstance(node.config["tf_timeout"], float)
    assert node.config["depth_scale"] == 1.0 and isinstance(node.config["depth_scale"], float)
    (res,) = node.set_parameters([P("score_threshold", value=1)])  # ros2 param set /bifusion score_threshold 1
    assert res.successful and node.config["score_threshold"] == 1.0
    (res,) = node.set_parameters([P("score_threshold", value="high")])
    assert not res.successful and "score_threshold" in res.reason
    (res,) = node.set_parameters([P("tf_timeout", value=7)])  # out of range as an integer too
    assert not res.successful and "tf_timeout" in res.reason and node.config["tf_timeout"] == 0.0


@pytest.mark.parametrize("value", [42, 1.5, True, "chair", [1, 2], [b"x"]])
def test_a_wrong_typed_run_time_parameter_is_refused_and_the_node_lives(ros, value):
    """``ros2 param set /bifusion classes 42``: refused with a reason; the callback must not raise (in rclpy an
    exception in an on-set callback escapes spin and ends the node)."""
    P = ros.Parameter
    proc = FakeProcessor(class_names=("chair", "table"))
    node = ros.make_node(proc)
    (res,) = node.set_parameters([P("classes", value=value)])
    assert not res.successful and "classes" in res.reason
    assert proc.class_names == ["chair", "table"] and proc.set_calls == []
    cap = Capture(node)  # and frames still go through
    feed_tf(node, ros.msgs, 1000)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    assert len(cap["/bifusion/cloud"]) == 1


def test_a_failing_parameter_callback_is_reported_not_raised(ros, monkeypatch):
    P = ros.Parameter
    node = ros.make_node(FakeProcessor())

    def boom(parameters):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(node, "_apply_parameters", boom)
    (res,) = node.set_parameters([P("score_threshold", value=0.3)])
    assert not res.successful and "RuntimeError: unexpected" in res.reason


def test_main_logs_one_line_and_exits_1_on_a_bad_parameter(ros, monkeypatch, capfd):
    """``bifusion_node --ros-args -p sync_queue_size:=ten``: the override reaches the node through rclpy's
    global arguments (real rclpy, or the double's init(args)); main() logs one fatal line, returns 1."""
    import bifusion_ros.node as node_module

    monkeypatch.setattr(node_module, "load_processor", lambda *a, **k: FakeProcessor())
    ros.rclpy.try_shutdown()  # main() calls rclpy.init itself
    assert node_module.main(["bifusion_node", "--ros-args", "-p", "sync_queue_size:=ten"]) == 1
    if ros.doubled:
        fatal = ros_double.get_logger("bifusion").messages("fatal")
    else:  # rcutils writes to the process' stderr
        fatal = [line for line in capfd.readouterr().err.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "sync_queue_size" in fatal[-1] and "cannot start" in fatal[-1]
    assert not ros.rclpy.ok()
    ros.rclpy.init()  # for the fixture's teardown symmetry


def test_the_synchroniser_runs_the_callback_under_its_lock(ros):
    """As message_filters does: the node's callback runs while the synchroniser's lock is held, so it must be
    quick and never raise (a raise would leave the lock held and stall every later set)."""
    node = ros.make_node(FakeProcessor())
    seen = []
    original = node._on_synced

    def spy(*msgs):
        seen.append(node.sync.lock.locked())
        original(*msgs)

    node.sync.callbacks[0] = (spy, ())
    feed_tf(node, ros.msgs, 1000)
    feed(node, *images(ros.msgs, 1000))
    feed(node, *images(ros.msgs, 1100, color_encoding="16UC1"))  # a bad set: counted, the lock is released
    feed(node, *images(ros.msgs, 1200))
    assert seen == [True, True, True]
    assert not node.sync.lock.locked()
    assert node.worker.wait_idle(10) and node.skipped["bad_encoding"] == 1


def test_a_nan_transform_is_logged_and_dropped_by_tf2(ros):
    """tf2 logs TF_NAN_INPUT and drops a NaN or zero-quaternion transform, it does not raise: the
    frame at that stamp then has no pose and is counted as missing_tf while the node keeps running."""
    node = ros.make_node(FakeProcessor(), tf_timeout=0.0)
    tf_msg = ros.msgs("tf2_msgs/msg/TFMessage")
    static = matrix_to_transform(T_LINK_OPTICAL, ros.msgs, header=make_header(ros.msgs, "camera_link", 0.0),
                                 child_frame_id=OPTICAL)
    subscription(node, "/tf_static").callback(tf_msg(transforms=[static]))
    for t in (900, 1100):
        bad = matrix_to_transform(T_MAP_LINK, ros.msgs, header=make_header(ros.msgs, "map", stamp(t)),
                                  child_frame_id="camera_link")
        bad.transform.translation.x = float("nan")
        subscription(node, "/tf").callback(tf_msg(transforms=[bad]))  # must not raise
    bad = matrix_to_transform(T_MAP_LINK, ros.msgs, header=make_header(ros.msgs, "map", stamp(1000)),
                              child_frame_id="camera_link")
    bad.transform.rotation.z = bad.transform.rotation.w = 0.0  # a zero quaternion
    subscription(node, "/tf").callback(tf_msg(transforms=[bad]))
    if ros.doubled:
        errors = ros_double.get_logger("tf2").messages("error")
        assert len(errors) >= 3 and any("not finite" in e for e in errors)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    assert node.skipped["missing_tf"] == 1


def test_main_spins_and_cleans_up(ros, monkeypatch):
    import bifusion_ros.node as node_module

    created = []
    monkeypatch.setattr(node_module, "load_processor", lambda *a, **k: FakeProcessor())
    ros.rclpy.try_shutdown()  # main() calls rclpy.init itself

    def spin(node, executor=None):
        created.append(node)
        raise KeyboardInterrupt

    monkeypatch.setattr(node_module.rclpy, "spin", spin)
    assert node_module.main([]) == 0
    (node,) = created
    assert not node.worker.running
    assert not ros.rclpy.ok()
    ros.rclpy.init()  # for the fixture's teardown symmetry


def test_no_ros_import_outside_the_node_module():
    ros_modules = {"rclpy", "message_filters", "tf2_ros", "rcl_interfaces", "cv_bridge", "sensor_msgs_py",
                   "launch", "launch_ros", "sensor_msgs", "std_msgs", "geometry_msgs", "visualization_msgs",
                   "diagnostic_msgs", "tf2_msgs", "builtin_interfaces"}
    offenders = []
    for path in list((ROOT / "bifusion_core").rglob("*.py")) + list((ROOT / "bifusion_ros").rglob("*.py")):
        if path.name == "node.py" and path.parent.name == "bifusion_ros":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for n in ast.walk(tree):
            names = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names = [n.module]
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in ros_modules]
    assert offenders == []


def test_camera_frame_parameter_overrides_an_empty_header_frame(ros):
    node = ros.make_node(camera_frame=OPTICAL)
    cap = Capture(node)
    feed_tf(node, ros.msgs, 1000)
    feed(node, *images(ros.msgs, 1000, frame=""))
    assert node.worker.wait_idle(10)
    assert cap["/bifusion/cloud"][0].header.frame_id == "map"
    assert cap["/bifusion/alpha"][0].header.frame_id == OPTICAL
    # without the override an image without frame_id cannot be placed
    node2 = ros.make_node(tf_timeout=0.0)
    feed_tf(node2, ros.msgs, 1000)
    feed(node2, *images(ros.msgs, 1000, frame=""))
    assert node2.worker.wait_idle(10)
    assert node2.skipped["missing_tf"] == 1


def test_a_result_that_cannot_be_published_is_counted(ros):
    class ZeroIds(FakeProcessor):
        def process(self, frame):
            result = super().process(frame)
            result.instances[0].id = 0  # instance ids start at 1: convert refuses it
            return result

    node = ros.make_node(ZeroIds(), map=False)  # with the map on, the outputs carry map ids instead
    cap = Capture(node)
    feed_tf(node, ros.msgs, 1000)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    assert node.skipped["publish_error"] == 1 and cap.total(*OUTPUTS) == 0
    assert node.worker.running


def test_result_outputs_accepts_torch_instances(ros):
    import torch

    from bifusion_core.pipeline.types import FrameResult
    from bifusion_ros.frame_io import result_outputs

    inst = FakeInstance(3, 1, "table", 0.8, torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 0.4, 0.7]),
                        torch.arange(2))
    result = FrameResult(points=np.zeros((2, 3), np.float32), colours=np.zeros((2, 3), np.uint8),
                         semantic=np.array([1, -1]), instance=np.array([3, -1]), score=np.ones(2, np.float32),
                         alpha=np.ones(2, np.float32), pixels=np.zeros((2, 2), np.int64), instances=[inst],
                         class_names=["chair", "table"])
    header = make_header(ros.msgs, "map", 1.0)
    out = result_outputs(result, header, header, ros.msgs, score_threshold=0.5)
    assert out["alpha"] is None
    pts = cloud_to_numpy(roundtrip(ros, out["cloud"]))
    assert list(pts["instance"]) == [3, 0] and list(pts["label"]) == [1, UNKNOWN_LABEL]
    (i,) = roundtrip(ros, out["instances"]).instances
    assert (i.id, i.class_name, i.point_count) == (3, "table", 2)
    assert (i.center.position.x, i.size.z) == (1.0, pytest.approx(0.7))


# ---------------------------------------------------------------------------------------------------------------
# the online map
# ---------------------------------------------------------------------------------------------------------------
MAP_OUTPUTS = ("/bifusion/map_cloud", "/bifusion/map_markers")


class Shifting(FakeProcessor):
    """The fake's two instances, moved ``step`` metres along world x per processed frame (new objects every
    frame: nothing merges across frames)."""

    def __init__(self, step=10.0, **kw):
        super().__init__(**kw)
        self.step = step

    def process(self, frame):
        result = super().process(frame)
        shift = np.array([self.step * (len(self.frames) - 1), 0.0, 0.0], np.float32)
        result.points = result.points + shift
        for inst in result.instances:
            inst.center = inst.center + shift
        return result


def trigger_call(node):
    """``~/reset_map`` as the executor serves it: the callback gets a request and a fresh response."""
    from std_srvs.srv import Trigger

    srv = node.reset_map_service
    return srv.callback(Trigger.Request(), Trigger.Response())


def test_the_map_gives_persistent_ids_and_publishes_the_map_rate_limited(ros):
    from bifusion_ros.convert import id_colour
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    node = ros.make_node(score_threshold=0.0, map_publish_period=1.0)
    cap = Capture(node)
    pubs = {p.topic_name: p for p in node.publishers}
    for topic in MAP_OUTPUTS:
        qos = pubs[topic].qos_profile
        assert qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.reliability == ReliabilityPolicy.RELIABLE
        assert qos.depth == 1
    for ms in (1000, 1500, 2200):  # one static scene seen three times
        feed_tf(node, ros.msgs, ms)
        feed(node, *images(ros.msgs, ms))
        assert node.worker.wait_idle(10)
    assert [len(cap[t]) for t in OUTPUTS] == [3, 3, 3, 3], node.skipped
    # the same two objects keep ids 1 and 2 in every frame: cloud field, markers and instance list
    for k in range(3):
        pts = cloud_to_numpy(roundtrip(ros, cap["/bifusion/cloud"][k]))
        assert set(pts["instance"]) == {1, 2}
        assert [i.id for i in roundtrip(ros, cap["/bifusion/instances"][k]).instances] == [1, 2]
        boxes = [m for m in roundtrip(ros, cap["/bifusion/markers"][k]).markers if m.ns == "boxes"]
        assert [m.id for m in boxes] == [1, 2]
        for m in boxes:  # coloured by id, not by class
            assert (m.color.r, m.color.g, m.color.b) == pytest.approx(id_colour(m.id))
    assert len(node.session.map) == 2
    assert [o.merge_count for o in node.session.map.scene.instances] == [3, 3]
    # the map went out with frames 1 (first) and 3 (1.2 s later), not with frame 2 (0.5 s after the first)
    assert [len(cap[t]) for t in MAP_OUTPUTS] == [2, 2]
    mc = roundtrip(ros, cap["/bifusion/map_cloud"][-1])
    assert mc.header.frame_id == "map" and (mc.header.stamp.sec, mc.header.stamp.nanosec) == (2, 200_000_000)
    assert [f.name for f in mc.fields] == ["x", "y", "z", "rgb", "label", "instance"]
    vox = cloud_to_numpy(mc)
    world = cloud_to_numpy(roundtrip(ros, cap["/bifusion/cloud"][-1]))
    xyz = np.stack([world["x"], world["y"], world["z"]], 1).astype(np.float64)
    assert len(vox) == len(np.unique(np.floor(xyz / 0.05).astype(np.int64), axis=0))
    assert set(vox["instance"]) <= {0, 1, 2} and {1, 2} <= set(vox["instance"])
    # the last point (semantic -1) adds no evidence: its voxel, if it has no other point, has no label
    assert set(vox["label"]) <= {0, 1, UNKNOWN_LABEL} and (vox["label"] == UNKNOWN_LABEL).sum() <= 1
    mm = [m for m in roundtrip(ros, cap["/bifusion/map_markers"][-1]).markers if m.ns == "boxes"]
    assert [m.id for m in mm] == [1, 2]
    # diagnostics report the map
    node.publish_diagnostics()
    values = {kv.key: kv.value for kv in cap["/diagnostics"][0].status[0].values}
    assert values["map/instances"] == "2" and values["map/errors"] == "0"
    # map_publish_period can change at run time; 0 = every frame
    (res,) = node.set_parameters([ros.Parameter("map_publish_period", value=0.0)])
    assert res.successful and node.session.map.publish_period == 0.0
    feed_tf(node, ros.msgs, 2300)
    feed(node, *images(ros.msgs, 2300))
    assert node.worker.wait_idle(10)
    assert [len(cap[t]) for t in MAP_OUTPUTS] == [3, 3]


def test_reset_map_service_starts_ids_afresh(ros):
    node = ros.make_node(Shifting(), score_threshold=0.0)
    cap = Capture(node)
    if ros.doubled:
        (srv,) = node.services
        assert srv.service_name == "/bifusion/reset_map" and srv.srv_type.__name__ == "Trigger"
    for ms in (1000, 2000):
        feed_tf(node, ros.msgs, ms)
        feed(node, *images(ros.msgs, ms))
        assert node.worker.wait_idle(10)
    ids = [[i.id for i in roundtrip(ros, m).instances] for m in cap["/bifusion/instances"]]
    assert ids == [[1, 2], [3, 4]]  # the objects moved 10 m: new instances, new ids
    response = trigger_call(node)
    assert response.success and "4 instances" in response.message
    assert len(node.session.map) == 0
    feed_tf(node, ros.msgs, 3000)
    feed(node, *images(ros.msgs, 3000))
    assert node.worker.wait_idle(10)
    assert [i.id for i in roundtrip(ros, cap["/bifusion/instances"][-1]).instances] == [1, 2]


def test_frames_without_a_pose_stay_out_of_the_map(ros):
    node = ros.make_node(tf_timeout=0.0, on_missing_tf="identity", score_threshold=0.0)
    cap = Capture(node)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    assert len(node.session.map) == 0 and node.session.counter("map_without_pose") == 1
    # the frame's own ids go out, in the camera frame
    assert [i.id for i in roundtrip(ros, cap["/bifusion/instances"][0]).instances] == [1, 2]
    assert cap["/bifusion/cloud"][0].header.frame_id == OPTICAL


def test_changing_the_classes_resets_the_map(ros):
    node = ros.make_node(score_threshold=0.0)
    feed_tf(node, ros.msgs, 1000)
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    assert len(node.session.map) == 2 and node.session.map.scene.class_names == ("chair", "table")
    (res,) = node.set_parameters([ros.Parameter("classes", value=["sofa", "lamp"])])
    assert res.successful
    assert len(node.session.map) == 0 and node.session.map.scene.class_names == ("sofa", "lamp")
    feed_tf(node, ros.msgs, 2000)
    feed(node, *images(ros.msgs, 2000))
    assert node.worker.wait_idle(10) and len(node.session.map) == 2
    (res,) = node.set_parameters([ros.Parameter("world_frame", value="odom")])  # a map in another frame
    assert res.successful and len(node.session.map) == 0


def test_map_off_publishes_frame_ids_and_no_map(ros):
    node = ros.make_node(Shifting(), map=False, score_threshold=0.0)
    cap = Capture(node)
    assert node.session.map is None and node.reset_map_service is None
    assert not set(MAP_OUTPUTS) & set(cap.by_topic)
    if ros.doubled:
        assert node.services == []
    for ms in (1000, 2000):
        feed_tf(node, ros.msgs, ms)
        feed(node, *images(ros.msgs, ms))
        assert node.worker.wait_idle(10)
    ids = [[i.id for i in roundtrip(ros, m).instances] for m in cap["/bifusion/instances"]]
    assert ids == [[1, 2], [1, 2]]  # per-frame ids
    markers = [m for m in roundtrip(ros, cap["/bifusion/markers"][0]).markers if m.ns == "boxes"]
    from bifusion_ros.convert import class_colour

    assert [(m.color.r, m.color.g, m.color.b) for m in markers] == [pytest.approx(class_colour(c)) for c in (0, 1)]


@pytest.mark.parametrize("name, value", [("map_voxel_size", 0.0), ("map_max_instances", 0),
                                         ("map_merge_threshold", 1.0)])
def test_invalid_map_parameters_fail_at_start(ros, name, value):
    from bifusion_ros.node import StartupError

    with pytest.raises(StartupError, match=name):
        ros.make_node(**{name: value})


def test_a_mask_topic_feeds_frame_masks_by_stamp_and_bad_masks_are_skipped(ros):
    """mask_topic: the mask with the colour image's stamp reaches the processor's Frame; a mask of another size or
    encoding is counted and its frame processed without one; a frame whose mask never comes waits mask_timeout."""
    from rclpy.qos import qos_profile_sensor_data

    proc = FakeProcessor()
    node = ros.make_node(proc, mask_topic="/fastsam/masks", mask_timeout=0.2)
    sub = subscription(node, "/fastsam/masks")
    assert sub.qos_profile == qos_profile_sensor_data
    cap = Capture(node)
    feed_tf(node, ros.msgs, 1000)
    feed_tf(node, ros.msgs, 2000)
    feed_tf(node, ros.msgs, 3000)
    ids = np.zeros((H, W), np.uint16)
    ids[:, :4] = 3
    header = make_header(ros.msgs, OPTICAL, stamp(1000))
    sub.callback(numpy_to_image(ids, "16UC1", header, ros.msgs))       # the mask of the first frame, ahead of it
    feed(node, *images(ros.msgs, 1000))
    assert node.worker.wait_idle(10)
    np.testing.assert_array_equal(proc.frames[-1].masks, ids.astype(np.int64))
    # a mask of another size: skipped (counted), the frame goes on without one
    sub.callback(numpy_to_image(np.zeros((H, W + 1), np.uint16), "16UC1", make_header(ros.msgs, OPTICAL, stamp(2000)),
                                ros.msgs))
    # a colour image on the mask topic: bad_encoding
    sub.callback(numpy_to_image(np.zeros((H, W, 3), np.uint8), "rgb8", make_header(ros.msgs, OPTICAL, stamp(2000)),
                                ros.msgs))
    feed(node, *images(ros.msgs, 2000))
    assert node.worker.wait_idle(10)
    assert proc.frames[-1].masks is None
    t0 = time.monotonic()
    feed(node, *images(ros.msgs, 3000))  # no mask at all: waits mask_timeout, then VCCS alone
    assert node.worker.wait_idle(10)
    assert proc.frames[-1].masks is None and time.monotonic() - t0 >= 0.15
    assert len(cap["/bifusion/cloud"]) == 3 and sum(node.skipped.values()) == 0
    assert node.masks.summary() == {"received": 3, "used": 1, "frames_without_mask": 2,
                                    "skipped": {"bad_encoding": 1, "bad_image": 0, "size_mismatch": 1}}
    node.publish_diagnostics()
    values = {kv.key: kv.value for kv in roundtrip(ros, cap["/diagnostics"][-1]).status[0].values}
    assert values["masks/used"] == "1" and values["masks/skipped/size_mismatch"] == "1"
