"""ROS message <-> numpy converters, usable with rclpy *and* ``rosbags`` messages (no ROS import at module level).

One module per message family; everything is re-exported here (``from bifusion_ros import convert;
convert.image_to_numpy(...)``):

================================== ==========================================================================
module                             contents
================================== ==========================================================================
:mod:`~.factory`                   message factories (:func:`rosbags_factory`, :func:`rclpy_factory`),
                                   :func:`make_header`, :func:`make_time`
:mod:`~.image`                     ``sensor_msgs/Image``: :func:`image_to_numpy` (colour ``(H, W, 3)`` uint8
                                   RGB, depth ``(H, W)`` float32 metres), :func:`raw_image_array` (ids as
                                   stored), :func:`id_image_to_numpy` (ids, 2D instance masks: int64),
                                   :func:`numpy_to_image`, :func:`check_rgb_depth`, the encodings
:mod:`~.camera_info`               ``sensor_msgs/CameraInfo`` <-> ``geometry.CameraIntrinsics``:
                                   :func:`camera_info_to_intrinsics`, :func:`intrinsics_to_camera_info`
:mod:`~.transform`                 ``TransformStamped`` / ``Transform`` / ``Pose`` <-> ``(4, 4)`` float64
                                   child-to-parent matrices (metres), quaternions ``x, y, z, w``
:mod:`~.cloud`                     ``sensor_msgs/PointCloud2``: :data:`CLOUD_FIELDS`, :func:`labelled_cloud`,
                                   :func:`cloud_to_numpy`, :func:`pack_rgb`, :func:`unpack_rgb`
:mod:`~.markers`                   ``visualization_msgs/MarkerArray`` and ``bifusion_ros/InstanceArray`` of
                                   instances (:class:`InstanceLike`), :data:`CLASS_PALETTE`
================================== ==========================================================================

Reading works by duck typing on the standard ROS 2 field names (``msg.height``, ``msg.data``, ...), so a
message produced by rclpy, deserialised by ``rosbags`` or built by hand with the same attribute names all work.
``data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')`` (rclpy) or a ``uint8`` numpy
array (rosbags).

Building messages needs the message *classes*, which differ between the two worlds. Every function that
builds a message therefore takes a **message factory** ``msgs``: a callable (or a mapping) from a ROS type
name (``"sensor_msgs/msg/Image"``; ``"sensor_msgs/Image"`` works too) to a constructor that accepts keyword
arguments and fills every field it is not given with its default (see :mod:`bifusion_ros.convert.factory`):
the node passes :func:`rclpy_factory()`, replay, the synthetic bag writer and tests pass
:func:`rosbags_factory(store) <rosbags_factory>`.
"""
from __future__ import annotations

from .camera_info import camera_info_to_intrinsics, intrinsics_to_camera_info
from .cloud import CLOUD_FIELDS, cloud_to_numpy, labelled_cloud, pack_rgb, unpack_rgb
from .factory import MessageFactory, make_header, make_time, rclpy_factory, rosbags_factory
from .image import (COLOUR_ENCODINGS, DEPTH_ENCODINGS, ID_ENCODINGS, IMAGE_ENCODINGS, RAW_ENCODINGS, check_rgb_depth,
                    id_image_to_numpy, image_to_numpy, numpy_to_image, raw_image_array)
from .markers import CLASS_PALETTE, InstanceLike, class_colour, id_colour, instance_array, marker_array
from .transform import (matrix_to_pose, matrix_to_quaternion, matrix_to_transform, quaternion_to_matrix,
                        transform_to_matrix, transform_to_tq)

__all__ = [
    "IMAGE_ENCODINGS",
    "COLOUR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "RAW_ENCODINGS",
    "CLASS_PALETTE",
    "CLOUD_FIELDS",
    "InstanceLike",
    "MessageFactory",
    "rosbags_factory",
    "rclpy_factory",
    "make_header",
    "make_time",
    "image_to_numpy",
    "raw_image_array",
    "id_image_to_numpy",
    "ID_ENCODINGS",
    "numpy_to_image",
    "check_rgb_depth",
    "camera_info_to_intrinsics",
    "intrinsics_to_camera_info",
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
    "id_colour",
    "marker_array",
    "instance_array",
]
