"""One frame's way from a validated RGB-D set to a result, as the node and replay both run it (ROS-free).

The ROS node (``bifusion_ros.node``: rclpy subscriptions, tf2, a worker thread) and the offline replay
(``bifusion_ros.replay``: a bag, :class:`~bifusion_ros.tf_buffer.TransformBuffer`) differ only in where
messages and poses come from. Everything after that is :class:`FrameSession`:

- the camera frame of a set (``camera_frame``, else the colour image's ``header.frame_id``);
- the missing-pose policy (``on_missing_tf``: ``skip`` counts ``missing_tf`` and drops the frame,
  ``identity`` uses the identity pose and the camera frame as the output frame, counted as ``identity_pose``);
- the :class:`~bifusion_core.pipeline.types.Frame` handed to the processor, and a processor failure counted as
  ``processor_error`` (``bad_output`` when its outputs were not finite);
- skip counting per reason (:data:`SKIP_REASONS`) with one log line per reason at most every ``log_period``
  seconds (the first occurrence always), and the first detail of each reason;
- frame counters and per-stage latency (:class:`LatencyStats`);
- with the map on (:meth:`FrameSession.enable_map`), the online map (:class:`~.session_map.SessionMap`): each
  processed frame's instances are merged (:meth:`FrameSession.map_frame`, timed as ``map``; a frame the map
  refuses is counted as ``map_errors`` and logged, its outputs keep their per-frame ids), so that the outputs
  carry persistent map ids.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from .session_map import MapFrame, SessionMap
from .types import Frame, NonFiniteOutput

__all__ = ["SKIP_REASONS", "MISSING_TF_POLICIES", "FrameSkipped", "LatencyStats", "FrameInputs", "FrameSession",
           "MapFrame"]

SKIP_REASONS = (
    "bad_encoding",      # colour not rgb8/bgr8/rgba8/bgra8/mono8, or depth not 16UC1/32FC1
    "bad_image",         # data length / step inconsistent with width x height
    "size_mismatch",     # colour, depth and camera info do not have the same width x height
    "bad_camera_info",   # zero / non-finite K, skew, binning, ROI, unsupported distortion
    "missing_tf",        # no world_frame <- camera frame transform at the image stamp (on_missing_tf=skip)
    "processor_error",   # the model raised on this frame
    "bad_output",        # the model's outputs were not finite (NaN/inf): nothing published, merged or scored
    "publish_error",     # building or publishing (or writing) an output message raised
)
"""Why a frame is skipped; each is counted (and reported on ``/diagnostics`` and in replay's metrics)."""

MISSING_TF_POLICIES = ("skip", "identity")


class FrameSkipped(Exception):
    """A frame is dropped for ``reason`` (one of :data:`SKIP_REASONS`); ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LatencyStats:
    """Per-stage latencies (seconds): the last ``window`` samples of each stage (``None``: all); thread-safe."""

    def __init__(self, window: int | None = 100):
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be an integer >= 1 or None, got {window!r}")
        self.window = window
        self._samples: dict[str, deque] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            q = self._samples.get(stage)
            if q is None:
                q = self._samples[stage] = deque(maxlen=self.window)
            q.append(float(seconds))

    def update(self, timings: dict[str, float], prefix: str = "") -> None:
        """Add every ``{stage: seconds}`` (names prefixed with ``prefix``)."""
        for stage, seconds in timings.items():
            self.add(prefix + str(stage), seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"mean", "p50", "p95", "max", "last": seconds, "count": n}}`` in first-seen stage order
        (percentiles by linear interpolation, as ``numpy.percentile``)."""
        with self._lock:
            samples = {stage: list(q) for stage, q in self._samples.items() if q}
        out = {}
        for stage, values in samples.items():
            a = np.asarray(values, np.float64)
            out[stage] = {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                          "p95": float(np.percentile(a, 95)), "max": float(a.max()), "last": values[-1],
                          "count": float(a.size)}
        return out

    def summary_ms(self, digits: int = 3) -> dict[str, dict[str, float]]:
        """``{stage: {"mean", "p50", "p95", "max": milliseconds, "n": count}}`` (replay's ``latency_ms``)."""
        return {stage: {**{k: round(v[k] * 1e3, digits) for k in ("mean", "p50", "p95", "max")}, "n": int(v["count"])}
                for stage, v in self.summary().items()}

    def format(self, unit: float = 1e3, suffix: str = " ms") -> str:
        """``"stage mean/max ms, ..."`` of every stage."""
        return ", ".join(f"{stage} {v['mean'] * unit:.1f}/{v['max'] * unit:.1f}{suffix}"
                         for stage, v in self.summary().items())


@dataclass
class FrameInputs:
    """A validated RGB-D set waiting for its pose.

    Attributes:
        rgb: ``(H, W, 3)`` uint8. depth: ``(H, W)`` float32 metres (NaN = no reading).
        intrinsics: ``(fx, fy, cx, cy)`` pixels. stamp: the colour image's stamp, seconds.
        image_frame: the colour image's ``header.frame_id``. timings: seconds per stage so far (``convert``,
        ``wait``, ``tf``, ...). masks: ``(H, W)`` integer 2D instance masks of the frame, when a segmenter sent
        them (:mod:`.mask_cache`), else None.
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: tuple[float, float, float, float]
    stamp: float
    image_frame: str
    timings: dict[str, float] = field(default_factory=dict)
    masks: np.ndarray | None = None


class FrameSession:
    """The per-frame policy and book-keeping shared by the node and replay (see the module doc).

    Args:
        processor: ``process(Frame) -> FrameResult`` (and ``set_classes`` / ``class_names`` for the node).
        world_frame: output frame when the pose is known. camera_frame: TF frame of the images ("" = the image's).
        on_missing_tf: ``skip`` or ``identity``. Settable at run time, like ``world_frame`` / ``camera_frame``.
        latency_window: samples kept per stage (None: all, for a replay's summary).
        log: a logger with ``warning(str)`` (rclpy's or :mod:`logging`'s); None: silent.
        log_period: seconds between two log lines of one skip reason (0: every skip).
    """

    def __init__(self, processor, *, world_frame: str, camera_frame: str = "", on_missing_tf: str = "skip",
                 latency_window: int | None = 100, log=None, log_period: float = 5.0):
        self.processor = processor
        self.world_frame, self.camera_frame, self.on_missing_tf = world_frame, camera_frame, on_missing_tf
        if on_missing_tf not in MISSING_TF_POLICIES:
            raise ValueError(f"on_missing_tf must be one of {', '.join(MISSING_TF_POLICIES)}, got {on_missing_tf!r}")
        self.latency = LatencyStats(latency_window)
        self.processor_lock = threading.Lock()  # process() vs set_classes() between two frames
        self._log, self._log_period = log, float(log_period)
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._log_times: dict[str, float] = {}
        self.first_detail: dict[str, str] = {}
        self.map: SessionMap | None = None

    def enable_map(self, config, publish_period: float = 1.0) -> SessionMap:
        """Turn the online map on (:class:`~.session_map.SessionMap` with ``config``, a
        :class:`~bifusion_core.mapping.MapConfig`, and the processor's class names)."""
        self.map = SessionMap(config, list(getattr(self.processor, "class_names", None) or []), publish_period)
        return self.map

    def set_classes(self, names) -> int:
        """Change the label space between two frames (``processor.set_classes``, which may refuse with
        ``ValueError``); with the map on, the map is reset to the new list, as its class indices would mean other
        classes. Returns the number of map instances cleared (0 without a map)."""
        with self.processor_lock:
            self.processor.set_classes(list(names))
        self.count("class_changes")
        if self.map is None:
            return 0
        return self.map.reset(list(getattr(self.processor, "class_names", None) or names))

    # ------------------------------------------------------------------------------------------ counters
    def count(self, key: str, n: int = 1) -> int:
        with self._lock:
            self._counts[key] += n
            return self._counts[key]

    def counter(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    @property
    def skipped(self) -> dict[str, int]:
        """Skipped frames per reason (every reason of :data:`SKIP_REASONS`, 0 included)."""
        with self._lock:
            return {reason: self._counts[reason] for reason in SKIP_REASONS}

    def skip(self, reason: str, detail: str) -> None:
        """Count a skipped frame and log it (the first of each reason, then at most every ``log_period``)."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        n = self.count(reason)
        self.first_detail.setdefault(reason, detail)
        self.warn_throttled(reason, f"skipping frame ({reason}, {n} so far): {detail}")

    def warn_throttled(self, key: str, text: str) -> None:
        now = time.monotonic()
        last = self._log_times.get(key)
        if last is None or now - last >= self._log_period:
            self._log_times[key] = now
            if self._log is not None:
                self._log.warning(text)

    # ------------------------------------------------------------------------------------------ per frame
    def camera(self, image_frame: str) -> str:
        """The TF frame of a set's images."""
        return self.camera_frame or str(image_frame)

    def without_pose(self, inputs: FrameInputs, why: str) -> tuple[np.ndarray, str]:
        """The ``on_missing_tf`` policy for a set whose pose could not be found: ``(identity, camera frame)``
        (counted as ``identity_pose``), or :class:`FrameSkipped` ``missing_tf``."""
        camera = self.camera(inputs.image_frame)
        detail = f"no transform {self.world_frame!r} <- {camera!r} at {inputs.stamp:.3f} s: {why}"
        if self.on_missing_tf == "identity" and camera:
            self.count("identity_pose")
            self.warn_throttled("identity_pose", f"{detail}; using the identity pose in {camera!r}")
            return np.eye(4), camera
        raise FrameSkipped("missing_tf", detail)

    def process(self, inputs: FrameInputs, pose: np.ndarray, out_frame: str):
        """Run the processor on the set placed at ``pose`` (camera -> ``out_frame``); returns its result.
        Raises :class:`FrameSkipped` ``processor_error`` when the set breaks the :class:`Frame` contract or the
        processor fails, ``bad_output`` when its outputs are not finite."""
        t0 = time.perf_counter()
        try:
            frame = Frame(rgb=inputs.rgb, depth=inputs.depth, intrinsics=tuple(inputs.intrinsics), pose=pose,
                          stamp=inputs.stamp, frame_id=out_frame, masks=inputs.masks)
            with self.processor_lock:
                result = self.processor.process(frame)
        except NonFiniteOutput as exc:
            raise FrameSkipped("bad_output", str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the node or the replay
            raise FrameSkipped("processor_error", f"{type(exc).__name__}: {exc}") from exc
        inputs.timings["process"] = time.perf_counter() - t0
        return result

    def map_frame(self, inputs: FrameInputs, result, out_frame: str) -> MapFrame | None:
        """Merge a processed frame whose points are in ``out_frame`` into the map. None without a map; None
        for a frame outside the world frame (no pose: its points are in the camera frame; counted as
        ``map_without_pose``); None when the map refuses the frame (counted as ``map_errors`` and logged, the
        map unchanged)."""
        if self.map is None:
            return None
        if out_frame != self.world_frame:
            self.count("map_without_pose")
            return None
        t0 = time.perf_counter()
        try:
            frame = self.map.merge_result(result, inputs.stamp)
        except ValueError as exc:
            n = self.count("map_errors")
            self.warn_throttled("map_errors", f"frame at {inputs.stamp:.3f} s not merged into the map ({n} so far): "
                                              f"{exc}")
            return None
        inputs.timings["map"] = time.perf_counter() - t0
        return frame

    def done(self, inputs: FrameInputs, result) -> int:
        """Book a frame whose outputs went out: counts it and records its timings (``model/...`` from the
        result); returns its index among the processed frames (0, 1, ...)."""
        self.latency.update(inputs.timings)
        self.latency.update(getattr(result, "timings", None) or {}, prefix="model/")
        return self.count("processed") - 1
