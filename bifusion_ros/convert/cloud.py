"""Labelled point clouds: ``sensor_msgs/PointCloud2`` <-> numpy.

:func:`labelled_cloud` builds the node's output cloud (layout: :data:`CLOUD_FIELDS`, packed little-endian 4-byte
fields, positions in metres in ``header.frame_id``); :func:`cloud_to_numpy` reads any ``PointCloud2`` into a
structured array; :func:`pack_rgb` / :func:`unpack_rgb` convert colours to and from the PCL / sensor_msgs_py
packed ``rgb`` float.

Reading the cloud with ``sensor_msgs_py.point_cloud2`` (ROS 2's Python reader): ``read_points(cloud,
field_names=[...])`` works on Humble and Jazzy and gives the same values as :func:`cloud_to_numpy`
(``test_real_ros`` checks it). ``read_points_numpy`` does not, on Humble: it refuses every cloud whose fields
do not all share one datatype, and this one mixes FLOAT32 (x, y, z, rgb, score, alpha) with UINT32 (label,
instance); Jazzy's only checks the fields asked for, so ``read_points_numpy(cloud, ["x", "y", "z"])`` works there.
"""
from __future__ import annotations

import numpy as np

from .factory import MessageFactory, _as_uint8, _ctor, _uint8_payload

__all__ = ["CLOUD_FIELDS", "pack_rgb", "unpack_rgb", "labelled_cloud", "cloud_to_numpy"]

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
