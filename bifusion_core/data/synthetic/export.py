"""Write a :class:`~.sequence.SyntheticSequence` in ScanNet's exported-frame layout.

Per scene ``ROOT/NAME/``: ``color/N.jpg``, ``depth/N.png`` (uint16 mm), ``pose/N.txt``, ``intrinsic/*.txt``,
``label-filt/N.png`` (uint16 ScanNet200 label ids), ``instance-filt/N.png`` (uint16 instance ids),
``NAME_labelled.ply`` (the scene's visible surfaces fused from the noise-free views, voxel-downsampled, with
``label`` and ``instance`` per point) and ``meta.json`` (seed, stamps, instance table, configs). Ground
truth for the benchmark evaluation of that cloud goes to ``ROOT/gt_instance/NAME.txt`` and
``ROOT/gt_semantic/NAME.txt`` (see :mod:`bifusion_core.eval.io`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...config import configclass, spec
from ...geometry import backproject
from ..scannet import layout as L
from ..scannet.scene import LABELLED_SUFFIX, ScenePoints, write_labelled_cloud
from .render import RenderedFrame
from .sequence import SyntheticSequence

log = logging.getLogger(__name__)


@configclass
class ExportConfig:
    """Attributes:
        jpeg_quality: colour JPEG quality (0-100).
        cloud_voxel: voxel size (m) of the fused labelled cloud; 0 skips the cloud and the benchmark GT.
        cloud_stride: pixel stride of the views fused into it.
    """

    jpeg_quality: int = spec(92, ge=0, le=100)
    cloud_voxel: float = spec(0.02, ge=0)
    cloud_stride: int = spec(4, ge=1)


def _imwrite(path: Path, image: np.ndarray, params=()) -> None:
    if not cv2.imwrite(str(path), image, list(params)):
        raise OSError(f"could not write {path}")


class _CloudFuser:
    """Fuses noise-free views into one labelled cloud, keeping the first point seen in each voxel of the room
    box ``[0, size]`` (an occupancy bitmap: a 7.5 x 6.5 x 3 m room at 2 cm is 18 MB)."""

    def __init__(self, voxel: float, stride: int, size: np.ndarray):
        self.voxel, self.stride = voxel, stride
        self.dims = np.ceil(np.asarray(size, np.float64) / voxel).astype(np.int64) + 3
        self.seen = np.zeros(int(np.prod(self.dims)), bool)
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, r: RenderedFrame) -> None:
        bp = backproject(r.depth_clean, r.intrinsics, pose=r.pose, stride=self.stride)
        pts, pix = bp.points.numpy().astype(np.float64), bp.pixels.numpy()
        if not len(pts):
            return
        q = np.clip(np.floor(pts / self.voxel).astype(np.int64) + 1, 0, self.dims - 1)
        keys = (q[:, 0] * self.dims[1] + q[:, 1]) * self.dims[2] + q[:, 2]
        fresh = ~self.seen[keys]
        keys, pts, pix = keys[fresh], pts[fresh], pix[fresh]
        _, first = np.unique(keys, return_index=True)
        self.seen[keys] = True
        u, v = pix[first, 0], pix[first, 1]
        self.parts.append((pts[first], r.rgb[v, u], r.semantic[v, u], r.instance[v, u]))

    def result(self, name: str) -> ScenePoints:
        if not self.parts:
            z = np.zeros(0)
            return ScenePoints(name, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), z.astype(np.int64),
                               z.astype(np.int64))
        pts, rgb, sem, inst = (np.concatenate(c) for c in zip(*self.parts))
        return ScenePoints(name, pts.astype(np.float32), rgb.astype(np.float32) / 255.0, sem.astype(np.int64),
                           inst.astype(np.int64))


def _config_dict(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def export_sequence(seq: SyntheticSequence, root, name: str, config: ExportConfig | None = None,
                    progress: bool = True) -> dict:
    """Render every frame of ``seq`` and write it under ``root/name``. Returns a summary dict."""
    cfg = config or ExportConfig()
    root = Path(root)
    scene_dir = root / name
    for sub in (L.COLOR_DIR, L.DEPTH_DIR, L.POSE_DIR, L.INTRINSIC_DIR, L.LABEL_DIR, L.INSTANCE_DIR):
        (scene_dir / sub).mkdir(parents=True, exist_ok=True)
    k4 = np.eye(4)
    k4[:3, :3] = seq.intrinsics
    for fname, m in ((L.INTRINSIC_COLOR, k4), (L.INTRINSIC_DEPTH, k4), (L.EXTRINSIC_COLOR, np.eye(4)),
                     (L.EXTRINSIC_DEPTH, np.eye(4))):
        L.write_matrix(scene_dir / L.INTRINSIC_DIR / fname, m)
    fuser = _CloudFuser(cfg.cloud_voxel, cfg.cloud_stride, seq.scene.size) if cfg.cloud_voxel > 0 else None
    jpeg = (cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality)
    t0 = time.perf_counter()
    for i in tqdm(range(len(seq)), desc=name, unit="frame", disable=not progress):
        r = seq.render(i)
        _imwrite(scene_dir / L.COLOR_DIR / f"{i}.jpg", r.rgb[..., ::-1], jpeg)
        _imwrite(scene_dir / L.DEPTH_DIR / f"{i}.png", r.depth_mm)
        _imwrite(scene_dir / L.LABEL_DIR / f"{i}.png", r.semantic)
        _imwrite(scene_dir / L.INSTANCE_DIR / f"{i}.png", r.instance)
        L.write_matrix(scene_dir / L.POSE_DIR / f"{i}.txt", r.pose)
        if fuser is not None:
            fuser.add(r)
    elapsed = time.perf_counter() - t0
    summary = {"name": name, "frames": len(seq), "seconds": round(elapsed, 2), "dir": str(scene_dir)}
    if fuser is not None:
        cloud = fuser.result(name)
        write_labelled_cloud(scene_dir / f"{name}{LABELLED_SUFFIX}", cloud)
        for sub, ids in (("gt_instance", cloud.benchmark_ids()), ("gt_semantic", cloud.semantic)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            np.savetxt(root / sub / f"{name}.txt", ids, fmt="%d")
        summary["cloud_points"] = len(cloud.points)
    sc = seq.scene
    meta = {"name": name, "generator": "bifusion_core.data.synthetic", "seed": seq.seed, "frames": len(seq),
            "fps": seq.config.fps, "stamps_ns": [int(s) for s in seq.stamps_ns], "depth_scale": L.DEPTH_SCALE,
            "room_size": [float(x) for x in sc.size], "ceiling": sc.ceiling,
            "instances": [{"id": o.instance, "label": o.label, "name": o.name} for o in sc.objects],
            "sequence_config": _config_dict(seq.config)}
    (scene_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("%s: %d frames in %.1f s (%.3f s/frame)", name, len(seq), elapsed, elapsed / max(len(seq), 1))
    return summary
