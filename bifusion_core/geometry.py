"""Pinhole camera geometry: depth back-projection, rigid transforms, projection and the 2D valid mask; the
quaternion <-> rotation maths and ``(4, 4)`` rigid-transform helpers (:func:`quaternion_to_matrix`,
:func:`matrix_to_quaternion`, :func:`rigid_matrix`, :func:`invert_rigid`).

Conventions (used everywhere in BiFusion):

- **Camera frame** is the optical frame (REP 103 ``*_optical_frame``): x right, y down, z forward, metres.
- **Pixel coordinates** ``(u, v)``: ``u`` is the column, ``v`` the row; the *centre* of pixel ``(u, v)`` sits at
  integer coordinates (OpenCV / ROS ``CameraInfo`` convention), so pixel ``(u, v)`` covers
  ``[u - 0.5, u + 0.5) x [v - 0.5, v + 0.5)``. Back-projection uses the pixel centre:
  ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``; projection is the exact inverse ``u = fx x / z + cx``.
- **Pose** ``T_world_cam`` is a 4x4 camera->world transform (``p_world = R p_cam + t``); ``None`` means the
  identity (the world frame is the camera frame).
- **Depth** is either ``uint16`` millimetres (RealSense / ROS ``16UC1``, scale 0.001) or floating metres
  (``32FC1``, scale 1.0); ``depth_scale`` overrides the dtype's default. ``0``, negative, NaN and inf
  all mean "no reading".

Every function takes torch tensors (CPU or CUDA; results live on the depth's / points' device) and also
accepts numpy arrays, which are converted to CPU tensors.

Empty input: a depth image without a single usable reading (all zero, all NaN, or nothing inside the
``min_depth``/``max_depth`` range) is *not* an error: :func:`backproject` returns a :class:`BackProjection`
with 0 points (all arrays have a leading dimension 0). A camera that sees nothing (lens covered, too close)
is a normal situation for a live node; callers must check ``len(result) == 0`` before voxelising (the 3D
backbone rejects empty clouds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CameraIntrinsics",
    "BackProjection",
    "Projection",
    "as_tensor",
    "check_pose",
    "depth_to_metres",
    "backproject",
    "transform_points",
    "project_points",
    "compute_valid_mask",
]

DEFAULT_EPS = 0.05
"""Default depth-agreement tolerance of the valid mask, metres."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels, the one intrinsics type (back-projection, frames, ``CameraInfo``).

    ``width``/``height`` (pixels) are the image size where known (a ``CameraInfo`` has it); ``distortion_model``
    and ``d`` carry the coefficients as published. Back-projection is pinhole: RealSense colour streams and
    aligned depth are rectified (see ``bifusion_ros.convert.camera_info_to_intrinsics`` for the policy).

    Raises:
        ValueError: a non-finite value, a non-positive focal length or image size.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    distortion_model: str = ""
    d: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"intrinsic {name} must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"intrinsic {name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or int(value) <= 0):
                raise ValueError(f"image {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, None if value is None else int(value))
        object.__setattr__(self, "d", tuple(float(v) for v in self.d))

    @property
    def K(self) -> np.ndarray:
        """``(3, 3)`` float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        return any(v != 0.0 for v in self.d)

    @classmethod
    def from_matrix(cls, K) -> "CameraIntrinsics":
        """From a 3x3 camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (ROS ``CameraInfo.k`` reshaped)."""
        K = np.asarray(K.detach().cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64)
        if K.size == 9:
            K = K.reshape(3, 3)
        if K.shape != (3, 3):
            raise ValueError(f"camera matrix must be 3x3 (or 9 values), got shape {K.shape}")
        if not np.isfinite(K).all():
            raise ValueError("camera matrix has non-finite entries")
        return cls(K[0, 0], K[1, 1], K[0, 2], K[1, 2])

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)``."""
        return self.fx, self.fy, self.cx, self.cy

    def as_matrix(self, dtype=torch.float64, device=None) -> torch.Tensor:
        rows = [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]]
        return torch.tensor(rows, dtype=dtype, device=device)

    def scaled(self, sx: float, sy: float | None = None) -> "CameraIntrinsics":
        """Intrinsics of the image resized by ``sx`` (columns) and ``sy`` (rows), pixel centres kept consistent."""
        sy = sx if sy is None else sy
        size = {} if self.width is None or self.height is None else {
            "width": round(self.width * sx), "height": round(self.height * sy)}
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                                **size, distortion_model=self.distortion_model, d=self.d)  # d is per normalised ray


def as_intrinsics(intrinsics) -> CameraIntrinsics:
    """The one reader of intrinsics: a :class:`CameraIntrinsics`, an ``(fx, fy, cx, cy)`` sequence or array, or a
    3x3 camera matrix (numpy / torch) -> a validated :class:`CameraIntrinsics` (``ValueError`` otherwise)."""
    if isinstance(intrinsics, CameraIntrinsics):
        return intrinsics
    if isinstance(intrinsics, (tuple, list)) and len(intrinsics) == 4:
        return CameraIntrinsics(*intrinsics)
    if isinstance(intrinsics, (np.ndarray, torch.Tensor)):
        arr = np.asarray(intrinsics.detach().cpu() if isinstance(intrinsics, torch.Tensor) else intrinsics)
        if arr.size == 4:
            return CameraIntrinsics(*arr.reshape(-1).tolist())
        return CameraIntrinsics.from_matrix(arr)
    raise ValueError(
        "intrinsics must be a CameraIntrinsics, an (fx, fy, cx, cy) sequence or a 3x3 camera matrix, "
        f"got {type(intrinsics).__name__}"
    )


def as_tensor(x, name: str = "array", device=None) -> torch.Tensor:
    """``torch.Tensor`` as is (moved to ``device`` if given); numpy arrays converted (CPU unless ``device``)."""
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:  # torch has limited uint16 support: widen losslessly
            x = x.astype(np.int32)
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t if device is None else t.to(device)
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def check_pose(pose, device=None, name: str = "pose", tol: float = 1e-3) -> torch.Tensor:
    """Validate a 4x4 rigid transform and return it as float64 on ``device``.

    Raises:
        ValueError: wrong shape, non-finite entries, last row not ``[0, 0, 0, 1]``, or a rotation block that is
        not orthonormal with determinant +1 (within ``tol``).
    """
    T = as_tensor(pose, name)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 matrix, got shape {tuple(T.shape)}")
    if not T.is_floating_point():
        T = T.double()
    T = T.to(dtype=torch.float64, device=device if device is not None else T.device)
    if not torch.isfinite(T).all():
        raise ValueError(f"{name} has non-finite (NaN/inf) entries")
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
    if not torch.allclose(T[3], bottom, atol=tol):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    eye = torch.eye(3, dtype=T.dtype, device=T.device)
    if not torch.allclose(R.T @ R, eye, atol=tol) or float(torch.linalg.det(R)) < 0:
        raise ValueError(f"{name} rotation block is not a proper rotation (orthonormal, det +1)")
    return T


def depth_to_metres(depth, depth_scale: float | None = None) -> torch.Tensor:
    """``(H, W)`` depth -> float32 metres with every missing reading (0, negative, NaN, inf) set to 0.

    Args:
        depth: ``(H, W)`` uint16 millimetres (torch ``uint16``/``int32`` or numpy ``uint16``) or float metres.
        depth_scale: metres per unit; default 0.001 for integer depth, 1.0 for float depth.

    Raises:
        ValueError: not 2-D, an unsupported dtype (bool, complex, uint8), or a bad ``depth_scale``.
    """
    if isinstance(depth, np.ndarray):
        if depth.dtype not in (np.uint16, np.int32, np.float32, np.float64, np.float16):
            raise ValueError(f"depth must be uint16 (mm) or float (m), got numpy dtype {depth.dtype}")
    d = as_tensor(depth, "depth")
    if d.dim() != 2:
        raise ValueError(f"depth must be an (H, W) image, got shape {tuple(d.shape)}")
    if d.dtype in (torch.bool, torch.uint8, torch.int8) or d.is_complex():
        raise ValueError(f"depth must be uint16 (mm) or float (m), got {d.dtype}")
    if depth_scale is None:
        depth_scale = 1.0 if d.is_floating_point() else 0.001
    if not (isinstance(depth_scale, (int, float)) and math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale must be a positive finite number, got {depth_scale!r}")
    if d.dtype == torch.uint16:
        d = d.to(torch.int32)
    m = d.to(torch.float32) * float(depth_scale) if depth_scale != 1.0 else d.to(torch.float32)
    return torch.where(torch.isfinite(m) & (m > 0), m, torch.zeros((), dtype=m.dtype, device=m.device))


def _colour_image(rgb, shape, device) -> torch.Tensor:
    c = as_tensor(rgb, "rgb", device=device)
    if c.dim() != 3 or c.shape[2] != 3:
        raise ValueError(f"rgb must be an (H, W, 3) image, got shape {tuple(c.shape)}")
    if tuple(c.shape[:2]) != tuple(shape):
        raise ValueError(
            f"RGB and depth sizes differ: rgb {tuple(c.shape[:2])} vs depth {tuple(shape)} (H, W); "
            "use depth aligned to the colour image (realsense align_depth.enable:=true)"
        )
    if c.dtype == torch.uint8:
        return c.to(torch.float32) / 255.0
    if c.is_floating_point():
        c = c.to(torch.float32)
        if c.numel() and not (torch.isfinite(c).all() and float(c.min()) >= 0.0 and float(c.max()) <= 1.0):
            raise ValueError("a float rgb image must hold finite values in [0, 1] (got values outside it: a 0..255 "
                             "float image? convert it to uint8)")
        return c
    raise ValueError(f"rgb must be uint8 or float in [0, 1], got {c.dtype}")


@dataclass
class BackProjection:
    """Result of :func:`backproject`; every field has the same leading dimension ``N`` (possibly 0).

    Attributes:
        points: ``(N, 3)`` float32, world frame (camera frame when no pose was given).
        points_cam: ``(N, 3)`` float32, camera optical frame.
        pixels: ``(N, 2)`` int64 ``(u, v)`` = (column, row) of each point's pixel in the full-resolution image.
        colors: ``(N, 3)`` float32 RGB in [0, 1] (uint8 input divided by 255), or ``None`` without an image.
        depth: ``(N,)`` float32 metres (the camera-frame ``z``).
    """

    points: torch.Tensor
    points_cam: torch.Tensor
    pixels: torch.Tensor
    colors: torch.Tensor | None
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.points.shape[0])


def backproject(
    depth,
    intrinsics,
    rgb=None,
    pose=None,
    *,
    stride: int = 1,
    min_depth: float | None = None,
    max_depth: float | None = None,
    depth_scale: float | None = None,
    max_points: int | None = None,
    generator: torch.Generator | None = None,
) -> BackProjection:
    """Depth image (+ colour) -> 3D points with their pixel and colour.

    Args:
        depth: ``(H, W)`` uint16 mm or float metres (see :func:`depth_to_metres`).
        intrinsics: :class:`CameraIntrinsics`, ``(fx, fy, cx, cy)`` or a 3x3 camera matrix, for the depth image.
        rgb: optional ``(H, W, 3)`` uint8 or float [0, 1] colour image of the same size (aligned).
        pose: optional 4x4 camera->world transform; points are returned in the world frame.
        stride: keep every ``stride``-th pixel along rows and columns (starting at pixel (0, 0)).
        min_depth / max_depth: keep readings with ``min_depth <= z <= max_depth`` metres.
        depth_scale: overrides the dtype's default scale.
        max_points: if more points remain, keep a uniform random subset of this size (in pixel order;
            ``generator`` makes it reproducible).

    Returns:
        :class:`BackProjection`, 0 points when the image has no usable reading (documented, not an error).

    Raises:
        ValueError: RGB/depth size mismatch, wrong shapes/dtypes, non-finite or non-rigid pose, bad intrinsics,
        bad stride / depth limits.
    """
    K = as_intrinsics(intrinsics)
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    for name, lim in (("min_depth", min_depth), ("max_depth", max_depth)):
        if lim is not None and not (isinstance(lim, (int, float)) and math.isfinite(lim) and lim >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {lim!r}")
    if min_depth is not None and max_depth is not None and min_depth > max_depth:
        raise ValueError(f"min_depth ({min_depth}) exceeds max_depth ({max_depth})")
    if max_points is not None and (not isinstance(max_points, int) or max_points < 1):
        raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
    z = depth_to_metres(depth, depth_scale)
    device = z.device
    H, W = z.shape
    colors_img = _colour_image(rgb, (H, W), device) if rgb is not None else None
    T = check_pose(pose, device=device) if pose is not None else None

    vs = torch.arange(0, H, stride, device=device)
    us = torch.arange(0, W, stride, device=device)
    zs = z[vs][:, us]
    keep = zs > 0
    if min_depth is not None:
        keep &= zs >= min_depth
    if max_depth is not None:
        keep &= zs <= max_depth
    iv, iu = torch.nonzero(keep, as_tuple=True)
    if max_points is not None and iv.numel() > max_points:
        sel = torch.randperm(iv.numel(), generator=generator, device="cpu")[:max_points].sort().values.to(device)
        iv, iu = iv[sel], iu[sel]
    v = vs[iv]
    u = us[iu]
    d = zs[iv, iu]
    x = (u.to(torch.float64) - K.cx) * d.double() / K.fx
    y = (v.to(torch.float64) - K.cy) * d.double() / K.fy
    pc = torch.stack([x, y, d.double()], dim=1)
    pw = transform_points(pc, T) if T is not None else pc
    colors = colors_img[v, u] if colors_img is not None else None
    return BackProjection(
        points=pw.to(torch.float32),
        points_cam=pc.to(torch.float32),
        pixels=torch.stack([u, v], dim=1).to(torch.int64),
        colors=colors,
        depth=d.to(torch.float32),
    )


def transform_points(points, T) -> torch.Tensor:
    """Apply a 4x4 rigid transform to ``(N, 3)`` points (computed in float64, returned in the points' dtype).

    Raises:
        ValueError: points not ``(N, 3)``, or a bad transform (see :func:`check_pose`).
    """
    p = as_tensor(points, "points")
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {tuple(p.shape)}")
    T = check_pose(T, device=p.device)
    out = p.double() @ T[:3, :3].T + T[:3, 3]
    return out.to(p.dtype if p.is_floating_point() else torch.float32)


@dataclass
class Projection:
    """Result of :func:`compute_valid_mask` (``N`` = number of points).

    Attributes:
        uv: ``(N, 2)`` float32 continuous pixel coordinates ``(u, v)`` (pixel centres at integers).
        pixels: ``(N, 2)`` int64 nearest pixel ``floor((u, v) + 0.5)``; meaningful where ``inside``.
        z: ``(N,)`` float32 camera-frame depth of each point (metres, may be <= 0 behind the camera).
        inside: ``(N,)`` bool, in front of the camera and the nearest pixel lies inside the image.
        valid: ``(N,)`` bool, ``inside`` and ``|z - depth[pixel]| < eps`` with a usable depth reading there.
    """

    uv: torch.Tensor
    pixels: torch.Tensor
    z: torch.Tensor
    inside: torch.Tensor
    valid: torch.Tensor


def project_points(points, intrinsics, pose=None) -> tuple[torch.Tensor, torch.Tensor]:
    """World points -> continuous pixel coordinates and camera depth.

    Args:
        points: ``(N, 3)`` world-frame points.
        intrinsics: the camera's intrinsics.
        pose: 4x4 camera->world transform (``None``: points are already in the camera frame).

    Returns:
        ``uv (N, 2)`` float32 and ``z (N,)`` float32. Points with ``z <= 0`` get ``uv = NaN``.
    """
    K = as_intrinsics(intrinsics)
    p = as_tensor(points, "points")
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {tuple(p.shape)}")
    if not p.is_floating_point():
        raise ValueError(f"points must be floating point, got {p.dtype}")
    p = p.double()
    if pose is not None:
        T = check_pose(pose, device=p.device)
        R, t = T[:3, :3], T[:3, 3]
        p = (p - t) @ R  # world -> camera: R^T (p - t), row-vector form
    z = p[:, 2]
    front = z > 0
    zs = torch.where(front, z, torch.ones_like(z))
    u = K.fx * p[:, 0] / zs + K.cx
    v = K.fy * p[:, 1] / zs + K.cy
    uv = torch.stack([u, v], dim=1)
    uv = torch.where(front.unsqueeze(1), uv, torch.full_like(uv, float("nan")))
    return uv.to(torch.float32), z.to(torch.float32)


def compute_valid_mask(
    points,
    depth,
    intrinsics,
    pose=None,
    *,
    eps: float = DEFAULT_EPS,
    depth_scale: float | None = None,
) -> Projection:
    """Which points are seen in this frame (2D-valid) and where.

    A point is valid when it lies in front of the camera, its *nearest* pixel ``floor((u, v) + 0.5)`` is
    inside the ``H x W`` image, that pixel has a depth reading, and ``|z_point - depth| < eps``: i.e. it is
    not occluded (and not an out-of-range reading). Nearest-pixel lookup (no depth interpolation, which
    would blend foreground and background across edges).

    Args:
        points: ``(N, 3)`` world points. depth: ``(H, W)`` depth image of this frame. intrinsics: its camera.
        pose: 4x4 camera->world (``None``: points in the camera frame). eps: tolerance in metres (> 0).

    Raises:
        ValueError: bad shapes, non-finite pose or intrinsics, non-positive eps.
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number of metres, got {eps!r}")
    zimg = depth_to_metres(depth, depth_scale)
    p = as_tensor(points, "points")
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {tuple(p.shape)}")
    p = p.to(zimg.device)
    H, W = zimg.shape
    uv, z = project_points(p, intrinsics, pose)
    finite = torch.isfinite(uv).all(dim=1) & (z > 0)
    # nearest pixel: pixel (u, v) covers [u - 0.5, u + 0.5), hence floor(x + 0.5) (not round-half-to-even)
    safe = torch.nan_to_num(uv, nan=-1.0, posinf=-1.0, neginf=-1.0).clamp(-2.0, float(max(H, W) + 2))
    pix = torch.floor(safe + 0.5).to(torch.int64)
    inside = finite & (pix[:, 0] >= 0) & (pix[:, 0] < W) & (pix[:, 1] >= 0) & (pix[:, 1] < H)
    pu = pix[:, 0].clamp(0, W - 1)
    pv = pix[:, 1].clamp(0, H - 1)
    dz = zimg[pv, pu]
    valid = inside & (dz > 0) & ((z - dz).abs() < eps)
    return Projection(uv=uv, pixels=pix, z=z, inside=inside, valid=valid)


# -- rotations and rigid transforms as numpy float64 (quaternions in ROS order x, y, z, w) --------------------


def matrix_to_quaternion(rotation) -> np.ndarray:
    """``(3, 3)`` rotation -> unit quaternion ``(x, y, z, w)`` (ROS order), with ``w >= 0``."""
    m = np.asarray(rotation, np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def normalised_quaternion(q, what: str = "quaternion") -> np.ndarray:
    """``(4,)`` float64 unit quaternion ``(x, y, z, w)`` from ``q``.

    Raises:
        ValueError: not 4 values, non-finite, or zero length (named ``what``).
    """
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
    """Quaternion ``(x, y, z, w)`` (ROS order; normalised here) -> ``(3, 3)`` float64 rotation.

    Raises:
        ValueError: see :func:`normalised_quaternion`.
    """
    x, y, z, w = normalised_quaternion(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rigid_matrix(translation, quaternion) -> np.ndarray:
    """``(4, 4)`` float64 homogeneous transform from a translation ``(3,)`` and a quaternion ``(x, y, z, w)``."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(quaternion)
    T[:3, 3] = np.asarray(translation, np.float64)
    return T


def invert_rigid(T) -> np.ndarray:
    """Inverse of a ``(4, 4)`` rigid transform (``R^T``, ``-R^T t``), float64."""
    T = np.asarray(T, np.float64)
    R = T[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out
