"""Rigid transforms: ``geometry_msgs/TransformStamped`` / ``Transform`` / ``Pose`` <-> ``(4, 4)`` matrices.

Matrices are float64 homogeneous transforms; for a ``TransformStamped`` (parent ``header.frame_id``, child
``child_frame_id``) the matrix maps child-frame points into the parent frame, ``p_parent = T @ p_child``, in
metres. Quaternions are ``(x, y, z, w)`` (ROS order). The quaternion <-> rotation-matrix maths and its
validation are :mod:`bifusion_core.geometry`'s (``quaternion_to_matrix``, ``matrix_to_quaternion``, re-exported
here); this module adds the rigid-matrix check and the message plumbing.
"""
from __future__ import annotations

import numpy as np

from bifusion_core.geometry import matrix_to_quaternion, normalised_quaternion, quaternion_to_matrix, rigid_matrix

from .factory import MessageFactory, _ctor

__all__ = ["quaternion_to_matrix", "matrix_to_quaternion", "transform_to_tq", "transform_to_matrix",
           "matrix_to_transform", "matrix_to_pose"]


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
    q = normalised_quaternion([float(r.x), float(r.y), float(r.z), float(r.w)], "rotation quaternion")
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
    return rigid_matrix(t, q)


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
    q = normalised_quaternion(quaternion, "orientation")
    return _ctor(msgs, "geometry_msgs/msg/Pose")(position=point, orientation=_quaternion_msg(msgs, q))


def matrix_to_pose(matrix, msgs: MessageFactory):
    """``(4, 4)`` rigid matrix -> ``geometry_msgs/Pose``."""
    T = _check_rigid(matrix)
    return _pose(msgs, T[:3, 3], matrix_to_quaternion(T[:3, :3]))
