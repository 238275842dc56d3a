"""bifusion_ros.convert: images, camera info, transforms, labelled clouds, markers and instances, checked through
CDR serialisation with rosbags message classes (the same code serves rclpy classes in the node)."""
import array
import math
from types import SimpleNamespace

import numpy as np
import pytest
from pointcloud2 import read_points

from bifusion_ros.convert import (
    CLASS_PALETTE,
    camera_info_to_intrinsics,
    check_rgb_depth,
    class_colour,
    cloud_to_numpy,
    image_to_numpy,
    instance_array,
    intrinsics_to_camera_info,
    labelled_cloud,
    make_header,
    make_time,
    marker_array,
    matrix_to_pose,
    matrix_to_transform,
    numpy_to_image,
    pack_rgb,
    quaternion_to_matrix,
    rclpy_factory,
    rosbags_factory,
    transform_to_matrix,
    unpack_rgb,
)
from bifusion_ros.interfaces import typestore

STORE = typestore()
F = rosbags_factory(STORE)


def cdr(msg):
    """Serialise and deserialise a rosbags message (what a bag write + read does)."""
    name = msg.__msgtype__
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, name), name)


def header(frame="camera_color_optical_frame", stamp=12.5):
    return make_header(F, frame, stamp)


# ------------------------------------------------------------------------------------------------------ images
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(encoding):
    src = RGB if encoding in ("rgb8", "bgr8") else np.concatenate([RGB, np.full((3, 5, 1), 7, np.uint8)], axis=2)
    msg = cdr(numpy_to_image(src, encoding, header(), F))
    assert (msg.height, msg.width, msg.encoding, msg.step) == (3, 5, encoding, 5 * len(encoding[:-1]))
    raw = bytes(msg.data[: len(encoding) - 1])
    first = RGB[0, 0]
    expected = {"rgb8": first, "bgr8": first[::-1], "rgba8": [*first, 7], "bgra8": [*first[::-1], 7]}[encoding]
    assert list(raw) == list(expected)  # channel order on the wire
    out = image_to_numpy(msg)
    assert out.shape == (3, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)
    # a new, writable array that does not alias the message buffer (rosbags hands out read-only views)
    assert out.flags.writeable and not np.shares_memory(out, np.asarray(msg.data))


def test_rgba_from_rgb_gets_opaque_alpha():
    msg = numpy_to_image(RGB, "bgra8", header(), F)
    assert np.all(np.asarray(msg.data).reshape(3, 5, 4)[..., 3] == 255)


def test_mono8_round_trip_replicates_channels():
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    out = image_to_numpy(cdr(numpy_to_image(grey, "mono8", header(), F)))
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)
    # the replicated image goes back to mono8 exactly (luma of a grey pixel is the grey value)
    again = cdr(numpy_to_image(out, "mono8", header(), F))
    np.testing.assert_array_equal(np.asarray(again.data).reshape(4, 6), grey)


def test_16uc1_millimetres_to_metres_zero_is_nan():
    mm = np.array([[0, 1000, 1234], [65535, 1, 0]], dtype=np.uint16)
    msg = cdr(numpy_to_image(mm, "16UC1", header(), F))
    assert msg.step == 6 and msg.is_bigendian == 0
    depth = image_to_numpy(msg)
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    assert np.isnan(depth[0, 0]) and np.isnan(depth[1, 2])
    np.testing.assert_allclose(depth[0, 1:], [1.0, 1.234], rtol=1e-6)
    np.testing.assert_allclose(depth[1, :2], [65.535, 0.001], rtol=1e-6)
    # float metres in, NaN -> 0 ("no reading") on the wire
    back = cdr(numpy_to_image(depth, "16UC1", header(), F))
    np.testing.assert_array_equal(np.asarray(back.data).view("<u2").reshape(2, 3), mm)
    np.testing.assert_array_equal(image_to_numpy(msg, zero_is_invalid=False)[0, 0], 0.0)


def test_32fc1_round_trip_keeps_nan():
    m = np.array([[0.5, np.nan, 2.25], [3.0, 0.0, 10.0]], dtype=np.float32)
    msg = cdr(numpy_to_image(m, "32FC1", header(), F))
    assert msg.step == 12
    out = image_to_numpy(msg)
    np.testing.assert_array_equal(np.isnan(out), [[False, True, False], [False, True, False]])  # 0 -> NaN
    np.testing.assert_array_equal(out[np.isfinite(out)], [0.5, 2.25, 3.0, 10.0])
    np.testing.assert_array_equal(image_to_numpy(msg, zero_is_invalid=False)[1, 1], 0.0)


def _padded(encoding, pixels_bytes, height, width, bpp, pad, bigendian=0):
    rows = [pixels_bytes[r * width * bpp:(r + 1) * width * bpp] + b"\xee" * pad for r in range(height)]
    data = np.frombuffer(b"".join(rows), np.uint8).copy()
    return F("sensor_msgs/msg/Image")(header=header(), height=height, width=width, encoding=encoding,
                                      is_bigendian=bigendian, step=width * bpp + pad, data=data)


def test_row_padding_is_skipped():
    msg = cdr(_padded("rgb8", RGB.tobytes(), 3, 5, 3, pad=4))
    assert msg.step == 19 and len(msg.data) == 57
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)
    mm = np.arange(1, 7, dtype=np.uint16).reshape(2, 3) * 100
    depth = image_to_numpy(cdr(_padded("16UC1", mm.astype("<u2").tobytes(), 2, 3, 2, pad=2)))
    np.testing.assert_allclose(depth, mm / 1000.0, rtol=1e-6)


def test_big_endian_depth():
    mm = np.array([[1, 258, 4000]], dtype=np.uint16)
    depth = image_to_numpy(cdr(_padded("16UC1", mm.astype(">u2").tobytes(), 1, 3, 2, pad=0, bigendian=1)))
    np.testing.assert_allclose(depth, mm / 1000.0, rtol=1e-6)
    m = np.array([[1.5, -2.0], [np.pi, 7.0]], dtype=np.float32)
    out = image_to_numpy(cdr(_padded("32FC1", m.astype(">f4").tobytes(), 2, 2, 4, pad=8, bigendian=1)))
    np.testing.assert_array_equal(out, m)


def test_rclpy_style_payloads_are_read():
    """rclpy stores uint8[] as array.array('B'); a factory whose classes have no __msgtype__ gets one."""
    plain = lambda name: (lambda **kw: SimpleNamespace(**kw))  # noqa: E731
    msg = numpy_to_image(RGB, "bgr8", header(), plain)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)
    msg.data = bytes(msg.data)
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)


@pytest.mark.parametrize("encoding", ["yuv422", "8UC3", "mono16", "16SC1", "bayer_rggb8", ""])
def test_unsupported_encoding_is_rejected(encoding):
    msg = F("sensor_msgs/msg/Image")(header=header(), height=1, width=1, encoding=encoding, is_bigendian=0,
                                     step=2, data=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_to_numpy(msg)
    with pytest.raises(ValueError, match="unsupported image encoding"):
        numpy_to_image(np.zeros((1, 1), np.uint8), encoding, header(), F)


def test_bad_sizes_are_rejected():
    msg = F("sensor_msgs/msg/Image")(header=header(), height=2, width=3, encoding="rgb8", is_bigendian=0,
                                     step=9, data=np.zeros(17, np.uint8))
    with pytest.raises(ValueError, match=r"data has 17 bytes, expected height x step = 2 x 9 = 18"):
        image_to_numpy(msg)
    msg.step, msg.data = 8, np.zeros(16, np.uint8)
    with pytest.raises(ValueError, match=r"step 8 < width 3 x 3 bytes per pixel = 9"):
        image_to_numpy(msg)
    with pytest.raises(ValueError, match="expected shape"):
        numpy_to_image(np.zeros((2, 3), np.uint8), "rgb8", header(), F)
    with pytest.raises(ValueError, match="0..65535"):
        numpy_to_image(np.full((1, 1), 70.0), "16UC1", header(), F)
    with pytest.raises(ValueError, match="integer"):
        numpy_to_image(np.zeros((1, 1, 3), np.float32), "rgb8", header(), F)


def test_check_rgb_depth():
    assert check_rgb_depth(np.zeros((480, 640, 3), np.uint8), np.zeros((480, 640), np.float32)) == (480, 640)
    with pytest.raises(ValueError, match=r"colour image is 640x480 but depth image is 848x480.*align_depth"):
        check_rgb_depth(np.zeros((480, 640, 3), np.uint8), np.zeros((480, 848), np.float32))
    img = numpy_to_image(np.zeros((2, 4, 3), np.uint8), "rgb8", header(), F)
    dep = numpy_to_image(np.zeros((2, 3), np.float32), "32FC1", header(), F)
    with pytest.raises(ValueError, match="4x2 but depth image is 3x2"):
        check_rgb_depth(img, dep)


# ------------------------------------------------------------------------------------------------- camera info
def camera_info(model="plumb_bob", d=(0.0,) * 5, k=(615.0, 0.0, 320.5, 0.0, 616.0, 240.25, 0.0, 0.0, 1.0)):
    return cdr(F("sensor_msgs/msg/CameraInfo")(
        header=header(), height=480, width=640, distortion_model=model, d=np.asarray(d, np.float64),
        k=np.asarray(k, np.float64), r=np.eye(3).reshape(-1), p=np.zeros(12)))


def test_camera_info_realsense_plumb_bob():
    intr = camera_info_to_intrinsics(camera_info())
    assert (*intr.as_tuple(), intr.width, intr.height) == (615.0, 616.0, 320.5, 240.25, 640, 480)
    assert intr.distortion_model == "plumb_bob" and not intr.has_distortion
    np.testing.assert_array_equal(intr.K, [[615.0, 0, 320.5], [0, 616.0, 240.25], [0, 0, 1]])


def test_camera_info_distortion_policy():
    d = (-0.055, 0.066, 0.0003, 0.0007, -0.021)  # a D455 colour stream, labelled plumb_bob
    intr = camera_info_to_intrinsics(camera_info(d=d))
    assert intr.has_distortion and intr.d == pytest.approx(d)
    for model in ("", "none", "equidistant", "rational_polynomial"):
        assert camera_info_to_intrinsics(camera_info(model=model, d=(0.0,) * 8)).fx == 615.0
    assert camera_info_to_intrinsics(camera_info(model="", d=())).width == 640
    for model in ("rational_polynomial", "equidistant", "none"):
        with pytest.raises(ValueError, match=f"distortion_model '{model}' with non-zero coefficients"):
            camera_info_to_intrinsics(camera_info(model=model, d=(0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)))


def test_camera_info_invalid_k():
    with pytest.raises(ValueError, match="uncalibrated"):
        camera_info_to_intrinsics(camera_info(k=(0.0,) * 9))
    with pytest.raises(ValueError, match="non-finite"):
        camera_info_to_intrinsics(camera_info(k=(np.nan, 0, 1, 0, 1, 1, 0, 0, 1)))
    with pytest.raises(ValueError, match="bottom row"):
        camera_info_to_intrinsics(camera_info(k=(500, 0, 1, 0, 500, 1, 0, 0, 0)))
    with pytest.raises(ValueError, match="skew"):
        camera_info_to_intrinsics(camera_info(k=(500, 2, 1, 0, 500, 1, 0, 0, 1)))


def test_intrinsics_to_camera_info_round_trips_and_checks():
    K = np.array([[615.0, 0.0, 320.5], [0.0, 616.0, 240.25], [0.0, 0.0, 1.0]])
    msg = cdr(intrinsics_to_camera_info(K, header(), F, width=640, height=480))
    assert (msg.width, msg.height, msg.distortion_model, msg.header.frame_id) == (640, 480, "plumb_bob",
                                                                                  "camera_color_optical_frame")
    np.testing.assert_array_equal(msg.d, np.zeros(5))
    np.testing.assert_array_equal(msg.k.reshape(3, 3), K)
    np.testing.assert_array_equal(msg.r.reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(msg.p.reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
    assert (msg.binning_x, msg.binning_y, msg.roi.width, msg.roi.height) == (0, 0, 0, 0)
    intr = camera_info_to_intrinsics(msg)
    assert (*intr.as_tuple(), intr.width, intr.height) == (615.0, 616.0, 320.5, 240.25, 640, 480)
    # a CameraIntrinsics (here a D455 colour stream with plumb_bob coefficients) is written as it is read
    distorted = camera_info_to_intrinsics(camera_info(d=(-0.055, 0.066, 0.0003, 0.0007, -0.021)))
    assert camera_info_to_intrinsics(cdr(intrinsics_to_camera_info(distorted, header(), F))) == distorted
    # the rules camera_info_to_intrinsics applies
    for bad, match in ((np.zeros((3, 3)), "uncalibrated"), (np.diag([500.0, 500.0, 0.0]), "bottom row"),
                       (np.array([[500.0, 1.0, 0.0], [0.0, 500.0, 0.0], [0.0, 0.0, 1.0]]), "skew"),
                       (np.full((3, 3), np.nan), "non-finite"), (np.eye(4), r"\(3, 3\)")):
        with pytest.raises(ValueError, match=match):
            intrinsics_to_camera_info(bad, header(), F, width=640, height=480)
    with pytest.raises(ValueError, match="must be positive"):
        intrinsics_to_camera_info(K, header(), F, width=0, height=480)
    with pytest.raises(ValueError, match="width and height are required"):
        intrinsics_to_camera_info(K, header(), F)
    with pytest.raises(ValueError, match="contradicts"):
        intrinsics_to_camera_info(intr, header(), F, width=320)
    from bifusion_core.geometry import CameraIntrinsics

    with pytest.raises(ValueError, match="distortion_model 'equidistant' with non-zero"):
        intrinsics_to_camera_info(CameraIntrinsics(500, 500, 1, 1, 2, 2, "equidistant", (0.1,)), header(), F)
    # intrinsics without an image size take it from the arguments, as a matrix does
    plain = cdr(intrinsics_to_camera_info(CameraIntrinsics(615.0, 616.0, 320.5, 240.25), header(), F,
                                          width=640, height=480))
    assert camera_info_to_intrinsics(plain).K.tolist() == [[615.0, 0, 320.5], [0, 616.0, 240.25], [0, 0, 1]]
    with pytest.raises(ValueError, match="width and height are required"):
        intrinsics_to_camera_info(CameraIntrinsics(615.0, 616.0, 320.5, 240.25), header(), F)


def test_camera_info_for_rclpy_style_classes_uses_python_floats():
    """rclpy's generated setters accept lists of Python floats for ``d`` (a sequence) and ``k``/``r``/``p``
    (fixed arrays); a factory whose classes are not rosbags' gets exactly that."""
    made = {}

    def ctor(name):
        def build(**fields):
            made.setdefault(name, []).append(fields)
            return SimpleNamespace(**fields)
        return build

    family = {n: ctor(n) for n in ("sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/RegionOfInterest")}
    msg = intrinsics_to_camera_info(np.diag([400.0, 410.0, 1.0]), "hdr", family, width=8, height=6)
    for field, n in (("d", 5), ("k", 9), ("r", 9), ("p", 12)):
        value = getattr(msg, field)
        assert type(value) is list and len(value) == n and all(type(v) is float for v in value), field
    assert type(msg.width) is int and msg.header == "hdr" and msg.k[0] == 400.0 and msg.p[5] == 410.0


def test_make_time_is_exact_nanoseconds():
    t = make_time(F, 1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789)
    h = make_header(F, "map", t)
    assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (1_700_000_000, 123_456_789, "map")


def test_package_layout_re_exports_one_module_per_family():
    import importlib

    from bifusion_ros import convert

    families = {
        "factory": ["MessageFactory", "rosbags_factory", "rclpy_factory", "make_time", "make_header"],
        "image": ["IMAGE_ENCODINGS", "COLOUR_ENCODINGS", "DEPTH_ENCODINGS", "RAW_ENCODINGS", "image_to_numpy",
                  "raw_image_array", "numpy_to_image", "check_rgb_depth", "ID_ENCODINGS", "id_image_to_numpy"],
        "camera_info": ["camera_info_to_intrinsics", "intrinsics_to_camera_info"],
        "transform": ["quaternion_to_matrix", "matrix_to_quaternion", "transform_to_tq", "transform_to_matrix",
                      "matrix_to_transform", "matrix_to_pose"],
        "cloud": ["CLOUD_FIELDS", "pack_rgb", "unpack_rgb", "labelled_cloud", "cloud_to_numpy"],
        "markers": ["InstanceLike", "CLASS_PALETTE", "class_colour", "id_colour", "marker_array", "instance_array"],
    }
    exported = []
    for family, names in families.items():
        module = importlib.import_module(f"bifusion_ros.convert.{family}")
        assert sorted(module.__all__) == sorted(names), family
        for name in names:
            assert getattr(convert, name) is getattr(module, name), name
        exported += names
    assert sorted(convert.__all__) == sorted(exported)
    # the quaternion maths is bifusion_core.geometry's, not a second copy
    from bifusion_core import geometry

    assert convert.quaternion_to_matrix is geometry.quaternion_to_matrix
    assert convert.matrix_to_quaternion is geometry.matrix_to_quaternion


# -------------------------------------------------------------------------------------------------- transforms
def transform_msg(t, q):
    return F("geometry_msgs/msg/Transform")(translation=F("geometry_msgs/msg/Vector3")(x=t[0], y=t[1], z=t[2]),
                                            rotation=F("geometry_msgs/msg/Quaternion")(x=q[0], y=q[1], z=q[2], w=q[3]))


def test_transform_to_matrix_normalises_and_checks():
    s = math.sqrt(0.5)
    T = transform_to_matrix(transform_msg((1.0, 2.0, 3.0), (0.0, 0.0, 2 * s, 2 * s)))  # 90 deg about z, |q| = 2
    np.testing.assert_allclose(T, [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], atol=1e-12)
    with pytest.raises(ValueError, match="not finite"):
        transform_to_matrix(transform_msg((0.0, np.nan, 0.0), (0.0, 0.0, 0.0, 1.0)))
    with pytest.raises(ValueError, match="not finite"):
        transform_to_matrix(transform_msg((0.0, 0.0, 0.0), (0.0, np.inf, 0.0, 1.0)))
    with pytest.raises(ValueError, match="zero length"):
        transform_to_matrix(transform_msg((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)))


def test_matrix_transform_round_trip():
    R = quaternion_to_matrix([0.1, -0.7, 0.3, 0.6])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, [0.5, -1.5, 2.0]
    ts = cdr(matrix_to_transform(T, F, header("map", 3.25), "camera_link"))
    assert ts.header.frame_id == "map" and ts.child_frame_id == "camera_link"
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (3, 250_000_000)
    np.testing.assert_allclose(transform_to_matrix(ts), T, atol=1e-12)
    np.testing.assert_allclose(transform_to_matrix(matrix_to_pose(T, F)), T, atol=1e-12)
    bad = T.copy()
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="proper rotation"):
        matrix_to_transform(bad, F)


# ------------------------------------------------------------------------------------------------ point clouds
def test_labelled_cloud_reads_back_with_pointcloud2():
    pts = np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0], [1e3, -2.0, 0.5], [0.1, 0.2, 0.3]])
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [18, 52, 86]], dtype=np.uint8)
    label = np.array([0, 3, 199, 7])
    inst = np.array([1, -1, 42, 0])
    score = np.array([0.9, 0.0, 0.5, 0.25])
    alpha = np.array([0.0, 1.0, 0.5, 0.75])
    msg = cdr(labelled_cloud(pts, rgb, label, inst, score, alpha, header("map"), F))
    names = [f.name for f in msg.fields]
    assert names == ["x", "y", "z", "rgb", "label", "instance", "score", "alpha"]
    assert [f.datatype for f in msg.fields] == [7, 7, 7, 7, 6, 6, 7, 7]
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12, 16, 20, 24, 28] and all(f.count == 1 for f in msg.fields)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 4, 32, 128)
    assert msg.is_bigendian is False and msg.is_dense is True and msg.header.frame_id == "map"

    cloud = read_points(msg)
    assert cloud.dtype.names == tuple(names)
    assert cloud.dtype["label"] == np.uint32 and cloud.dtype["rgb"] == np.float32
    np.testing.assert_array_equal(np.stack([cloud["x"], cloud["y"], cloud["z"]], 1), pts.astype(np.float32))
    np.testing.assert_array_equal(cloud["label"], label)
    np.testing.assert_array_equal(cloud["instance"], [1, 0, 42, 0])  # -1 = no instance -> 0
    np.testing.assert_array_equal(cloud["score"], score.astype(np.float32))
    np.testing.assert_array_equal(cloud["alpha"], alpha.astype(np.float32))
    # PCL / sensor_msgs_py packing: the float32's bits are 0x00RRGGBB
    np.testing.assert_array_equal(cloud["rgb"].view(np.uint32), [0xFF0000, 0x00FF00, 0x0000FF, 0x123456])
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), rgb)

    mine = cloud_to_numpy(msg)
    assert mine.dtype.names == tuple(names)
    for name in names:
        np.testing.assert_array_equal(mine[name].view(np.uint32), cloud[name].view(np.uint32))


def test_labelled_cloud_empty_optional_fields_and_nan():
    empty = cdr(labelled_cloud(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, int), np.zeros(0, int),
                               np.zeros(0), np.zeros(0), header("map"), F))
    assert (empty.width, empty.height, empty.row_step, len(empty.data), empty.point_step) == (0, 1, 0, 0, 32)
    assert len(read_points(empty)) == 0 and len(cloud_to_numpy(empty)) == 0 and empty.is_dense

    msg = cdr(labelled_cloud([[np.nan, 0, 1], [1, 2, 3]], None, [1, 2], None, None, None, header(), F))
    assert [f.name for f in msg.fields] == ["x", "y", "z", "label"] and msg.point_step == 16
    assert msg.is_dense is False
    cloud = read_points(msg, skip_nans=True)
    assert len(cloud) == 1 and cloud["label"][0] == 2
    with pytest.raises(ValueError, match=r"label must have shape \(2,\)"):
        labelled_cloud(np.zeros((2, 3)), None, [1, 2, 3], None, None, None, header(), F)
    with pytest.raises(ValueError, match="label must lie in"):
        labelled_cloud(np.zeros((1, 3)), None, [-1], None, None, None, header(), F)


def test_cloud_to_numpy_padding_and_big_endian():
    fields = [F("sensor_msgs/msg/PointField")(name=n, offset=o, datatype=d, count=c)
              for n, o, d, c in (("x", 0, 7, 1), ("n", 4, 4, 2))]
    rows = []
    for r in range(2):
        row = b""
        for i in range(2):
            row += np.array([r + 0.5 * i], ">f4").tobytes() + np.array([r, i], ">u2").tobytes() + b"\0" * 4
        rows.append(row + b"\xff" * 4)  # row padding
    msg = F("sensor_msgs/msg/PointCloud2")(header=header(), height=2, width=2, fields=fields, is_bigendian=True,
                                           point_step=12, row_step=28, data=np.frombuffer(b"".join(rows), np.uint8),
                                           is_dense=True)
    out = cloud_to_numpy(cdr(msg))
    assert out.dtype.names == ("x", "n_0", "n_1")
    np.testing.assert_array_equal(out["x"], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(out["n_0"], [0, 0, 1, 1])
    np.testing.assert_array_equal(out["n_1"], [0, 1, 0, 1])


def test_pack_rgb_float_input():
    np.testing.assert_array_equal(unpack_rgb(pack_rgb(np.array([[1.0, 0.5, 0.0]]))), [[255, 128, 0]])


# ---------------------------------------------------------------------------------------------------- instances
def instances():
    return [
        SimpleNamespace(id=3, class_id=2, class_name="chair", score=0.874, center=np.array([1.0, 2.0, 0.5]),
                        size=np.array([0.5, 0.6, 1.0]), point_count=1200),
        SimpleNamespace(id=7, class_id=25, class_name="table", score=0.5, center=(0.0, -1.0, 0.4),
                        size=(1.2, 0.8, 0.0), point_count=3400),
    ]


def test_marker_array():
    arr = cdr(marker_array(instances(), header("map", 5.0), F, text_height=0.1))
    m = arr.markers
    assert len(m) == 5
    assert m[0].action == 3 and m[0].id == 0  # DELETEALL first
    boxes, labels = m[1::2], m[2::2]
    assert [(b.ns, b.id, b.type, b.action) for b in boxes] == [("boxes", 3, 1, 0), ("boxes", 7, 1, 0)]
    assert [(t.ns, t.id, t.type, t.action) for t in labels] == [("labels", 3, 9, 0), ("labels", 7, 9, 0)]
    assert [t.text for t in labels] == ["chair 0.87", "table 0.50"]
    assert all(x.header.frame_id == "map" and x.header.stamp.sec == 5 for x in m)
    assert all(x.lifetime.sec == 0 and x.lifetime.nanosec == 0 for x in m)
    b = boxes[0]
    assert (b.pose.position.x, b.pose.position.y, b.pose.position.z) == (1.0, 2.0, 0.5)
    assert (b.pose.orientation.w, b.scale.x, b.scale.y, b.scale.z) == (1.0, 0.5, 0.6, 1.0)
    assert boxes[1].scale.z == pytest.approx(1e-3)  # a flat box still gets a visible thickness
    assert (b.color.r, b.color.g, b.color.b) == pytest.approx(tuple(CLASS_PALETTE[2]))
    assert (boxes[1].color.r, boxes[1].color.g, boxes[1].color.b) == pytest.approx(class_colour(25))
    assert class_colour(25) == class_colour(5)
    assert labels[0].pose.position.z == pytest.approx(0.5 + 0.5 + 0.1)  # above the top face
    assert labels[0].scale.z == pytest.approx(0.1)
    only_delete = cdr(marker_array([], header("map"), F)).markers
    assert len(only_delete) == 1 and only_delete[0].action == 3


def test_instance_array_round_trip():
    arr = cdr(instance_array(instances(), header("map", 7.5), F))
    assert arr.header.frame_id == "map" and arr.header.stamp.nanosec == 500_000_000
    a, b = arr.instances
    assert (a.id, a.class_id, a.class_name, a.point_count) == (3, 2, "chair", 1200)
    assert a.score == pytest.approx(0.874, abs=1e-6)
    assert (a.center.position.x, a.center.position.y, a.center.position.z, a.center.orientation.w) == (1, 2, 0.5, 1)
    assert (b.size.x, b.size.y, b.size.z) == pytest.approx((1.2, 0.8, 0.0))
    bad = SimpleNamespace(**{**vars(instances()[0]), "id": 0})
    with pytest.raises(ValueError, match="0 is never used"):
        instance_array([bad], header(), F)


def test_rclpy_factory_is_lazy():
    factory = rclpy_factory()  # importing / creating it needs no ROS
    try:
        import sensor_msgs.msg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="sensor_msgs/msg/Image not importable"):
            factory("sensor_msgs/msg/Image")
    else:  # pragma: no cover - only with ROS 2 sourced
        assert factory("sensor_msgs/Image").__name__ == "Image"
