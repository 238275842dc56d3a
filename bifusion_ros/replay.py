"""Replay a rosbag2 recording through the BiFusion pipeline without ROS, and score it.

``python -m bifusion_ros.replay --bag BAG --out DIR [--checkpoint CK]`` (console script ``bifusion_replay``)
reads a rosbag2 bag (sqlite3 or MCAP storage) with ``rosbags`` and does, offline, what the live node
(:mod:`bifusion_ros.node`) does online:

1. ``/tf_static`` messages are read first and added as static transforms; ``/tf`` then streams in bag order
   into a :class:`~bifusion_ros.tf_buffer.TransformBuffer` (tf2's lookup semantics, interpolation included);
   data tf2 ignores is counted and logged as tf2 warns about it (``tf_repeated``: a stamp already buffered,
   TF_REPEATED_DATA; ``tf_old_data``). A repeated stamp with a *different* transform
   (``tf_repeated_conflicting``) makes the pose at that time ambiguous: a frame whose pose would depend on it
   gets none (``--on-missing-tf``: skipped as ``missing_tf``, or the identity), instead of tf2's first value;
2. colour, depth and camera info are fed, in bag (receive-time) order, to
   :class:`~bifusion_ros.sync.ApproximateTimeSynchronizer` (the pairing rule of ``message_filters``) with the
   node's ``sync_slop`` / ``sync_queue_size``;
3. each synchronised set is validated and converted by :func:`bifusion_ros.frame_io.frame_inputs` (the node's
   own conversion); the camera pose ``world_frame <- camera frame`` is looked up at the image stamp. Like the
   node, which waits up to ``tf_timeout`` for the pose from when it hands the set to its worker, replay waits
   until the bag's clock is ``tf_timeout`` past the set's arrival (the bag time of its last message) and uses
   only the ``/tf`` received by then; without a pose it applies ``--on-missing-tf`` (``skip``: counted as
   ``missing_tf``; ``identity``: outputs in the camera frame), even if the transform comes later in the bag;
4. ``bifusion_core.pipeline.FrameProcessor`` segments the frame; with the map on (``--map``, the default, as
   the node's ``map`` parameter) its instances merge into the session's online map, which gives them their
   persistent ids; :func:`bifusion_ros.frame_io.frame_outputs` (the node's own output conversion) builds the
   messages, written to ``DIR/output_bag`` on the node's output topics (``/bifusion/cloud``
   ``sensor_msgs/msg/PointCloud2``, ``/bifusion/markers`` ``visualization_msgs/msg/MarkerArray``,
   ``/bifusion/instances`` ``bifusion_ros/msg/InstanceArray``, ``/bifusion/alpha`` ``sensor_msgs/msg/Image``
   and, every ``--map-publish-period`` seconds of image stamps, ``/bifusion/map_cloud`` and
   ``/bifusion/map_markers``), each logged at the bag time the set was complete;
5. every ``--save-every``-th processed frame is also written as PNG overlays, an α heat map, a PLY cloud and
   an instance JSON under ``DIR/frames/`` (:func:`bifusion_core.io.render.write_result`);
6. when the bag has ground-truth images (``/bifusion/gt/semantic`` and ``/bifusion/gt/instance``, 16UC1,
   stamped like the colour image, ScanNet200 label ids and instance ids; written by
   ``python -m bifusion_ros.synthetic_bag``; any single-channel integer encoding of :data:`GT_ENCODINGS` is
   read, a frame whose ground truth has another encoding, malformed data or another size than the colour
   image is not scored, logged and counted in ``gt_skipped``), each processed frame is scored like training
   validation
   (:mod:`bifusion_core.train.validate`): semantic IoU / mIoU over the model's classes and ScanNet instance
   AP / AP50 / AP25 per frame (all post-processed instances, before the node's ``score_threshold``);
7. with the map on, the map is saved to ``DIR/map`` (PLY, JSON, exact state) and, with ground truth, scored
   as ESAM's online protocol (scene AP of the map's instances, ID consistency, fragmentation, ID switches);
   ``--oracle-instances`` merges each frame's ground-truth instances instead of the model's (the merging
   alone; the outputs then keep the frames' own ids, as the map is fed only once the ground truth is read);
8. ``DIR/metrics.json`` gets the metrics, frame counts (synchronised, processed, colour images the
   synchroniser dropped, skips per reason, frames not scored per reason, ignored TF data), per-stage latency
   (mean / p50 / p95 / max, ms) and wall time; a table of them is printed at the end.

Unlike the node, replay processes every synchronised set (no latest-frame mailbox: nothing is dropped for
being slow). Exit status: 0 done, 1 no frame could be processed (see the skip reasons), 2 unusable input (no
such bag, a topic missing from the bag: the message lists the bag's topics, a bad checkpoint, ``--classes`` the
model refuses), 130 interrupted (what was done so far is still written).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bifusion_core.pipeline.mask_cache import MaskCache, masks_kept
from bifusion_core.pipeline.session import FrameInputs, FrameSession, FrameSkipped
from bifusion_ros import convert
from bifusion_ros.bag_paths import STORAGES, resolve_bag_path
from bifusion_ros.frame_io import (frame_inputs, frame_outputs, load_processor as load_frame_processor, map_outputs,
                                   mask_message)
from bifusion_ros.params import (defaults, map_config as node_map_config, parse_string_list, resolve_topic, spec,
                                 validate)
from bifusion_ros.sync import ApproximateTimeSynchronizer, stamp_to_ns
from bifusion_ros.synthetic_bag import (CAMERA_INFO, IMAGE, TF_MESSAGE, TOPIC_GT_INSTANCE, TOPIC_GT_SEMANTIC, TOPIC_TF,
                                        TOPIC_TF_STATIC)
from bifusion_ros.tf_buffer import (OLD_DATA, REPEATED_CONFLICT, REPEATED_DATA, RepeatedDataError, TransformBuffer,
                                    TransformError)

__all__ = ["ReplayConfig", "ReplayError", "replay", "format_metrics", "build_parser", "main"]

log = logging.getLogger("bifusion.replay")

_P = defaults()

OUTPUT_TYPES = {"cloud": "sensor_msgs/msg/PointCloud2", "markers": "visualization_msgs/msg/MarkerArray",
                "instances": "bifusion_ros/msg/InstanceArray", "alpha": IMAGE,
                "map_cloud": "sensor_msgs/msg/PointCloud2", "map_markers": "visualization_msgs/msg/MarkerArray"}
"""Output name (key of :func:`~bifusion_ros.frame_io.result_outputs`) -> message type."""

OUTPUT_TOPICS = {name: resolve_topic(_P[f"{name}_topic"]) for name in OUTPUT_TYPES}
"""Output name -> topic, as the node (named ``bifusion``, root namespace) publishes them by default."""

_GT_KEEP = 32  # ground-truth images / results waiting for their counterpart, per topic (oldest dropped)

GT_ENCODINGS = convert.ID_ENCODINGS
"""Encodings a ground-truth label-id / instance-id image may have (one channel, integer; the synthetic bag writes
``16UC1``)."""

GT_SKIP_REASONS = ("bad_encoding", "bad_image", "size_mismatch", "classes_changed")
"""Why a processed frame is not scored (``metrics["frames"]["gt_skipped"]``): a ground-truth image of its stamp
has an encoding outside :data:`GT_ENCODINGS`, is malformed (data length / step), or differs in size from the
colour image; or the frame was segmented with another class list than the first scored frame (``classes_at``)."""


class ReplayError(Exception):
    """The bag, a topic, the output directory or the checkpoint cannot be used (exit code 2)."""


@dataclass
class ReplayConfig:
    """What to replay and how. Defaults are the node's parameter defaults (:data:`bifusion_ros.params.PARAMS`).

    Attributes:
        bag: rosbag2 directory (or its ``metadata.yaml`` / storage file, or ``NAME.mcap`` / ``NAME.db3`` for a
            bag directory ``NAME`` as ``python -m bifusion_ros.synthetic_bag`` names them; see
            :func:`bifusion_ros.bag_paths.resolve_bag_path`).
        out: output directory (created).
        checkpoint: model checkpoint; None = the shipped demo checkpoint.
        classes: class names / prompts replacing the checkpoint's (None or empty: the checkpoint's).
        classes_at: ``[(k, names), ...]``: before the ``k``-th processed frame (0-based) the class list becomes
            ``names`` (empty: the checkpoint's), as ``ros2 param set /bifusion classes`` does on the node: the
            map is reset. Needs an open-vocabulary checkpoint for lists of another length. Frames processed
            under another list than the first frame's are not scored (``gt_skipped.classes_changed``), nor is
            the map after a change.
        max_frames: stop after this many synchronised sets (processed or skipped); None = the whole bag.
        save_every: write PNG/PLY outputs of every k-th processed frame (0: none).
        min_region_size: smallest instance (points) the instance AP counts, ground truth and predictions.
        tf_timeout: seconds of bag time a set waits for its camera pose, as the node's ``tf_timeout``: the wait
            starts when the set is complete (the bag time of its last message, when the node hands the set to its
            worker) and only ``/tf`` messages received up to ``tf_timeout`` later are used for it; a pose still
            unknown then is handled by ``on_missing_tf``, even if its transform arrives later in the bag.
        storage: storage of the output bag, ``mcap`` or ``sqlite3``.
        progress: show a tqdm progress bar.
        map: build the online instance map of the sequence as the node does (its ``map`` parameter, default
            on): persistent ids in the outputs, ``map_cloud`` / ``map_markers`` every ``map_publish_period``
            s; save it to ``out/map`` and, with ground truth, score it as ESAM's online protocol
            (``metrics["map"]``).
        oracle_instances: feed each frame's ground-truth instances into the map instead of the model's (the
            merging machinery alone); needs the ground-truth topics, implies ``map``.
        map_config: the map's settings (default: the node's ``map_*`` parameter defaults,
            :func:`bifusion_ros.params.map_config`).
        map_publish_period: seconds of image stamps between two map messages (the node's parameter).
        mask_topic: 2D instance masks of a segmenter in the bag (the node's ``mask_topic``; empty: none). A set
            waits for the mask of its stamp up to ``mask_timeout`` of bag time after it is complete, as the node's
            worker waits (:mod:`bifusion_core.pipeline.mask_cache`); ``superpoints_from_masks`` as the node's.
    """

    bag: str | Path
    out: str | Path
    checkpoint: str | None = None
    device: str = "auto"
    half: bool = False
    classes: list[str] | None = None
    classes_at: list = field(default_factory=list)
    color_topic: str = _P["color_topic"]
    depth_topic: str = _P["depth_topic"]
    info_topic: str = _P["camera_info_topic"]
    gt_semantic_topic: str = TOPIC_GT_SEMANTIC
    gt_instance_topic: str = TOPIC_GT_INSTANCE
    world_frame: str = _P["world_frame"]
    camera_frame: str = _P["camera_frame"]
    on_missing_tf: str = _P["on_missing_tf"]
    tf_timeout: float = _P["tf_timeout"]
    sync_slop: float = _P["sync_slop"]
    sync_queue_size: int = _P["sync_queue_size"]
    depth_scale: float = _P["depth_scale"]
    score_threshold: float = _P["score_threshold"]
    voxel_size: float = 0.0
    max_frames: int | None = None
    save_every: int = 1
    min_region_size: int = 100
    storage: str = "mcap"
    progress: bool = True
    map: bool = _P["map"]
    oracle_instances: bool = False
    map_config: Any = None
    map_publish_period: float = _P["map_publish_period"]
    mask_topic: str = _P["mask_topic"]
    mask_timeout: float = _P["mask_timeout"]
    superpoints_from_masks: bool = _P["superpoints_from_masks"]

    def __post_init__(self) -> None:
        from bifusion_core.mapping import MapConfig

        if self.oracle_instances:
            self.map = True
        if self.map_config is None:
            self.map_config = node_map_config(_P)
        elif not isinstance(self.map_config, MapConfig):
            raise ReplayError(f"map_config must be a MapConfig, got {type(self.map_config).__name__}")
        # the settings the node has too are checked exactly as the node checks its parameters
        node = {n: getattr(self, n) for n in _NODE_PARAMS}
        node["camera_info_topic"] = self.info_topic
        for name, value in node.items():
            err = validate(name, value)
            if err:
                raise ReplayError(err)
        if self.storage not in STORAGES:
            raise ReplayError(f"storage must be 'mcap' or 'sqlite3', got {self.storage!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ReplayError(f"max_frames must be >= 1, got {self.max_frames}")
        ks = [k for k, _ in self.classes_at]
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in ks) or len(set(ks)) != len(ks):
            raise ReplayError(f"classes_at frames must be distinct integers >= 0, got {ks}")
        for name in ("save_every", "min_region_size"):
            if getattr(self, name) < 0:
                raise ReplayError(f"{name} must be >= 0, got {getattr(self, name)}")


_NODE_PARAMS = ("color_topic", "depth_topic", "world_frame", "camera_frame", "on_missing_tf", "tf_timeout",
                "sync_slop", "sync_queue_size", "depth_scale", "score_threshold", "voxel_size", "device", "half",
                "map", "map_publish_period", "mask_topic", "mask_timeout", "superpoints_from_masks")


# -------------------------------------------------------------------------------------------------------------
# Bag access
# -------------------------------------------------------------------------------------------------------------
def _topic_listing(connections) -> str:
    rows = sorted({(c.topic, c.msgtype, c.msgcount) for c in connections})
    return "\n".join(f"  {t}  [{ty}]  {n} messages" for t, ty, n in rows) or "  (none)"


def _select(connections, topic: str, msgtype: str, what: str, required: bool, listing: str) -> list:
    """The bag's connections of ``topic``; a :class:`ReplayError` naming the bag's topics when it is required and
    absent, or when it has another type."""
    conns = [c for c in connections if c.topic == topic]
    if not conns:
        if required:
            same_type = sorted({c.topic for c in connections if c.msgtype == msgtype})
            hint = f"; {msgtype} topics in the bag: {', '.join(same_type)}" if same_type else ""
            raise ReplayError(f"the bag has no {what} topic {topic!r}{hint} (set it with the matching --*-topic "
                              f"option). Topics in the bag:\n{listing}")
        return []
    wrong = sorted({c.msgtype for c in conns if c.msgtype != msgtype})
    if wrong:
        raise ReplayError(f"{what} topic {topic!r} has type {', '.join(wrong)}, expected {msgtype}. "
                          f"Topics in the bag:\n{listing}")
    return conns


def _prepare_output_bag(path: Path) -> None:
    """Remove a previous replay's output bag at ``path`` (a directory with metadata.yaml, or empty)."""
    if not path.exists():
        return
    if path.is_dir() and ((path / "metadata.yaml").is_file() or not any(path.iterdir())):
        log.info("replacing the previous output bag %s", path)
        shutil.rmtree(path)
        return
    raise ReplayError(f"{path} exists and is not a rosbag2 bag from an earlier replay; remove it or choose another "
                      "--out")


class _OutputBag:
    """The node's output topics in a new rosbag2 bag."""

    def __init__(self, path: Path, storage: str, store, with_map: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path, self.store = path, store
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=8, storage_plugin=plugin)
        self.writer.open()
        self.conns = {name: self.writer.add_connection(OUTPUT_TOPICS[name], msgtype, typestore=store)
                      for name, msgtype in OUTPUT_TYPES.items() if with_map or not name.startswith("map_")}
        self.counts: Counter = Counter()

    def serialize(self, outputs: dict[str, Any]) -> dict[str, bytes]:
        return {name: self.store.serialize_cdr(msg, OUTPUT_TYPES[name])
                for name, msg in outputs.items() if msg is not None}

    def write(self, raw: dict[str, bytes], t_ns: int) -> None:
        for name, data in raw.items():
            self.writer.write(self.conns[name], int(t_ns), data)
            self.counts[OUTPUT_TOPICS[name]] += 1

    def close(self) -> None:
        self.writer.close()


# -------------------------------------------------------------------------------------------------------------
# Metrics
# -------------------------------------------------------------------------------------------------------------
class _Evaluator:
    """Per-frame scoring against ground-truth images, as :func:`bifusion_core.train.validate.validate` scores
    held-out frames: semantic confusion over the model's classes; instances per frame in the ScanNet benchmark's
    ``label_id * 1000 + instance`` encoding (ground truth of classes outside the model's list is void)."""

    def __init__(self, class_names: list[str], min_region_size: int):
        from bifusion_core.data.scannet.classes import IGNORE_INDEX
        from bifusion_core.data.scannet.classes import index_lookup, label_ids
        from bifusion_core.eval import InstanceAccumulator, InstanceEvalConfig, SemanticEvaluator

        self.class_names = list(class_names)
        self.ignore = IGNORE_INDEX
        self.lut = index_lookup(self.class_names)
        self.to_id = label_ids(self.class_names)
        self.semantic = SemanticEvaluator(len(self.class_names), self.class_names, IGNORE_INDEX)
        self.instances = InstanceAccumulator(InstanceEvalConfig(min_region_size=min_region_size))
        self.frames = 0

    def point_ground_truth(self, result, gt_semantic: np.ndarray, gt_instance: np.ndarray | None):
        """``(class index (N,) of each of the result's points, IGNORE_INDEX where none of the model's;
        instance id (N,) or None)`` read from the ground-truth images at the points' pixels."""
        u, v = result.pixels[:, 0].astype(np.int64), result.pixels[:, 1].astype(np.int64)
        ids = gt_semantic[v, u].astype(np.int64)
        sem_gt = np.where((ids >= 0) & (ids < len(self.lut)), self.lut[np.clip(ids, 0, len(self.lut) - 1)],
                          self.ignore)
        return sem_gt, (None if gt_instance is None else gt_instance[v, u].astype(np.int64))

    def add(self, result, gt_semantic: np.ndarray, gt_instance: np.ndarray | None):
        """Score one frame; returns :meth:`point_ground_truth` (for the map)."""
        from bifusion_core.eval import frame_instance_inputs

        sem_gt, inst_gt = self.point_ground_truth(result, gt_semantic, gt_instance)
        self.semantic.update(sem_gt, np.asarray(result.semantic))
        self.frames += 1
        if inst_gt is not None:
            self.instances.add(*frame_instance_inputs(sem_gt, inst_gt, result.instances, self.to_id))
        return sem_gt, inst_gt

    def results(self):
        """``(SemanticResult or None, InstanceResult or None)``."""
        sem = self.semantic.result() if self.frames else None
        inst = self.instances.result() if len(self.instances) else None
        return sem, inst


@dataclass
class _BadGt:
    """A ground-truth image that cannot be used: ``reason`` (one of :data:`GT_SKIP_REASONS`) and why."""

    reason: str
    detail: str


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


# -------------------------------------------------------------------------------------------------------------
# The replay
# -------------------------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    """A validated set waiting for its camera pose."""

    inputs: FrameInputs
    stamp: Any            # builtin_interfaces/Time of the colour image
    arrival: int          # bag time (ns) of the message that completed the set


class _Replay:
    """One replay: :meth:`open` checks the bag and its topics (before any model is loaded), :meth:`run`
    processes it, :meth:`close` closes the bag."""

    def __init__(self, cfg: ReplayConfig):
        from bifusion_ros.interfaces import typestore

        self.cfg = cfg
        # the per-frame policy and book-keeping the node runs too (its processor is set by run())
        self.session = FrameSession(None, world_frame=cfg.world_frame, camera_frame=cfg.camera_frame,
                                    on_missing_tf=cfg.on_missing_tf, latency_window=None, log=log)
        self.store = typestore()
        self.msgs = convert.rosbags_factory(self.store)
        self.out = Path(cfg.out)
        self.frames_dir = self.out / "frames"
        # strict: a pose that depends on a stamp received twice with different transforms is not used
        self.tf = TransformBuffer(cache_time=max(10.0, 4 * cfg.tf_timeout), strict_repeats=True)
        self.sync = ApproximateTimeSynchronizer(3, cfg.sync_queue_size, cfg.sync_slop)
        self.pending: deque[_Pending] = deque()
        self.counts: Counter = Counter()
        self.gt_skipped: Counter = Counter()  # GT_SKIP_REASONS -> processed frames not scored
        self.gt: dict[str, dict[int, np.ndarray | _BadGt]] = {}
        # stamp -> (result, shape, arrival, the frame's MapFrame or None)
        self.awaiting_gt: dict[int, tuple[Any, tuple[int, int], int, Any]] = {}
        self.evaluator: _Evaluator | None = None
        self.map_scorer = None     # OnlineMapScorer when cfg.map and ground truth
        self.saved: list[str] = []
        self.reader = None
        self.bag_path: Path | None = None
        self.topics: dict[str, list] = {}
        self.gt_kinds: list[str] = []
        self.bag: _OutputBag | None = None
        self.bar = None
        # the masks of cfg.mask_topic by stamp, as the node's cache (None: no mask topic)
        self.masks = MaskCache(keep=masks_kept(cfg.sync_queue_size), timeout=cfg.mask_timeout) if cfg.mask_topic else None

    # ---------------------------------------------------------------------------------------------- helpers
    def _skip(self, reason: str, detail: str) -> None:
        self.session.skip(reason, detail)
        self._advance()

    def _advance(self) -> None:
        self.counts["handled"] += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(processed=self.session.counter("processed"), skipped=sum(self.session.skipped.values()),
                                 refresh=False)

    @property
    def limit_reached(self) -> bool:
        m = self.cfg.max_frames
        return m is not None and self.counts["sets"] >= m

    # ---------------------------------------------------------------------------------------------- input
    def on_tf(self, msg) -> None:
        """A ``/tf`` message: each transform into the buffer. Malformed ones are counted (``bad_tf_messages``,
        once per message), ignored data is counted and logged as tf2 warns about it: ``tf_repeated`` (a stamp
        already in the buffer, tf2 TF_REPEATED_DATA; ``tf_repeated_conflicting`` when its value differs, which
        makes the pose at that stamp ambiguous: frames that need it are not given a pose) and ``tf_old_data``
        (older than the cache window, TF_OLD_DATA)."""
        bad = None
        for transform in msg.transforms:
            try:
                status, detail = self.tf.add_status(transform)
            except ValueError as exc:
                bad = bad or exc
                continue
            if status == OLD_DATA:
                n = self.counts["tf_old_data"] = self.counts["tf_old_data"] + 1
                self.session.warn_throttled("tf_old_data", f"TF_OLD_DATA ignoring data from the past ({n} so far): "
                                                           f"{transform.header.frame_id!r} -> "
                                                           f"{transform.child_frame_id!r} at "
                                                           f"{stamp_to_ns(transform.header.stamp) / 1e9:.3f} s")
            elif status in (REPEATED_DATA, REPEATED_CONFLICT):
                n = self.counts["tf_repeated"] = self.counts["tf_repeated"] + 1
                if status == REPEATED_CONFLICT:
                    k = self.counts["tf_repeated_conflicting"] = self.counts["tf_repeated_conflicting"] + 1
                    self.session.warn_throttled(
                        "tf_repeated_conflicting",
                        f"TF_REPEATED_DATA with a different value ({k} so far): {detail}; the first one is kept and "
                        "frames whose pose depends on it get none (on_missing_tf)")
                else:
                    self.session.warn_throttled(
                        "tf_repeated", f"TF_REPEATED_DATA ignoring repeated data ({n} so far, same value): "
                                       f"{transform.header.frame_id!r} -> {transform.child_frame_id!r} at "
                                       f"{stamp_to_ns(transform.header.stamp) / 1e9:.3f} s")
        if bad is not None:
            self.counts["bad_tf_messages"] += 1
            if self.counts["bad_tf_messages"] == 1:
                log.warning("ignoring a malformed /tf transform: %s", bad)

    def on_input(self, index: int, msg, t_ns: int) -> None:
        """A colour (0), depth (1) or camera-info (2) message, in bag order."""
        self.counts[("colour", "depth", "camera_info")[index]] += 1
        sync_set = self.sync.add(index, msg)
        if sync_set is None:
            return
        self.counts["sets"] += 1
        color, depth, info = sync_set
        t0 = time.perf_counter()
        try:
            inputs = frame_inputs(color, depth, info, self.cfg.depth_scale)
        except FrameSkipped as skip:
            self._skip(skip.reason, skip.detail)
            return
        except Exception as exc:  # noqa: BLE001 - a malformed message must not end the replay (as in the node)
            self._skip("bad_image", f"{type(exc).__name__}: {exc}")
            return
        inputs.timings["convert"] = time.perf_counter() - t0
        self.pending.append(_Pending(inputs, color.header.stamp, t_ns))

    def on_mask(self, msg) -> None:
        """A segmenter's mask into the cache (one it cannot read is counted and logged, its frame goes on)."""
        why = mask_message(self.masks, msg)
        if why:
            self.session.warn_throttled("mask_" + why.split(":")[0], f"2D mask skipped ({why}); its frame is "
                                                                     "processed without it")

    def on_gt(self, kind: str, msg) -> None:
        """A ground-truth image (``kind`` ``semantic`` or ``instance``), validated here: one with an encoding
        outside :data:`GT_ENCODINGS` or malformed data is kept as a :class:`_BadGt`, so that the frame of its
        stamp is counted as not scored (``gt_skipped``) instead of waiting for ground truth that never comes."""
        stamp = stamp_to_ns(msg.header.stamp)
        what = f"ground-truth {kind} image at {stamp / 1e9:.3f} s"
        encoding = str(getattr(msg, "encoding", ""))
        entry: np.ndarray | _BadGt
        if encoding not in GT_ENCODINGS:
            entry = _BadGt("bad_encoding", f"{what} has encoding {encoding!r}, expected a single-channel integer "
                                           f"one ({', '.join(GT_ENCODINGS)})")
        else:
            try:
                entry = convert.raw_image_array(msg)
            except (ValueError, TypeError) as exc:
                entry = _BadGt("bad_image", f"{what}: {exc}")
        store = self.gt.setdefault(kind, {})
        store[stamp] = entry
        while len(store) > _GT_KEEP:
            del store[min(store)]
        if stamp in self.awaiting_gt:
            self._try_evaluate(stamp, *self.awaiting_gt[stamp])

    # ---------------------------------------------------------------------------------------------- TF
    def _lookup(self, p: _Pending) -> np.ndarray:
        camera = self.session.camera(p.inputs.image_frame)
        if not camera:
            raise TransformError("the colour image has an empty header.frame_id and --camera-frame is not set")
        return self.tf.lookup(self.cfg.world_frame, camera, p.stamp)

    def drain(self, now_ns: int | None) -> None:
        """Process the waiting sets whose pose is known or whose wait is over (``now_ns`` None: end of the bag).

        The node's ``tf_timeout`` in bag time: :meth:`run` calls this with a message's bag time ``now_ns`` before
        the message is handled (so a set whose wait ended before ``now_ns`` is decided on the ``/tf`` received
        until then, not on a transform that arrives later) and again after it. A pose that depends on an
        ambiguous repeated stamp (:class:`~bifusion_ros.tf_buffer.RepeatedDataError`) is not waited for: more
        ``/tf`` cannot resolve it."""
        timeout_ns = int(round(self.cfg.tf_timeout * 1e9))
        mask_ns = int(round(self.cfg.mask_timeout * 1e9))
        while self.pending:
            p = self.pending[0]
            if (self.masks is not None and now_ns is not None and now_ns <= p.arrival + mask_ns
                    and not self.masks.has(stamp_to_ns(p.stamp))):
                return  # the node's worker waits up to mask_timeout for the frame's mask
            t0 = time.perf_counter()
            try:
                pose, out_frame = self._lookup(p), self.cfg.world_frame
            except TransformError as exc:
                if (now_ns is not None and now_ns <= p.arrival + timeout_ns
                        and not isinstance(exc, RepeatedDataError)):
                    return  # keep waiting for /tf, as the node does for tf_timeout
                self.pending.popleft()
                try:
                    pose, out_frame = self.session.without_pose(p.inputs, str(exc))
                except FrameSkipped as skip:
                    self._skip(skip.reason, skip.detail)
                    continue
            else:
                self.pending.popleft()
            p.inputs.timings["tf"] = time.perf_counter() - t0
            self._process(p, pose, out_frame)

    # ---------------------------------------------------------------------------------------------- frame
    def _change_classes(self) -> None:
        """Apply a ``classes_at`` entry due before this processed frame (as the node applies a parameter change)."""
        names = self.class_schedule.pop(self.session.counter("processed"), None)
        if names is None:
            return
        names = list(names) or self.checkpoint_classes
        try:
            cleared = self.session.set_classes(names)
        except ValueError as exc:
            raise ReplayError(f"--classes-at {self.session.counter('processed')}: {exc}") from None
        log.info("frame %d: classes set to %s%s", self.session.counter("processed"), names,
                 f"; map reset ({cleared} instances cleared)" if self.session.map is not None else "")
        self.map_scorer = None  # the map of the first class list is gone

    def _process(self, p: _Pending, pose: np.ndarray, out_frame: str) -> None:
        stamp_ns = stamp_to_ns(p.stamp)
        timings = p.inputs.timings
        self._change_classes()
        if self.masks is not None:
            p.inputs.masks, why = self.masks.take(stamp_ns, p.inputs.rgb.shape[:2], wait=0.0)
            if why == "size_mismatch":
                self.session.warn_throttled("mask_size_mismatch", f"2D mask at {stamp_ns / 1e9:.3f} s has another size "
                                                                  "than the colour image: skipped, frame processed")
        try:
            result = self.session.process(p.inputs, pose, out_frame)
        except FrameSkipped as skip:  # counted like the node does
            self._skip(skip.reason, skip.detail)
            return
        map_frame = None if self.cfg.oracle_instances else self.session.map_frame(p.inputs, result, out_frame)
        t1 = time.perf_counter()
        try:  # exactly what the node publishes
            outputs = frame_outputs(result, p.stamp, out_frame, self.session.camera(p.inputs.image_frame),
                                    self.cfg.world_frame, self.msgs, float(self.cfg.score_threshold), map_frame)
            smap = self.session.map
            if smap is not None and smap.due(p.inputs.stamp):
                header = convert.make_header(self.msgs, self.session.world_frame, p.stamp)
                outputs.update(map_outputs(smap.snapshot(), header, self.msgs))
            raw = self.bag.serialize(outputs)
        except Exception as exc:  # noqa: BLE001
            self._skip("publish_error", f"{type(exc).__name__}: {exc}")
            return
        self.bag.write(raw, p.arrival)
        t2 = time.perf_counter()
        timings["outputs"] = t2 - t1
        index = self.session.counter("processed")
        if self.cfg.save_every and index % self.cfg.save_every == 0:
            from bifusion_core.io.render import write_result

            name = f"frame_{index:05d}"
            write_result(self.frames_dir, name, result, p.inputs.rgb)
            self.saved.append(name)
            timings["save"] = time.perf_counter() - t2
        timings["frame_total"] = sum(timings.values())
        self.session.done(p.inputs, result)
        self._try_evaluate(stamp_ns, result, p.inputs.rgb.shape[:2], p.arrival, map_frame)
        self._advance()

    def _try_evaluate(self, stamp_ns: int, result, shape: tuple[int, int], arrival: int, map_frame=None) -> None:
        """Score ``result`` once the ground truth of its stamp is in; until then it waits (bounded).
        ``arrival``: bag time (ns) of the set it came from, to tell when waiting longer is pointless;
        ``map_frame``: what the map made of the frame (scored against the ground truth too)."""
        kinds = self.gt_kinds
        if not kinds:
            return
        if not all(stamp_ns in self.gt.get(k, {}) for k in kinds):
            self.awaiting_gt[stamp_ns] = (result, shape, arrival, map_frame)
            while len(self.awaiting_gt) > _GT_KEEP:
                del self.awaiting_gt[min(self.awaiting_gt)]
                self.counts["without_gt"] += 1
            return
        self.awaiting_gt.pop(stamp_ns, None)
        gt = {k: self.gt[k].pop(stamp_ns) for k in kinds}
        bad = [g for g in gt.values() if isinstance(g, _BadGt)]
        if bad:
            self._skip_scoring(bad[0].reason, bad[0].detail)
            return
        sizes = {k: a.shape for k, a in gt.items() if a.shape != tuple(shape)}
        if sizes:
            self._skip_scoring("size_mismatch", f"ground truth at {stamp_ns / 1e9:.3f} s is "
                                                + ", ".join(f"{k} {a[1]}x{a[0]}" for k, a in sizes.items())
                                                + f", the colour image {shape[1]}x{shape[0]}")
            return
        sem = gt.get("semantic")
        if sem is None:
            return
        t0 = time.perf_counter()
        if self.evaluator is None:
            self.evaluator = _Evaluator(list(result.class_names), self.cfg.min_region_size)
        elif list(result.class_names) != self.evaluator.class_names:
            self._skip_scoring("classes_changed", "the frame was segmented with another class list than the "
                                                  "first scored frame (--classes-at)")
            return
        sem_gt, inst_gt = self.evaluator.add(result, sem, gt.get("instance"))
        if self.session.map is not None and inst_gt is not None:
            self._score_map_frame(stamp_ns, result, sem_gt, inst_gt, map_frame)
        self.session.latency.add("eval", time.perf_counter() - t0)

    def _skip_scoring(self, reason: str, detail: str) -> None:
        """A processed frame is not scored: counted per reason, logged (the first of each reason, then at most
        every few seconds)."""
        self.gt_skipped[reason] += 1
        self.session.warn_throttled(f"gt_{reason}", f"frame not scored ({reason}, {self.gt_skipped[reason]} so far): "
                                                    f"{detail}")

    def _score_map_frame(self, stamp_ns: int, result, gt_class, gt_instance, map_frame) -> None:
        """Record what the map made of each ground-truth instance of a frame (``gt_class`` / ``gt_instance``
        per point, :meth:`_Evaluator.point_ground_truth`). With ``oracle_instances`` the frame's ground-truth
        instances are merged into the map first."""
        from bifusion_core.mapping import oracle_observations

        min_points = self.cfg.map_config.min_points
        to_id = self.evaluator.to_id
        gt_cls = np.where((gt_class >= 0) & (gt_class < len(to_id)), gt_class, -1)
        gt_label = np.where(gt_cls >= 0, to_id[np.clip(gt_cls, 0, len(to_id) - 1)], 0)
        if self.cfg.oracle_instances:
            t0 = time.perf_counter()
            obs, owner = oracle_observations(result.points, gt_instance, gt_cls, min_points)
            try:
                map_frame = self.session.map.merge(obs, owner, result, stamp_ns / 1e9)
            except ValueError as exc:  # an unusable frame for the map is counted, the replay goes on
                self.session.count("map_errors")
                log.warning("frame at %.3f s not merged into the map: %s", stamp_ns / 1e9, exc)
                return
            self.session.latency.add("map", time.perf_counter() - t0)
        if map_frame is not None and self.map_scorer is not None:
            self.map_scorer.add_frame(result.points, gt_label, gt_instance, map_frame.point_ids, min_points)

    # ---------------------------------------------------------------------------------------------- run
    def open(self) -> None:
        """Open the bag and check its topics; :class:`ReplayError` naming the bag's topics when one is missing."""
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError

        cfg = self.cfg
        try:
            self.bag_path = resolve_bag_path(cfg.bag)
        except (FileNotFoundError, ValueError) as exc:  # no such bag / not a bag
            raise ReplayError(str(exc)) from None
        reader = Reader(self.bag_path)
        try:
            reader.open()
        except (ReaderError, OSError, KeyError, ValueError) as exc:
            raise ReplayError(f"cannot open bag {self.bag_path}: {exc}") from None
        self.reader = reader
        try:
            conns = reader.connections
            listing = _topic_listing(conns)
            self.topics = {
                "color": _select(conns, cfg.color_topic, IMAGE, "colour image", True, listing),
                "depth": _select(conns, cfg.depth_topic, IMAGE, "depth image", True, listing),
                "info": _select(conns, cfg.info_topic, CAMERA_INFO, "camera info", True, listing),
                "tf": _select(conns, TOPIC_TF, TF_MESSAGE, "TF", False, listing),
                "tf_static": _select(conns, TOPIC_TF_STATIC, TF_MESSAGE, "static TF", False, listing),
                "semantic": _select(conns, cfg.gt_semantic_topic, IMAGE, "ground-truth semantic", False, listing),
                "instance": _select(conns, cfg.gt_instance_topic, IMAGE, "ground-truth instance", False, listing),
                "masks": (_select(conns, cfg.mask_topic, IMAGE, "2D instance mask", True, listing)
                          if cfg.mask_topic else []),
            }
        except ReplayError:
            self.close()
            raise
        self.gt_kinds = [k for k in ("semantic", "instance") if self.topics[k]]
        if cfg.oracle_instances and set(self.gt_kinds) != {"semantic", "instance"}:
            self.close()
            raise ReplayError(f"--oracle-instances needs ground-truth semantic and instance images "
                              f"({cfg.gt_semantic_topic}, {cfg.gt_instance_topic}); the bag has "
                              f"{' + '.join(self.gt_kinds) or 'neither'}")
        if self.topics["instance"] and not self.topics["semantic"]:
            log.warning("the bag has %s but no %s: instances cannot be scored without semantic ground truth",
                        cfg.gt_instance_topic, cfg.gt_semantic_topic)
        if not self.topics["tf"] and not self.topics["tf_static"]:
            log.warning("the bag has neither %s nor %s: no camera pose in %r for any frame; %s", TOPIC_TF,
                        TOPIC_TF_STATIC, cfg.world_frame,
                        "every frame is skipped (missing_tf); --on-missing-tf identity processes them in the "
                        "camera frame" if cfg.on_missing_tf == "skip"
                        else "frames are processed with the identity pose in the camera frame")

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def run(self, processor) -> dict:
        """Process the opened bag with ``processor``; returns the metrics (with ``_tables``)."""
        cfg, topics = self.cfg, self.topics
        self.session.processor = processor
        self.checkpoint_classes = list(getattr(processor, "class_names", None) or [])
        self.class_schedule = {int(k): list(v) for k, v in cfg.classes_at}
        model = getattr(processor, "model", None)
        for k, names in self.class_schedule.items():  # refused before anything is processed, not midway
            if model is not None and not getattr(model, "open_vocab", True) and names \
                    and len(names) != len(self.checkpoint_classes):
                raise ReplayError(f"--classes-at {k}: this checkpoint has a fixed {len(self.checkpoint_classes)}-class "
                                  f"classifier; {len(names)} names given")
        if cfg.map:
            from bifusion_core.mapping import OnlineMapScorer

            self.session.enable_map(cfg.map_config, cfg.map_publish_period)
            if set(self.gt_kinds) == {"semantic", "instance"}:
                self.map_scorer = OnlineMapScorer(cfg.map_config.voxel_size, cfg.min_region_size)
        n_colour = sum(c.msgcount for c in topics["color"])
        log.info("bag %s: %d colour images on %s; %s", self.bag_path, n_colour, cfg.color_topic,
                 "ground truth " + " + ".join(self.gt_kinds) if self.gt_kinds else "no ground truth")

        self.out.mkdir(parents=True, exist_ok=True)
        _prepare_output_bag(self.out / "output_bag")
        self.bag = _OutputBag(self.out / "output_bag", cfg.storage, self.store, with_map=cfg.map)

        t_start = time.perf_counter()
        static = topics["tf_static"]  # read first; an empty selection would mean every topic to rosbags
        for c, _, raw in (self.reader.messages(connections=static) if static else ()):
            try:
                self.tf.add_message(self.store.deserialize_cdr(raw, c.msgtype), static=True)
            except ValueError as exc:
                log.warning("ignoring a malformed /tf_static message: %s", exc)

        kinds = ("color", "depth", "info", "tf", "semantic", "instance", "masks")
        role = {c.id: kind for kind in kinds for c in topics[kind]}
        wanted = [c for kind in kinds for c in topics[kind]]
        inputs = {"color": 0, "depth": 1, "info": 2}
        total = n_colour if cfg.max_frames is None else min(n_colour, cfg.max_frames)
        self.bar = _progress(total, cfg.progress)
        interrupted = False
        try:
            with _redirect_logging(cfg.progress):
                for c, t_ns, raw in self.reader.messages(connections=wanted):
                    kind = role[c.id]
                    if self.limit_reached and not self.pending and (
                            not self.awaiting_gt or t_ns > max(w[2] for w in self.awaiting_gt.values()) + 1_000_000_000):
                        break  # done: nothing waits for a pose or (within 1 s) for its ground truth
                    if kind in inputs and self.limit_reached:
                        continue
                    self.drain(t_ns)  # sets whose tf_timeout ran out before this message are decided without it
                    msg = self.store.deserialize_cdr(raw, c.msgtype)
                    if kind == "tf":
                        self.on_tf(msg)
                    elif kind in inputs:
                        self.on_input(inputs[kind], msg, t_ns)
                    elif kind == "masks":
                        self.on_mask(msg)
                    else:
                        self.on_gt(kind, msg)
                    self.drain(t_ns)
                self.drain(None)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: writing what was processed so far")
        finally:
            if self.bar is not None:
                self.bar.close()
            self.bag.close()
        return self._metrics(self.bag_path, time.perf_counter() - t_start, interrupted)

    def _map_metrics(self) -> dict | None:
        """The map's figures (and its files under ``out/map``), None without ``map``."""
        if self.session.map is None:
            return None
        smap = self.session.map.scene
        out = {"source": "ground-truth instances (oracle)" if self.cfg.oracle_instances else "model instances",
               "instances": len(smap.instances), "voxels": int(len(smap.voxel_map.keys)),
               "merged_observations": int(sum(i.merge_count for i in smap.instances)),
               "frames_not_merged": self.session.counter("map_errors"),
               "frames_without_pose": self.session.counter("map_without_pose"),
               "directory": str(self.out / "map")}
        try:
            if (self.out / "map").exists():
                shutil.rmtree(self.out / "map")
            smap.save(self.out / "map")
        except (OSError, ValueError) as exc:
            log.error("cannot save the map to %s: %s", self.out / "map", exc)
            out["directory"] = None
        if self.map_scorer is not None and self.map_scorer.frames and self.evaluator is not None:
            out["scene"] = self.map_scorer.result(smap.instances, self.evaluator.to_id)
        return out

    def _metrics(self, bag_path: Path, wall: float, interrupted: bool) -> dict:
        c = self.counts
        processed = self.session.counter("processed")
        sem, inst = self.evaluator.results() if self.evaluator is not None else (None, None)
        without_gt = c["without_gt"] + len(self.awaiting_gt) + (processed if not self.gt_kinds else 0)
        frames = {
            "colour_images": c["colour"], "depth_images": c["depth"], "camera_infos": c["camera_info"],
            "synchronised": c["sets"],
            "sync_dropped_colour": max(c["colour"] - c["sets"], 0),
            "processed": processed,
            "skipped": sum(self.session.skipped.values()),
            "skipped_by_reason": self.session.skipped,
            "skip_examples": dict(self.session.first_detail),
            "identity_pose": self.session.counter("identity_pose"),
            "class_changes": self.session.counter("class_changes"),
            "masks": self.masks.summary() if self.masks is not None else None,
            "evaluated": self.evaluator.frames if self.evaluator else 0,
            "without_gt": without_gt,
            "gt_skipped": {reason: self.gt_skipped[reason] for reason in GT_SKIP_REASONS},
            "bad_tf_messages": c["bad_tf_messages"],
            "tf_repeated": c["tf_repeated"],
            "tf_repeated_conflicting": c["tf_repeated_conflicting"],
            "tf_old_data": c["tf_old_data"],
        }
        proc = self.session.processor
        # the list the figures are over (the first scored frame's; the processor's may have changed since)
        cls = self.evaluator.class_names if self.evaluator is not None else getattr(proc, "class_names", None)
        return {
            "bag": str(bag_path),
            "checkpoint": str(getattr(proc, "checkpoint", None) or "(a processor given by the caller)"),
            "device": str(getattr(proc, "device", self.cfg.device)),
            "classes": list(cls) if cls is not None else None,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.cfg).items()},
            "interrupted": interrupted,
            "frames": frames,
            "semantic": None if sem is None else {"miou": _finite(sem.miou), "accuracy": _finite(sem.accuracy),
                                                  "classes": sem.to_dict()["classes"]},
            "instance": None if inst is None else {
                "ap": _finite(inst.ap), "ap50": _finite(inst.ap50), "ap25": _finite(inst.ap25),
                "frames": len(self.evaluator.instances), "min_region_size": self.cfg.min_region_size,
                "classes": {n: d for n, d in inst.to_dict()["classes"].items() if any(v is not None for v in d.values())},
            },
            "map": self._map_metrics(),
            "latency_ms": self.session.latency.summary_ms(),
            "wall_time_s": round(wall, 3),
            "seconds_per_processed_frame": round(wall / processed, 4) if processed else None,
            "outputs": {"bag": str(self.bag.path), "messages": dict(self.bag.counts),
                        "frames_dir": str(self.frames_dir) if self.saved else None, "saved_frames": self.saved},
            "_tables": {"semantic": sem.table() if sem is not None else None,
                        "instance": inst.table() if inst is not None else None},
        }


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="replay", unit="frame", dynamic_ncols=True)


def _redirect_logging(enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def load_processor(cfg: ReplayConfig):
    """``FrameProcessor.from_checkpoint`` for ``cfg`` with ``cfg.classes`` applied (:class:`ReplayError` for a
    missing / invalid checkpoint, or classes the model refuses)."""
    try:
        processor = load_frame_processor(cfg.checkpoint, cfg.device, cfg.half, cfg.voxel_size,
                                         cfg.superpoints_from_masks)
    except (FileNotFoundError, ValueError) as exc:  # CheckpointError is a ValueError
        raise ReplayError(str(exc)) from None
    _set_classes(processor, cfg.classes)
    return processor


def _set_classes(processor, classes) -> None:
    """``processor.set_classes(classes)`` unless ``classes`` is empty; :class:`ReplayError` when the processor
    refuses them (e.g. a fixed-class checkpoint given another number of names)."""
    if not classes:
        return
    try:
        processor.set_classes(list(classes))
    except (ValueError, TypeError) as exc:
        raise ReplayError(f"--classes ({len(classes)} names): {exc}") from None


def replay(cfg: ReplayConfig, processor=None) -> dict:
    """Replay ``cfg.bag`` (see the module doc); returns the metrics also written to ``cfg.out/metrics.json``
    (plus a ``_tables`` entry with the printable per-class tables, not written to the file).

    Args:
        processor: an object with ``process(Frame) -> FrameResult`` and ``class_names`` (default:
            :func:`load_processor`). ``cfg.classes`` is applied to a given processor too.

    Raises:
        ReplayError: no such bag, a required topic is missing or has the wrong type, a bad checkpoint, classes
            the model refuses.
    """
    job = _Replay(cfg)
    job.open()  # bag and topic errors come before the model is loaded
    try:
        if processor is None:
            processor = load_processor(cfg)
        else:
            _set_classes(processor, cfg.classes)
        metrics = job.run(processor)
    finally:
        job.close()
    tables = metrics.pop("_tables")
    out = Path(cfg.out) / "metrics.json"
    out.write_text(json.dumps(metrics, indent=2))
    metrics["_tables"] = tables
    return metrics


def format_metrics(metrics: dict, per_class: bool = True) -> str:
    """A printable summary of :func:`replay`'s metrics: frame counts, scores, per-stage latency."""
    f = metrics["frames"]
    lines = ["", "=" * 64, "BiFusion replay", "=" * 64,
             f"{'bag':<26}{metrics['bag']}",
             f"{'frames':<26}{f['processed']} processed / {f['synchronised']} synchronised "
             f"({f['colour_images']} colour images, {f['sync_dropped_colour']} unpaired)"]
    reasons = {r: n for r, n in f["skipped_by_reason"].items() if n}
    lines.append(f"{'skipped':<26}{f['skipped']}" + (" (" + ", ".join(f"{r} {n}" for r, n in reasons.items()) + ")"
                                                     if reasons else ""))
    if f["identity_pose"]:
        lines.append(f"{'identity pose (no TF)':<26}{f['identity_pose']}")
    if f.get("tf_repeated") or f.get("tf_old_data"):
        lines.append(f"{'TF data ignored':<26}{f.get('tf_repeated', 0)} repeated stamps "
                     f"({f.get('tf_repeated_conflicting', 0)} with another value), {f.get('tf_old_data', 0)} too old")
    not_scored = {r: n for r, n in (f.get("gt_skipped") or {}).items() if n}
    if not_scored:
        lines.append(f"{'not scored (bad GT)':<26}{sum(not_scored.values())} ("
                     + ", ".join(f"{r} {n}" for r, n in not_scored.items()) + ")")

    def num(x) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    sem, inst = metrics.get("semantic"), metrics.get("instance")
    lines.append("-" * 64)
    if sem is None and inst is None:
        lines.append("no ground truth scored (the bag has no /bifusion/gt/* images for the processed frames)")
    else:
        lines.append(f"{'frames scored':<26}{f['evaluated']}")
        if sem is not None:
            lines.append(f"{'semantic mIoU':<26}{num(sem['miou'])}   (point accuracy {num(sem['accuracy'])})")
        if inst is not None:
            lines.append(f"{'instance AP / AP50 / AP25':<26}{num(inst['ap'])} / {num(inst['ap50'])} / "
                         f"{num(inst['ap25'])}   (per frame, min {inst['min_region_size']} points)")
    m = metrics.get("map")
    if m:
        lines.append(f"{'map':<26}{m['instances']} instances from {m['merged_observations']} observations "
                     f"({m['source']}), {m['voxels']} voxels -> {m['directory']}")
        sc = m.get("scene")
        if sc:
            lines.append(f"{'map AP / AP50 / AP25':<26}{num(sc['ap'])} / {num(sc['ap50'])} / {num(sc['ap25'])}   "
                         f"(scene, {sc['gt_instances']} ground-truth instances)")
            lines.append(f"{'map tracking':<26}ID consistency {num(sc['id_consistency'])}, fragmentation "
                         f"{num(sc['fragmentation'])} ids per instance, {sc['id_switches']} ID switches")
    tables = metrics.get("_tables") or {}
    if per_class:
        for key in ("semantic", "instance"):
            if tables.get(key):
                lines += ["-" * 64, tables[key]]
    lat = metrics.get("latency_ms") or {}
    if lat:
        lines += ["-" * 64, f"{'latency (ms)':<26}{'mean':>9}{'p50':>9}{'p95':>9}{'max':>9}"]
        order = ["convert", "tf", "process", "map", "outputs", "save", "eval", "frame_total"]
        stages = [s for s in order if s in lat] + sorted(s for s in lat if s not in order)
        for s in stages:
            v = lat[s]
            name = ("  " + s) if s.startswith("model/") else s
            lines.append(f"{name:<26}{v['mean']:>9.1f}{v['p50']:>9.1f}{v['p95']:>9.1f}{v['max']:>9.1f}")
    spf = metrics.get("seconds_per_processed_frame")
    lines += ["-" * 64, f"{'wall time':<26}{metrics['wall_time_s']:.1f} s"
              + (f" ({spf:.3f} s per processed frame)" if spf else "")]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------
# CLI
# -------------------------------------------------------------------------------------------------------------
def build_parser(prog: str = "python -m bifusion_ros.replay") -> argparse.ArgumentParser:
    """The replay CLI's argument parser."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, help="rosbag2 bag directory (sqlite3 or mcap storage)")
    p.add_argument("--out", required=True, help="output directory: output_bag/, frames/, metrics.json")
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", help="model checkpoint (default: the shipped demo checkpoint)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="inference device (default auto)")
    g.add_argument("--half", action="store_true", help="half precision: fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 / AMX)")
    g.add_argument("--classes", help="class names / prompts replacing the checkpoint's: 'a,b,c' or '[a, b, c]'")
    g.add_argument("--mask-topic", default=_P["mask_topic"],
                   help="2D instance masks of a segmenter in the bag (mono8/mono16/16UC1/32SC1 ids, 0 none), as the "
                        "node's mask_topic; e.g. /bifusion/masks of `synthetic_bag --masks noisy`")
    g.add_argument("--mask-timeout", type=float, default=_P["mask_timeout"],
                   help="bag seconds a set waits for its mask (the node's mask_timeout)")
    g.add_argument("--superpoints-from-masks", action="store_true",
                   help="one superpoint per mask (ESAM), VCCS for the rest; default: VCCS cut along mask borders")
    g.add_argument("--classes-at", action="append", default=[], metavar="K=LIST",
                   help="before the K-th processed frame (from 0) switch to the classes LIST ('a,b' or '[a, b]'; "
                        "empty: the checkpoint's), as `ros2 param set` on the node; the map is reset; repeatable")
    g.add_argument("--voxel-size", type=float, default=0.0, help="override the checkpoint's voxel size (m; 0: keep)")
    g.add_argument("--score-threshold", type=float, default=_P["score_threshold"],
                   help=f"instances below it are left out of the published outputs (default {_P['score_threshold']})")
    g = p.add_argument_group("topics and frames")
    g.add_argument("--color-topic", default=_P["color_topic"], help="colour image topic (default %(default)s)")
    g.add_argument("--depth-topic", default=_P["depth_topic"], help="aligned depth topic (default %(default)s)")
    g.add_argument("--info-topic", default=_P["camera_info_topic"], help="camera info topic (default %(default)s)")
    g.add_argument("--gt-semantic-topic", default=TOPIC_GT_SEMANTIC, help="ground-truth label-id images "
                   "(16UC1; default %(default)s; absent: no scores)")
    g.add_argument("--gt-instance-topic", default=TOPIC_GT_INSTANCE, help="ground-truth instance-id images "
                   "(16UC1; default %(default)s)")
    g.add_argument("--world-frame", default=_P["world_frame"], help="output frame (default %(default)s)")
    g.add_argument("--camera-frame", default=_P["camera_frame"],
                   help="camera frame for the TF lookup (default: the colour image's frame_id)")
    g.add_argument("--on-missing-tf", default=_P["on_missing_tf"], choices=("skip", "identity"),
                   help="without a pose: skip the frame (counted as missing_tf) or use the identity pose in the "
                        "camera frame (default %(default)s)")
    g.add_argument("--tf-timeout", type=float, default=_P["tf_timeout"],
                   help="bag seconds a synchronised set waits for its pose in /tf, from its last message; /tf "
                        "received later is not used for it, as in the node (default %(default)s)")
    g.add_argument("--sync-slop", type=float, default=_P["sync_slop"],
                   help="largest stamp spread of a colour/depth/info set, s (default %(default)s)")
    g.add_argument("--sync-queue-size", type=int, default=_P["sync_queue_size"],
                   help="synchroniser queue per input (default %(default)s)")
    g.add_argument("--depth-scale", type=float, default=_P["depth_scale"],
                   help="metres per 16UC1 depth unit (default %(default)s)")
    g = p.add_argument_group("run and outputs")
    g.add_argument("--max-frames", type=int, help="stop after N synchronised frames")
    g.add_argument("--save-every", type=int, default=1,
                   help="write PNG/PLY/JSON of every k-th processed frame to OUT/frames (0: none; default 1)")
    g.add_argument("--min-region-size", type=int, default=100,
                   help="smallest instance (points) counted by the instance AP (default 100)")
    g = p.add_argument_group("online map (the node's map parameters)")
    g.add_argument("--map", action=argparse.BooleanOptionalAction, default=_P["map"],
                   help="build the online instance map as the node does (persistent ids in the outputs, map messages), "
                        "save it to OUT/map (PLY, JSON, state) and score it against the scene's ground truth (ESAM's "
                        "online protocol); default on")
    g.add_argument("--oracle-instances", action="store_true",
                   help="feed the map each frame's ground-truth instances instead of the model's (implies --map)")
    g.add_argument("--map-voxel-size", type=float, default=_P["map_voxel_size"],
                   help="map voxel edge, m (default %(default)s)")
    g.add_argument("--map-max-instances", type=int, default=_P["map_max_instances"],
                   help="most instances in memory (default %(default)s)")
    g.add_argument("--map-merge-threshold", type=float, default=_P["map_merge_threshold"],
                   help="merge score threshold (default %(default)s)")
    g.add_argument("--map-overlap", default=_P["map_overlap"], choices=spec("map_overlap").choices,
                   help="geometric term of the merge score (default %(default)s)")
    g.add_argument("--map-class-agnostic", action="store_true", help="merge across classes")
    g.add_argument("--map-max-voxels", type=int, default=_P["map_max_voxels"],
                   help="most voxels of the labelled map (default %(default)s)")
    g.add_argument("--map-publish-period", type=float, default=_P["map_publish_period"],
                   help="seconds of image stamps between two map messages in the output bag (default %(default)s)")
    g.add_argument("--storage", default="mcap", choices=STORAGES, help="output bag storage (default mcap)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-class tables")
    return p


def setup_logging() -> None:
    """Root logger at WARNING (third-party INFO chatter stays out), the ``bifusion`` loggers at INFO."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bifusion").setLevel(logging.INFO)


def parse_classes(text: str | None) -> list[str] | None:
    """``--classes`` -> names (None when not given; :class:`ReplayError` naming a bad list)."""
    try:
        return parse_string_list(text) if text else None
    except ValueError as exc:
        raise ReplayError(f"--classes: {exc}") from None


def parse_classes_at(items) -> list[tuple[int, list[str]]]:
    """``--classes-at K=LIST`` arguments -> ``[(K, names), ...]`` (:class:`ReplayError` naming a bad one)."""
    out = []
    for item in items:
        k, sep, names = item.partition("=")
        try:
            if not sep or not k.strip().isdigit():
                raise ValueError("expected K=LIST with K a frame number >= 0")
            out.append((int(k), parse_string_list(names) if names.strip() else []))
        except ValueError as exc:
            raise ReplayError(f"--classes-at {item!r}: {exc}") from None
    return out


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    classes = parse_classes(args.classes)
    classes_at = parse_classes_at(args.classes_at)
    given = {"map_voxel_size": args.map_voxel_size, "map_max_instances": args.map_max_instances,
             "map_merge_threshold": args.map_merge_threshold, "map_overlap": args.map_overlap,
             "map_class_agnostic": args.map_class_agnostic,
             "map_max_voxels": args.map_max_voxels}
    for name, value in given.items():  # checked as the node checks its parameters
        err = validate(name, value)
        if err:
            raise ReplayError(f"--{name.replace('_', '-')}: {err}")
    map_config = node_map_config(given)
    return ReplayConfig(
        bag=args.bag, out=args.out, checkpoint=args.checkpoint, device=args.device, half=args.half, classes=classes,
        classes_at=classes_at, color_topic=args.color_topic, depth_topic=args.depth_topic, info_topic=args.info_topic,
        gt_semantic_topic=args.gt_semantic_topic, gt_instance_topic=args.gt_instance_topic,
        world_frame=args.world_frame, camera_frame=args.camera_frame, on_missing_tf=args.on_missing_tf,
        tf_timeout=args.tf_timeout, sync_slop=args.sync_slop, sync_queue_size=args.sync_queue_size,
        depth_scale=args.depth_scale, score_threshold=args.score_threshold, voxel_size=args.voxel_size,
        max_frames=args.max_frames, save_every=args.save_every, min_region_size=args.min_region_size,
        storage=args.storage, progress=not args.quiet, map=args.map, oracle_instances=args.oracle_instances,
        map_config=map_config, map_publish_period=args.map_publish_period, mask_topic=args.mask_topic,
        mask_timeout=args.mask_timeout, superpoints_from_masks=args.superpoints_from_masks)


def run(cfg: ReplayConfig, processor=None, per_class: bool = True) -> int:
    """Replay, print the metrics table and the output locations; returns the exit status (see the module doc)."""
    from rosbags.rosbag2.errors import ReaderError, WriterError

    try:
        metrics = replay(cfg, processor)
    except (ReplayError, OSError, ReaderError, WriterError) as exc:  # unusable input or output location
        log.error("%s", exc)
        return 2
    print(format_metrics(metrics, per_class=per_class))
    out = metrics["outputs"]
    print("-" * 64)
    print(f"{'output bag':<26}{out['bag']}  ({', '.join(f'{t} {n}' for t, n in out['messages'].items()) or 'empty'})")
    if out["frames_dir"]:
        print(f"{'PNG / PLY per frame':<26}{out['frames_dir']}  ({len(out['saved_frames'])} frames)")
    print(f"{'metrics':<26}{Path(cfg.out) / 'metrics.json'}")
    if metrics["interrupted"]:
        return 130
    if metrics["frames"]["processed"] == 0:
        log.error("no frame was processed (synchronised %d, skipped: %s)", metrics["frames"]["synchronised"],
                  ", ".join(f"{r} {n}" for r, n in metrics["frames"]["skipped_by_reason"].items() if n) or "none")
        return 1
    return 0


def main(argv=None) -> int:
    """``bifusion_replay`` / ``python -m bifusion_ros.replay`` entry point."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        cfg = config_from_args(args)
    except ReplayError as exc:
        log.error("%s", exc)
        return 2
    return run(cfg, per_class=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
