"""``sensor_msgs/CameraInfo`` <-> pinhole intrinsics.

:func:`camera_info_to_intrinsics` reads a ``CameraInfo`` (rclpy, ``rosbags`` or any object with its field names)
into a :class:`~bifusion_core.geometry.CameraIntrinsics` (focal lengths and principal point in pixels, image
size in pixels, distortion as published); :func:`intrinsics_to_camera_info` builds one (with a message factory, see
:mod:`bifusion_ros.convert.factory`), checked by the same rules, so what it writes reads back unchanged.
"""
from __future__ import annotations

import math

import numpy as np

from bifusion_core.geometry import CameraIntrinsics

from .factory import MessageFactory, _ctor, _float64_payload

__all__ = ["camera_info_to_intrinsics", "intrinsics_to_camera_info"]


_NO_DISTORTION_MODELS = ("", "none")


def _check_camera_matrix(K: np.ndarray) -> np.ndarray:
    """``(3, 3)`` float64 ``K`` checked: finite, positive focal lengths, no skew, bottom row ``[0, 0, 1]``."""
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
    return K


def _check_size(width, height) -> tuple[int, int]:
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"CameraInfo width/height must be positive, got {width}x{height}")
    return width, height


def _check_distortion(model: str, d: tuple[float, ...]) -> None:
    """The distortion policy of :func:`camera_info_to_intrinsics`."""
    if not all(math.isfinite(v) for v in d):
        raise ValueError(f"CameraInfo.d has non-finite coefficients: {d}")
    if any(v != 0.0 for v in d) and model != "plumb_bob":
        raise ValueError(
            f"CameraInfo distortion_model {model!r} with non-zero coefficients {d} is not supported; "
            "publish rectified images (image_proc) or plumb_bob"
        )


def camera_info_to_intrinsics(msg) -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` -> ``CameraIntrinsics`` with its size and distortion (from ``k``; field name
    ``K`` accepted too).

    Distortion policy: the colour image and aligned depth are assumed rectified / undistorted for
    back-projection, as realsense2_camera publishes them (it labels the colour stream ``plumb_bob`` even
    when the coefficients are tiny but non-zero, e.g. D455). Hence

    - ``plumb_bob`` is accepted with any coefficients (they are returned in ``CameraIntrinsics.d`` and ignored by
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
    K = _check_camera_matrix(K.reshape(3, 3))
    width, height = _check_size(msg.width, msg.height)
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
    model = str(getattr(msg, "distortion_model", "") or "")
    _check_distortion(model, d)
    return CameraIntrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height, model, d)


def intrinsics_to_camera_info(intrinsics, header, msgs: MessageFactory, *, width: int | None = None,
                              height: int | None = None):
    """Pinhole intrinsics -> ``sensor_msgs/CameraInfo`` of an undistorted (rectified) camera.

    Args:
        intrinsics: a ``CameraIntrinsics`` (with an image size: that size, ``distortion_model`` and ``d`` are written;
            without one, as a matrix), or a
            ``(3, 3)`` camera matrix ``K`` in pixels (then ``width`` and ``height`` are required, and the
            message says ``plumb_bob`` with five zero coefficients, as realsense2_camera publishes aligned depth).
        header: ``std_msgs/Header`` of the same message family as ``msgs`` (the camera's optical frame).
        width, height: image size in pixels; with a sized ``CameraIntrinsics`` only to confirm its size.

    ``k`` = K, ``r`` = identity, ``p`` = ``[K | 0]``, no binning, a full-image (zero) ROI. The result reads back
    through :func:`camera_info_to_intrinsics` unchanged.

    Raises:
        ValueError: what :func:`camera_info_to_intrinsics` refuses (non-finite K, non-positive focal length,
            skew, a bottom row other than ``[0, 0, 1]``, non-positive size, unsupported distortion), a K that is
            not ``(3, 3)``, or a size that contradicts the one the ``CameraIntrinsics`` carries.
    """
    if isinstance(intrinsics, CameraIntrinsics) and intrinsics.width is not None and intrinsics.height is not None:
        K = intrinsics.K
        if (width is not None and int(width) != intrinsics.width) or (
                height is not None and int(height) != intrinsics.height):
            raise ValueError(f"size {width}x{height} contradicts the intrinsics' "
                             f"{intrinsics.width}x{intrinsics.height}")
        width, height = intrinsics.width, intrinsics.height
        model, d = intrinsics.distortion_model, tuple(float(v) for v in intrinsics.d)
    else:  # a (3, 3) matrix, or intrinsics without an image size
        K = intrinsics.K if isinstance(intrinsics, CameraIntrinsics) else np.asarray(intrinsics, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"intrinsics must be a (3, 3) camera matrix or a CameraIntrinsics, got shape {K.shape}")
        if width is None or height is None:
            raise ValueError("width and height are required with a (3, 3) camera matrix")
        model, d = "plumb_bob", (0.0,) * 5
    K = _check_camera_matrix(K)
    width, height = _check_size(width, height)
    _check_distortion(model, d)
    P = np.zeros((3, 4))
    P[:, :3] = K
    ctor = _ctor(msgs, "sensor_msgs/msg/CameraInfo")
    roi = _ctor(msgs, "sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False)
    return ctor(header=header, height=height, width=width, distortion_model=model, d=_float64_payload(ctor, d),
                k=_float64_payload(ctor, K), r=_float64_payload(ctor, np.eye(3)), p=_float64_payload(ctor, P),
                binning_x=0, binning_y=0, roi=roi)
