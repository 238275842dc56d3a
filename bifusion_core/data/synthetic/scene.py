"""Procedural indoor rooms built from primitives (planes, oriented boxes, vertical cylinders, spheres).

A room is the axis-aligned box ``[0, W] x [0, D] x [0, H]`` (metres, world z up, REP 103): a floor, four walls
and an optional ceiling, each a plane primitive and an instance of its own. It is furnished with objects of
ScanNet200 classes (see :data:`OBJECT_CLASSES`), each made of several primitives with varied sizes, poses,
colours and simple procedural textures, placed so that they do not overlap each other or the camera path
(:class:`CameraPath`). Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the
same scene.

Labels are ScanNet200 label ids (:mod:`bifusion_core.data.scannet.classes`); instance ids are 1, 2, ...
unique in the scene (0 is reserved for "none").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ...config import configclass, spec
from ..scannet.classes import SCANNET200

# primitive kinds
PLANE, BOX, CYLINDER, SPHERE = 0, 1, 2, 3
# textures
TEX_PLAIN, TEX_TILES, TEX_WOOD, TEX_FABRIC, TEX_STRIPES, TEX_SCREEN = range(6)

OBJECT_CLASSES = ("table", "chair", "office chair", "bed", "pillow", "nightstand", "lamp", "couch", "cabinet",
                  "bookshelf", "desk", "monitor", "keyboard", "door", "window", "picture", "trash can", "box",
                  "plant")
"""ScanNet200 classes of the furniture the generator can place (besides wall, floor and ceiling)."""
SHELL_CLASSES = ("wall", "floor", "ceiling")

WOOD = ((0.55, 0.38, 0.22), (0.72, 0.55, 0.36), (0.40, 0.27, 0.16), (0.85, 0.72, 0.52), (0.30, 0.20, 0.13))
FABRIC = ((0.25, 0.30, 0.45), (0.55, 0.20, 0.20), (0.35, 0.45, 0.30), (0.60, 0.58, 0.55), (0.20, 0.20, 0.22),
          (0.70, 0.60, 0.40), (0.45, 0.35, 0.55))
PAINT = ((0.92, 0.92, 0.90), (0.30, 0.32, 0.35), (0.75, 0.80, 0.85), (0.85, 0.80, 0.70), (0.55, 0.62, 0.55))
METAL = ((0.62, 0.62, 0.64), (0.15, 0.15, 0.16), (0.85, 0.85, 0.86))
WALLS = ((0.90, 0.88, 0.82), (0.82, 0.86, 0.90), (0.92, 0.85, 0.78), (0.80, 0.85, 0.78), (0.95, 0.95, 0.95))
FLOORS = (((0.62, 0.45, 0.30), TEX_WOOD, 0.15), ((0.80, 0.80, 0.78), TEX_TILES, 0.5),
          ((0.45, 0.45, 0.50), TEX_FABRIC, 0.02), ((0.70, 0.55, 0.40), TEX_WOOD, 0.12))


def rot_z(yaw: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``yaw`` radians about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Primitive:
    """One shape of the scene.

    Attributes:
        kind: :data:`PLANE`, :data:`BOX`, :data:`CYLINDER` (axis = local z) or :data:`SPHERE`.
        center: ``(3,)`` world position of the local origin.
        rotation: ``(3, 3)`` world-from-local rotation (a plane's normal is its local z).
        half: ``(3,)`` half extents: box half sizes; cylinder ``(r, r, half height)``; sphere ``(r, r, r)``;
            plane half sizes along local x, y (0 along z; planes are rendered unbounded, as room shells).
        color: ``(3,)`` albedo in [0, 1].
        texture: ``TEX_*`` code; ``tex_scale`` its period in metres.
        label: ScanNet200 label id; ``instance``: instance id (>= 1).
        dropout: extra probability that the depth camera misses this surface (glass, dark screens).
    """

    kind: int
    center: np.ndarray
    rotation: np.ndarray
    half: np.ndarray
    color: np.ndarray
    texture: int = TEX_PLAIN
    tex_scale: float = 0.05
    label: int = 0
    instance: int = 0
    dropout: float = 0.0

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points -> local coordinates."""
        return (np.asarray(points, np.float64) - self.center) @ self.rotation

    def corners(self) -> np.ndarray:
        """``(8, 3)`` world corners of the local bounding box."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
        return (signs * self.half) @ self.rotation.T + self.center

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` signed distance (metres, negative inside) of world points to the surface; for a plane the
        signed distance along its normal."""
        p = self.to_local(points)
        if self.kind == PLANE:
            return p[:, 2]
        if self.kind == BOX:
            q = np.abs(p) - self.half
            return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
        if self.kind == CYLINDER:
            d = np.stack([np.hypot(p[:, 0], p[:, 1]) - self.half[0], np.abs(p[:, 2]) - self.half[2]], axis=1)
            return np.minimum(d.max(axis=1), 0) + np.linalg.norm(np.maximum(d, 0), axis=1)
        if self.kind == SPHERE:
            return np.linalg.norm(p, axis=1) - self.half[0]
        raise ValueError(f"unknown primitive kind {self.kind}")


@dataclass
class SceneObject:
    """An instance: its class, and the indices of its primitives in :attr:`SyntheticScene.primitives`."""

    instance: int
    label: int
    name: str
    primitives: list[int]


@dataclass
class CameraPath:
    """A smooth closed camera path: an ellipse around ``center`` at about ``height``, looking toward the
    middle of the room with a sinusoidal yaw sweep and a slight downward pitch (see :mod:`.trajectory`)."""

    center: np.ndarray  # (2,)
    radii: np.ndarray  # (2,)
    height: float
    phase: float
    direction: float  # +1 counter-clockwise, -1 clockwise
    pitch: float  # radians, negative looks down
    sweep: float  # yaw sweep amplitude, radians
    sweep_cycles: float
    bob: float  # vertical bob amplitude, metres

    def xy(self, s: np.ndarray) -> np.ndarray:
        """``(len(s), 2)`` positions at path parameters ``s`` (1 = one full loop)."""
        a = self.phase + self.direction * 2 * np.pi * np.asarray(s, np.float64)
        return self.center + self.radii * np.stack([np.cos(a), np.sin(a)], axis=-1)


@dataclass
class SyntheticScene:
    """A generated room.

    Attributes:
        size: ``(3,)`` room extent ``(W, D, H)``; the room spans ``[0, W] x [0, D] x [0, H]``.
        ceiling: whether the ceiling is rendered (primitive 5 is skipped otherwise).
        primitives: shell planes first (x=0, x=W, y=0, y=D walls, floor, ceiling), then the furniture.
        objects: the instances (shell ones included, the ceiling only when rendered).
        path: the camera path, kept clear of furniture.
        light: ``(3,)`` position of the room's point light; ``light_gain``: its strength.
        seed: the seed it was made from.
    """

    size: np.ndarray
    ceiling: bool
    primitives: list[Primitive]
    objects: list[SceneObject]
    path: CameraPath
    light: np.ndarray
    light_gain: float
    seed: int
    _tables: dict | None = field(default=None, repr=False)

    def instance_labels(self) -> dict[int, int]:
        """``{instance id: ScanNet200 label id}``."""
        return {o.instance: o.label for o in self.objects}

    def tables(self) -> dict[str, np.ndarray]:
        """Per-primitive arrays (``kind (P,)``, ``center (P,3)``, ``rotation (P,3,3)``, ``half (P,3)``,
        ``color (P,3)``, ``texture (P,)``, ``tex_scale (P,)``, ``label (P,)``, ``instance (P,)``,
        ``dropout (P,)``) for vectorised rendering."""
        if self._tables is None:
            ps = self.primitives
            self._tables = {
                "kind": np.array([p.kind for p in ps], np.int64),
                "center": np.array([p.center for p in ps], np.float64),
                "rotation": np.array([p.rotation for p in ps], np.float64),
                "half": np.array([p.half for p in ps], np.float64),
                "color": np.array([p.color for p in ps], np.float32),
                "texture": np.array([p.texture for p in ps], np.int64),
                "tex_scale": np.array([p.tex_scale for p in ps], np.float64),
                "label": np.array([p.label for p in ps], np.int64),
                "instance": np.array([p.instance for p in ps], np.int64),
                "dropout": np.array([p.dropout for p in ps], np.float32),
            }
        return self._tables


@configclass
class SceneConfig:
    """Room and furnishing parameters (ranges are sampled uniformly).

    Attributes:
        room_min, room_max: ``(W, D, H)`` bounds of the room size, metres.
        ceiling: render a ceiling.
        camera_height: range of the camera path height (a hand-held RealSense).
        wall_margin: range of the camera path's distance from the walls.
        clearance: minimum horizontal distance between the camera path and any furniture footprint.
        n_boxes, n_trash, n_doors, n_windows, n_pictures, n_cabinets, n_bookshelves: ``(min, max)`` counts.
        light_gain: range of the room light's strength.
        object_scale: range of a per-object uniform scale about its footprint centre, for the free-standing
            objects nothing rests on (``(1, 1)``: none; at most 1, so that scaled objects still fit where they
            were placed).
        recolour: probability that an object is repainted with a random colour and texture (besides its own
            palette), so that colour alone does not give its class away.
    The defaults give the rooms of the embedded demo recording; :data:`VARIED_SCENE` is the training stream's.
    """

    room_min: tuple[float, float, float] = spec((4.5, 4.0, 2.5), gt=0)
    room_max: tuple[float, float, float] = spec((7.5, 6.5, 3.0), gt=0)
    ceiling: bool = True
    camera_height: tuple[float, float] = (1.25, 1.55)
    wall_margin: tuple[float, float] = spec((1.35, 1.7), ge=0)
    clearance: float = spec(0.45, ge=0.2)  # the camera must stay outside furniture
    n_boxes: tuple[int, int] = spec((2, 4), ge=0)
    n_trash: tuple[int, int] = spec((1, 2), ge=0)
    n_doors: tuple[int, int] = spec((1, 2), ge=0)
    n_windows: tuple[int, int] = spec((1, 2), ge=0)
    n_pictures: tuple[int, int] = spec((1, 3), ge=0)
    n_cabinets: tuple[int, int] = spec((1, 2), ge=0)
    n_bookshelves: tuple[int, int] = spec((1, 2), ge=0)
    light_gain: tuple[float, float] = spec((0.8, 1.2), gt=0)
    object_scale: tuple[float, float] = spec((1.0, 1.0), gt=0, le=1)
    recolour: float = spec(0.0, ge=0, le=1)

    def __post_init__(self) -> None:
        if any(hi < lo for lo, hi in zip(self.room_min, self.room_max)):
            raise ValueError(f"room_min {self.room_min} / room_max {self.room_max} must be positive (W, D, H) "
                             "with min <= max")
        if self.room_min[2] < 2.2:
            raise ValueError(f"room height must be at least 2.2 m, got {self.room_min[2]}")
        if not 0.3 <= self.camera_height[0] <= self.camera_height[1] < self.room_min[2] - 0.2:
            raise ValueError(f"camera_height {self.camera_height} must lie within the room")
        for name in ("wall_margin", "n_boxes", "n_trash", "n_doors", "n_windows", "n_pictures", "n_cabinets",
                     "n_bookshelves", "light_gain", "object_scale"):
            lo, hi = getattr(self, name)
            if hi < lo:
                raise ValueError(f"{name} must be a (min, max) range with 0 <= min <= max, got {(lo, hi)}")


# ----------------------------------------------------------------------------------------------------------
# object builders: primitives in object-local coordinates (origin on the floor at the footprint centre,
# +y toward the object's back, i.e. toward the wall it stands against)


@dataclass
class _Spec:
    kind: int
    center: np.ndarray
    rotation: np.ndarray
    half: np.ndarray
    color: np.ndarray
    texture: int
    tex_scale: float
    dropout: float = 0.0


@dataclass
class _Obj:
    name: str
    specs: list[_Spec]


def _jitter(rng, colour, amount=0.05) -> np.ndarray:
    return np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0.02, 0.98)


def _box(center, size, colour, tex=TEX_PLAIN, scale=0.05, dropout=0.0, yaw=0.0) -> _Spec:
    return _Spec(BOX, np.asarray(center, float), rot_z(yaw), np.asarray(size, float) / 2, np.asarray(colour),
                 tex, scale, dropout)


def _cyl(center, radius, height, colour, tex=TEX_PLAIN, scale=0.05, dropout=0.0) -> _Spec:
    return _Spec(CYLINDER, np.asarray(center, float), np.eye(3), np.array([radius, radius, height / 2]),
                 np.asarray(colour), tex, scale, dropout)


def _sphere(center, radius, colour, tex=TEX_PLAIN, scale=0.05) -> _Spec:
    return _Spec(SPHERE, np.asarray(center, float), np.eye(3), np.array([radius] * 3), np.asarray(colour),
                 tex, scale)


def _moved(obj: _Obj, offset, yaw: float) -> _Obj:
    r = rot_z(yaw)
    off = np.asarray(offset, float)
    specs = [_Spec(s.kind, r @ s.center + off, r @ s.rotation, s.half, s.color, s.texture, s.tex_scale,
                   s.dropout) for s in obj.specs]
    return _Obj(obj.name, specs)


def _table(rng, small: bool = False) -> tuple[_Obj, float, float]:
    if small:
        w, d, h = rng.uniform(0.6, 1.0), rng.uniform(0.45, 0.6), rng.uniform(0.55, 0.75)
    else:
        w, d, h = rng.uniform(0.8, 1.4), rng.uniform(0.6, 0.9), rng.uniform(0.70, 0.78)
    col = _jitter(rng, WOOD[rng.integers(len(WOOD))])
    specs = [_box((0, 0, h - 0.02), (w, d, 0.04), col, TEX_WOOD, rng.uniform(0.05, 0.12))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            specs.append(_box((sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), (h - 0.04) / 2), (0.05, 0.05, h - 0.04),
                              col * 0.9, TEX_WOOD, 0.05))
    return _Obj("table", specs), w, d


def _chair(rng, colour=None) -> _Obj:
    sw, sd, sh, bh = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48), rng.uniform(0.35, 0.5)
    col = _jitter(rng, colour if colour is not None else WOOD[rng.integers(len(WOOD))])
    seat = _jitter(rng, FABRIC[rng.integers(len(FABRIC))])
    specs = [_box((0, 0, sh), (sw, sd, 0.05), seat, TEX_FABRIC, 0.015),
             _box((0, sd / 2 - 0.02, sh + 0.025 + bh / 2), (sw, 0.04, bh), col, TEX_WOOD, 0.06)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            specs.append(_box((sx * (sw / 2 - 0.03), sy * (sd / 2 - 0.03), (sh - 0.025) / 2),
                              (0.035, 0.035, sh - 0.025), col, TEX_WOOD, 0.05))
    return _Obj("chair", specs)


def _office_chair(rng) -> _Obj:
    fab = _jitter(rng, FABRIC[rng.integers(len(FABRIC))])
    metal = _jitter(rng, METAL[rng.integers(len(METAL))], 0.03)
    sh = rng.uniform(0.45, 0.52)
    return _Obj("office chair", [
        _cyl((0, 0, 0.03), 0.3, 0.05, metal),
        _cyl((0, 0, (sh - 0.04 + 0.05) / 2), 0.03, sh - 0.09, metal),
        _box((0, 0, sh), (0.5, 0.48, 0.08), fab, TEX_FABRIC, 0.012),
        _box((0, 0.22, sh + 0.36), (0.47, 0.06, 0.58), fab, TEX_FABRIC, 0.012),
    ])


def _lamp(rng, floor: bool) -> _Obj:
    metal = _jitter(rng, METAL[rng.integers(len(METAL))], 0.03)
    shade = _jitter(rng, ((0.95, 0.92, 0.80), (0.85, 0.85, 0.85), (0.90, 0.80, 0.60))[rng.integers(3)])
    pole = rng.uniform(1.3, 1.6) if floor else rng.uniform(0.25, 0.35)
    r = rng.uniform(0.17, 0.24) if floor else rng.uniform(0.1, 0.14)
    return _Obj("lamp", [
        _cyl((0, 0, 0.015), r * 0.8, 0.03, metal),
        _cyl((0, 0, 0.03 + pole / 2), 0.015 if floor else 0.02, pole, metal),
        _cyl((0, 0, 0.03 + pole + r * 0.6), r, r * 1.3, shade, TEX_FABRIC, 0.01),
    ])


def _bed_set(rng) -> tuple[list[_Obj], float, float]:
    wide = rng.random() < 0.6
    w, d = (rng.uniform(1.4, 1.8) if wide else rng.uniform(0.9, 1.1)), rng.uniform(1.95, 2.1)
    wood = _jitter(rng, WOOD[rng.integers(len(WOOD))])
    sheets = ((0.92, 0.92, 0.90), (0.75, 0.82, 0.90), (0.90, 0.80, 0.75), (0.6, 0.6, 0.65))
    sheet = _jitter(rng, sheets[rng.integers(4)])
    hb = rng.uniform(0.9, 1.2)
    bed = _Obj("bed", [_box((0, 0, 0.15), (w, d, 0.3), wood, TEX_WOOD, 0.1),
                       _box((0, -0.03, 0.41), (w - 0.06, d - 0.12, 0.22), sheet, TEX_FABRIC, 0.02),
                       _box((0, d / 2 - 0.03, hb / 2), (w, 0.06, hb), wood, TEX_WOOD, 0.08)])
    objs = [bed]
    n_pillows = 2 if wide else 1
    pw = min(0.65, (w - 0.2) / n_pillows - 0.04)
    pcol = _jitter(rng, ((0.95, 0.95, 0.93), (0.85, 0.75, 0.70), (0.65, 0.72, 0.85))[rng.integers(3)])
    for k in range(n_pillows):
        x = 0.0 if n_pillows == 1 else (k - 0.5) * (pw + 0.06)
        objs.append(_Obj("pillow", [_box((x, d / 2 - 0.3, 0.58), (pw, 0.38, 0.13), pcol, TEX_FABRIC, 0.01)]))
    # nightstand (and a table lamp on it) beside the head of the bed
    side = rng.choice([-1, 1])
    nw, nd, nh = rng.uniform(0.4, 0.5), rng.uniform(0.35, 0.45), rng.uniform(0.5, 0.6)
    nx, ny = side * (w / 2 + 0.05 + nw / 2), d / 2 - nd / 2
    ncol = _jitter(rng, WOOD[rng.integers(len(WOOD))])
    objs.append(_Obj("nightstand", [_box((nx, ny, nh / 2), (nw, nd, nh), ncol, TEX_WOOD, 0.06),
                                    _box((nx, ny - nd / 2 - 0.01, nh * 0.7), (0.1, 0.02, 0.02), METAL[0])]))
    objs.append(_moved(_lamp(rng, floor=False), (nx, ny, nh), 0.0))
    total_w = w + 2 * (nw + 0.05)
    return objs, total_w, d


def _couch(rng) -> tuple[_Obj, float, float]:
    w, d = rng.uniform(1.6, 2.4), rng.uniform(0.8, 0.95)
    col = _jitter(rng, FABRIC[rng.integers(len(FABRIC))])
    bh = rng.uniform(0.8, 0.9)
    return _Obj("couch", [_box((0, -0.02, 0.21), (w - 0.3, d - 0.2, 0.42), col, TEX_FABRIC, 0.015),
                          _box((0, d / 2 - 0.1, bh / 2), (w, 0.2, bh), col * 0.95, TEX_FABRIC, 0.015),
                          _box((-(w / 2 - 0.09), 0, 0.31), (0.18, d, 0.62), col * 0.9, TEX_FABRIC, 0.015),
                          _box((w / 2 - 0.09, 0, 0.31), (0.18, d, 0.62), col * 0.9, TEX_FABRIC, 0.015)]), w, d


def _cabinet(rng) -> tuple[_Obj, float, float]:
    w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6), rng.uniform(0.8, 2.0)
    painted = rng.random() < 0.5
    col = _jitter(rng, (PAINT if painted else WOOD)[rng.integers(5)])
    metal = METAL[rng.integers(len(METAL))]
    specs = [_box((0, 0, h / 2), (w, d, h), col, TEX_PLAIN if painted else TEX_WOOD, 0.07),
             _box((0, -d / 2 - 0.002, h / 2 + 0.02), (0.012, 0.006, h - 0.1), col * 0.55)]
    for sx in (-1, 1):
        specs.append(_box((sx * 0.05, -d / 2 - 0.012, h * 0.55), (0.02, 0.024, 0.14), metal))
    return _Obj("cabinet", specs), w, d


def _bookshelf(rng) -> tuple[_Obj, float, float]:
    w, d, h, t = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.38), rng.uniform(1.2, 2.0), 0.025
    col = _jitter(rng, WOOD[rng.integers(len(WOOD))])
    specs = [_box((sx * (w / 2 - t / 2), 0, h / 2), (t, d, h), col, TEX_WOOD, 0.08) for sx in (-1, 1)]
    specs += [_box((0, 0, h - t / 2), (w - 2 * t, d, t), col, TEX_WOOD, 0.08),
              _box((0, 0, 0.05), (w - 2 * t, d, 0.1), col * 0.9, TEX_WOOD, 0.08),
              _box((0, d / 2 - 0.006, h / 2), (w - 2 * t, 0.012, h), col * 0.8, TEX_WOOD, 0.08)]
    n = max(1, int(h / 0.38) - 1)
    for k in range(1, n + 1):
        specs.append(_box((0, -0.005, 0.1 + k * (h - 0.1) / (n + 1)), (w - 2 * t, d - 0.012, t), col, TEX_WOOD, 0.08))
    return _Obj("bookshelf", specs), w, d


def _desk_set(rng) -> tuple[list[_Obj], float, float]:
    w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.6, 0.75), rng.uniform(0.72, 0.76)
    col = _jitter(rng, (WOOD + PAINT)[rng.integers(len(WOOD) + len(PAINT))])
    desk = _Obj("desk", [_box((0, 0, h - 0.0175), (w, d, 0.035), col, TEX_WOOD, 0.09),
                         _box((-(w / 2 - 0.015), 0, (h - 0.035) / 2), (0.03, d - 0.04, h - 0.035), col * 0.92),
                         _box((w / 2 - 0.015, 0, (h - 0.035) / 2), (0.03, d - 0.04, h - 0.035), col * 0.92),
                         _box((0, d / 2 - 0.03, h - 0.235), (w - 0.06, 0.02, 0.4), col * 0.85)])
    dark = _jitter(rng, (0.08, 0.08, 0.09), 0.03)
    sw, sh = rng.uniform(0.5, 0.62), rng.uniform(0.3, 0.38)
    mx = rng.uniform(-0.15, 0.15) * w
    monitor = _Obj("monitor", [_box((mx, d / 4, h + 0.0075), (0.22, 0.16, 0.015), dark),
                               _box((mx, d / 4 + 0.02, h + 0.1), (0.04, 0.03, 0.18), dark),
                               _box((mx, d / 4 - 0.01, h + 0.1 + sh / 2), (sw, 0.03, sh), dark, TEX_SCREEN, 0.04,
                                    dropout=0.2)])
    keyboard = _Obj("keyboard", [_box((mx, -d / 4, h + 0.0125), (0.44, 0.14, 0.025),
                                      _jitter(rng, METAL[rng.integers(len(METAL))], 0.03), TEX_FABRIC, 0.01)])
    chair = _moved(_office_chair(rng), (mx, -d / 2 - 0.2, 0), math.pi)
    return [desk, monitor, keyboard, chair], w, d + 0.8


def _table_set(rng, against_wall: bool) -> tuple[list[_Obj], float, float]:
    table, w, d = _table(rng)
    objs = [table]
    ccol = WOOD[rng.integers(len(WOOD))]
    sides = [(0, -1), (-1, 0), (1, 0)] + ([] if against_wall else [(0, 1)])
    for sx, sy in sides:
        if rng.random() < 0.2:
            continue
        # a chair faces the table: its back (+y local) points away from it
        yaw = math.atan2(-sx, sy) if (sx or sy) else 0.0
        pos = (sx * (w / 2 + 0.25), sy * (d / 2 + 0.25), 0)
        objs.append(_moved(_chair(rng, ccol), pos, yaw + rng.uniform(-0.2, 0.2)))
    return objs, w + 1.0, d + (0.5 if against_wall else 1.0)


def _box_object(rng) -> tuple[_Obj, float, float]:
    size = rng.uniform([0.2, 0.2, 0.15], [0.6, 0.5, 0.5])
    cardboard = ((0.70, 0.52, 0.32), (0.60, 0.45, 0.28), (0.85, 0.85, 0.80), (0.35, 0.45, 0.60))
    col = _jitter(rng, cardboard[rng.integers(4)])
    return _Obj("box", [_box((0, 0, size[2] / 2), size, col, TEX_FABRIC, 0.03)]), size[0], size[1]


def _trash_can(rng) -> tuple[_Obj, float, float]:
    r, h = rng.uniform(0.12, 0.2), rng.uniform(0.3, 0.5)
    col = _jitter(rng, (METAL + PAINT)[rng.integers(len(METAL) + len(PAINT))])
    return _Obj("trash can", [_cyl((0, 0, h / 2), r, h, col, TEX_STRIPES, 0.03),
                              _cyl((0, 0, h + 0.01), r + 0.01, 0.02, col * 0.8)]), 2 * r + 0.02, 2 * r + 0.02


def _plant(rng) -> tuple[_Obj, float, float]:
    r, h = rng.uniform(0.12, 0.18), rng.uniform(0.25, 0.35)
    fr = rng.uniform(0.25, 0.35)
    pot = _jitter(rng, ((0.65, 0.35, 0.22), (0.9, 0.9, 0.88), (0.2, 0.2, 0.22))[rng.integers(3)])
    green = _jitter(rng, (0.2, 0.45, 0.18), 0.08)
    return _Obj("plant", [_cyl((0, 0, h / 2), r, h, pot),
                          _sphere((0, 0, h + fr * 0.9), fr, green, TEX_FABRIC, 0.04),
                          _sphere((rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), h + fr * 1.7), fr * 0.7, green * 0.9,
                                  TEX_FABRIC, 0.04)]), 2 * fr, 2 * fr


def _door(rng) -> tuple[_Obj, float, float, float]:
    w, h = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)
    col = _jitter(rng, (WOOD + PAINT)[rng.integers(len(WOOD) + len(PAINT))])
    return _Obj("door", [_box((0, -0.02, h / 2), (w, 0.04, h), col, TEX_WOOD, 0.1),
                         _box((w / 2 - 0.1, -0.055, 1.0), (0.12, 0.03, 0.025), METAL[0])]), w, 0.0, h


def _window(rng, room_h) -> tuple[_Obj, float, float, float]:
    w = rng.uniform(0.9, 1.6)
    z0 = rng.uniform(0.95, 1.05)
    h = min(rng.uniform(1.0, 1.4), room_h - 0.25 - z0)
    frame = _jitter(rng, (0.93, 0.93, 0.92), 0.03)
    glass = _jitter(rng, (0.55, 0.70, 0.85), 0.05)
    return _Obj("window", [_box((0, -0.02, z0 + h / 2), (w, 0.04, h), frame),
                           _box((0, -0.025, z0 + h / 2), (w - 0.12, 0.05, h - 0.12), glass, TEX_PLAIN, 0.1,
                                dropout=0.35)]), w, z0, z0 + h


def _picture(rng) -> tuple[_Obj, float, float, float]:
    w, h = rng.uniform(0.35, 1.0), rng.uniform(0.3, 0.8)
    z0 = rng.uniform(1.25, 1.5)
    frame = _jitter(rng, ((0.1, 0.1, 0.1), (0.5, 0.35, 0.2), (0.9, 0.9, 0.9))[rng.integers(3)])
    art = rng.uniform(0.1, 0.95, 3)
    return _Obj("picture", [_box((0, -0.015, z0 + h / 2), (w, 0.03, h), frame),
                            _box((0, -0.018, z0 + h / 2), (w - 0.06, 0.036, h - 0.06), art,
                                 (TEX_TILES, TEX_STRIPES, TEX_FABRIC)[rng.integers(3)], rng.uniform(0.04, 0.15))]), \
        w, z0, z0 + h


# ----------------------------------------------------------------------------------------------------------
# placement


class _Layout:
    """Footprints already taken, per-wall occupied intervals, and the camera path to keep clear."""

    def __init__(self, size, path_xy, clearance):
        self.W, self.D, self.H = size
        self.boxes: list[np.ndarray] = []  # (4,) xmin, ymin, xmax, ymax
        self.wall_items: dict[int, list[tuple[float, float, float, float]]] = {k: [] for k in range(4)}
        self.path_xy = path_xy
        self.clearance = clearance

    def wall_frame(self, k: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Wall ``k`` (0: x=0, 1: x=W, 2: y=0, 3: y=D): origin, direction along it, its length, and the yaw
        that turns an object's local +y (its back) toward the wall."""
        W, D = self.W, self.D
        return [(np.array([0.0, 0.0]), np.array([0.0, 1.0]), D, math.pi / 2),
                (np.array([W, 0.0]), np.array([0.0, 1.0]), D, -math.pi / 2),
                (np.array([0.0, 0.0]), np.array([1.0, 0.0]), W, math.pi),
                (np.array([0.0, D]), np.array([1.0, 0.0]), W, 0.0)][k]

    def footprint(self, xy, hw, hd, yaw) -> np.ndarray:
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        ex, ey = c * hw + s * hd, s * hw + c * hd
        return np.array([xy[0] - ex, xy[1] - ey, xy[0] + ex, xy[1] + ey])

    def fits(self, box: np.ndarray) -> bool:
        if box[0] < 0 or box[1] < 0 or box[2] > self.W or box[3] > self.D:
            return False
        for b in self.boxes:
            if box[0] < b[2] + 0.05 and b[0] < box[2] + 0.05 and box[1] < b[3] + 0.05 and b[1] < box[3] + 0.05:
                return False
        dx = np.maximum(np.maximum(box[0] - self.path_xy[:, 0], self.path_xy[:, 0] - box[2]), 0)
        dy = np.maximum(np.maximum(box[1] - self.path_xy[:, 1], self.path_xy[:, 1] - box[3]), 0)
        return bool(np.hypot(dx, dy).min() > self.clearance)

    def wall_free(self, k, a, b, z0, z1) -> bool:
        return all(not (a < bb + 0.1 and aa < b + 0.1 and z0 < zz1 and zz0 < z1)
                   for aa, bb, zz0, zz1 in self.wall_items[k])


def _place_on_wall(layout: _Layout, rng, w, d, z_range, attempts=30, floor=True, walls=(0, 1, 2, 3)):
    """Find a position on one of ``walls`` for an object of footprint ``w x d`` (``d`` from the wall) and
    vertical range ``z_range``; returns ``(xy, yaw)`` or None."""
    for _ in range(attempts):
        k = int(walls[int(rng.integers(len(walls)))])
        origin, along, length, yaw = layout.wall_frame(k)
        if length < w + 0.2:
            continue
        a = rng.uniform(0.05, length - w - 0.05)
        inward = {0: np.array([1.0, 0]), 1: np.array([-1.0, 0]), 2: np.array([0, 1.0]), 3: np.array([0, -1.0])}[k]
        xy = origin + along * (a + w / 2) + inward * (d / 2 + 0.005)
        if not layout.wall_free(k, a, a + w, *z_range):
            continue
        box = layout.footprint(xy, w / 2, max(d, 0.02) / 2, yaw)
        if floor and not layout.fits(box):
            continue
        layout.wall_items[k].append((a, a + w, *z_range))
        if floor:
            layout.boxes.append(box)
        return xy, yaw
    return None


def _place_free(layout: _Layout, rng, w, d, yaw_mode="grid", attempts=30, near=None):
    """Find a free floor position (anywhere, or within about 0.3 m of ``near`` when given) for a footprint
    ``w x d``; returns ``(xy, yaw)`` or None."""
    for _ in range(attempts):
        if near is not None:
            xy = np.asarray(near) + rng.normal(0, 0.3, 2)
        else:
            xy = rng.uniform([w / 2 + 0.05, d / 2 + 0.05], [layout.W - w / 2 - 0.05, layout.D - d / 2 - 0.05])
        if yaw_mode == "grid":
            yaw = rng.integers(4) * math.pi / 2 + rng.uniform(-0.15, 0.15)
        else:
            yaw = rng.uniform(0, 2 * math.pi)
        box = layout.footprint(xy, w / 2, d / 2, yaw)
        if layout.fits(box):
            layout.boxes.append(box)
            return xy, yaw
    return None


def _shell(size, rng, ceiling: bool) -> list[_Spec]:
    W, D, H = size
    wall = _jitter(rng, WALLS[rng.integers(len(WALLS))], 0.03)
    fcol, ftex, fscale = FLOORS[rng.integers(len(FLOORS))]
    wall_tex = TEX_STRIPES if rng.random() < 0.3 else TEX_PLAIN
    cols = lambda *c: np.array(c, float).T  # noqa: E731 - columns -> rotation matrix
    rots = [cols((0, 1, 0), (0, 0, 1), (1, 0, 0)), cols((0, -1, 0), (0, 0, 1), (-1, 0, 0)),
            cols((-1, 0, 0), (0, 0, 1), (0, 1, 0)), cols((1, 0, 0), (0, 0, 1), (0, -1, 0)),
            np.eye(3), cols((1, 0, 0), (0, -1, 0), (0, 0, -1))]
    centers = [(0, D / 2, H / 2), (W, D / 2, H / 2), (W / 2, 0, H / 2), (W / 2, D, H / 2), (W / 2, D / 2, 0),
               (W / 2, D / 2, H)]
    halves = [(D / 2, H / 2, 0), (D / 2, H / 2, 0), (W / 2, H / 2, 0), (W / 2, H / 2, 0), (W / 2, D / 2, 0),
              (W / 2, D / 2, 0)]
    specs = []
    for i in range(6):
        if i < 4:
            colour, tex, scale = wall * rng.uniform(0.97, 1.03), wall_tex, 0.12
        elif i == 4:
            colour, tex, scale = _jitter(rng, fcol), ftex, fscale
        else:
            colour, tex, scale = _jitter(rng, (0.95, 0.95, 0.95), 0.02), TEX_PLAIN, 0.1
        specs.append(_Spec(PLANE, np.array(centers[i], float), rots[i], np.array(halves[i], float),
                           np.clip(colour, 0, 1), tex, scale))
    return specs


def generate_scene(seed: int = 0, config: SceneConfig | None = None) -> SyntheticScene:
    """A furnished room, deterministic in ``seed``."""
    cfg = config or SceneConfig()
    rng = np.random.default_rng([int(seed), 0x5CE1E])
    size = rng.uniform(cfg.room_min, cfg.room_max)
    W, D, H = size
    # big items decide how far the camera path keeps from each wall (0: x=0, 1: x=W, 2: y=0, 3: y=D)
    margins = rng.uniform(*cfg.wall_margin, 4)
    bed = _bed_set(rng) if rng.random() < 0.55 else None
    bed_wall = int(rng.integers(4))
    if bed is not None:
        margins[bed_wall] = max(margins[bed_wall], bed[2] + cfg.clearance + 0.15)
    table = _table_set(rng, against_wall=False) if rng.random() < 0.8 else None
    if table is not None and bed is None:  # a dining/meeting table in the middle: let the path go round it
        margins = np.minimum(margins, rng.uniform(1.1, 1.25))
    lo = np.array([margins[0], margins[2]])
    hi = np.array([W - margins[1], D - margins[3]])
    path = CameraPath(
        center=(lo + hi) / 2 + rng.uniform(-0.1, 0.1, 2),
        radii=np.maximum(0.35, (hi - lo) / 2),
        height=float(rng.uniform(*cfg.camera_height)), phase=float(rng.uniform(0, 2 * np.pi)),
        direction=float(rng.choice([-1.0, 1.0])), pitch=float(np.deg2rad(rng.uniform(-24, -12))),
        sweep=float(np.deg2rad(rng.uniform(25, 45))), sweep_cycles=float(rng.integers(2, 4)),
        bob=float(rng.uniform(0.01, 0.04)))
    layout = _Layout(size, path.xy(np.linspace(0, 1, 128, endpoint=False)), cfg.clearance)

    placed: list[tuple[_Obj, np.ndarray, float]] = []  # (object, xy, yaw)

    def put(objs, where):
        if where is not None:
            placed.extend((o, where[0], where[1]) for o in ([objs] if isinstance(objs, _Obj) else objs))
        return where is not None

    if table is not None:  # before the wall furniture, which would crowd the middle out
        objs, w, d = table
        if not put(objs, _place_free(layout, rng, w, d, near=path.center)):
            table = None
    has_bed = bed is not None and put(bed[0], _place_on_wall(layout, rng, bed[1], bed[2], (0.0, 1.25),
                                                             walls=[bed_wall]))
    if not has_bed or rng.random() < 0.4:
        obj, w, d = _couch(rng)
        put(obj, _place_on_wall(layout, rng, w, d, (0.0, 0.95)))
    if rng.random() < 0.9:
        objs, w, d = _desk_set(rng)
        # the desk group is centred on the desk + chair footprint: shift the parts back by the chair's depth
        objs = [_moved(o, (0, 0.4, 0), 0.0) for o in objs]
        put(objs, _place_on_wall(layout, rng, w, d, (0.0, 1.25)))
    if table is None:  # a small table against a wall, and a chair or two of its own
        obj, w, d = _table(rng, small=True)
        put(obj, _place_on_wall(layout, rng, w, d, (0.0, 0.8)))
        for _ in range(int(rng.integers(1, 3))):
            put(_chair(rng), _place_on_wall(layout, rng, 0.5, 0.5, (0.0, 1.0)))
    for _ in range(int(rng.integers(cfg.n_bookshelves[0], cfg.n_bookshelves[1] + 1))):
        obj, w, d = _bookshelf(rng)
        put(obj, _place_on_wall(layout, rng, w, d, (0.0, 2.0)))
    for _ in range(int(rng.integers(cfg.n_cabinets[0], cfg.n_cabinets[1] + 1))):
        obj, w, d = _cabinet(rng)
        put(obj, _place_on_wall(layout, rng, w, d, (0.0, 2.0)))
    for _ in range(int(rng.integers(cfg.n_doors[0], cfg.n_doors[1] + 1))):
        obj, w, _, h = _door(rng)
        # a door keeps the floor in front of it clear
        where = _place_on_wall(layout, rng, w, 0.7, (0.0, h))
        if where is not None:
            xy, yaw = where
            inward = rot_z(yaw)[:2, 1] * -1
            put(obj, (xy - inward * 0.35, yaw))
    for _ in range(int(rng.integers(cfg.n_windows[0], cfg.n_windows[1] + 1))):
        obj, w, z0, z1 = _window(rng, H)
        put(obj, _place_on_wall(layout, rng, w, 0.0, (z0, z1), floor=False))
    for _ in range(int(rng.integers(cfg.n_pictures[0], cfg.n_pictures[1] + 1))):
        obj, w, z0, z1 = _picture(rng)
        put(obj, _place_on_wall(layout, rng, w, 0.0, (z0, z1), floor=False))
    if rng.random() < 0.7:
        obj = _lamp(rng, floor=True)
        put(obj, _place_on_wall(layout, rng, 0.5, 0.5, (0.0, 1.9)))
    if rng.random() < 0.7:
        obj, w, d = _plant(rng)
        put(obj, _place_on_wall(layout, rng, w, d, (0.0, 1.0)))
    for _ in range(int(rng.integers(cfg.n_trash[0], cfg.n_trash[1] + 1))):
        obj, w, d = _trash_can(rng)
        put(obj, _place_free(layout, rng, w, d))
    for _ in range(int(rng.integers(cfg.n_boxes[0], cfg.n_boxes[1] + 1))):
        obj, w, d = _box_object(rng)
        where = _place_free(layout, rng, w, d, yaw_mode="any")
        if put(obj, where) and rng.random() < 0.35:  # a second box stacked on the first
            top = obj.specs[0]
            obj2, w2, d2 = _box_object(rng)
            s = min(1.0, 0.9 * min(w, d) / max(w2, d2))
            spec = obj2.specs[0]
            spec.half = spec.half * np.array([s, s, 1.0])
            spec.center = np.array([0, 0, top.half[2] * 2 + spec.half[2]])
            put(_moved(obj2, (0, 0, 0), rng.uniform(-0.5, 0.5)), where)

    # assemble: shell first, then the furniture in placement order
    primitives: list[Primitive] = []
    objects: list[SceneObject] = []
    wall_id, floor_id, ceil_id = (SCANNET200.id_of(n) for n in SHELL_CLASSES)
    shell_names = ["wall"] * 4 + ["floor", "ceiling"]
    for i, spec in enumerate(_shell(size, rng, cfg.ceiling)):
        inst = i + 1
        label = {"wall": wall_id, "floor": floor_id, "ceiling": ceil_id}[shell_names[i]]
        primitives.append(Primitive(spec.kind, spec.center, spec.rotation, spec.half, spec.color, spec.texture,
                                    spec.tex_scale, label, inst, spec.dropout))
        if i < 5 or cfg.ceiling:
            objects.append(SceneObject(inst, label, shell_names[i], [i]))
    next_inst = 7
    for obj, xy, yaw in placed:
        obj = _varied(obj, rng, cfg)
        moved = _moved(obj, (xy[0], xy[1], 0.0), yaw)
        label = SCANNET200.id_of(obj.name)
        idx = []
        for spec in moved.specs:
            idx.append(len(primitives))
            primitives.append(Primitive(spec.kind, spec.center, spec.rotation, spec.half,
                                        np.clip(spec.color, 0, 1), spec.texture, spec.tex_scale, label, next_inst,
                                        spec.dropout))
        objects.append(SceneObject(next_inst, label, obj.name, idx))
        next_inst += 1
    light = np.array([path.center[0] + rng.uniform(-0.5, 0.5), path.center[1] + rng.uniform(-0.5, 0.5), H - 0.3])
    return SyntheticScene(size=size, ceiling=cfg.ceiling, primitives=primitives, objects=objects, path=path,
                          light=light, light_gain=float(rng.uniform(*cfg.light_gain)), seed=int(seed))


def _varied(obj: _Obj, rng: np.random.Generator, cfg: SceneConfig) -> _Obj:
    """``obj`` scaled by a random factor in ``cfg.object_scale`` about its footprint centre and, with
    probability ``cfg.recolour``, repainted (one random colour and texture for all its parts). Draws nothing from
    ``rng`` with the defaults, so default rooms are unchanged."""
    specs = obj.specs
    if cfg.object_scale != (1.0, 1.0) and obj.name in _SCALABLE:
        s = float(rng.uniform(*cfg.object_scale))
        specs = [dataclasses.replace(p, center=np.asarray(p.center) * s, half=np.asarray(p.half) * s) for p in specs]
    if cfg.recolour > 0 and rng.random() < cfg.recolour:
        colour = _random_colour(rng)
        tex = int(rng.choice([TEX_PLAIN, TEX_FABRIC, TEX_STRIPES, TEX_WOOD]))
        specs = [dataclasses.replace(p, color=_jitter(rng, colour, 0.04), texture=tex) for p in specs]
    return _Obj(obj.name, specs) if specs is not obj.specs else obj


_SCALABLE = frozenset({"table", "chair", "office chair", "couch", "cabinet", "bookshelf", "trash can", "plant",
                       "lamp"})
"""Objects that stand on the floor with nothing on them: scaling one about its origin leaves no other object
floating (a desk carries its monitor, a bed its pillows, a box may carry a box; doors and pictures hang)."""


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1] of random hue, saturation 0.2-0.8 and value 0.25-0.95."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.95)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


VARIED_SCENE = SceneConfig(n_boxes=(2, 6), n_trash=(1, 3), n_pictures=(1, 4), light_gain=(0.55, 1.4),
                           object_scale=(0.8, 1.0), recolour=0.3)
"""The rooms of the training stream (:mod:`.stream`): more clutter, dimmer and brighter light, smaller objects
and repainted ones."""
