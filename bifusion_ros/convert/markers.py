"""Instances as ``visualization_msgs/MarkerArray`` (RViz boxes and labels) and ``bifusion_ros/InstanceArray``.

Instances are any objects with these attributes (:class:`InstanceLike`): ``id`` (int > 0, persistent),
``class_id`` (int >= 0), ``class_name`` (str), ``score`` (float), ``center`` (3,) box centre in the header's frame,
metres, ``size`` (3,) box extent along its axes, metres, ``point_count`` (int); optionally ``orientation`` (4,)
quaternion ``x, y, z, w`` of the box (identity, i.e. an axis-aligned box, when absent or ``None``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, Sequence

import numpy as np

from bifusion_core.geometry import normalised_quaternion, quaternion_to_matrix
from bifusion_core.io.palette import PALETTE_RGB8

from .factory import MessageFactory, _ctor
from .transform import _pose

__all__ = ["InstanceLike", "CLASS_PALETTE", "class_colour", "id_colour", "marker_array", "instance_array"]


class InstanceLike(Protocol):
    """What :func:`marker_array` and :func:`instance_array` read from an instance (see the module doc)."""

    id: int
    class_id: int
    class_name: str
    score: float
    center: Sequence[float]
    size: Sequence[float]
    point_count: int


CLASS_PALETTE: np.ndarray = PALETTE_RGB8.astype(np.float64) / 255.0
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
    q = normalised_quaternion((0.0, 0.0, 0.0, 1.0) if orientation is None else orientation,
                               f"instance {iid} orientation")
    center = _vec3(inst.center, f"instance {iid} center")
    size = _vec3(inst.size, f"instance {iid} size")
    return iid, int(inst.class_id), str(inst.class_name), float(inst.score), center, size, q, int(inst.point_count)


def id_colour(instance_id: int) -> tuple[float, float, float]:
    """RGB (0..1) of an instance id, stable for the id's life: ``CLASS_PALETTE[id % 20]`` (consecutive ids
    differ)."""
    return tuple(float(v) for v in CLASS_PALETTE[int(instance_id) % len(CLASS_PALETTE)])  # type: ignore[return-value]


def marker_array(instances, header, msgs: MessageFactory, *, palette=None, box_alpha: float = 0.4,
                 text_height: float = 0.1, up=(0.0, 0.0, 1.0), min_scale: float = 1e-3, colour_by: str = "class"):
    """``visualization_msgs/MarkerArray`` of instances (see :class:`InstanceLike`).

    Markers, all with ``header``, ``lifetime`` 0 (forever, replaced by the next array) and ``frame_locked``
    False:

    1. one ``DELETEALL`` (ns ``""``, id 0) that clears the previous frame's markers;
    2. per instance a ``CUBE`` in ns ``"boxes"``, id = instance id, pose = box centre (+ orientation),
       scale = size (each at least ``min_scale`` so RViz draws it), colour = class colour
       (``colour_by="class"``) or the id's (``"id"``, :func:`id_colour`: persistent map ids) with ``box_alpha``;
    3. per instance a ``TEXT_VIEW_FACING`` in ns ``"labels"``, id = instance id, text ``"<class> <score:.2f>"``,
       white, ``scale.z = text_height``, placed above the box along ``up`` (the header frame's up
       direction: ``(0, 0, 1)`` for map / REP-103 body frames, ``(0, -1, 0)`` for an optical frame).

    Raises:
        ValueError: an instance id outside 1..2^31-1 (Marker ids are int32), non-finite centre / size.
    """
    if colour_by not in ("class", "id"):
        raise ValueError(f"colour_by must be 'class' or 'id', got {colour_by!r}")
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
        r, g, b = class_colour(cid, palette) if colour_by == "class" else id_colour(iid)
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
