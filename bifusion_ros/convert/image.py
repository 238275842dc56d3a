"""``sensor_msgs/Image`` <-> numpy.

Reading works by duck typing on the standard field names (``msg.height``, ``msg.width``, ``msg.step``,
``msg.encoding``, ``msg.is_bigendian``, ``msg.data``), so rclpy messages, messages deserialised by ``rosbags``
and hand-built objects all work; ``data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')``
(rclpy) or a ``uint8`` numpy array (rosbags).

- :func:`image_to_numpy` converts what the pipeline consumes: colour -> ``(H, W, 3) uint8`` RGB, depth ->
  ``(H, W) float32`` metres with NaN for "no reading";
- :func:`raw_image_array` returns the pixels as stored, in the encoding's own type (ground-truth label / instance
  id images, ``16UC1`` -> ``(H, W) uint16``);
- :func:`numpy_to_image` builds an image (with a message factory, see :mod:`bifusion_ros.convert.factory`);
- :func:`check_rgb_depth` checks that depth is aligned to colour (same size).
"""
from __future__ import annotations

import numpy as np

from .factory import MessageFactory, _as_uint8, _ctor, _uint8_payload

__all__ = ["IMAGE_ENCODINGS", "COLOUR_ENCODINGS", "DEPTH_ENCODINGS", "RAW_ENCODINGS", "image_to_numpy",
           "raw_image_array", "numpy_to_image", "check_rgb_depth", "ID_ENCODINGS", "id_image_to_numpy"]

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


RAW_ENCODINGS: dict[str, tuple[int, int, type]] = {
    **IMAGE_ENCODINGS,
    "mono16": (2, 1, np.uint16),
    "32SC1": (4, 1, np.int32),
}
"""Encodings :func:`raw_image_array` reads (``IMAGE_ENCODINGS`` and two more integer id formats), same layout."""


def _encoding_info(encoding: str, table: dict[str, tuple[int, int, type]] = IMAGE_ENCODINGS
                   ) -> tuple[int, int, type]:
    try:
        return table[encoding]
    except KeyError:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(table)}"
        ) from None


def _pixels(msg, table: dict[str, tuple[int, int, type]]) -> np.ndarray:
    """The ``(H, W, C)`` pixels of an image as stored (a view of its data, the message's byte order), after
    checking the encoding, ``step`` and the ``data`` length."""
    encoding = str(msg.encoding)
    bpp, channels, base = _encoding_info(encoding, table)
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
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)


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
    pixels = _pixels(msg, IMAGE_ENCODINGS)
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


def raw_image_array(msg) -> np.ndarray:
    """A ``sensor_msgs/Image`` -> its pixels as stored, without any conversion.

    For images that hold ids rather than colour or depth (ground-truth ScanNet200 label ids and instance ids,
    ``16UC1``, 0 = none): ``(H, W)`` for one-channel encodings, ``(H, W, C)`` otherwise, in the encoding's numpy
    type (:data:`RAW_ENCODINGS`: ``16UC1`` / ``mono16`` -> uint16, ``32SC1`` -> int32, ``32FC1`` -> float32,
    8-bit -> uint8) and native byte order; channels in the message's order (``bgr8`` stays BGR), no scaling, 0
    stays 0. ``step`` padding and ``is_bigendian`` are honoured. The result is a new, writable array.

    Raises:
        ValueError: an encoding outside :data:`RAW_ENCODINGS`, ``step < width * bytes_per_pixel``, or a ``data``
            length other than ``height * step``.
    """
    pixels = _pixels(msg, RAW_ENCODINGS)
    out = pixels.astype(pixels.dtype.newbyteorder("="))  # a copy in native byte order
    return out[..., 0] if out.shape[2] == 1 else out


ID_ENCODINGS = ("16UC1", "mono16", "32SC1", "mono8")
"""Single-channel integer encodings of id images: ground-truth labels and instances, 2D instance masks."""


def id_image_to_numpy(msg) -> np.ndarray:
    """An id image (ground-truth labels / instances, a segmenter's instance masks) -> ``(H, W)`` int64.

    Raises:
        ValueError: an encoding outside :data:`ID_ENCODINGS` (message starts ``encoding``), malformed data."""
    encoding = str(msg.encoding)
    if encoding not in ID_ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not a single-channel integer one ({', '.join(ID_ENCODINGS)})")
    return raw_image_array(msg).astype(np.int64)


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
