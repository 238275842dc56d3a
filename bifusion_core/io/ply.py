"""Binary little-endian PLY writer/reader for labelled point clouds."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_PLY_TYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double", np.dtype("uint8"): "uchar",
              np.dtype("int32"): "int", np.dtype("uint32"): "uint", np.dtype("int16"): "short",
              np.dtype("uint16"): "ushort"}
_NP_TYPES = {v: k for k, v in _PLY_TYPES.items()}


def write_ply(path, points: np.ndarray, fields: dict | None = None, colours: np.ndarray | None = None) -> None:
    """Write ``points (N,3)`` with optional ``colours (N,3) uint8`` (red, green, blue) and extra per-point
    scalar ``fields`` ({name: (N,) array}; entries whose value is None are ignored)."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    n = len(points)
    cols = [("x", points[:, 0]), ("y", points[:, 1]), ("z", points[:, 2])]
    if colours is not None:
        colours = np.asarray(colours, dtype=np.uint8)
        if colours.shape != (n, 3):
            raise ValueError(f"colours must be ({n}, 3), got {colours.shape}")
        cols += [("red", colours[:, 0]), ("green", colours[:, 1]), ("blue", colours[:, 2])]
    for name, val in (fields or {}).items():
        if val is None:
            continue
        val = np.asarray(val)
        if val.shape != (n,):
            raise ValueError(f"field {name!r} must have shape ({n},), got {val.shape}")
        if val.dtype not in _PLY_TYPES:
            val = val.astype(np.float32)
        cols.append((name, val))
    dtype = np.dtype([(name, val.dtype.newbyteorder("<")) for name, val in cols])
    rec = np.empty(n, dtype=dtype)
    for name, val in cols:
        rec[name] = val
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {_PLY_TYPES[val.dtype]} {name}" for name, val in cols]
    header.append("end_header")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())


def read_ply(path) -> np.ndarray:
    """Read a binary little-endian vertex-only PLY written by :func:`write_ply` into a structured array."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        props, n = [], None
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: truncated PLY header")
            parts = line.decode("ascii").split()
            if parts[0] == "format" and parts[1] != "binary_little_endian":
                raise ValueError(f"{path}: only binary_little_endian PLY is supported")
            if parts[0] == "element" and parts[1] == "vertex":
                n = int(parts[2])
            elif parts[0] == "property":
                props.append((parts[2], _NP_TYPES[parts[1]].newbyteorder("<")))
            elif parts[0] == "end_header":
                break
        data = np.frombuffer(f.read(), dtype=np.dtype(props), count=n)
    return data
