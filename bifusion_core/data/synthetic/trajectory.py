"""Smooth camera trajectories and the camera_link <-> optical frame convention.

Poses are ``(4, 4)`` camera-to-world transforms of the *optical* frame (x right, y down, z forward), as ScanNet
``pose/N.txt`` files store them. ``camera_link`` is the ROS body frame of the camera (x forward, y left, z up,
REP 103); ``T_world_optical = T_world_link @ T_LINK_OPTICAL``.
"""
from __future__ import annotations

import numpy as np

from .scene import CameraPath

R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Rotation camera_link <- optical frame (columns: the optical x, y, z axes expressed in camera_link)."""
T_LINK_OPTICAL = np.eye(4)
T_LINK_OPTICAL[:3, :3] = R_LINK_OPTICAL


def link_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """``(F, 3, 3)`` world-from-camera_link rotations ``Rz(yaw) Ry(-pitch) Rx(roll)``; positive pitch looks up."""
    yaw, pitch, roll = (np.asarray(a, np.float64) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(-pitch), np.sin(-pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rz = np.stack([np.stack([cy, -sy, zero], -1), np.stack([sy, cy, zero], -1), np.stack([zero, zero, one], -1)], -2)
    ry = np.stack([np.stack([cp, zero, sp], -1), np.stack([zero, one, zero], -1), np.stack([-sp, zero, cp], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cr, -sr], -1), np.stack([zero, sr, cr], -1)], -2)
    return rz @ ry @ rx


def camera_poses(path: CameraPath, n_frames: int, loop_fraction: float = 1.0) -> np.ndarray:
    """``(n_frames, 4, 4)`` optical-frame camera-to-world poses along ``path``.

    The camera moves along the path's ellipse (``loop_fraction`` of a full loop over the sequence), bobs
    slightly, looks toward the ellipse centre with a sinusoidal yaw sweep, a slight downward pitch and a
    little roll. Every component is a smooth (sinusoidal) function of time.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    s = np.arange(n_frames) / n_frames * loop_fraction
    xy = path.xy(s)
    z = path.height + path.bob * np.sin(2 * np.pi * 3 * s)
    to_centre = path.center - xy
    yaw = np.arctan2(to_centre[:, 1], to_centre[:, 0]) + path.sweep * np.sin(2 * np.pi * path.sweep_cycles * s)
    pitch = path.pitch + np.deg2rad(4.0) * np.sin(2 * np.pi * 2 * s + 1.0)
    roll = np.deg2rad(2.0) * np.sin(2 * np.pi * 1.5 * s)
    poses = np.tile(np.eye(4), (n_frames, 1, 1))
    poses[:, :3, :3] = link_rotation(yaw, pitch, roll) @ R_LINK_OPTICAL
    poses[:, :2, 3] = xy
    poses[:, 2, 3] = z
    return poses
