"""bifusion_ros.tf_buffer.TransformBuffer: tf2 semantics (interpolation, static chains, latest common time,
cache window, clear errors), fed with rosbags TransformStamped messages through a CDR round trip."""
import math
import threading
import time

import numpy as np
import pytest

from bifusion_ros.convert import make_header, quaternion_to_matrix, rosbags_factory
from bifusion_ros.interfaces import typestore
from bifusion_ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    TransformBuffer,
    TransformError,
    slerp,
)

STORE = typestore()
F = rosbags_factory(STORE)
# REP 103: x right, y down, z forward in the optical frame; x forward, y left, z up in camera_link
OPTICAL_Q = (-0.5, 0.5, -0.5, 0.5)
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotz(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def qz(deg):
    a = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(a), math.cos(a))


def tf(parent, child, stamp, t=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0)):
    """A rosbags TransformStamped after a CDR round trip (as read from a bag)."""
    msg = F("geometry_msgs/msg/TransformStamped")(
        header=make_header(F, parent, stamp), child_frame_id=child,
        transform=F("geometry_msgs/msg/Transform")(
            translation=F("geometry_msgs/msg/Vector3")(x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=F("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))
    name = "geometry_msgs/msg/TransformStamped"
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, name), name)


def camera_buffer():
    buf = TransformBuffer()
    assert buf.add(tf("map", "camera_link", 1.0, (0, 0, 0), qz(0)))
    assert buf.add(tf("map", "camera_link", 2.0, (2, 4, -2), qz(90)))
    static = F("tf2_msgs/msg/TFMessage")(transforms=[tf("camera_link", "camera_color_optical_frame", 0.0,
                                                        (0.0, 0.015, 0.0), OPTICAL_Q)])
    static = STORE.deserialize_cdr(STORE.serialize_cdr(static, "tf2_msgs/msg/TFMessage"), "tf2_msgs/msg/TFMessage")
    assert buf.add_message(static, static=True) == 1
    return buf


def test_interpolation_between_stamps():
    buf = camera_buffer()
    T = buf.lookup("map", "camera_link", 1.5)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, -1.0], atol=1e-12)  # midpoint translation
    np.testing.assert_allclose(T[:3, :3], rotz(45), atol=1e-12)  # slerp of 0 and 90 deg about z
    T = buf.lookup("map", "camera_link", 1.25)
    np.testing.assert_allclose(T[:3, 3], [0.5, 1.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rotz(22.5), atol=1e-12)  # constant angular rate
    np.testing.assert_allclose(buf.lookup("map", "camera_link", 2.0)[:3, :3], rotz(90), atol=1e-12)  # exact sample


def test_slerp_by_hand():
    qx120 = (math.sin(math.radians(60)), 0.0, 0.0, math.cos(math.radians(60)))
    half = slerp((0, 0, 0, 1), qx120, 0.5)
    np.testing.assert_allclose(half, (math.sin(math.radians(30)), 0, 0, math.cos(math.radians(30))), atol=1e-12)
    # the same rotation written as -q takes the short way too
    np.testing.assert_allclose(slerp((0, 0, 0, 1), -np.asarray(qx120), 0.5), half, atol=1e-12)


def test_static_optical_frame_chain():
    np.testing.assert_allclose(quaternion_to_matrix(OPTICAL_Q), R_LINK_OPTICAL, atol=1e-12)
    buf = camera_buffer()
    T = buf.lookup("map", "camera_color_optical_frame", 1.5)
    p_optical = np.array([0.0, 0.0, 2.0, 1.0])  # 2 m straight ahead of the lens
    p_link = np.array([2.0, 0.015, 0.0])  # forward along camera_link x, plus the static offset
    np.testing.assert_allclose((buf.lookup("camera_link", "camera_color_optical_frame", 1.5) @ p_optical)[:3], p_link,
                               atol=1e-12)
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    expected = np.array([2 * c - 0.015 * s + 1.0, 2 * s + 0.015 * c + 2.0, -1.0])
    np.testing.assert_allclose((T @ p_optical)[:3], expected, atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rotz(45) @ R_LINK_OPTICAL, atol=1e-12)
    # the reverse lookup is the inverse
    np.testing.assert_allclose(buf.lookup("camera_color_optical_frame", "map", 1.5) @ T, np.eye(4), atol=1e-12)
    # static edges are valid at any time: a static-only lookup far from the dynamic data works
    np.testing.assert_allclose(buf.lookup("camera_link", "camera_color_optical_frame", 1e6)[:3, :3], R_LINK_OPTICAL,
                               atol=1e-12)


def test_time_zero_is_latest_common_time():
    buf = camera_buffer()
    T, used = buf.lookup_with_time("map", "camera_color_optical_frame", 0)
    assert used == 2.0  # the dynamic edge's newest stamp; the static edge does not count
    np.testing.assert_allclose(T[:3, :3], rotz(90) @ R_LINK_OPTICAL, atol=1e-12)
    assert buf.latest_common_time("camera_link", "camera_color_optical_frame") == 0.0  # all static
    # two dynamic edges: map->odom has 1..3 s, odom->base 0.5..2.5 s -> common 2.5 s
    buf.add(tf("map", "odom", 1.0))
    buf.add(tf("map", "odom", 3.0, (3, 0, 0)))
    buf.add(tf("odom", "base", 0.5))
    buf.add(tf("odom", "base", 2.5, (0, 1, 0)))
    T, used = buf.lookup_with_time("map", "base", 0.0)
    assert used == 2.5
    np.testing.assert_allclose(T[:3, 3], [2.25, 1.0, 0.0], atol=1e-12)  # odom at 2.5 s: x = 3 * 1.5 / 2
    assert buf.latest_common_time("base", "camera_link") == 2.0


def test_identity_and_frames():
    buf = camera_buffer()
    np.testing.assert_array_equal(buf.lookup("map", "map", 1.7), np.eye(4))
    assert buf.frames() == ["camera_color_optical_frame", "camera_link", "map"]


def test_unknown_frame():
    buf = camera_buffer()
    with pytest.raises(FrameNotFoundError, match=r'"base_link" passed to lookup as source_frame does not exist') as e:
        buf.lookup("map", "base_link", 1.5)
    assert isinstance(e.value, LookupError) and e.value.source_frame == "base_link" and e.value.stamp == 1.5
    with pytest.raises(TransformError, match="target_frame is empty"):
        buf.lookup("", "map", 1.5)


def test_not_connected():
    buf = camera_buffer()
    buf.add(tf("world", "other", 0.0), static=True)
    with pytest.raises(ConnectivityError, match=r"between 'map' and 'other'.*not part of\s+the same tree"):
        buf.lookup("map", "other", 1.5)
    buf.add(tf("world", "moving", 1.0))
    with pytest.raises(ConnectivityError):
        buf.lookup("camera_color_optical_frame", "moving", 0)  # via the latest common time
    with pytest.raises(ConnectivityError):
        buf.latest_common_time("map", "other")


def test_extrapolation():
    buf = camera_buffer()
    with pytest.raises(ExtrapolationError, match=r"into the future. Requested time 2\.500000000 but the latest data is "
                                                 r"at time 2\.000000000.*from frame \[camera_color_optical_frame\] to "
                                                 r"frame \[map\]"):
        buf.lookup("map", "camera_color_optical_frame", 2.5)
    with pytest.raises(ExtrapolationError, match=r"into the past. Requested time 0\.500000000 but the earliest data"):
        buf.lookup("camera_color_optical_frame", "map", 0.5)  # failing edge on the target side
    single = TransformBuffer()
    single.add(tf("map", "cam", 1.0))
    single.lookup("map", "cam", 1.0)
    with pytest.raises(ExtrapolationError, match="only time 1.000000000 is in the buffer"):
        single.lookup("map", "cam", 1.1)


def test_edges_above_the_common_ancestor_are_not_needed():
    buf = TransformBuffer()
    buf.add(tf("map", "odom", 0.5))  # stale
    buf.add(tf("map", "odom", 1.0))
    buf.add(tf("odom", "base", 1.0))
    buf.add(tf("odom", "base", 3.0, (2, 0, 0)))
    buf.add(tf("base", "cam", 0.0, (0, 0, 1)), static=True)
    np.testing.assert_allclose(buf.lookup("odom", "cam", 2.5)[:3, 3], [1.5, 0, 1], atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "odom", 2.5)[:3, 3], [-1.5, 0, -1], atol=1e-12)
    with pytest.raises(ExtrapolationError, match="into the future"):
        buf.lookup("map", "cam", 2.5)


def test_cache_window_and_repeated_data():
    buf = TransformBuffer(cache_time=10.0)
    for s in range(21):
        assert buf.add(tf("map", "cam", float(s), (s, 0, 0)))
    with pytest.raises(ExtrapolationError, match=r"into the past. Requested time 5\.0+ but the earliest data is at "
                                                 r"time 10\.0+"):
        buf.lookup("map", "cam", 5.0)
    assert buf.add(tf("map", "cam", 3.0)) is False  # older than newest - cache_time: rejected
    assert buf.add(tf("map", "cam", 15.0, (99, 0, 0))) is False  # repeated stamp: the first one stays
    np.testing.assert_allclose(buf.lookup("map", "cam", 15.5)[:3, 3], [15.5, 0, 0])
    buf.clear()
    with pytest.raises(ExtrapolationError, match="cache of this frame is empty"):
        buf.lookup("map", "cam", 15.0)


def test_invalid_input():
    buf = TransformBuffer()
    with pytest.raises(ValueError, match="to itself"):
        buf.add(tf("map", "map", 1.0))
    with pytest.raises(ValueError, match="not finite"):
        buf.add(tf("map", "cam", 1.0, (np.nan, 0, 0)))
    with pytest.raises(ValueError, match="zero length"):
        buf.add(tf("map", "cam", 1.0, q=(0, 0, 0, 0)))
    assert buf.add(tf("map", "cam", 1.0, q=(0, 0, 0, 2.0)))  # normalised
    np.testing.assert_allclose(buf.lookup("map", "cam", 1.0), np.eye(4))


def test_timeout_waits_for_data():
    buf = camera_buffer()

    def later():
        time.sleep(0.05)
        buf.add(tf("map", "camera_link", 3.0, (4, 8, -4), qz(90)))

    thread = threading.Thread(target=later)
    thread.start()
    T = buf.lookup("map", "camera_link", 2.5, timeout=5.0)
    thread.join()
    np.testing.assert_allclose(T[:3, 3], [3, 6, -3], atol=1e-12)
    assert not buf.can_transform("map", "camera_link", 4.0, timeout=0.01)


def test_add_status_tells_old_repeated_and_conflicting_data_apart():
    from bifusion_ros.tf_buffer import ACCEPTED, OLD_DATA, REPEATED_CONFLICT, REPEATED_DATA, RepeatedDataError

    for strict in (False, True):
        buf = TransformBuffer(cache_time=10.0, strict_repeats=strict)
        assert buf.add_status(tf("map", "cam", 20.0, (1, 0, 0))) == (ACCEPTED, "")
        assert buf.add_status(tf("map", "cam", 22.0, (3, 0, 0))) == (ACCEPTED, "")
        assert buf.add_status(tf("map", "cam", 5.0))[0] == OLD_DATA
        assert buf.add_status(tf("map", "cam", 22.0, (3, 0, 0), q=(0, 0, 0, -1.0)))[0] == REPEATED_DATA  # -q = q
        np.testing.assert_allclose(buf.lookup("map", "cam", 22.0)[:3, 3], [3, 0, 0])  # harmless: still used
        status, detail = buf.add_status(tf("map", "cam", 20.0, (1, 1.43, 0)))
        assert status == REPEATED_CONFLICT and "1.430 m" in detail and "'map' -> 'cam' at 20.0" in detail
        if not strict:  # tf2: the first value stays and is used
            np.testing.assert_allclose(buf.lookup("map", "cam", 20.0)[:3, 3], [1, 0, 0])
            np.testing.assert_allclose(buf.lookup("map", "cam", 21.0)[:3, 3], [2, 0, 0])
            continue
        for at in (20.0, 21.0):  # the ambiguous stamp itself, and an interpolation from it
            with pytest.raises(RepeatedDataError, match="received twice with different values"):
                buf.lookup("map", "cam", at, timeout=5.0)  # no wait: more data cannot resolve it
        assert isinstance(RepeatedDataError("x"), TransformError)
        assert buf.add(tf("map", "cam", 23.0, (4, 0, 0)))
        np.testing.assert_allclose(buf.lookup("map", "cam", 22.5)[:3, 3], [3.5, 0, 0])  # not depending on it
