"""Per-scene labelled point clouds.

Two sources are understood:

* ScanNet's own files in a scene directory: ``SCENE_vh_clean_2.ply`` (mesh vertices with colours),
  ``SCENE_vh_clean_2.0.010000.segs.json`` (over-segmentation) and ``SCENE.aggregation.json`` (or
  ``SCENE_vh_clean.aggregation.json``: segment groups = objects with a raw category). Raw categories map to
  ScanNet label ids through the official TSV (``label_map``) or :func:`.classes.raw_category_to_id`; instance
  ids are ``objectId + 1`` as in the benchmark's ground truth.
* A labelled PLY with vertex properties ``x y z red green blue label instance`` -- what the synthetic
  generator writes (``SCENE_labelled.ply``) and :func:`write_labelled_cloud` writes.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import SCANNET200, load_label_map, raw_category_to_id

log = logging.getLogger(__name__)

LABELLED_SUFFIX = "_labelled.ply"

_PLY_DTYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
               "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
               "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


@dataclass
class ScenePoints:
    """A labelled point cloud of one scene.

    Attributes:
        name: scene name.
        points: ``(N, 3)`` float32 metres.
        colours: ``(N, 3)`` float32 in [0, 1].
        semantic: ``(N,)`` int64 ScanNet label ids (0 unlabelled).
        instance: ``(N,)`` int64 instance ids, unique in the scene (0 none).
    """

    name: str
    points: np.ndarray
    colours: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.points)
        if self.points.shape != (n, 3) or self.colours.shape != (n, 3):
            raise ValueError(f"{self.name}: points {self.points.shape} / colours {self.colours.shape} must be (N, 3)")
        if self.semantic.shape != (n,) or self.instance.shape != (n,):
            raise ValueError(f"{self.name}: semantic {self.semantic.shape} / instance {self.instance.shape} must "
                             f"be ({n},)")

    def benchmark_ids(self) -> np.ndarray:
        """``(N,)`` int64 ``label * 1000 + instance`` as the ScanNet instance benchmark's ground truth (0 where
        a vertex has no instance)."""
        return np.where(self.instance > 0, self.semantic * 1000 + self.instance % 1000, 0)


def read_ply_vertices(path) -> np.ndarray:
    """The ``vertex`` element of a PLY file (ascii or binary, any endianness) as a structured array.

    Elements before ``vertex`` may only have scalar properties. Raises ``FileNotFoundError`` /
    ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file not found: {path}")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        fmt, elements = None, []  # [name, count, [(prop, dtype or ('list', ct, it))]]
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: truncated PLY header")
            parts = line.decode("ascii", "replace").split()
            if not parts or parts[0] in ("comment", "obj_info"):
                continue
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                elements.append([parts[1], int(parts[2]), []])
            elif parts[0] == "property":
                if not elements:
                    raise ValueError(f"{path}: property before any element")
                if parts[1] == "list":
                    elements[-1][2].append((parts[4], ("list", parts[2], parts[3])))
                elif parts[1] in _PLY_DTYPES:
                    elements[-1][2].append((parts[2], _PLY_DTYPES[parts[1]]))
                else:
                    raise ValueError(f"{path}: unknown PLY property type {parts[1]!r}")
            elif parts[0] == "end_header":
                break
        if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
            raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
        names = [e[0] for e in elements]
        if "vertex" not in names:
            raise ValueError(f"{path}: no vertex element")
        endian = ">" if fmt == "binary_big_endian" else "<"
        for name, count, props in elements:
            if any(isinstance(t, tuple) for _, t in props):
                if name == "vertex":
                    raise ValueError(f"{path}: list properties in the vertex element are not supported")
                raise ValueError(f"{path}: cannot skip element {name!r} with list properties before the vertices")
            dtype = np.dtype([(p, endian + t) for p, t in props])
            if fmt == "ascii":
                rows = [f.readline().split() for _ in range(count)]
                if len(rows) != count or any(len(r) != len(props) for r in rows):
                    raise ValueError(f"{path}: element {name!r} is truncated or malformed")
                data = np.zeros(count, [(p, t) for p, t in props])
                try:
                    for j, (p, t) in enumerate(props):
                        data[p] = np.array([float(r[j]) for r in rows]).astype(t)
                except ValueError:
                    raise ValueError(f"{path}: element {name!r} has non-numeric values") from None
            else:
                raw = f.read(dtype.itemsize * count)
                if len(raw) != dtype.itemsize * count:
                    raise ValueError(f"{path}: element {name!r} is truncated ({len(raw)} of "
                                     f"{dtype.itemsize * count} bytes)")
                data = np.frombuffer(raw, dtype)
            if name == "vertex":
                return data
    raise AssertionError("unreachable")


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None


def _colours(v: np.ndarray, path: Path) -> np.ndarray:
    names = v.dtype.names
    if all(c in names for c in ("red", "green", "blue")):
        return np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255.0
    log.warning("%s: no vertex colours; using grey", path)
    return np.full((len(v), 3), 0.5, np.float32)


def _points(v: np.ndarray, path: Path) -> np.ndarray:
    if not all(c in v.dtype.names for c in ("x", "y", "z")):
        raise ValueError(f"{path}: vertices lack x, y, z")
    return np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)


def load_scene(path, label_map=None) -> ScenePoints:
    """A scene's labelled points from a scene directory or a PLY file (see the module docstring).

    Args:
        path: scene directory, or a labelled / ``_vh_clean_2`` PLY.
        label_map: ``{raw category: label id}``, or the path of ``scannetv2-labels.combined.tsv``; None uses
            :func:`~.classes.raw_category_to_id`.

    Raises:
        FileNotFoundError: no recognised files (the message lists what was looked for).
        ValueError: malformed files or counts that disagree (naming the file).
    """
    path = Path(path)
    if path.is_file():
        v = read_ply_vertices(path)
        name = path.name.replace(LABELLED_SUFFIX, "").replace("_vh_clean_2.ply", "").removesuffix(".ply")
        has = v.dtype.names
        sem = v["label"].astype(np.int64) if "label" in has else np.zeros(len(v), np.int64)
        inst = v["instance"].astype(np.int64) if "instance" in has else np.zeros(len(v), np.int64)
        return ScenePoints(name, _points(v, path), _colours(v, path), sem, inst)
    if not path.is_dir():
        raise FileNotFoundError(f"scene not found: {path}")
    name = path.name
    labelled = path / f"{name}{LABELLED_SUFFIX}"
    if labelled.is_file():
        return load_scene(labelled)
    mesh = path / f"{name}_vh_clean_2.ply"
    if not mesh.is_file():
        raise FileNotFoundError(f"{path}: neither {labelled.name} nor {mesh.name} found")
    v = read_ply_vertices(mesh)
    n = len(v)
    sem, inst = np.zeros(n, np.int64), np.zeros(n, np.int64)
    segs_file = path / f"{name}_vh_clean_2.0.010000.segs.json"
    agg_file = next((p for p in (path / f"{name}.aggregation.json", path / f"{name}_vh_clean.aggregation.json")
                     if p.is_file()), None)
    if segs_file.is_file() and agg_file is not None:
        seg_ids = np.asarray(_load_json(segs_file).get("segIndices", []), np.int64)
        if len(seg_ids) != n:
            raise ValueError(f"{segs_file}: {len(seg_ids)} segment indices for {n} vertices of {mesh.name}")
        if isinstance(label_map, (str, Path)):
            label_map = load_label_map(label_map)
        groups = _load_json(agg_file).get("segGroups")
        if groups is None:
            raise ValueError(f"{agg_file}: no 'segGroups'")
        order = np.argsort(seg_ids, kind="stable")
        sorted_ids = seg_ids[order]
        for g in groups:
            try:
                raw, obj, segments = g["label"], int(g["objectId"]), np.asarray(g["segments"], np.int64)
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{agg_file}: malformed segment group {g!r}") from None
            label = label_map.get(raw, 0) if label_map is not None else raw_category_to_id(raw, SCANNET200)
            lo = np.searchsorted(sorted_ids, segments, "left")
            hi = np.searchsorted(sorted_ids, segments, "right")
            verts = np.concatenate([order[a:b] for a, b in zip(lo, hi)]) if len(segments) else np.zeros(0, int)
            sem[verts] = label
            inst[verts] = obj + 1
    else:
        log.warning("%s: no segmentation/aggregation files; the scene is unlabelled", path)
    return ScenePoints(name, _points(v, mesh), _colours(v, mesh), sem, inst)


def write_labelled_cloud(path, scene: ScenePoints) -> None:
    """Write ``scene`` as a binary PLY with ``x y z red green blue label instance`` (readable by
    :func:`load_scene`)."""
    from ...io.ply import write_ply

    cols = np.clip(np.round(scene.colours * 255), 0, 255).astype(np.uint8)
    write_ply(path, scene.points, fields={"label": scene.semantic.astype(np.uint32),
                                          "instance": scene.instance.astype(np.uint32)}, colours=cols)
