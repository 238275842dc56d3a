"""RGB-D recordings as rosbag2 files laid out like a RealSense (realsense2_camera 4.5x) recording.

Written by ``python -m bifusion_ros.synthetic_bag --out FILE.mcap`` (see :func:`main`; the demo writes its
recording with :func:`write_sequence`) and read back by replay. Topics, all stamped with the frame's
acquisition time (the bag's receive time equals it):

==================================================== ============================ ==========================
topic                                                type                         content
==================================================== ============================ ==========================
``/camera/camera/color/image_raw``                   sensor_msgs/msg/Image        ``rgb8``
``/camera/camera/color/camera_info``                 sensor_msgs/msg/CameraInfo   ``plumb_bob``, zero D
``/camera/camera/aligned_depth_to_color/image_raw``  sensor_msgs/msg/Image        ``16UC1``, millimetres
``/camera/camera/aligned_depth_to_color/camera_info`` sensor_msgs/msg/CameraInfo   same camera as colour
``/tf``                                              tf2_msgs/msg/TFMessage       ``map -> camera_link``
``/tf_static``                                       tf2_msgs/msg/TFMessage       ``camera_link ->
                                                                                  camera_color_optical_frame``
``/bifusion/gt/semantic``                            sensor_msgs/msg/Image        ``16UC1`` ScanNet200 label
                                                                                  id per pixel (0 none)
``/bifusion/gt/instance``                            sensor_msgs/msg/Image        ``16UC1`` instance id per
                                                                                  pixel (0 none)
``/bifusion/masks`` (with ``--masks``)               sensor_msgs/msg/Image        ``16UC1`` 2D instance mask
                                                                                  id per pixel (0 none)
==================================================== ============================ ==========================

Images and camera infos have ``frame_id`` ``camera_color_optical_frame`` (x right, y down, z forward; the
depth is aligned to the colour camera). ``/tf`` carries the moving camera pose in ``map`` (z up, REP 103/105);
``/tf_static`` (written once, offered as transient-local like ``static_transform_publisher``) the fixed REP 103
optical rotation, zero translation: realsense2_camera's ``camera_color_frame`` is folded into it.

The ground-truth topics are not part of a real RealSense recording; they let replay score its output (read
them with :func:`bifusion_ros.convert.raw_image_array`). ``/bifusion/masks`` stands in for a 2D segmenter
node's output (SAM, FastSAM): ``--masks noisy`` writes a noisy version of the instance image (dropped, merged,
split masks with moved borders, :func:`bifusion_core.data.synthetic.masks.noisy_masks`), ``--masks gt`` the
exact instances (the upper bound); replay and the node read it with ``--mask-topic`` / ``mask_topic``. Every message is built and validated by
:mod:`bifusion_ros.convert` (the converters the node and replay use). This module imports ``rosbags`` (kept out
of :mod:`bifusion_core`).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from bifusion_core.data.synthetic.cli import add_sequence_arguments, scene_name, scene_seeds, sequence_config

from .bag_paths import STORAGES, bag_location, scene_bag_path
from .convert import (check_rgb_depth, intrinsics_to_camera_info, make_header, make_time, matrix_to_transform,
                      numpy_to_image, rosbags_factory)
from .interfaces import typestore

__all__ = ["TOPIC_COLOR", "TOPIC_COLOR_INFO", "TOPIC_DEPTH", "TOPIC_DEPTH_INFO", "TOPIC_TF", "TOPIC_TF_STATIC",
           "TOPIC_GT_SEMANTIC", "TOPIC_GT_INSTANCE", "TOPIC_MASKS", "MAP_FRAME", "BODY_FRAME", "OPTICAL_FRAME", "R_LINK_OPTICAL",
           "IMAGE", "CAMERA_INFO", "TF_MESSAGE", "link_from_optical", "SyntheticBagWriter", "write_sequence",
           "build_parser", "main"]

log = logging.getLogger(__name__)

TOPIC_COLOR = "/camera/camera/color/image_raw"
TOPIC_COLOR_INFO = "/camera/camera/color/camera_info"
TOPIC_DEPTH = "/camera/camera/aligned_depth_to_color/image_raw"
TOPIC_DEPTH_INFO = "/camera/camera/aligned_depth_to_color/camera_info"
TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"
TOPIC_GT_SEMANTIC = "/bifusion/gt/semantic"
TOPIC_GT_INSTANCE = "/bifusion/gt/instance"
TOPIC_MASKS = "/bifusion/masks"

MAP_FRAME = "map"
BODY_FRAME = "camera_link"
OPTICAL_FRAME = "camera_color_optical_frame"

R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""camera_link <- optical rotation (REP 103): the optical x, y, z axes are -y, -z, +x of camera_link."""

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

_ZERO = QosTime(sec=0, nsec=0)
_TRANSIENT_LOCAL = Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                       durability=QosDurability.TRANSIENT_LOCAL, deadline=_ZERO, lifespan=_ZERO,
                       liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_ZERO,
                       avoid_ros_namespace_conventions=False)


def link_from_optical() -> np.ndarray:
    """``(4, 4)`` camera_link <- optical frame transform (the /tf_static content)."""
    m = np.eye(4)
    m[:3, :3] = R_LINK_OPTICAL
    return m


def _integer_image(arr, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "ui":
        raise ValueError(f"{what} must be an integer array, got dtype {a.dtype}")
    return a


class SyntheticBagWriter:
    """Writes RGB-D frames, camera infos, TF and ground-truth images to a new rosbag2 bag.

    Use as a context manager; call :meth:`write_frame` once per frame in time order. ``path`` is resolved
    by :func:`bifusion_ros.bag_paths.bag_location` (``NAME.mcap`` -> bag directory ``NAME``); the bag directory
    must not exist yet.
    """

    def __init__(self, path, storage: str | None = None, distro: str = "ROS2_HUMBLE", masks: bool = False):
        self.path, self.storage = bag_location(path, storage)
        self.with_masks = bool(masks)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists (remove it or choose another name)")
        self.store = typestore(distro)
        self.msgs = rosbags_factory(self.store)
        self._writer: Writer | None = None
        self._conns: dict[str, object] = {}
        self._static_written = False
        self.frames = 0

    def __enter__(self) -> "SyntheticBagWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=8, storage_plugin=plugin)
        self._writer.open()
        w, s = self._writer, self.store
        for topic, msgtype in ((TOPIC_COLOR, IMAGE), (TOPIC_COLOR_INFO, CAMERA_INFO), (TOPIC_DEPTH, IMAGE),
                               (TOPIC_DEPTH_INFO, CAMERA_INFO), (TOPIC_TF, TF_MESSAGE), (TOPIC_GT_SEMANTIC, IMAGE),
                               (TOPIC_GT_INSTANCE, IMAGE)):
            self._conns[topic] = w.add_connection(topic, msgtype, typestore=s)
        if self.with_masks:
            self._conns[TOPIC_MASKS] = w.add_connection(TOPIC_MASKS, IMAGE, typestore=s)
        self._conns[TOPIC_TF_STATIC] = w.add_connection(TOPIC_TF_STATIC, TF_MESSAGE, typestore=s,
                                                        offered_qos_profiles=[_TRANSIENT_LOCAL])
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            log.info("wrote %d frames to %s (%s)", self.frames, self.path, self.storage)

    def _write(self, topic: str, msg, stamp_ns: int) -> None:
        conn = self._conns[topic]
        self._writer.write(conn, int(stamp_ns), self.store.serialize_cdr(msg, conn.msgtype))

    def write_frame(self, stamp_ns: int, rgb: np.ndarray, depth_mm: np.ndarray, intrinsics: np.ndarray,
                    pose: np.ndarray, semantic: np.ndarray | None = None, instance: np.ndarray | None = None,
                    masks: np.ndarray | None = None) -> None:
        """One frame. Every message is built (and checked) before any is written, so a bad frame leaves the bag
        as it was.

        Args:
            stamp_ns: acquisition time (ns); also the bag receive time.
            rgb: ``(H, W, 3)`` uint8 RGB.
            depth_mm: ``(H, W)`` integer (uint16) millimetres aligned to ``rgb`` (0 invalid).
            intrinsics: ``(3, 3)`` camera matrix of both images, pixels.
            pose: ``(4, 4)`` optical-frame camera-to-map transform (a ScanNet pose), metres.
            semantic, instance: optional ``(H, W)`` integer ground truth (label ids, instance ids; 0 none).
            masks: optional ``(H, W)`` integer 2D instance masks (0 none); needs a writer made with ``masks``.

        Raises:
            ValueError: sizes that differ, a non-integer depth or id image, ids outside 0..65535, intrinsics or a
                pose that :mod:`bifusion_ros.convert` refuses (not a pinhole matrix, not rigid).
        """
        if self._writer is None:
            raise RuntimeError("SyntheticBagWriter must be used as a context manager")
        h, w = check_rgb_depth(np.asarray(rgb), _integer_image(depth_mm, "depth_mm (millimetres)"))
        msgs, stamp_ns = self.msgs, int(stamp_ns)
        stamp = make_time(msgs, stamp_ns)
        optical = make_header(msgs, OPTICAL_FRAME, stamp)
        out = []
        if not self._static_written:
            tf = matrix_to_transform(link_from_optical(), msgs, make_header(msgs, BODY_FRAME, stamp), OPTICAL_FRAME)
            out.append((TOPIC_TF_STATIC, msgs(TF_MESSAGE)(transforms=[tf])))
        map_link = np.asarray(pose, np.float64) @ np.linalg.inv(link_from_optical())
        tf = matrix_to_transform(map_link, msgs, make_header(msgs, MAP_FRAME, stamp), BODY_FRAME)
        out.append((TOPIC_TF, msgs(TF_MESSAGE)(transforms=[tf])))
        info = intrinsics_to_camera_info(intrinsics, optical, msgs, width=w, height=h)
        out += [(TOPIC_COLOR_INFO, info), (TOPIC_COLOR, numpy_to_image(rgb, "rgb8", optical, msgs)),
                (TOPIC_DEPTH_INFO, info), (TOPIC_DEPTH, numpy_to_image(depth_mm, "16UC1", optical, msgs))]
        if masks is not None and not self.with_masks:
            raise ValueError("this writer has no mask topic: create it with masks=True")
        for topic, arr in ((TOPIC_GT_SEMANTIC, semantic), (TOPIC_GT_INSTANCE, instance), (TOPIC_MASKS, masks)):
            if arr is not None:
                ids = _integer_image(arr, topic)
                if ids.max(initial=0) > 65535 or ids.min(initial=0) < 0:
                    raise ValueError(f"{topic}: ids must fit 16UC1 (0..65535)")
                if ids.shape != (h, w):
                    raise ValueError(f"{topic}: ground truth {ids.shape} and depth {(h, w)} sizes differ")
                out.append((topic, numpy_to_image(ids, "16UC1", optical, msgs)))
        for topic, msg in out:
            self._write(topic, msg, stamp_ns)
        self._static_written = True
        self.frames += 1


def write_sequence(seq, path, storage: str | None = None, progress: bool = False, desc: str | None = None,
                   masks=None) -> Path:
    """Render every frame of ``seq`` (a :class:`bifusion_core.data.synthetic.SyntheticSequence`) into a new bag
    ``path`` (see :class:`SyntheticBagWriter`), ground truth included; returns the bag directory. ``masks``: a
    :class:`~bifusion_core.data.synthetic.masks.MaskNoise` to also write 2D instance masks (frame ``i``'s noise
    drawn from ``default_rng([seed, i, MASK_RNG])``), None: none."""
    from tqdm import tqdm

    from bifusion_core.data.synthetic.masks import noisy_masks

    with SyntheticBagWriter(path, storage, masks=masks is not None) as writer:
        for i in tqdm(range(len(seq)), desc=desc or writer.path.name, unit="frame", disable=not progress):
            r = seq.render(i)
            m = None if masks is None else noisy_masks(r.instance, np.random.default_rng([seq.seed, i, MASK_RNG]), masks)
            writer.write_frame(int(seq.stamps_ns[i]), r.rgb, r.depth_mm, r.intrinsics, r.pose, r.semantic,
                               r.instance, m)
    return writer.path


MASK_RNG = 0x3A5C
MASK_CHOICES = ("none", "noisy", "gt")


def mask_noise(choice: str):
    """``--masks`` -> the :class:`~bifusion_core.data.synthetic.masks.MaskNoise` (None for ``none``)."""
    from bifusion_core.data.synthetic.masks import ORACLE, MaskNoise

    return {"none": None, "noisy": MaskNoise(), "gt": ORACLE}[choice]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m bifusion_ros.synthetic_bag`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m bifusion_ros.synthetic_bag", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render procedural RGB-D rooms (bifusion_core.data.synthetic) into rosbag2 recordings laid out\n"
                    "like a RealSense recording, with TF and ground-truth images, for bifusion_ros.replay and the\n"
                    "node. Scene i uses seed S + i. FILE.mcap gives the bag directory FILE (MCAP storage), FILE.db3\n"
                    "one with sqlite3 storage; with several scenes the scene name is appended (FILE.mcap ->\n"
                    "FILE_synth0000_00/, ...). Prints the bag directories written, one a line.",
        epilog=__doc__)
    p.add_argument("--out", required=True, type=Path, metavar="FILE.mcap",
                   help="bag to write: FILE.mcap, FILE.db3 or a directory name (must not exist)")
    p.add_argument("--storage", choices=STORAGES, help="storage of a --out without suffix (default mcap)")
    add_sequence_arguments(p)
    p.add_argument("--masks", choices=MASK_CHOICES, default="none",
                   help=f"also write 2D instance masks on {TOPIC_MASKS} as a segmenter node would: noisy (dropped, "
                        "merged, split masks) or gt (exact instances); default none")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    """``python -m bifusion_ros.synthetic_bag``: 0 written, 2 bad arguments or an existing bag."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from bifusion_core.data.synthetic import SyntheticSequence

    try:
        seeds = scene_seeds(args)
        seq_cfg = sequence_config(args)
        targets = [scene_bag_path(args.out, scene_name(s), args.scenes) for s in seeds]
        for t in targets:  # all refused before anything is rendered
            directory, _ = bag_location(t, args.storage)
            if directory.exists():
                raise FileExistsError(f"bag {directory} already exists (remove it or choose another name)")
        for seed, target in zip(seeds, targets):
            seq = SyntheticSequence(seed, seq_cfg)
            log.info("%s: room %.1f x %.1f x %.1f m, %d objects, %d frames %dx%d", scene_name(seed), *seq.scene.size,
                     len(seq.scene.objects), len(seq), args.width, args.height)
            print(write_sequence(seq, target, args.storage, progress=not args.quiet, desc=scene_name(seed),
                                 masks=mask_noise(args.masks)))
    except (ValueError, FileExistsError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
