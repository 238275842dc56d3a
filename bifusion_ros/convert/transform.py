"""Rigid transforms: ``geometry_msgs/TransformStamped`` / ``Transform`` / ``Pose`` <-> ``(4, 4)`` matrices.

Matrices are float64 homogeneous transforms; for a ``TransformStamped`` (parent ``header.frame_id``, child
``child_frame_id``) the matrix maps child-frame points into the parent frame, ``p_parent = T @ p_child``, in
metres. Quaternions are ``(x, y, z, w)`` (ROS order). The quaternion <-> rotation-matrix maths is
:mod:`bifusion_core.data.frame`'s (``quaternion_from_matrix``, ``matrix_from_quaternion``); this module adds the
validation (finite, non-zero quaternions; rigid matrices) and the message plumbing.
"""
from __future__ import annotations

import numpy as np

from bifusion_core.data.frame import matrix_from_quaternion, quaternion_from_matrix

from .factory import MessageFactory, _ctor

__all__ = ["quaternion_to_matrix", "matrix_to_quaternion", "transform_to_tq", "transform_to_matrix",
           "matrix_to_transform", "matrix_to_pose"]


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
