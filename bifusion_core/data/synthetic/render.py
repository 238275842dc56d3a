"""A pure-numpy ray caster for :class:`~.scene.SyntheticScene`, with a RealSense-like depth model.

Per frame: one ray per pixel (z-normalised, so the ray parameter is the depth); the room shell is hit from
inside in closed form; every furniture primitive is tested only on the pixels of its projected bounding box
(slab test for boxes, quadratic for cylinders and spheres) and z-buffered. Then

* colour: albedo x procedural texture (tiles, wood grain, fabric, stripes, screen) in the primitive's local
  coordinates (so it sticks to the surface across views), Lambert shading from a room point light, a
  directional light and a hemispherical ambient, vignetting and sensor noise;
* depth: ``sigma(z) = a + b z^2`` noise (part per-pixel, part spatially correlated), quantised to mm, the
  D435 "shadow" band left of foreground edges (projector/stereo occlusion), random dropouts at depth edges,
  smooth random holes, per-material dropouts (glass, dark screens) and the working range;
* ground truth: per-pixel ScanNet200 label, instance id and primitive index (from the noise-free hit).

Noise is drawn from the ``rng`` passed in, so frames are deterministic given their seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...config import configclass, spec
from .scene import (BOX, CYLINDER, PLANE, SPHERE, TEX_FABRIC, TEX_SCREEN, TEX_STRIPES, TEX_TILES, TEX_WOOD,
                    SyntheticScene)


@configclass
class CameraConfig:
    """Pinhole camera and depth-sensor model (defaults: a RealSense D435 colour stream at 640x480 with the
    depth aligned to it).

    Attributes:
        width, height: image size in pixels.
        fx, fy, cx, cy: intrinsics in pixels.
        min_depth, max_depth: working range in metres; outside it depth reads 0.
        noise_a, noise_b: depth noise ``sigma(z) = noise_a + noise_b * z^2`` (metres).
        noise_correlated: share of the noise that is spatially smooth (0..1).
        baseline: stereo baseline (m) for the occlusion band; ``shadow``: fraction of the geometric band
            width that is invalidated (0 disables it).
        edge_threshold: relative depth jump that makes an edge; ``edge_dropout``: probability that an edge
            pixel (dilated by one) reads 0.
        hole_fraction: fraction of pixels lost to smooth random holes.
        color_noise: standard deviation of the colour sensor noise (in [0, 1] units).
    """

    width: int = spec(640, ge=16)
    height: int = spec(480, ge=16)
    fx: float = spec(615.0, gt=0)
    fy: float = spec(615.0, gt=0)
    cx: float = 320.0
    cy: float = 240.0
    min_depth: float = spec(0.2, gt=0)
    max_depth: float = spec(6.0, gt=0)
    noise_a: float = spec(0.001, ge=0)
    noise_b: float = spec(0.0015, ge=0)
    noise_correlated: float = spec(0.5, ge=0, le=1)
    baseline: float = spec(0.05, ge=0)
    shadow: float = spec(0.5, ge=0)
    edge_threshold: float = spec(0.04, ge=0)
    edge_dropout: float = spec(0.5, ge=0, le=1)
    hole_fraction: float = spec(0.01, ge=0, le=1)
    color_noise: float = spec(0.012, ge=0)

    @classmethod
    def scaled(cls, width: int, height: int, **kw) -> "CameraConfig":
        """The default 640x480 camera resampled to ``width`` x ``height`` (intrinsics scale with the size)."""
        sx, sy = width / 640, height / 480
        return cls(width=width, height=height, fx=615.0 * sx, fy=615.0 * sy, cx=320.0 * sx, cy=240.0 * sy, **kw)

    def __post_init__(self) -> None:
        if not self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")

    @property
    def intrinsics(self) -> np.ndarray:
        """``(3, 3)`` camera matrix."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Depth noise standard deviation (metres) at depth ``z`` (metres)."""
        return self.noise_a + self.noise_b * np.square(z)


@dataclass
class RenderedFrame:
    """One rendered view.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        depth_mm: ``(H, W)`` uint16 millimetres with sensor noise and dropouts (0 = invalid).
        depth_clean: ``(H, W)`` float32 metres, noise-free (0 = nothing hit).
        semantic: ``(H, W)`` uint16 ScanNet200 label id (0 = nothing).
        instance: ``(H, W)`` uint16 instance id (0 = nothing).
        primitive: ``(H, W)`` int32 index into ``scene.primitives`` (-1 = nothing).
        pose: ``(4, 4)`` optical-frame camera-to-world.
        intrinsics: ``(3, 3)``.
    """

    rgb: np.ndarray
    depth_mm: np.ndarray
    depth_clean: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    primitive: np.ndarray
    pose: np.ndarray
    intrinsics: np.ndarray


_NEAR = 0.05  # closest ray hit (m)


def _hash01(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray) -> np.ndarray:
    """Deterministic float32 value in [0, 1) for each integer lattice cell ``(qx, qy, qz)`` (float arrays)."""
    h = (qx.astype(np.int64) * 73856093) ^ (qy.astype(np.int64) * 19349663) ^ (qz.astype(np.int64) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h ^= h >> 16
    return (h & 0xFFFFFF).astype(np.float32) * np.float32(1.0 / 0x1000000)


def _cells(p: tuple, size) -> tuple:
    return tuple(np.floor(c / size) for c in p)


def _texture(tex: int, p: tuple[np.ndarray, np.ndarray, np.ndarray], s: np.ndarray, inst: np.ndarray) -> np.ndarray:
    """Brightness factor ``(N,)`` (``(N, 3)`` colour multiplier for screens) of texture ``tex`` at local
    surface points ``p`` (three ``(N,)`` components), period ``s (N,)`` metres, instance ``inst (N,)``."""
    x, y, z = p
    if tex == TEX_TILES:
        cx, cy, cz = _cells(p, s)
        checker = ((cx + cy + cz) % 2).astype(np.float32)
        grout = np.zeros(len(x), bool)
        for c in p:
            f = c / s
            grout |= np.abs(f - np.round(f)) < 0.02
        return np.where(grout, np.float32(0.7), 0.86 + 0.14 * checker)
    if tex == TEX_WOOD:
        cx, cy, cz = _cells(p, s * 4)
        plank = _hash01(cx + inst, cy, cz)
        grain = np.sin(2 * np.pi * (y + 0.3 * z + 0.05 * plank) / (s * 0.25) + 6 * plank)
        return 0.82 + 0.1 * grain + 0.12 * plank
    if tex == TEX_FABRIC:
        cx, cy, cz = _cells(p, s)
        fine = _hash01(*_cells(p, 0.01))
        return 0.85 + 0.12 * _hash01(cx + 3 * inst, cy, cz) + 0.06 * fine
    if tex == TEX_STRIPES:
        return np.where(np.sin(2 * np.pi * (x + y) / s) > 0, np.float32(1.0), np.float32(0.88))
    if tex == TEX_SCREEN:
        cx, cy, cz = _cells(p, s)
        cols = np.stack([_hash01(cx + 11 * k, cy, cz) for k in range(3)], axis=1)
        lit = _hash01(cx + 5, cy, cz) > 0.35
        return np.where(lit[:, None], 2.0 + 6.0 * cols, np.float32(1.0))
    return 0.96 + 0.08 * _hash01(*_cells(p, 0.01))  # TEX_PLAIN


def _local_normals(kind: np.ndarray, p: tuple, half: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward unit normals (three ``(N,)`` components) in local coordinates at local surface points ``p``
    (three ``(N,)`` components) of primitives of ``kind (N,)`` with half extents ``half`` (three ``(N,)``)."""
    x, y, z = p
    hx, hy, hz = half
    # box: the face whose normalised coordinate is largest
    qx, qy, qz = np.abs(x) / hx, np.abs(y) / hy, np.abs(z) / hz
    ax = (qx >= qy) & (qx >= qz)
    ay = ~ax & (qy >= qz)
    az = ~ax & ~ay
    nx, ny, nz = np.sign(x) * ax, np.sign(y) * ay, np.sign(z) * az
    # plane: local z
    plane = kind == PLANE
    nx[plane], ny[plane], nz[plane] = 0, 0, 1
    # cylinder: side or cap
    cyl = kind == CYLINDER
    if cyl.any():
        rho = np.hypot(x, y)
        side = rho / hx >= qz
        inv = 1.0 / np.maximum(rho, 1e-9)
        nx = np.where(cyl, np.where(side, x * inv, 0), nx)
        ny = np.where(cyl, np.where(side, y * inv, 0), ny)
        nz = np.where(cyl, np.where(side, 0, np.sign(z)), nz)
    sph = kind == SPHERE
    if sph.any():
        inv = 1.0 / np.maximum(np.sqrt(x * x + y * y + z * z), 1e-9)
        nx, ny, nz = np.where(sph, x * inv, nx), np.where(sph, y * inv, ny), np.where(sph, z * inv, nz)
    return nx.astype(np.float32), ny.astype(np.float32), nz.astype(np.float32)


def _intersect(kind: int, o: np.ndarray, d: tuple[np.ndarray, np.ndarray, np.ndarray], half: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit (inf where none) of rays ``o + t d`` with a box / cylinder / sphere of
    half extents ``half`` centred at the local origin. ``o (3,)`` is the local ray origin (outside the
    primitive), ``d`` the three local direction components, each ``(h, w)`` float32."""
    if kind == BOX:
        tn = tf = None
        for k in range(3):
            dk = np.where(np.abs(d[k]) < 1e-9, np.float32(1e-9), d[k])
            inv = np.float32(1.0) / dk
            t1 = (-half[k] - o[k]) * inv
            t2 = (half[k] - o[k]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            tn = lo if tn is None else np.maximum(tn, lo)
            tf = hi if tf is None else np.minimum(tf, hi)
        return np.where((tn <= tf) & (tn > _NEAR), tn, np.float32(np.inf))
    dx, dy, dz = d
    if kind == SPHERE:
        r = half[0]
        a = dx * dx + dy * dy + dz * dz
        b = o[0] * dx + o[1] * dy + o[2] * dz
        c = float(o @ o - r * r)
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        return np.where((disc >= 0) & (t > _NEAR), t, np.float32(np.inf))
    if kind == CYLINDER:
        r, hz = half[0], half[2]
        a = dx * dx + dy * dy
        b = o[0] * dx + o[1] * dy
        c = float(o[0] ** 2 + o[1] ** 2 - r * r)
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
            zs = o[2] + ts * dz
            t_side = np.where((disc >= 0) & (a > 1e-12) & (ts > _NEAR) & (np.abs(zs) <= hz), ts, np.float32(np.inf))
            cap = hz if o[2] > 0 else -hz
            tc = (cap - o[2]) / dz
            xc, yc = o[0] + tc * dx, o[1] + tc * dy
            t_cap = np.where((tc > _NEAR) & (xc * xc + yc * yc <= r * r) & np.isfinite(tc), tc, np.float32(np.inf))
        return np.minimum(t_side, t_cap)
    raise ValueError(f"cannot ray-cast primitive kind {kind}")


class Renderer:
    """Renders a scene from camera poses. Reuse one per scene (it caches the pixel rays)."""

    def __init__(self, scene: SyntheticScene, camera: CameraConfig | None = None):
        self.scene = scene
        self.camera = camera or CameraConfig()
        cam = self.camera
        self.ray_x = ((np.arange(cam.width) - cam.cx) / cam.fx).astype(np.float32)  # (W,)
        self.ray_y = ((np.arange(cam.height) - cam.cy) / cam.fy).astype(np.float32)  # (H,)
        u = (np.arange(cam.width) - cam.cx) / cam.width
        v = (np.arange(cam.height) - cam.cy) / cam.height
        tab = dict(scene.tables())
        tab["rot"] = [[np.ascontiguousarray(tab["rotation"][:, j, k], np.float32) for k in range(3)] for j in range(3)]
        tab["center32"] = [np.ascontiguousarray(tab["center"][:, j], np.float32) for j in range(3)]
        tab["half32"] = [np.ascontiguousarray(np.maximum(tab["half"][:, j], 1e-6), np.float32) for j in range(3)]
        tab["tex_scale32"] = tab["tex_scale"].astype(np.float32)
        self._tables = tab
        self.vignette = (1.0 - 0.35 * (u[None, :] ** 2 + v[:, None] ** 2)).astype(np.float32)

    # -- geometry ------------------------------------------------------------------------------------------
    def _screen_rect(self, corners_cam: np.ndarray) -> tuple[int, int, int, int] | None:
        """Pixel rectangle ``(v0, v1, u0, u1)`` covering camera-frame corners, or None when off screen."""
        cam = self.camera
        z = corners_cam[:, 2]
        if (z < _NEAR).all():
            return None
        if (z < _NEAR).any():
            return 0, cam.height, 0, cam.width
        u = cam.fx * corners_cam[:, 0] / z + cam.cx
        v = cam.fy * corners_cam[:, 1] / z + cam.cy
        u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, cam.width)
        v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, cam.height)
        if u0 >= u1 or v0 >= v1:
            return None
        return v0, v1, u0, u1

    def _directions(self, m: np.ndarray, rect=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Components of ``m @ ray`` for the pixels of ``rect`` (all when None): the rays are separable
        (``(x(u), y(v), 1)``), so each component is ``m[k,0] x(u) + m[k,1] y(v) + m[k,2]``."""
        v0, v1, u0, u1 = rect if rect is not None else (0, self.camera.height, 0, self.camera.width)
        x, y = self.ray_x[u0:u1][None, :], self.ray_y[v0:v1][:, None]
        m = m.astype(np.float32)
        return tuple(m[k, 0] * x + (m[k, 1] * y + m[k, 2]) for k in range(3))

    def raycast(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free depth ``(H, W)`` float32 (inf where nothing is hit) and primitive index ``(H, W)`` int32."""
        scene, cam = self.scene, self.camera
        pose = np.asarray(pose, np.float64)
        rot, origin = pose[:3, :3], pose[:3, 3]
        # room shell, hit from inside: the nearest exit through the six planes
        d = self._directions(rot)
        depth = np.full((cam.height, cam.width), np.inf, np.float32)
        prim = np.full((cam.height, cam.width), -1, np.int32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                pos = d[k] > 0
                bound = np.where(pos, np.float32(scene.size[k]), np.float32(0.0))
                t = (bound - np.float32(origin[k])) / d[k]
                t = np.where(np.isfinite(t) & (t > 0), t, np.float32(np.inf))
                closer = t < depth
                depth[closer] = t[closer]
                prim[closer] = (2 * k + pos[closer]).astype(np.int32)
        if not scene.ceiling:
            up = prim == 5
            depth[up] = np.inf
            prim[up] = -1
        # furniture
        for i, p in enumerate(scene.primitives):
            if p.kind == PLANE:
                continue
            rect = self._screen_rect((p.corners() - origin) @ rot)
            if rect is None:
                continue
            v0, v1, u0, u1 = rect
            dl = self._directions(p.rotation.T @ rot, rect)
            ol = ((origin - p.center) @ p.rotation).astype(np.float32)
            t = _intersect(p.kind, ol, dl, p.half.astype(np.float32))
            zb = depth[v0:v1, u0:u1]
            closer = t < zb
            zb[closer] = t[closer]
            prim[v0:v1, u0:u1][closer] = i
        return depth, prim

    # -- appearance ----------------------------------------------------------------------------------------
    def _shade(self, pose: np.ndarray, depth: np.ndarray, prim: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` float32 colour in [0, 1] (before vignetting and noise)."""
        scene, cam = self.scene, self.camera
        tab = self._tables
        flat = np.flatnonzero(prim.ravel() >= 0)
        pid = prim.ravel()[flat]
        t = depth.ravel()[flat]
        vv, uu = np.divmod(flat, cam.width)
        pc = (self.ray_x[uu] * t, self.ray_y[vv] * t, t)
        r = pose[:3, :3].astype(np.float32)
        pw = [r[j, 0] * pc[0] + r[j, 1] * pc[1] + r[j, 2] * pc[2] + np.float32(pose[j, 3]) for j in range(3)]
        rot = [[tab["rot"][j][k][pid] for k in range(3)] for j in range(3)]  # rot[j][k]: (N,) R_jk
        rel = [pw[j] - tab["center32"][j][pid] for j in range(3)]
        pl = tuple(rot[0][k] * rel[0] + rot[1][k] * rel[1] + rot[2][k] * rel[2] for k in range(3))
        kind = tab["kind"][pid]
        nl = _local_normals(kind, pl, tuple(tab["half32"][k][pid] for k in range(3)))
        n = [rot[j][0] * nl[0] + rot[j][1] * nl[1] + rot[j][2] * nl[2] for j in range(3)]
        # flip normals that face away from the camera (thin parts seen edge-on, numerical ties)
        eye = pose[:3, 3].astype(np.float32)
        flip = np.where(sum(n[j] * (eye[j] - pw[j]) for j in range(3)) < 0, np.float32(-1), np.float32(1))
        n = [c * flip for c in n]
        tex = tab["texture"][pid]
        albedo = tab["color"][pid]
        present = np.flatnonzero(np.bincount(tex, minlength=6))
        for code in present:
            if len(present) == 1:
                m = slice(None)
                sub = pl
            else:
                m = np.flatnonzero(tex == code)
                sub = tuple(c[m] for c in pl)
            f = _texture(int(code), sub, tab["tex_scale32"][pid[m]], tab["instance"][pid[m]]).astype(np.float32)
            albedo[m] *= f if f.ndim == 2 else f[:, None]
        light = scene.light.astype(np.float32)
        tl = [light[j] - pw[j] for j in range(3)]
        dist2 = tl[0] * tl[0] + tl[1] * tl[1] + tl[2] * tl[2]
        lamb = np.maximum(n[0] * tl[0] + n[1] * tl[1] + n[2] * tl[2], 0) / np.sqrt(dist2)
        sun_dir = np.array([0.35, 0.25, 0.9], np.float32) / np.float32(np.linalg.norm([0.35, 0.25, 0.9]))
        sun = np.maximum(n[0] * sun_dir[0] + n[1] * sun_dir[1] + n[2] * sun_dir[2], 0)
        point_light = np.float32(scene.light_gain * 0.75) * lamb / (1.0 + 0.12 * dist2)
        shade = 0.38 * (0.85 + 0.15 * n[2]) + 0.25 * sun + point_light
        shade[tex == TEX_SCREEN] = 0.35  # screens glow regardless of lighting
        out = np.zeros((cam.height * cam.width, 3), np.float32)
        out[flat] = albedo * shade[:, None]
        return out.reshape(cam.height, cam.width, 3)

    def _sensor_depth(self, depth: np.ndarray, prim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noise-free depth (inf = no hit) -> ``(H, W)`` uint16 mm as a RealSense would report it."""
        cam = self.camera
        h, w = depth.shape
        hit = np.isfinite(depth)
        z = np.where(hit, depth, 0).astype(np.float32)
        # noise: per-pixel + smooth (bilinear upsampling of a coarse grid), both scaled by sigma(z)
        iid = rng.standard_normal((h, w)).astype(np.float32)
        coarse = rng.standard_normal((h // 32 + 2, w // 32 + 2)).astype(np.float32)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        c = cam.noise_correlated
        noise = (np.sqrt(1 - c) * iid + np.sqrt(c) * smooth) * cam.sigma(z)
        zn = z + noise
        invalid = ~hit | (z < cam.min_depth) | (z > cam.max_depth)
        # depth edges: a relative jump to a 4-neighbour
        zi = np.where(hit, z, 1e3)
        jump = np.zeros((h, w), bool)
        dh = np.abs(zi[:, 1:] - zi[:, :-1]) > cam.edge_threshold * np.minimum(zi[:, 1:], zi[:, :-1])
        dv = np.abs(zi[1:, :] - zi[:-1, :]) > cam.edge_threshold * np.minimum(zi[1:, :], zi[:-1, :])
        jump[:, 1:] |= dh
        jump[:, :-1] |= dh
        jump[1:, :] |= dv
        jump[:-1, :] |= dv
        edge = cv2.dilate(jump.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        invalid |= edge & (rng.random((h, w)) < cam.edge_dropout)
        # occlusion band left of foreground objects: width f * b * (1/z_near - 1/z_far) pixels
        if cam.shadow > 0 and cam.baseline > 0:
            far, near = zi[:, :-1], zi[:, 1:]
            step = (far - near) > cam.edge_threshold * near
            width = np.zeros((h, w), np.int32)
            band = cam.shadow * cam.fx * cam.baseline * (1.0 / np.maximum(near, 1e-3) - 1.0 / np.minimum(far, 50.0))
            width[:, 1:] = np.where(step, np.round(band), 0).astype(np.int32)
            shadow = np.zeros((h, w), bool)
            for k in range(1, int(min(width.max(), 40)) + 1):
                shadow[:, :-k] |= width[:, k:] >= k
            invalid |= shadow
        # smooth random holes
        if cam.hole_fraction > 0:
            blobs = cv2.resize(rng.random((h // 40 + 2, w // 40 + 2)).astype(np.float32), (w, h),
                               interpolation=cv2.INTER_CUBIC)
            thresh = np.partition(blobs.ravel(), int((1 - cam.hole_fraction) * (blobs.size - 1)))[
                int((1 - cam.hole_fraction) * (blobs.size - 1))]
            invalid |= blobs > thresh
        # materials the sensor struggles with
        drop = self.scene.tables()["dropout"]
        p_drop = np.where(prim >= 0, drop[np.maximum(prim, 0)], 0)
        invalid |= rng.random((h, w)) < p_drop
        mm = np.clip(np.round(zn * 1000.0), 0, 65535).astype(np.uint16)
        mm[invalid] = 0
        return mm

    def render(self, pose: np.ndarray, rng: np.random.Generator) -> RenderedFrame:
        """Render the view from ``pose`` (optical camera-to-world); sensor noise comes from ``rng``."""
        cam = self.camera
        pose = np.asarray(pose, np.float64)
        depth, prim = self.raycast(pose)
        colour = self._shade(pose, depth, prim) * self.vignette[..., None]
        colour += np.float32(cam.color_noise) * rng.standard_normal(colour.shape, dtype=np.float32)
        rgb = np.clip(np.round(colour * 255), 0, 255).astype(np.uint8)
        tab = self.scene.tables()
        valid = prim >= 0
        safe = np.maximum(prim, 0)
        semantic = np.where(valid, tab["label"][safe], 0).astype(np.uint16)
        instance = np.where(valid, tab["instance"][safe], 0).astype(np.uint16)
        depth_mm = self._sensor_depth(depth, prim, rng)
        return RenderedFrame(rgb=rgb, depth_mm=depth_mm, depth_clean=np.where(valid, depth, 0).astype(np.float32),
                             semantic=semantic, instance=instance, primitive=prim, pose=pose,
                             intrinsics=cam.intrinsics)
