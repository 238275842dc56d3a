"""Reader of ScanNet exported frames (layout in :mod:`.layout`).

Frames come back at the *depth* resolution with the depth intrinsics (colour and label images are resized
to it, as OpenScene and most ScanNet pipelines do), as :class:`~bifusion_core.data.frame.Frame`.
Frames whose pose is not finite (ScanNet writes ``-inf`` where tracking was lost) are skipped, counted in
:attr:`ScanNetFrames.skipped` and reported in one warning.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ...config import configclass, spec
from ..frame import Frame
from . import layout as L

log = logging.getLogger(__name__)


@configclass
class FrameReaderConfig:
    """Attributes:
        depth_scale: depth PNG units per metre (ScanNet: 1000).
        frame_step: keep every ``frame_step``-th frame (after skipping invalid poses).
        max_frames: keep at most this many frames (None: all).
        labels: load ``label-filt`` / ``instance-filt`` images where present.
        aspect_tolerance: largest relative aspect-ratio difference between a colour (or label) image and
            the depth image that is resized away (ScanNet: 1296x968 vs 640x480, 0.4 %); more is an error.
    """

    depth_scale: float = spec(L.DEPTH_SCALE, gt=0)
    frame_step: int = spec(1, ge=1)
    max_frames: int | None = spec(None, ge=1)
    labels: bool = True
    aspect_tolerance: float = spec(0.05, ge=0)


def _is_pose_valid(pose: np.ndarray, path: Path) -> bool:
    """False for ScanNet's lost-tracking poses (non-finite); ``ValueError`` for a finite non-rigid matrix."""
    if not np.isfinite(pose).all():
        return False
    r = pose[:3, :3]
    if not np.allclose(pose[3], [0, 0, 0, 1], atol=1e-6) or not np.allclose(r.T @ r, np.eye(3), atol=2e-3) \
            or np.linalg.det(r) < 0:
        raise ValueError(f"{path}: not a rigid camera-to-world transform: {pose.tolist()}")
    return True


def list_scenes(root) -> list[Path]:
    """Scene directories under ``root`` (those holding ``color/``, ``depth/`` and ``pose/``), sorted; ``root``
    itself when it is one."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")

    def is_scene(p: Path) -> bool:
        return all((p / d).is_dir() for d in (L.COLOR_DIR, L.DEPTH_DIR, L.POSE_DIR))

    if is_scene(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and is_scene(p))


class ScanNetFrames:
    """The frames of one exported ScanNet scene.

    Attributes:
        scene_dir: the scene directory; ``name`` its name.
        frame_ids: ids (file stems) of the frames kept, in numeric order.
        poses: ``(F, 4, 4)`` camera-to-world of those frames.
        skipped: ids of frames dropped for invalid poses.
        intrinsics: ``(3, 3)`` of the returned (depth-sized) images; ``size``: their ``(H, W)``.
    """

    def __init__(self, scene_dir, config: FrameReaderConfig | None = None):
        self.config = cfg = config or FrameReaderConfig()
        self.scene_dir = Path(scene_dir)
        self.name = self.scene_dir.name
        if not self.scene_dir.is_dir():
            raise FileNotFoundError(f"scene directory not found: {self.scene_dir}")
        for sub in (L.COLOR_DIR, L.DEPTH_DIR, L.POSE_DIR):
            if not (self.scene_dir / sub).is_dir():
                raise FileNotFoundError(f"{self.scene_dir}: missing '{sub}/' directory of the ScanNet export")
        depth_names = [n for n in os.listdir(self.scene_dir / L.DEPTH_DIR) if n.endswith(".png")]
        ids = sorted((Path(n).stem for n in depth_names if Path(n).stem.isdigit()), key=int)
        if not ids:
            raise FileNotFoundError(f"{self.scene_dir / L.DEPTH_DIR}: no depth frames (N.png)")
        colour_names = set(os.listdir(self.scene_dir / L.COLOR_DIR))
        pose_names = set(os.listdir(self.scene_dir / L.POSE_DIR))
        self._colour_files: dict[str, Path] = {}
        kept, poses, self.skipped = [], [], []
        for fid in ids:
            ext = next((e for e in L.COLOR_EXTS if fid + e in colour_names), None)
            if ext is None:
                raise FileNotFoundError(f"missing colour image for frame {fid}: "
                                        f"{self.scene_dir / L.COLOR_DIR / (fid + '.jpg')}")
            if fid + ".txt" not in pose_names:
                raise FileNotFoundError(f"missing pose file for frame {fid}: "
                                        f"{self.scene_dir / L.POSE_DIR / (fid + '.txt')}")
            path = self.scene_dir / L.POSE_DIR / f"{fid}.txt"
            pose = L.read_matrix(path, (4, 4), allow_nonfinite=True)
            if not _is_pose_valid(pose, path):
                self.skipped.append(fid)
                continue
            self._colour_files[fid] = self.scene_dir / L.COLOR_DIR / (fid + ext)
            kept.append(fid)
            poses.append(pose)
        if self.skipped:
            log.warning("%s: skipped %d of %d frames with invalid (non-finite) poses", self.name, len(self.skipped),
                        len(ids))
        if not kept:
            raise ValueError(f"{self.scene_dir}: all {len(ids)} frames have invalid poses")
        sel = slice(None, None, cfg.frame_step)
        self.frame_ids = kept[sel][: cfg.max_frames]
        self.poses = np.stack(poses[sel][: cfg.max_frames])
        # image size from the first depth frame; intrinsics of the depth camera (or the colour one, rescaled)
        first = self._read_depth_raw(self.frame_ids[0], check_size=False)
        self.size = first.shape
        intr_dir = self.scene_dir / L.INTRINSIC_DIR
        if (intr_dir / L.INTRINSIC_DEPTH).is_file():
            self.intrinsics = L.read_intrinsics(intr_dir / L.INTRINSIC_DEPTH)
        elif (intr_dir / L.INTRINSIC_COLOR).is_file():
            k = L.read_intrinsics(intr_dir / L.INTRINSIC_COLOR)
            ch, cw = self._read_colour_raw(self.frame_ids[0]).shape[:2]
            k[0] *= self.size[1] / cw
            k[1] *= self.size[0] / ch
            self.intrinsics = k
        else:
            raise FileNotFoundError(f"{intr_dir}: neither {L.INTRINSIC_DEPTH} nor {L.INTRINSIC_COLOR} found")

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- image loading -------------------------------------------------------------------------------------
    def _read_depth_raw(self, fid: str, check_size: bool = True) -> np.ndarray:
        path = self.scene_dir / L.DEPTH_DIR / f"{fid}.png"
        if not path.is_file():
            raise FileNotFoundError(f"depth image not found: {path}")
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise ValueError(f"cannot decode depth image {path}")
        if depth.ndim != 2 or depth.dtype != np.uint16:
            raise ValueError(f"{path}: depth must be a single-channel 16-bit PNG, got {depth.dtype} {depth.shape}")
        if check_size and depth.shape != tuple(self.size):
            raise ValueError(f"{path}: depth image is {depth.shape[1]}x{depth.shape[0]}, the scene's depth frames "
                             f"are {self.size[1]}x{self.size[0]}")
        return depth

    def _read_colour_raw(self, fid: str) -> np.ndarray:
        path = self._colour_files[fid]
        if not path.is_file():
            raise FileNotFoundError(f"colour image not found: {path}")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode colour image {path}")
        return bgr

    def _fit(self, image: np.ndarray, path: Path, interpolation: int) -> np.ndarray:
        """Resize ``image`` to the depth size when only the resolution differs; ``ValueError`` otherwise."""
        h, w = self.size
        ih, iw = image.shape[:2]
        if (ih, iw) == (h, w):
            return image
        if abs((iw / ih) / (w / h) - 1) > self.config.aspect_tolerance:
            raise ValueError(f"{path}: image is {iw}x{ih}, which does not match the {w}x{h} depth frames")
        return cv2.resize(image, (w, h), interpolation=interpolation)

    def _read_label(self, sub: str, fid: str) -> np.ndarray | None:
        path = self.scene_dir / sub / f"{fid}.png"
        if not path.is_file():
            return None
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot decode label image {path}")
        if img.ndim != 2:
            raise ValueError(f"{path}: label images must be single-channel, got shape {img.shape}")
        return self._fit(img, path, cv2.INTER_NEAREST).astype(np.int64)

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        fid = self.frame_ids[index]
        depth = self._read_depth_raw(fid).astype(np.float32) / np.float32(self.config.depth_scale)
        bgr = self._fit(self._read_colour_raw(fid), self._colour_files[fid], cv2.INTER_AREA)
        sem = inst = None
        if self.config.labels:
            sem = self._read_label(L.LABEL_DIR, fid)
            inst = self._read_label(L.INSTANCE_DIR, fid)
        return Frame(rgb=np.ascontiguousarray(bgr[..., ::-1]), depth=depth, intrinsics=self.intrinsics,
                     pose=self.poses[index].copy(), semantic=sem, instance=inst, name=fid)
