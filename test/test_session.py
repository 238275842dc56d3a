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
