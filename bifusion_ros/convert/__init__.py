"""ROS message <-> numpy converters, usable with rclpy *and* ``rosbags`` messages (no ROS import at module level).

Reading works by duck typing on the standard ROS 2 field names (``msg.height``, ``msg.data``, ...), so a
message produced by rclpy, deserialised by ``rosbags`` or built by hand with the same attribute names all work.
``data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')`` (rclpy) or a ``uint8`` numpy
array (rosbags).

Building messages needs the message *classes*, which differ between the two worlds. Every function that
builds a message therefore takes a **message factory** ``msgs``: a callable (or a mapping) from a ROS type
name (``"sensor_msgs/msg/Image"``; ``"sensor_msgs/Image"`` works too) to a constructor that accepts keyword
arguments and fills every field it is not given with its default.

- the node passes :func:`rclpy_factory()` (imports ``<package>.msg`` lazily, rclpy classes already default
  every field);
- replay and tests pass :func:`rosbags_factory(store) <rosbags_factory>` (``rosbags`` dataclasses have no
  defaults, the factory supplies them).

``uint8[]`` payloads are written as a ``uint8`` numpy array for ``rosbags`` constructors (recognised by their
``__msgtype__`` attribute) and as ``array.array('B')`` otherwise (what rclpy stores; it is copied without a
Python-level loop). Scalars are passed as plain Python ``int``/``float`` (rclpy rejects numpy scalars).

Instances (:func:`marker_array`, :func:`instance_array`) are any objects with these attributes
(:class:`InstanceLike`): ``id`` (int > 0, persistent), ``class_id`` (int >= 0), ``class_name`` (str),
``score`` (float), ``center`` (3,) box centre in the header's frame, metres, ``size`` (3,) box extent along
its axes, metres, ``point_count`` (int); optionally ``orientation`` (4,) quaternion ``x, y, z, w`` of the
box (identity, i.e. an axis-aligned box, when absent or ``None``).
"""
from __future__ import annotations

import importlib
import math
from array import array as _pyarray
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from bifusion_core.data.frame import matrix_from_quaternion, quaternion_from_matrix
from bifusion_ros.sync import stamp_to_ns

__all__ = [
    "IMAGE_ENCODINGS",
    "CLASS_PALETTE",
    "CLOUD_FIELDS",
    "Intrinsics",
    "InstanceLike",
    "rosbags_factory",
    "rclpy_factory",
    "make_header",
    "image_to_numpy",
    "numpy_to_image",
    "check_rgb_depth",
    "camera_info_to_intrinsics",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "transform_to_tq",
    "transform_to_matrix",
    "matrix_to_transform",
    "matrix_to_pose",
    "pack_rgb",
    "unpack_rgb",
    "labelled_cloud",
    "cloud_to_numpy",
    "class_colour",
    "marker_array",
    "instance_array",
]

MessageFactory = Callable[[str], Callable[..., Any]] | Mapping[str, Callable[..., Any]]


# --------------------------------------------------------------------------------------------------------------
# Message factories
# --------------------------------------------------------------------------------------------------------------
def _full_type_name(name: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    parts = name.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS message type name: {name!r} (expected 'package/msg/Type')")
    return "/".join(parts)


_NUMPY_BASE = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


class _RosbagsConstructor:
    """Calls a ``rosbags`` message dataclass with defaults for every field not given."""

    def __init__(self, store, typename: str, cache: dict | None = None):
        self._store = store
        self._cache = {} if cache is None else cache
        self.__msgtype__ = typename
        self.cls = store.types[typename]
        self._consts = {name: value for name, _, value in store.fielddefs[typename][0]}

    def __getattr__(self, name):  # constants such as Marker.CUBE or PointField.FLOAT32
        consts = self.__dict__.get("_consts", {})
        if name in consts:
            return consts[name]
        raise AttributeError(name)

    def _default(self, desc):
        kind, spec = desc
        kind = int(kind)
        if kind == 1:  # BASE
            base = spec[0]
            if base in ("string", "wstring"):
                return ""
            if base == "bool":
                return False
            if base.startswith("float"):
                return 0.0
            return 0
        if kind == 2:  # NAME
            if spec not in self._cache:
                self._cache[spec] = _RosbagsConstructor(self._store, spec, self._cache)
            return self._cache[spec]()
        sub, length = spec
        if int(sub[0]) == 1 and sub[1][0] in _NUMPY_BASE:
            n = length if kind == 3 else 0
            return np.zeros(n, dtype=_NUMPY_BASE[sub[1][0]])
        if kind == 3:  # fixed-size array of strings or messages
            return [self._default(sub) for _ in range(length)]
        return []  # sequence

    def __call__(self, **fields):
        names = [name for name, _ in self._store.fielddefs[self.__msgtype__][1]]
        unknown = set(fields) - set(names)
        if unknown:
            raise TypeError(f"{self.__msgtype__} has no field(s) {sorted(unknown)}; fields: {names}")
        for name, desc in self._store.fielddefs[self.__msgtype__][1]:
            if name not in fields:
                fields[name] = self._default(desc)
        return self.cls(**fields)


def rosbags_factory(store=None) -> Callable[[str], Callable[..., Any]]:
    """Message factory over a ``rosbags`` typestore (default: :func:`bifusion_ros.interfaces.typestore`).

    ``factory("sensor_msgs/msg/Image")(height=2, ...)`` builds a ``rosbags`` message, every omitted field
    set to its default (0, ``""``, ``False``, empty / zero arrays, default sub-messages). Class constants
    are available as attributes of the constructor (``factory("visualization_msgs/msg/Marker").CUBE``).
    """
    if store is None:
        from bifusion_ros.interfaces import typestore

        store = typestore()
    cache: dict[str, _RosbagsConstructor] = {}

    def factory(name: str) -> _RosbagsConstructor:
        full = _full_type_name(name)
        if full not in cache:
            if full not in store.types:
                raise KeyError(f"message type {full!r} is not in the rosbags typestore")
            cache[full] = _RosbagsConstructor(store, full, cache)
        return cache[full]

    return factory


def rclpy_factory() -> Callable[[str], Any]:
    """Message factory returning the rclpy (rosidl-generated) classes, imported on first use."""

    def factory(name: str):
        pkg, _, typ = _full_type_name(name).split("/")
        try:
            return getattr(importlib.import_module(f"{pkg}.msg"), typ)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"ROS message class {pkg}/msg/{typ} not importable (is ROS 2 sourced?): {exc}") from exc

    return factory


def _ctor(msgs: MessageFactory, name: str):
    if isinstance(msgs, Mapping):
        full = _full_type_name(name)
        return msgs[full] if full in msgs else msgs[name]
    return msgs(name)


def _uint8_payload(ctor, data: bytes):
    """A ``uint8[]`` field value in the representation the constructor's message class expects."""
    if hasattr(ctor, "__msgtype__"):  # rosbags
        return np.frombuffer(bytes(data), dtype=np.uint8).copy()
    return _pyarray("B", bytes(data))


def _as_uint8(data) -> np.ndarray:
    """Any ``uint8[]`` field value (bytes, array.array, numpy, list) -> 1-D ``uint8`` numpy view or copy."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.astype(np.uint8)
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, _pyarray)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(list(data), dtype=np.uint8)


def make_header(msgs: MessageFactory, frame_id: str, stamp=0.0):
    """A ``std_msgs/Header`` in ``frame_id``; ``stamp`` as accepted by :func:`bifusion_ros.sync.stamp_to_ns`
    (a number of seconds, a ``builtin_interfaces/Time`` or an ``rclpy.time.Time``)."""
    ns = stamp_to_ns(stamp)
    time = _ctor(msgs, "builtin_interfaces/msg/Time")(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))
    return _ctor(msgs, "std_msgs/msg/Header")(stamp=time, frame_id=str(frame_id))


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------
# encoding -> (bytes per pixel, channels, numpy base type)
IMAGE_ENCODINGS: dict[str, tuple[int, int, type]] = {
    "rgb8": (3, 3, np.uint8),
    "bgr8": (3, 3, np.uint8),
    "rgba8": (4, 4, np.uint8),
    "bgra8": (4, 4, np.uint8),
    "mono8": (1, 1, np.uint8),
    "16UC1": (2, 1, np.uint16),
    "32FC1": (4, 1, np.float32),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")


def _encoding_info(encoding: str) -> tuple[int, int, type]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}"
        ) from None


def image_to_numpy(msg, *, depth_scale: float = 0.001, zero_is_invalid: bool = True) -> np.ndarray:
    """A ``sensor_msgs/Image`` -> numpy.

    Colour encodings (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``) -> ``(H, W, 3) uint8`` in **RGB**
    order: alpha is dropped, ``mono8`` is replicated into the three channels (so the colour path never
    sees a 2-D image).

    Depth encodings -> ``(H, W) float32`` **metres**: ``16UC1`` is multiplied by ``depth_scale`` (RealSense
    publishes millimetres: 0.001), ``32FC1`` is already metres. A 0 reading means "no reading" and becomes
    NaN when ``zero_is_invalid`` (default; pass ``False`` for a non-depth float image such as alpha). NaN in
    a ``32FC1`` image stays NaN, so ``np.isfinite`` is the validity test.

    ``step`` (row length in bytes, >= ``width * bytes_per_pixel``; padding bytes are skipped) and
    ``is_bigendian`` (for 16- and 32-bit data) are honoured. The result is a new, writable array.

    Raises:
        ValueError: an unsupported encoding, ``step < width * bytes_per_pixel``, or a ``data`` length other
            than ``height * step``.
    """
    encoding = str(msg.encoding)
    bpp, channels, base = _encoding_info(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if step < width * bpp:
        raise ValueError(
            f"{encoding} image: step {step} < width {width} x {bpp} bytes per pixel = {width * bpp}"
        )
    data = _as_uint8(msg.data)
    if data.size != height * step:
        raise ValueError(
            f"{encoding} image {width}x{height}: data has {data.size} bytes, expected height x step = "
            f"{height} x {step} = {height * step}"
        )
    rows = data.reshape(height, step)[:, : width * bpp] if step else np.zeros((height, 0), np.uint8)
    dtype = np.dtype(base)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if int(msg.is_bigendian) else "<")
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if encoding in DEPTH_ENCODINGS:
        depth = pixels[..., 0].astype(np.float32)
        if encoding == "16UC1":
            depth *= np.float32(depth_scale)
        if zero_is_invalid:
            depth[depth == 0] = np.nan
        return depth
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.array(pixels[..., :3])  # a copy: for rgb8 the slice is the message buffer itself (read-only)


def numpy_to_image(array, encoding: str, header, msgs: MessageFactory, *, depth_scale: float = 0.001):
    """numpy -> ``sensor_msgs/Image`` (little-endian, no row padding: ``step = width * bytes_per_pixel``).

    Accepted arrays per encoding:

    - ``rgb8`` / ``bgr8``: ``(H, W, 3)`` RGB, integer values 0..255 (written in the encoding's channel order);
    - ``rgba8`` / ``bgra8``: ``(H, W, 4)`` RGBA, or ``(H, W, 3)`` RGB (alpha written as 255);
    - ``mono8``: ``(H, W)`` or ``(H, W, 1)``; ``(H, W, 3)`` RGB is converted to luma (BT.601, rounded; a grey
      image with equal channels stays exact, so :func:`image_to_numpy` output round-trips);
    - ``16UC1``: float metres (NaN / inf / 0 -> 0 = "no reading"; divided by ``depth_scale`` and rounded), or
      an integer array taken as raw units; values outside 0..65535 raise;
    - ``32FC1``: ``(H, W)`` floats written as float32 as they are (NaN kept).

    ``header`` is used as is (``std_msgs/Header`` of the same message family as ``msgs``).

    Raises:
        ValueError: unsupported encoding, wrong shape or dtype, out-of-range values.
    """
    bpp, channels, base = _encoding_info(encoding)
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if encoding in COLOUR_ENCODINGS:
        if a.dtype.kind not in "uib":
            raise ValueError(f"{encoding}: expected an integer (uint8) array, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"{encoding}: values must lie in 0..255, got {a.min()}..{a.max()}")
        a = a.astype(np.uint8)
        if encoding == "mono8":
            if a.ndim == 3 and a.shape[2] == 3:
                luma = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
                a = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
            if a.ndim != 2:
                raise ValueError(f"mono8: expected (H, W), (H, W, 1) or (H, W, 3), got shape {np.shape(array)}")
            pixels = a[..., None]
        else:
            if a.ndim != 3 or a.shape[2] not in (3, 4) or (channels == 3 and a.shape[2] != 3):
                want = "(H, W, 3)" if channels == 3 else "(H, W, 3) or (H, W, 4)"
                raise ValueError(f"{encoding}: expected shape {want}, got {np.shape(array)}")
            if channels == 4 and a.shape[2] == 3:
                a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
            if encoding.startswith("bgr"):
                a = a[..., [2, 1, 0] + ([3] if channels == 4 else [])]
            pixels = a
        raw = np.ascontiguousarray(pixels)
    else:
        if a.ndim != 2:
            raise ValueError(f"{encoding}: expected a 2-D (H, W) array, got shape {np.shape(array)}")
        if encoding == "16UC1":
            if a.dtype.kind in "ui":
                units = a.astype(np.int64)
            elif a.dtype.kind == "f":
                m = a.astype(np.float64)
                m = np.where(np.isfinite(m), m, 0.0)
                units = np.rint(m / depth_scale).astype(np.int64)
            else:
                raise ValueError(f"16UC1: expected a float (metres) or integer array, got dtype {a.dtype}")
            if units.size and (units.min() < 0 or units.max() > 65535):
                raise ValueError(
                    f"16UC1: values out of range 0..65535 units of {depth_scale} m "
                    f"(got {units.min()}..{units.max()})"
                )
            raw = units.astype("<u2")
        else:
            if a.dtype.kind not in "uif":
                raise ValueError(f"32FC1: expected a numeric array, got dtype {a.dtype}")
            raw = a.astype("<f4")
    height, width = a.shape[:2]
    ctor = _ctor(msgs, "sensor_msgs/msg/Image")
    return ctor(
        header=header, height=int(height), width=int(width), encoding=encoding, is_bigendian=0,
        step=int(width * bpp), data=_uint8_payload(ctor, np.ascontiguousarray(raw).tobytes()),
    )


def _hw(x) -> tuple[int, int]:
    if hasattr(x, "shape"):
        return int(x.shape[0]), int(x.shape[1])
    return int(x.height), int(x.width)


def check_rgb_depth(rgb, depth) -> tuple[int, int]:
    """Check that a colour image and a depth image have the same size; returns ``(H, W)``.

    Args:
        rgb: ``(H, W, 3)`` array or a ``sensor_msgs/Image``.
        depth: ``(H, W)`` array or a ``sensor_msgs/Image``.

    Raises:
        ValueError: the sizes differ (depth not aligned to colour).
    """
    hc, wc = _hw(rgb)
    hd, wd = _hw(depth)
    if (hc, wc) != (hd, wd):
        raise ValueError(
            f"colour image is {wc}x{hc} but depth image is {wd}x{hd}; depth must be aligned to the colour "
            "camera (realsense2_camera: align_depth.enable:=true and the aligned_depth_to_color topic) "
            "with the same resolution"
        )
    return hc, wc


# --------------------------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics from a ``CameraInfo``; unpacks as ``fx, fy, cx, cy, width, height``.

    ``d`` holds the distortion coefficients as published (float64 ``(n,)``, possibly non-zero for
    ``plumb_bob``: see :func:`camera_info_to_intrinsics`); ``distortion_model`` the model name.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    d: tuple[float, ...] = ()

    def __iter__(self):
        return iter((self.fx, self.fy, self.cx, self.cy, self.width, self.height))

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i):
        return tuple(self)[i]

    @property
    def K(self) -> np.ndarray:
        """``(3, 3)`` float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        return any(v != 0.0 for v in self.d)


_NO_DISTORTION_MODELS = ("", "none")


def camera_info_to_intrinsics(msg) -> Intrinsics:
    """``sensor_msgs/CameraInfo`` -> :class:`Intrinsics` (from ``k``; field name ``K`` accepted too).

    Distortion policy: the colour image and aligned depth are assumed rectified / undistorted for
    back-projection, as realsense2_camera publishes them (it labels the colour stream ``plumb_bob`` even
    when the coefficients are tiny but non-zero, e.g. D455). Hence

    - ``plumb_bob`` is accepted with any coefficients (they are returned in ``Intrinsics.d`` and ignored by
      the pinhole back-projection);
    - any model (``''``, ``'none'``, ``'equidistant'``, ``'rational_polynomial'``, ...) is accepted when all
      its coefficients are zero (or there are none);
    - any other model with a non-zero coefficient is rejected.

    Raises:
        ValueError: non-finite ``K``, non-positive focal length, non-zero skew, bottom row of ``K`` not
            ``[0, 0, 1]``, zero width/height, binning > 1 or a partial ROI, or unsupported distortion.
    """
    k = getattr(msg, "k", None)
    if k is None:
        k = getattr(msg, "K")
    K = np.asarray(list(k) if not isinstance(k, np.ndarray) else k, dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise ValueError(f"CameraInfo.k must have 9 values, got {K.size}")
    K = K.reshape(3, 3)
    if not np.isfinite(K).all():
        raise ValueError(f"CameraInfo.k has non-finite entries: {K.tolist()}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(
            f"CameraInfo.k is not a valid camera matrix (fx={K[0, 0]}, fy={K[1, 1]}); an all-zero k means "
            "the camera is uncalibrated"
        )
    if K[0, 1] != 0.0 or K[1, 0] != 0.0:
        raise ValueError(f"CameraInfo.k has non-zero skew / off-diagonal terms ({K[0, 1]}, {K[1, 0]}); not supported")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"CameraInfo.k bottom row must be [0, 0, 1], got {K[2].tolist()}")
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"CameraInfo width/height must be positive, got {width}x{height}")
    for name in ("binning_x", "binning_y"):
        b = int(getattr(msg, name, 0) or 0)
        if b > 1:
            raise ValueError(f"CameraInfo.{name}={b}: binned images are not supported")
    roi = getattr(msg, "roi", None)
    if roi is not None and int(getattr(roi, "width", 0) or 0) and (
        int(roi.x_offset) or int(roi.y_offset) or int(roi.width) != width or int(roi.height) != height
    ):
        raise ValueError(
            f"CameraInfo.roi ({roi.x_offset}, {roi.y_offset}, {roi.width}x{roi.height}) is a sub-window; not supported"
        )
    d_raw = getattr(msg, "d", None)
    if d_raw is None:
        d_raw = getattr(msg, "D", ())
    d = tuple(float(v) for v in np.asarray(list(d_raw) if not isinstance(d_raw, np.ndarray) else d_raw, np.float64))
    if not all(math.isfinite(v) for v in d):
        raise ValueError(f"CameraInfo.d has non-finite coefficients: {d}")
    model = str(getattr(msg, "distortion_model", "") or "")
    if any(v != 0.0 for v in d) and model != "plumb_bob":
        raise ValueError(
            f"CameraInfo distortion_model {model!r} with non-zero coefficients {d} is not supported; "
            "publish rectified images (image_proc) or plumb_bob"
        )
    return Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height, model, d)


# --------------------------------------------------------------------------------------------------------------
# Rigid transforms
# --------------------------------------------------------------------------------------------------------------
def _normalised_quaternion(q, what: str = "quaternion") -> np.ndarray:
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape != (4,):
        raise ValueError(f"{what} must have 4 values (x, y, z, w), got {q.size}")
    if not np.isfinite(q).all():
        raise ValueError(f"{what} is not finite: {q.tolist()}")
    n = float(np.linalg.norm(q))
    if n < 1e-9:
        raise ValueError(f"{what} has zero length: {q.tolist()}")
    return q / n


def quaternion_to_matrix(q) -> np.ndarray:
    """``(4,)`` quaternion ``x, y, z, w`` (normalised here) -> ``(3, 3)`` float64 rotation matrix.

    Raises:
        ValueError: non-finite or zero-length quaternion.
    """
    return matrix_from_quaternion(_normalised_quaternion(q))


def matrix_to_quaternion(R) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> ``(4,)`` unit quaternion ``x, y, z, w`` with ``w >= 0``."""
    return quaternion_from_matrix(R)


def transform_to_tq(msg) -> tuple[np.ndarray, np.ndarray]:
    """``TransformStamped`` / ``Transform`` / ``Pose`` -> (translation ``(3,)``, unit quaternion ``(4,)`` xyzw).

    Raises:
        ValueError: non-finite values or a zero-length quaternion.
        TypeError: an object without ``transform``, ``translation``/``rotation`` or ``position``/``orientation``.
    """
    if hasattr(msg, "transform"):
        msg = msg.transform
    if hasattr(msg, "translation") and hasattr(msg, "rotation"):
        p, r = msg.translation, msg.rotation
    elif hasattr(msg, "position") and hasattr(msg, "orientation"):
        p, r = msg.position, msg.orientation
    else:
        raise TypeError(f"expected a TransformStamped, Transform or Pose, got {type(msg).__name__}")
    t = np.array([float(p.x), float(p.y), float(p.z)])
    if not np.isfinite(t).all():
        raise ValueError(f"translation is not finite: {t.tolist()}")
    q = _normalised_quaternion([float(r.x), float(r.y), float(r.z), float(r.w)], "rotation quaternion")
    return t, q


def transform_to_matrix(msg) -> np.ndarray:
    """``TransformStamped`` / ``Transform`` / ``Pose`` -> ``(4, 4)`` float64 homogeneous matrix.

    For a ``TransformStamped`` (parent ``header.frame_id``, child ``child_frame_id``) the matrix maps
    points from the child frame into the parent frame: ``p_parent = T @ p_child``. The quaternion is
    normalised.

    Raises:
        ValueError: non-finite values or a zero-length quaternion.
    """
    t, q = transform_to_tq(msg)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(q)
    T[:3, 3] = t
    return T


def _check_rigid(matrix, tol: float = 1e-5) -> np.ndarray:
    T = np.asarray(matrix, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"expected a (4, 4) matrix, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise ValueError("transform matrix has non-finite entries")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=tol):
        raise ValueError(f"transform matrix bottom row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or np.linalg.det(R) <= 0:
        raise ValueError("transform matrix rotation part is not a proper rotation (orthonormal, det +1)")
    return T


def matrix_to_transform(matrix, msgs: MessageFactory, header=None, child_frame_id: str | None = None):
    """``(4, 4)`` rigid matrix -> ``geometry_msgs/Transform``, or ``TransformStamped`` when ``header`` is given.

    Raises:
        ValueError: not a finite rigid transform (rotation orthonormal with det +1, bottom row 0 0 0 1).
    """
    T = _check_rigid(matrix)
    q = matrix_to_quaternion(T[:3, :3])
    tr = _ctor(msgs, "geometry_msgs/msg/Transform")(
        translation=_ctor(msgs, "geometry_msgs/msg/Vector3")(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        rotation=_quaternion_msg(msgs, q),
    )
    if header is None:
        return tr
    return _ctor(msgs, "geometry_msgs/msg/TransformStamped")(
        header=header, child_frame_id=str(child_frame_id or ""), transform=tr
    )


def _quaternion_msg(msgs: MessageFactory, q):
    return _ctor(msgs, "geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def _pose(msgs: MessageFactory, position, quaternion=(0.0, 0.0, 0.0, 1.0)):
    point = _ctor(msgs, "geometry_msgs/msg/Point")(x=float(position[0]), y=float(position[1]), z=float(position[2]))
    q = _normalised_quaternion(quaternion, "orientation")
    return _ctor(msgs, "geometry_msgs/msg/Pose")(position=point, orientation=_quaternion_msg(msgs, q))


def matrix_to_pose(matrix, msgs: MessageFactory):
    """``(4, 4)`` rigid matrix -> ``geometry_msgs/Pose``."""
    T = _check_rigid(matrix)
    return _pose(msgs, T[:3, 3], matrix_to_quaternion(T[:3, :3]))


# --------------------------------------------------------------------------------------------------------------
# PointCloud2
# --------------------------------------------------------------------------------------------------------------
_PF = {"INT8": 1, "UINT8": 2, "INT16": 3, "UINT16": 4, "INT32": 5, "UINT32": 6, "FLOAT32": 7, "FLOAT64": 8}
_PF_NUMPY = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}

CLOUD_FIELDS: tuple[tuple[str, int], ...] = (
    ("x", _PF["FLOAT32"]), ("y", _PF["FLOAT32"]), ("z", _PF["FLOAT32"]),
    ("rgb", _PF["FLOAT32"]), ("label", _PF["UINT32"]), ("instance", _PF["UINT32"]),
    ("score", _PF["FLOAT32"]), ("alpha", _PF["FLOAT32"]),
)
"""Field order and ``PointField`` datatypes of :func:`labelled_cloud` (each 4 bytes, packed, little-endian)."""


def pack_rgb(rgb) -> np.ndarray:
    """``(N, 3)`` colours -> ``(N,)`` float32 whose bits are the uint32 ``0x00RRGGBB`` (PCL / sensor_msgs_py).

    Integer input must lie in 0..255; float input is taken as 0..1 (scaled by 255 and rounded).
    """
    c = np.asarray(rgb)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"rgb must have shape (N, 3), got {c.shape}")
    if c.dtype.kind == "f":
        if c.size and not (np.isfinite(c).all() and c.min() >= 0.0 and c.max() <= 1.0):
            raise ValueError("float rgb must lie in [0, 1] (pass uint8 for 0..255)")
        c = np.rint(c * 255.0)
    elif c.dtype.kind in "uib":
        if c.size and (c.min() < 0 or c.max() > 255):
            raise ValueError(f"integer rgb must lie in 0..255, got {c.min()}..{c.max()}")
    else:
        raise ValueError(f"rgb must be numeric, got dtype {c.dtype}")
    c = c.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype("<u4").view("<f4")


def unpack_rgb(packed) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: ``(N,)`` float32 (or uint32) -> ``(N, 3)`` uint8 RGB."""
    p = np.ascontiguousarray(packed)
    u = p.astype(np.float32).view(np.uint32) if p.dtype.kind == "f" else p.astype(np.uint32)
    return np.stack([(u >> 16) & 0xFF, (u >> 8) & 0xFF, u & 0xFF], axis=-1).astype(np.uint8)


def _column(values, n: int, name: str) -> np.ndarray:
    v = np.asarray(values).reshape(-1) if np.ndim(values) else np.full(n, values)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like points, got {np.shape(values)}")
    return v


def labelled_cloud(points, rgb, label, instance, score, alpha, header, msgs: MessageFactory):
    """A labelled ``sensor_msgs/PointCloud2`` (``height=1``, ``width=N``, little-endian, packed).

    Fields, in this order (4 bytes each, ``point_step = 4 * number of fields``; a field whose argument is
    ``None`` is left out):

    - ``x``, ``y``, ``z`` FLOAT32 from ``points`` ``(N, 3)`` metres, in ``header.frame_id``;
    - ``rgb`` FLOAT32 from ``rgb`` ``(N, 3)`` (uint8 0..255 or float 0..1), packed as in PCL / sensor_msgs_py:
      the uint32 ``0x00RRGGBB`` reinterpreted as float32 (see :func:`pack_rgb`, :func:`unpack_rgb`);
    - ``label`` UINT32 from ``label`` ``(N,)`` semantic class index (>= 0);
    - ``instance`` UINT32 from ``instance`` ``(N,)`` instance id; **0 = no instance** (instance ids start at 1,
      like ``Instance.id``); negative input values (e.g. -1) are written as 0;
    - ``score`` FLOAT32 from ``score`` ``(N,)``;
    - ``alpha`` FLOAT32 from ``alpha`` ``(N,)`` (the 2D/3D fusion weight).

    ``is_dense`` is True when every x, y, z is finite. ``N = 0`` gives a valid empty cloud.

    Raises:
        ValueError: shape mismatches, negative labels, values that do not fit in uint32.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        if pts.size == 0:
            pts = pts.reshape(0, 3)
        else:
            raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    n = pts.shape[0]
    columns: dict[str, np.ndarray] = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}
    if rgb is not None:
        c = np.asarray(rgb)
        if c.size == 0 and n == 0:
            c = c.reshape(0, 3)
        if c.shape != (n, 3):
            raise ValueError(f"rgb must have shape ({n}, 3) like points, got {c.shape}")
        columns["rgb"] = pack_rgb(c)
    if label is not None:
        v = _column(label, n, "label")
        if v.dtype.kind not in "uib" and v.size and not np.all(np.mod(v, 1) == 0):
            raise ValueError("label must hold integers")
        v = v.astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 0xFFFFFFFF):
            raise ValueError(f"label must lie in 0..2^32-1, got {v.min()}..{v.max()}")
        columns["label"] = v
    if instance is not None:
        v = _column(instance, n, "instance").astype(np.int64)
        v = np.where(v < 0, 0, v)
        if v.size and v.max() > 0xFFFFFFFF:
            raise ValueError(f"instance ids must fit in uint32, got max {v.max()}")
        columns["instance"] = v
    if score is not None:
        columns["score"] = _column(score, n, "score")
    if alpha is not None:
        columns["alpha"] = _column(alpha, n, "alpha")
    names = [name for name, _ in CLOUD_FIELDS if name in columns]
    types = dict(CLOUD_FIELDS)
    dtype = np.dtype({"names": names, "formats": ["<" + _PF_NUMPY[types[k]] for k in names],
                      "offsets": [4 * i for i in range(len(names))], "itemsize": 4 * len(names)})
    rec = np.zeros(n, dtype=dtype)
    for name in names:
        rec[name] = columns[name]
    field_ctor = _ctor(msgs, "sensor_msgs/msg/PointField")
    fields = [field_ctor(name=k, offset=4 * i, datatype=int(types[k]), count=1) for i, k in enumerate(names)]
    ctor = _ctor(msgs, "sensor_msgs/msg/PointCloud2")
    return ctor(
        header=header, height=1, width=int(n), fields=fields, is_bigendian=False,
        point_step=int(dtype.itemsize), row_step=int(dtype.itemsize * n),
        data=_uint8_payload(ctor, rec.tobytes()), is_dense=bool(np.isfinite(pts).all()),
    )


def cloud_to_numpy(msg) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` -> ``(height * width,)`` structured numpy array, native byte order.

    One named column per field (a field with ``count > 1`` becomes ``name_0 .. name_{count-1}``, as in
    sensor_msgs_py). ``point_step``, ``row_step`` (padding) and ``is_bigendian`` are honoured.

    Raises:
        ValueError: unknown datatype, ``row_step < width * point_step``, data length other than
            ``height * row_step``, duplicate field names.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    order = ">" if bool(msg.is_bigendian) else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        dt = _PF_NUMPY.get(int(f.datatype))
        if dt is None:
            raise ValueError(f"PointField {f.name!r} has unknown datatype {f.datatype}")
        count = int(f.count)
        if count < 1:
            raise ValueError(f"PointField {f.name!r} has count {count}")
        for a in range(count):
            name = f"{f.name}_{a}" if count > 1 else str(f.name)
            if name in names:
                raise ValueError(f"duplicate PointField name {name!r}")
            names.append(name)
            formats.append(order + dt)
            offsets.append(int(f.offset) + a * np.dtype(dt).itemsize)
    src = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    if row_step < width * point_step:
        raise ValueError(f"row_step {row_step} < width {width} x point_step {point_step}")
    data = _as_uint8(msg.data)
    if data.size != height * row_step:
        raise ValueError(f"cloud data has {data.size} bytes, expected height x row_step = {height * row_step}")
    native = np.dtype([(n, np.dtype(f[1:]).newbyteorder("=")) for n, f in zip(names, formats)])
    out = np.empty(height * width, dtype=native)
    if height * width == 0:
        return out
    rows = np.ascontiguousarray(data.reshape(height, row_step)[:, : width * point_step])
    pts = rows.reshape(-1).view(src)
    for name in names:
        out[name] = pts[name]
    return out


# --------------------------------------------------------------------------------------------------------------
# Instances: MarkerArray and InstanceArray
# --------------------------------------------------------------------------------------------------------------
class InstanceLike(Protocol):
    """What :func:`marker_array` and :func:`instance_array` read from an instance (see the module doc)."""

    id: int
    class_id: int
    class_name: str
    score: float
    center: Sequence[float]
    size: Sequence[float]
    point_count: int


# Kelly's 22 colours of maximum contrast without white and black, as 0..1 RGB.
CLASS_PALETTE: np.ndarray = np.array([
    (0xF3, 0xC3, 0x00), (0x87, 0x56, 0x92), (0xF3, 0x84, 0x00), (0xA1, 0xCA, 0xF1), (0xBE, 0x00, 0x32),
    (0xC2, 0xB2, 0x80), (0x84, 0x84, 0x82), (0x00, 0x88, 0x56), (0xE6, 0x8F, 0xAC), (0x00, 0x67, 0xA5),
    (0xF9, 0x93, 0x79), (0x60, 0x4E, 0x97), (0xF6, 0xA6, 0x00), (0xB3, 0x44, 0x6C), (0xDC, 0xD3, 0x00),
    (0x88, 0x2D, 0x17), (0x8D, 0xB6, 0x00), (0x65, 0x45, 0x22), (0xE2, 0x58, 0x22), (0x2B, 0x3D, 0x26),
], dtype=np.float64) / 255.0
"""``(20, 3)`` fixed class palette (RGB in 0..1); class ``c`` gets ``CLASS_PALETTE[c % 20]``."""


def class_colour(class_id: int, palette=None) -> tuple[float, float, float]:
    """RGB (0..1) of a class: ``palette`` may be a ``(C, 3)`` array (indexed modulo C) or a mapping
    ``class_id -> (r, g, b)`` (missing classes fall back to :data:`CLASS_PALETTE`)."""
    if isinstance(palette, Mapping):
        if class_id in palette:
            return tuple(float(v) for v in palette[class_id])[:3]  # type: ignore[return-value]
        palette = None
    pal = CLASS_PALETTE if palette is None else np.asarray(palette, dtype=np.float64)
    return tuple(float(v) for v in pal[int(class_id) % len(pal)][:3])  # type: ignore[return-value]


def _vec3(v, what: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise ValueError(f"{what} must be 3 finite numbers, got {v!r}")
    return a


def _instance_fields(inst) -> tuple[int, int, str, float, np.ndarray, np.ndarray, np.ndarray, int]:
    iid = int(inst.id)
    if not 0 < iid <= 0xFFFFFFFF:
        raise ValueError(f"instance id must be in 1..2^32-1 (0 is never used), got {iid}")
    orientation = getattr(inst, "orientation", None)
    q = _normalised_quaternion((0.0, 0.0, 0.0, 1.0) if orientation is None else orientation,
                               f"instance {iid} orientation")
    center = _vec3(inst.center, f"instance {iid} center")
    size = _vec3(inst.size, f"instance {iid} size")
    return iid, int(inst.class_id), str(inst.class_name), float(inst.score), center, size, q, int(inst.point_count)


def marker_array(instances, header, msgs: MessageFactory, *, palette=None, box_alpha: float = 0.4,
                 text_height: float = 0.1, up=(0.0, 0.0, 1.0), min_scale: float = 1e-3):
    """``visualization_msgs/MarkerArray`` of instances (see :class:`InstanceLike`).

    Markers, all with ``header``, ``lifetime`` 0 (forever, replaced by the next array) and ``frame_locked``
    False:

    1. one ``DELETEALL`` (ns ``""``, id 0) that clears the previous frame's markers;
    2. per instance a ``CUBE`` in ns ``"boxes"``, id = instance id, pose = box centre (+ orientation),
       scale = size (each at least ``min_scale`` so RViz draws it), colour = class colour with
       ``box_alpha``;
    3. per instance a ``TEXT_VIEW_FACING`` in ns ``"labels"``, id = instance id, text ``"<class> <score:.2f>"``,
       white, ``scale.z = text_height``, placed above the box along ``up`` (the header frame's up
       direction: ``(0, 0, 1)`` for map / REP-103 body frames, ``(0, -1, 0)`` for an optical frame).

    Raises:
        ValueError: an instance id outside 1..2^31-1 (Marker ids are int32), non-finite centre / size.
    """
    ctor = _ctor(msgs, "visualization_msgs/msg/Marker")
    colour = _ctor(msgs, "std_msgs/msg/ColorRGBA")
    vec = _ctor(msgs, "geometry_msgs/msg/Vector3")
    up_v = _vec3(up, "up")
    up_v = up_v / (np.linalg.norm(up_v) or 1.0)
    CUBE, TEXT, ADD, DELETEALL = 1, 9, 0, 3
    markers = [ctor(header=header, ns="", id=0, type=CUBE, action=DELETEALL, pose=_pose(msgs, (0.0, 0.0, 0.0)),
                    scale=vec(x=1.0, y=1.0, z=1.0), color=colour(r=0.0, g=0.0, b=0.0, a=0.0))]
    for inst in instances:
        iid, cid, name, score, center, size, q, _ = _instance_fields(inst)
        if iid > 0x7FFFFFFF:
            raise ValueError(f"instance id {iid} does not fit a Marker id (int32)")
        r, g, b = class_colour(cid, palette)
        scale = np.maximum(size, min_scale)
        markers.append(ctor(
            header=header, ns="boxes", id=iid, type=CUBE, action=ADD, pose=_pose(msgs, center, q),
            scale=vec(x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
            color=colour(r=r, g=g, b=b, a=float(box_alpha)),
        ))
        # half extent of the (possibly rotated) box along `up`, so the text sits just above its top face
        R = quaternion_to_matrix(q)
        half_up = 0.5 * float(np.abs(R.T @ up_v) @ size)
        markers.append(ctor(
            header=header, ns="labels", id=iid, type=TEXT, action=ADD,
            pose=_pose(msgs, center + up_v * (half_up + text_height)),
            scale=vec(x=0.0, y=0.0, z=float(text_height)), color=colour(r=1.0, g=1.0, b=1.0, a=1.0),
            text=f"{name} {score:.2f}",
        ))
    return _ctor(msgs, "visualization_msgs/msg/MarkerArray")(markers=markers)


def instance_array(instances, header, msgs: MessageFactory):
    """``bifusion_ros/InstanceArray`` of instances (see :class:`InstanceLike`): per instance ``id``,
    ``class_id``, ``class_name``, ``score``, ``center`` (Pose: position = box centre, orientation = the
    instance's or identity), ``size`` (Vector3) and ``point_count``.

    Raises:
        ValueError: instance id 0 or > 2^32-1, negative class id / point count, non-finite centre / size.
    """
    inst_ctor = _ctor(msgs, "bifusion_ros/msg/Instance")
    vec = _ctor(msgs, "geometry_msgs/msg/Vector3")
    out = []
    for inst in instances:
        iid, cid, name, score, center, size, q, count = _instance_fields(inst)
        if cid < 0 or count < 0:
            raise ValueError(f"instance {iid}: class_id and point_count must be >= 0, got {cid}, {count}")
        out.append(inst_ctor(
            id=iid, class_id=cid, class_name=name, score=score, center=_pose(msgs, center, q),
            size=vec(x=float(size[0]), y=float(size[1]), z=float(size[2])), point_count=count,
        ))
    return _ctor(msgs, "bifusion_ros/msg/InstanceArray")(header=header, instances=out)
