"""FrameSession: the per-frame policy and book-keeping that the node and replay share (ROS-free)."""
import numpy as np
import pytest

from bifusion_core.pipeline.session import SKIP_REASONS, FrameInputs, FrameSession, FrameSkipped


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


class Echo:
    """A processor that returns the Frame it got (with timings)."""

    def __init__(self, fail=False):
        self.fail = fail

    def process(self, frame):
        if self.fail:
            raise RuntimeError("out of memory (fake)")
        frame.timings = {"clip": 0.002}
        return frame


def inputs(stamp=1.5, image_frame="cam_optical"):
    return FrameInputs(rgb=np.zeros((2, 3, 3), np.uint8), depth=np.ones((2, 3), np.float32),
                       intrinsics=(10.0, 11.0, 1.0, 0.5), stamp=stamp, image_frame=image_frame)


def test_the_frame_the_processor_gets_and_the_booking():
    s = FrameSession(Echo(), world_frame="map")
    inp = inputs()
    pose = np.diag([1.0, 1.0, 1.0, 1.0])
    pose[:3, 3] = (1, 2, 3)
    frame = s.process(inp, pose, "map")
    assert frame.intrinsics == (10.0, 11.0, 1.0, 0.5) and frame.stamp == 1.5 and frame.frame_id == "map"
    np.testing.assert_array_equal(frame.pose, pose)
    assert "process" in inp.timings
    assert s.done(inp, frame) == 0 and s.done(inputs(), frame) == 1 and s.counter("processed") == 2
    assert {"process", "model/clip"} <= set(s.latency.summary())


def test_missing_pose_policy_skip_and_identity():
    log = Log()
    s = FrameSession(Echo(), world_frame="map", camera_frame="", on_missing_tf="skip", log=log)
    with pytest.raises(FrameSkipped) as e:
        s.without_pose(inputs(), "no such frame")
    assert e.value.reason == "missing_tf" and "'map' <- 'cam_optical' at 1.500 s: no such frame" in e.value.detail
    s.on_missing_tf = "identity"  # changed at run time, as the node's parameter
    pose, frame = s.without_pose(inputs(), "no such frame")
    np.testing.assert_array_equal(pose, np.eye(4))
    assert frame == "cam_optical" and s.counter("identity_pose") == 1
    s.camera_frame = "override"
    assert s.camera("cam_optical") == "override"
    with pytest.raises(ValueError):
        FrameSession(Echo(), world_frame="map", on_missing_tf="sometimes")


def test_an_image_without_frame_id_cannot_take_the_identity():
    s = FrameSession(Echo(), world_frame="map", on_missing_tf="identity")
    with pytest.raises(FrameSkipped):
        s.without_pose(inputs(image_frame=""), "empty frame id")


def test_processor_errors_become_skips():
    s = FrameSession(Echo(fail=True), world_frame="map")
    with pytest.raises(FrameSkipped) as e:
        s.process(inputs(), np.eye(4), "map")
    assert e.value.reason == "processor_error" and "RuntimeError: out of memory" in e.value.detail


def test_skips_are_counted_per_reason_and_logged_throttled():
    log = Log()
    s = FrameSession(Echo(), world_frame="map", log=log, log_period=3600.0)
    for _ in range(3):
        s.skip("bad_encoding", "yuv422")
    s.skip("missing_tf", "later")
    assert s.skipped == {r: (3 if r == "bad_encoding" else 1 if r == "missing_tf" else 0) for r in SKIP_REASONS}
    assert log.lines == ["skipping frame (bad_encoding, 1 so far): yuv422", "skipping frame (missing_tf, 1 so far): later"]
    assert s.first_detail == {"bad_encoding": "yuv422", "missing_tf": "later"}
    every = FrameSession(Echo(), world_frame="map", log=log, log_period=0.0)
    every.skip("bad_image", "a")
    every.skip("bad_image", "b")
    assert log.lines[-2:] == ["skipping frame (bad_image, 1 so far): a", "skipping frame (bad_image, 2 so far): b"]
    with pytest.raises(ValueError):
        s.skip("bad_mood", "x")


def test_replay_runs_the_session_with_its_settings(tmp_path):
    """Replay keeps no policy of its own: its FrameSession carries the settings it shares with the node."""
    from bifusion_ros.replay import ReplayConfig, _Replay

    r = _Replay(ReplayConfig(bag=tmp_path / "none", out=tmp_path / "out", world_frame="odom",
                             camera_frame="cam", on_missing_tf="identity", progress=False))
    s = r.session
    assert isinstance(s, FrameSession) and (s.world_frame, s.camera_frame, s.on_missing_tf) == ("odom", "cam",
                                                                                               "identity")
    assert s.latency.window is None  # a replay summarises every frame


# ---------------------------------------------------------------------------------------------------------------
# the session's map (SessionMap)
# ---------------------------------------------------------------------------------------------------------------
class Inst:
    def __init__(self, id, class_id, score, idx, points):
        self.id, self.class_id, self.class_name, self.score = id, class_id, f"c{class_id}", score
        self.point_indices = np.asarray(idx, np.int64)
        p = points[self.point_indices]
        self.center, self.size = (p.min(0) + p.max(0)) / 2, p.max(0) - p.min(0)
        self.embedding = None

    @property
    def point_count(self):
        return len(self.point_indices)


def cube(centre, n=6, edge=0.3):
    g = np.linspace(-edge / 2, edge / 2, n)
    return np.stack(np.meshgrid(g, g, g), -1).reshape(-1, 3) + np.asarray(centre)


def result_of(centres, classes=None, small=()):
    """A FrameResult with one cube instance per centre (216 points each) plus, for each of ``small``, a
    5-point instance; the last point of the frame belongs to no instance."""
    from bifusion_core.pipeline.types import FrameResult

    parts = [cube(c) for c in centres] + [cube(c, n=2)[:5] for c in small] + [np.array([[9.0, 9.0, 9.0]])]
    points = np.concatenate(parts).astype(np.float32)
    insts, start = [], 0
    classes = classes or [0] * (len(centres) + len(small))
    for k, part in enumerate(parts[:-1]):
        insts.append(Inst(k + 1, classes[k], 0.9, np.arange(start, start + len(part)), points))
        start += len(part)
    n = len(points)
    return FrameResult(points=points, colours=np.full((n, 3), 100, np.uint8), semantic=np.zeros(n, np.int64),
                       instance=np.zeros(n, np.int64), score=np.ones(n, np.float32), alpha=np.ones(n, np.float32),
                       pixels=np.zeros((n, 2), np.int64), instances=insts, class_names=["chair", "table"])


def map_session(**kw):
    from bifusion_core.mapping import MapConfig

    class Proc:
        class_names = ["chair", "table"]

    s = FrameSession(Proc(), world_frame="map", log=Log())
    s.enable_map(MapConfig(**kw))
    return s


def test_the_session_map_gives_persistent_ids_per_instance_and_point():
    s = map_session()
    r1 = result_of([(0, 0, 0), (2, 0, 0)], small=[(5, 0, 0)])
    f1 = s.map_frame(inputs(1.0), r1, "map")
    assert f1.instance_ids == (1, 2, 0)  # the 5-point instance is below min_points (10): not in the map
    n = len(r1.points)
    np.testing.assert_array_equal(f1.point_ids[:216], 1)
    np.testing.assert_array_equal(f1.point_ids[216:432], 2)
    assert (f1.point_ids[432:] == 0).all() and f1.point_ids.shape == (n,)
    # the same objects seen again, listed the other way round, slightly moved: same ids
    inp = inputs(2.0)
    f2 = s.map_frame(inp, result_of([(2.05, 0, 0), (0.05, 0, 0)]), "map")
    assert f2.instance_ids == (2, 1) and "map" in inp.timings
    assert len(s.map) == 2 and s.map.scene.class_names == ("chair", "table")
    # a frame in the camera frame (no pose) is not merged
    assert s.map_frame(inputs(3.0), r1, "cam_optical") is None and s.counter("map_without_pose") == 1
    assert [i.merge_count for i in s.map.scene.instances] == [2, 2]
    # reset: ids start at 1 again; with class names the map takes them
    assert s.map.reset(["sofa"]) == 2 and len(s.map) == 0 and s.map.scene.class_names == ("sofa",)
    assert s.map_frame(inputs(4.0), result_of([(7, 0, 0)]), "map").instance_ids == (1,)


def test_a_frame_the_map_refuses_is_counted_and_changes_nothing():
    s = map_session()
    s.map_frame(inputs(1.0), result_of([(0, 0, 0)]), "map")
    bad = result_of([(0, 0, 0)])
    bad.points[3] = np.nan
    assert s.map_frame(inputs(2.0), bad, "map") is None
    assert s.counter("map_errors") == 1 and any("not merged into the map" in t for t in s._log.lines)
    (inst,) = s.map.scene.instances
    assert inst.merge_count == 1 and inst.last_seen == 1.0


def test_the_map_is_published_at_most_every_period_of_image_stamps():
    s = map_session()
    m = s.map
    assert m.publish_period == 1.0
    assert [m.due(t) for t in (10.0, 10.5, 10.99, 11.0, 11.5, 12.2)] == [True, False, False, True, False, True]
    assert m.due(5.0)  # the stamps went back (a looping bag): at once
    m.publish_period = 0
    assert all(m.due(t) for t in (5.0, 5.0, 5.1))
    with pytest.raises(ValueError):
        m.publish_period = -1.0
    m.publish_period = 3.0
    m.reset()
    assert m.due(5.5)  # a reset map goes out with the next frame


def test_map_snapshot_is_a_copy():
    s = map_session()
    s.map_frame(inputs(1.0), result_of([(0, 0, 0)]), "map")
    snap = s.map.snapshot()
    v = len(snap.centres)
    assert v == len(snap.labels) == len(snap.instance_ids) == len(snap.colours) > 0
    assert set(snap.instance_ids) == {0, 1} and snap.class_names == ("chair", "table")
    s.map.reset()
    assert len(snap.centres) == v and len(snap.instances) == 1  # unaffected by later changes


def test_outputs_carry_map_ids_and_merge_instances_that_share_one():
    from bifusion_ros.convert import cloud_to_numpy, id_colour, make_header, rosbags_factory
    from bifusion_ros.frame_io import result_outputs
    from bifusion_core.pipeline.session_map import MapFrame

    msgs = rosbags_factory()
    r = result_of([(0, 0, 0), (0.2, 0, 0), (3, 0, 0)])
    r.instances[2].score = 0.1  # below the threshold: left out, its points get 0
    n = len(r.points)
    point_ids = np.zeros(n, np.int64)
    point_ids[:432], point_ids[432:648] = 7, 9
    header = make_header(msgs, "map", 1.0)
    out = result_outputs(r, header, header, msgs, score_threshold=0.25, map_frame=MapFrame((7, 7, 9), point_ids))
    (inst,) = out["instances"].instances  # the two frame instances merged into map id 7 are one instance
    assert inst.id == 7 and inst.point_count == 432
    assert (inst.center.position.x, inst.size.x) == (pytest.approx(0.1), pytest.approx(0.5))
    pts = cloud_to_numpy(out["cloud"])
    assert set(pts["instance"][:432]) == {7} and (pts["instance"][432:] == 0).all()
    (box,) = [m for m in out["markers"].markers if m.ns == "boxes"]
    assert box.id == 7 and (box.color.r, box.color.g, box.color.b) == pytest.approx(id_colour(7))
    with pytest.raises(ValueError, match="map ids for 2 instances"):
        result_outputs(r, header, header, msgs, map_frame=MapFrame((7, 7), point_ids))


def test_an_instance_without_points_keeps_its_place_with_id_zero():
    s = map_session()
    r = result_of([(0, 0, 0), (2, 0, 0)])
    empty = Inst(9, 0, 0.9, [0], r.points)
    empty.point_indices = np.zeros(0, np.int64)
    r.instances.insert(1, empty)  # an instance without points between the two
    assert s.map_frame(inputs(1.0), r, "map").instance_ids == (1, 0, 2)
