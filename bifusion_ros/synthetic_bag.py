"""RGB-D recordings as rosbag2 files laid out like a RealSense (realsense2_camera 4.5x) recording.

Written by ``python -m bifusion_core.data.synthetic --bag FILE`` and read back by replay. Topics, all stamped
with the frame's acquisition time (the bag's receive time equals it):

==================================================== ============================ ==========================
topic                                                type                         content
==================================================== ============================ ==========================
``/camera/camera/color/image_raw``                   sensor_msgs/msg/Image        ``rgb8``
``/camera/camera/color/camera_info``                 sensor_msgs/msg/CameraInfo   ``plumb_bob``, zero D
``/camera/camera/aligned_depth_to_color/image_raw``  sensor_msgs/msg/Image        ``16UC1``, millimetres
``/camera/camera/aligned_depth_to_color/camera_info`` sensor_msgs/msg/CameraInfo   same camera as colour
``/tf``                                              tf2_msgs/msg/TFMessage       ``map -> camera_link``
``/tf_static``                                       tf2_msgs/msg/TFMessage       ``camera_link ->
                                                                                  camera_color_optical_frame``
``/bifusion/gt/semantic``                            sensor_msgs/msg/Image        ``16UC1`` ScanNet200 label
                                                                                  id per pixel (0 none)
``/bifusion/gt/instance``                            sensor_msgs/msg/Image        ``16UC1`` instance id per
                                                                                  pixel (0 none)
==================================================== ============================ ==========================

Images and camera infos have ``frame_id`` ``camera_color_optical_frame`` (x right, y down, z forward; the
depth is aligned to the colour camera). ``/tf`` carries the moving camera pose in ``map`` (z up, REP 103/105);
``/tf_static`` (written once, offered as transient-local like ``static_transform_publisher``) the fixed REP 103
optical rotation, zero translation: realsense2_camera's ``camera_color_frame`` is folded into it.

The ground-truth topics are not part of a real RealSense recording; they let replay score its output.
This module imports ``rosbags`` (kept out of :mod:`bifusion_core`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from bifusion_core.data.frame import matrix_from_quaternion, quaternion_from_matrix

from .interfaces import typestore

log = logging.getLogger(__name__)

TOPIC_COLOR = "/camera/camera/color/image_raw"
TOPIC_COLOR_INFO = "/camera/camera/color/camera_info"
TOPIC_DEPTH = "/camera/camera/aligned_depth_to_color/image_raw"
TOPIC_DEPTH_INFO = "/camera/camera/aligned_depth_to_color/camera_info"
TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"
TOPIC_GT_SEMANTIC = "/bifusion/gt/semantic"
TOPIC_GT_INSTANCE = "/bifusion/gt/instance"

MAP_FRAME = "map"
BODY_FRAME = "camera_link"
OPTICAL_FRAME = "camera_color_optical_frame"

R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""camera_link <- optical rotation (REP 103): the optical x, y, z axes are -y, -z, +x of camera_link."""

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1),
              "mono16": (np.uint16, 1), "32SC1": (np.int32, 1), "32FC1": (np.float32, 1)}

_ZERO = QosTime(sec=0, nsec=0)
_TRANSIENT_LOCAL = Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                       durability=QosDurability.TRANSIENT_LOCAL, deadline=_ZERO, lifespan=_ZERO,
                       liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_ZERO,
                       avoid_ros_namespace_conventions=False)


def bag_location(path, storage: str | None = None) -> tuple[Path, str]:
    """Where a bag named ``path`` goes: rosbag2 bags are directories, so ``out/rec.mcap`` becomes the bag
    directory ``out/rec`` with MCAP storage and ``out/rec.db3`` one with sqlite3 storage; a name without
    those suffixes uses ``storage`` (default ``mcap``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".mcap", ".db3"):
        inferred = "mcap" if suffix == ".mcap" else "sqlite3"
        if storage is not None and storage != inferred:
            raise ValueError(f"{path}: suffix {suffix} contradicts storage {storage!r}")
        return path.with_suffix(""), inferred
    storage = storage or "mcap"
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    return path, storage


def _stamp(store, stamp_ns: int):
    return store.types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9))


def _header(store, stamp_ns: int, frame_id: str):
    return store.types["std_msgs/msg/Header"](stamp=_stamp(store, stamp_ns), frame_id=frame_id)


def image_message(store, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = OPTICAL_FRAME):
    """A ``sensor_msgs/msg/Image`` holding ``array`` (``(H, W)`` or ``(H, W, C)``) in ``encoding``."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; known: {sorted(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[encoding]
    arr = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    if arr.ndim != (2 if channels == 1 else 3) or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(f"array of shape {array.shape} does not fit encoding {encoding}")
    h, w = arr.shape[:2]
    return store.types[IMAGE](header=_header(store, stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                              is_bigendian=0, step=w * channels * arr.itemsize,
                              data=np.frombuffer(arr.tobytes(), np.uint8))


def image_to_numpy(msg) -> np.ndarray:
    """A ``sensor_msgs/msg/Image`` (encodings of :data:`_ENCODINGS`) -> ``(H, W)`` or ``(H, W, C)`` array."""
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}")
    dtype, channels = _ENCODINGS[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * dt.itemsize
    raw = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :row]
    arr = np.frombuffer(raw.tobytes(), dt).reshape(msg.height, msg.width, channels)
    arr = arr.astype(dt.newbyteorder("="))
    return arr[..., 0] if channels == 1 else arr


def camera_info_message(store, intrinsics: np.ndarray, height: int, width: int, stamp_ns: int,
                        frame_id: str = OPTICAL_FRAME):
    """A ``sensor_msgs/msg/CameraInfo`` for an undistorted pinhole camera (``plumb_bob``, zero D)."""
    k = np.asarray(intrinsics, np.float64)
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                           do_rectify=False)
    return store.types[CAMERA_INFO](header=_header(store, stamp_ns, frame_id), height=int(height),
                                    width=int(width), distortion_model="plumb_bob", d=np.zeros(5),
                                    k=k.ravel().copy(), r=np.eye(3).ravel(), p=p.ravel(), binning_x=0,
                                    binning_y=0, roi=roi)


def transform_message(store, matrix: np.ndarray, stamp_ns: int, parent: str, child: str):
    """A ``geometry_msgs/msg/TransformStamped`` ``parent -> child`` from a ``(4, 4)`` child-to-parent matrix."""
    m = np.asarray(matrix, np.float64)
    q = quaternion_from_matrix(m[:3, :3])
    t = store.types
    return t["geometry_msgs/msg/TransformStamped"](
        header=_header(store, stamp_ns, parent), child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
            rotation=t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))


def transform_to_matrix(msg) -> np.ndarray:
    """``geometry_msgs/msg/TransformStamped`` (or ``Transform``) -> ``(4, 4)`` child-to-parent matrix."""
    tf = getattr(msg, "transform", msg)
    m = np.eye(4)
    r = tf.rotation
    m[:3, :3] = matrix_from_quaternion([r.x, r.y, r.z, r.w])
    m[:3, 3] = [tf.translation.x, tf.translation.y, tf.translation.z]
    return m


def link_from_optical() -> np.ndarray:
    """``(4, 4)`` camera_link <- optical frame transform (the /tf_static content)."""
    m = np.eye(4)
    m[:3, :3] = R_LINK_OPTICAL
    return m


class SyntheticBagWriter:
    """Writes RGB-D frames, camera infos, TF and ground-truth images to a new rosbag2 bag.

    Use as a context manager; call :meth:`write_frame` once per frame in time order. ``path`` is resolved
    by :func:`bag_location`; the bag directory must not exist yet.
    """

    def __init__(self, path, storage: str | None = None, distro: str = "ROS2_HUMBLE"):
        self.path, self.storage = bag_location(path, storage)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists (remove it or choose another name)")
        self.store = typestore(distro)
        self._writer: Writer | None = None
        self._conns: dict[str, object] = {}
        self._static_written = False
        self.frames = 0

    def __enter__(self) -> "SyntheticBagWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=8, storage_plugin=plugin)
        self._writer.open()
        w, s = self._writer, self.store
        for topic, msgtype in ((TOPIC_COLOR, IMAGE), (TOPIC_COLOR_INFO, CAMERA_INFO), (TOPIC_DEPTH, IMAGE),
                               (TOPIC_DEPTH_INFO, CAMERA_INFO), (TOPIC_TF, TF_MESSAGE), (TOPIC_GT_SEMANTIC, IMAGE),
                               (TOPIC_GT_INSTANCE, IMAGE)):
            self._conns[topic] = w.add_connection(topic, msgtype, typestore=s)
        self._conns[TOPIC_TF_STATIC] = w.add_connection(TOPIC_TF_STATIC, TF_MESSAGE, typestore=s,
                                                        offered_qos_profiles=[_TRANSIENT_LOCAL])
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            log.info("wrote %d frames to %s (%s)", self.frames, self.path, self.storage)

    def _write(self, topic: str, msg, stamp_ns: int) -> None:
        conn = self._conns[topic]
        self._writer.write(conn, int(stamp_ns), self.store.serialize_cdr(msg, conn.msgtype))

    def write_frame(self, stamp_ns: int, rgb: np.ndarray, depth_mm: np.ndarray, intrinsics: np.ndarray,
                    pose: np.ndarray, semantic: np.ndarray | None = None, instance: np.ndarray | None = None) -> None:
        """One frame.

        Args:
            stamp_ns: acquisition time (ns); also the bag receive time.
            rgb: ``(H, W, 3)`` uint8 RGB.
            depth_mm: ``(H, W)`` uint16 millimetres aligned to ``rgb`` (0 invalid).
            intrinsics: ``(3, 3)`` of both images.
            pose: ``(4, 4)`` optical-frame camera-to-map transform (a ScanNet pose).
            semantic, instance: optional ``(H, W)`` ground truth (label ids, instance ids; 0 none).
        """
        if self._writer is None:
            raise RuntimeError("SyntheticBagWriter must be used as a context manager")
        h, w = depth_mm.shape
        if rgb.shape != (h, w, 3):
            raise ValueError(f"rgb {rgb.shape} and depth {depth_mm.shape} sizes differ")
        s = self.store
        if not self._static_written:
            tf = transform_message(s, link_from_optical(), stamp_ns, BODY_FRAME, OPTICAL_FRAME)
            self._write(TOPIC_TF_STATIC, s.types[TF_MESSAGE](transforms=[tf]), stamp_ns)
            self._static_written = True
        map_link = np.asarray(pose, np.float64) @ np.linalg.inv(link_from_optical())
        tf = transform_message(s, map_link, stamp_ns, MAP_FRAME, BODY_FRAME)
        self._write(TOPIC_TF, s.types[TF_MESSAGE](transforms=[tf]), stamp_ns)
        self._write(TOPIC_COLOR_INFO, camera_info_message(s, intrinsics, h, w, stamp_ns), stamp_ns)
        self._write(TOPIC_COLOR, image_message(s, rgb, "rgb8", stamp_ns), stamp_ns)
        self._write(TOPIC_DEPTH_INFO, camera_info_message(s, intrinsics, h, w, stamp_ns), stamp_ns)
        self._write(TOPIC_DEPTH, image_message(s, depth_mm, "16UC1", stamp_ns), stamp_ns)
        for topic, arr in ((TOPIC_GT_SEMANTIC, semantic), (TOPIC_GT_INSTANCE, instance)):
            if arr is not None:
                if np.asarray(arr).max(initial=0) > 65535 or np.asarray(arr).min(initial=0) < 0:
                    raise ValueError(f"{topic}: ids must fit 16UC1 (0..65535)")
                self._write(topic, image_message(s, arr, "16UC1", stamp_ns), stamp_ns)
        self.frames += 1
