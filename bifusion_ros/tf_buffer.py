"""A ROS-free TF buffer with tf2's lookup semantics (``tf2::BufferCore`` / ``tf2_ros.Buffer``).

The node uses ``tf2_ros``; rosbag replay and the tests use :class:`TransformBuffer`, fed with the
``/tf`` and ``/tf_static`` messages of a bag (rclpy or ``rosbags`` ``TransformStamped``, or anything with
``header.frame_id``, ``header.stamp``, ``child_frame_id`` and ``transform.translation/rotation``).

Semantics mirrored from tf2:

- A ``TransformStamped`` with parent ``header.frame_id`` and child ``child_frame_id`` is an edge of the
  frame tree; its matrix maps child coordinates to parent coordinates. ``lookup(target, source, t)``
  returns ``T_target_source`` (``p_target = T @ p_source``), chaining child -> parent edges up to the
  common ancestor of the two frames (edges above it are never evaluated).
- Each child frame keeps a time-sorted history of its dynamic transforms. Data older than
  ``newest - cache_time`` (default 10 s, like tf2) is pruned, and inserting data that old is rejected;
  inserting a second transform with a stamp already in the history is ignored (tf2 ``TF_REPEATED_DATA``).
  ``add`` returns False in both cases; :meth:`~TransformBuffer.add_status` says which (``old_data``,
  ``repeated_data`` for a repeat equal to the stored value, ``repeated_conflict`` for one that disagrees with it).
  A sample whose stamp was repeated with a different value is marked: with ``strict_repeats`` a lookup that
  uses it (at that stamp, or interpolating from it) raises :class:`RepeatedDataError` at once instead of
  silently returning the first value as tf2 does (the pose at that time is ambiguous).
- A transform is sampled by linear interpolation of the translation and slerp (shortest path) of the
  rotation between the two samples bracketing the requested time; a time equal to a sample returns it.
  A time after the newest or before the oldest sample is an extrapolation error ("into the future" /
  "into the past"); with a single sample only its exact time is valid. Each sample also records its parent;
  where the bracketing samples disagree the earlier one is used without interpolation (tf2 does the same).
- Static transforms (``/tf_static``) keep only the latest value per child and are valid at every time.
- Time 0 means "the latest time at which the whole chain is available": the minimum over the dynamic edges
  of the chain of their newest stamps (static edges do not count; 0 stays 0 if the chain is all static),
  tf2's ``getLatestCommonTime``.
- Frames are known once they appear as a parent or child (a leading ``/`` is stripped, in ``add`` as tf2 does
  and, more leniently than tf2, in lookups). ``lookup(f, f, t)`` is the identity even for an
  unknown frame (as tf2).
- ``timeout`` (seconds) waits, like ``tf2_ros.Buffer.lookup_transform``, for another thread to ``add`` the
  missing data, then raises the last error.

Quaternions are normalised on ``add``, as tf2 does in effect: its ``setTransform`` builds a ``tf2::Transform``,
whose rotation matrix normalises the quaternion before the TF_DENORMALIZED_QUATERNION check could see it
(checked against real Jazzy tf2 in ``test_real_ros.py``). Deliberate differences: invalid input raises
``ValueError`` instead of being logged and dropped, a child added as static
after being dynamic (or the reverse) switches kind (tf2 keeps the kind first seen), and a requested
float-seconds time within 1 µs of a sample snaps to it (float seconds of a wall-clock stamp carry ~0.2 µs of
rounding; pass the Time message for exact stamps).

Errors are :class:`TransformError` (a ``LookupError``) subclasses saying which frames, which time and why:
:class:`FrameNotFoundError` (unknown frame, tf2 ``LookupException``), :class:`ConnectivityError` (frames in
different trees), :class:`ExtrapolationError` (time outside the buffered data), :class:`RepeatedDataError`
(``strict_repeats`` only: the lookup depends on a stamp received twice with different values).
"""
from __future__ import annotations

import math
import threading
import time as _time
from dataclasses import dataclass

import numpy as np

from bifusion_core.geometry import invert_rigid, rigid_matrix
from bifusion_ros.convert import transform_to_tq
from bifusion_ros.sync import stamp_to_ns

__all__ = [
    "TransformBuffer",
    "TransformError",
    "FrameNotFoundError",
    "ConnectivityError",
    "ExtrapolationError",
    "RepeatedDataError",
    "ACCEPTED",
    "OLD_DATA",
    "REPEATED_DATA",
    "REPEATED_CONFLICT",
    "slerp",
    "interpolate",
]

_NS = 1_000_000_000
_SNAP_NS = 1_000
_MAX_DEPTH = 1000
_SAME_T = 1e-9        # m: a repeated translation this close to the stored one is the same data
_SAME_ANGLE = 1e-9    # rad: likewise for the rotation

ACCEPTED = "accepted"
OLD_DATA = "old_data"                # older than the cache window (tf2 TF_OLD_DATA)
REPEATED_DATA = "repeated_data"      # a stamp already in the history, same value (tf2 TF_REPEATED_DATA)
REPEATED_CONFLICT = "repeated_conflict"  # a stamp already in the history, another value (TF_REPEATED_DATA too)


class TransformError(LookupError):
    """A transform could not be looked up; ``target_frame``, ``source_frame`` and ``stamp`` (s) say which."""

    def __init__(self, message: str, target_frame: str = "", source_frame: str = "", stamp: float | None = None):
        super().__init__(message)
        self.target_frame = target_frame
        self.source_frame = source_frame
        self.stamp = stamp


class FrameNotFoundError(TransformError):
    """A frame that no transform in the buffer mentions (tf2 ``LookupException``)."""


class ConnectivityError(TransformError):
    """The two frames are not part of the same tree (tf2 ``ConnectivityException``)."""


class ExtrapolationError(TransformError):
    """The requested time is outside the buffered data of an edge (tf2 ``ExtrapolationException``)."""


class RepeatedDataError(TransformError):
    """(``strict_repeats``) The lookup depends on a stamp of an edge that was received twice with different
    values, so the transform at that time is ambiguous (tf2 would use the first one)."""


def _fmt(ns: int) -> str:
    return f"{ns / _NS:.9f}"


def slerp(q0, q1, r: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions ``(4,)`` xyzw at ratio ``r`` in [0, 1], shortest path
    (``q1`` is negated when ``q0 . q1 < 0``, as tf2); nearly equal quaternions are lerped and normalised."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 1.0 - 1e-12:
        q = (1 - r) * q0 + r * q1
    else:
        theta = math.acos(min(dot, 1.0))
        s = math.sin(theta)
        q = (math.sin((1 - r) * theta) / s) * q0 + (math.sin(r * theta) / s) * q1
    return q / np.linalg.norm(q)


def interpolate(t0, q0, t1, q1, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Translation ``(3,)`` lerp and rotation ``(4,)`` slerp at ratio ``r`` between two poses."""
    t0 = np.asarray(t0, dtype=np.float64)
    t1 = np.asarray(t1, dtype=np.float64)
    return t0 + r * (t1 - t0), slerp(q0, q1, r)


@dataclass
class _Sample:
    stamp: int  # ns
    parent: str
    t: np.ndarray  # (3,)
    q: np.ndarray  # (4,) xyzw, unit
    conflict: str = ""  # why this value is ambiguous (its stamp was repeated with another value); "" = it is not


def _rotation_angle(q0: np.ndarray, q1: np.ndarray) -> float:
    """Angle (rad) of the rotation between two unit quaternions."""
    return 2.0 * math.acos(min(1.0, abs(float(q0 @ q1))))


def _difference(a: _Sample, b: _Sample) -> str:
    """"" when ``b`` repeats ``a``'s value; otherwise how they differ."""
    if a.parent != b.parent:
        return f"parent {a.parent!r} then {b.parent!r}"
    dt, da = float(np.linalg.norm(a.t - b.t)), _rotation_angle(a.q, b.q)
    if dt <= _SAME_T and da <= _SAME_ANGLE:
        return ""
    return f"{dt:.3f} m and {math.degrees(da):.2f} deg apart"


class _EdgeCache:
    """History of one child frame's transform to its parent (tf2 ``TimeCache`` / ``StaticCache``)."""

    def __init__(self, static: bool, cache_ns: int):
        self.static = static
        self.cache_ns = cache_ns
        self.samples: list[_Sample] = []  # oldest first

    def insert(self, sample: _Sample) -> tuple[str, str]:
        """``(status, detail)``: :data:`ACCEPTED`, :data:`OLD_DATA`, :data:`REPEATED_DATA` or
        :data:`REPEATED_CONFLICT` (then the stored sample is marked as ambiguous; ``detail`` says how they
        differ)."""
        if self.static:
            self.samples = [sample]
            return ACCEPTED, ""
        if self.samples and self.samples[-1].stamp > sample.stamp + self.cache_ns:
            return OLD_DATA, ""  # older than the cache window (tf2 TF_OLD_DATA)
        i = len(self.samples)
        while i > 0 and self.samples[i - 1].stamp > sample.stamp:
            i -= 1
        if i > 0 and self.samples[i - 1].stamp == sample.stamp:  # tf2 TF_REPEATED_DATA: the first one stays
            first = self.samples[i - 1]
            diff = _difference(first, sample)
            if not diff:
                return REPEATED_DATA, ""
            if not first.conflict:
                first.conflict = (f"the sample at {_fmt(first.stamp)} was received twice with different values "
                                  f"({diff})")
            return REPEATED_CONFLICT, diff
        self.samples.insert(i, sample)
        latest = self.samples[-1].stamp
        while self.samples and self.samples[0].stamp + self.cache_ns < latest:
            self.samples.pop(0)
        return ACCEPTED, ""

    def latest(self) -> tuple[int, str | None]:
        """(newest stamp or 0 for static / empty, parent of the newest sample or None when empty)."""
        if not self.samples:
            return 0, None
        return (0 if self.static else self.samples[-1].stamp), self.samples[-1].parent

    def sample(self, ns: int) -> tuple[_Sample | None, str]:
        """The (interpolated) sample at ``ns`` (0 = newest), or ``(None, reason)``."""
        s = self.samples
        if not s:
            return None, "the cache of this frame is empty"
        if self.static or ns == 0:
            return s[-1], ""
        if len(s) == 1:
            if abs(s[0].stamp - ns) <= _SNAP_NS:
                return s[0], ""
            return None, (f"Lookup would require extrapolation at time {_fmt(ns)}, but only time "
                          f"{_fmt(s[0].stamp)} is in the buffer")
        if abs(ns - s[-1].stamp) <= _SNAP_NS:
            return s[-1], ""
        if abs(ns - s[0].stamp) <= _SNAP_NS:
            return s[0], ""
        if ns > s[-1].stamp:
            return None, (f"Lookup would require extrapolation into the future. Requested time {_fmt(ns)} "
                          f"but the latest data is at time {_fmt(s[-1].stamp)}")
        if ns < s[0].stamp:
            return None, (f"Lookup would require extrapolation into the past. Requested time {_fmt(ns)} "
                          f"but the earliest data is at time {_fmt(s[0].stamp)}")
        lo, hi = 0, len(s) - 1  # s[lo].stamp < ns < s[hi].stamp
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if s[mid].stamp <= ns:
                lo = mid
            else:
                hi = mid
        a, b = s[lo], s[hi]
        if a.stamp == ns:
            return a, ""
        if a.parent != b.parent:
            return a, ""
        r = (ns - a.stamp) / (b.stamp - a.stamp)
        t, q = interpolate(a.t, a.q, b.t, b.q, r)
        conflict = "; ".join(x.conflict for x in (a, b) if x.conflict)
        return _Sample(ns, a.parent, t, q, conflict), ""


class TransformBuffer:
    """A tf2-like transform buffer (see the module doc).

    Args:
        cache_time: seconds of dynamic history kept per edge (tf2 default 10 s).
        strict_repeats: a lookup that depends on a sample whose stamp was repeated with a different value
            raises :class:`RepeatedDataError` (default False: the first value is used, as tf2 does).
    """

    def __init__(self, cache_time: float = 10.0, strict_repeats: bool = False):
        if not (math.isfinite(cache_time) and cache_time > 0):
            raise ValueError(f"cache_time must be a positive number of seconds, got {cache_time}")
        self.strict_repeats = bool(strict_repeats)
        self.cache_time = float(cache_time)
        self._cache_ns = int(round(cache_time * _NS))
        self._edges: dict[str, _EdgeCache] = {}
        self._frames: set[str] = set()
        self._cond = threading.Condition(threading.RLock())

    # ---------------------------------------------------------------------------------------------- input
    def add(self, transform, static: bool = False) -> bool:
        """Add one ``TransformStamped``-like transform (parent ``header.frame_id``, child ``child_frame_id``).

        Returns False when tf2 would ignore it (older than the cache window, or a repeated stamp; see
        :meth:`add_status` for which).

        Raises:
            ValueError: empty frame ids, a frame that is its own parent, non-finite values or a zero
                quaternion.
        """
        return self.add_status(transform, static)[0] == ACCEPTED

    def add_status(self, transform, static: bool = False) -> tuple[str, str]:
        """:meth:`add`, returning ``(status, detail)``: :data:`ACCEPTED`; :data:`OLD_DATA` (ignored: older than
        the cache window); :data:`REPEATED_DATA` (ignored: its stamp is already in the history with the same
        value, within 1 nm / 1 nrad); :data:`REPEATED_CONFLICT` (ignored, the stored value stays, but marked as
        ambiguous: see ``strict_repeats``; ``detail`` says how far apart the two values are). Static
        transforms are always accepted (the latest replaces the previous one).

        Raises:
            ValueError: as :meth:`add`.
        """
        parent = str(transform.header.frame_id).lstrip("/")
        child = str(transform.child_frame_id).lstrip("/")
        if not parent or not child:
            raise ValueError(f"transform with empty frame id (parent {parent!r}, child {child!r})")
        if parent == child:
            raise ValueError(f"transform from frame {child!r} to itself")
        stamp = stamp_to_ns(transform.header.stamp)
        try:
            t, q = transform_to_tq(transform.transform)
        except ValueError as exc:
            raise ValueError(f"transform {parent!r} -> {child!r} at {_fmt(stamp)}: {exc}") from None
        with self._cond:
            edge = self._edges.get(child)
            if edge is None or edge.static != bool(static):
                edge = self._edges[child] = _EdgeCache(bool(static), self._cache_ns)
            status, detail = edge.insert(_Sample(stamp, parent, t, q))
            if status == ACCEPTED:
                self._frames.update((parent, child))
                self._cond.notify_all()
            if detail:
                detail = f"transform {parent!r} -> {child!r} at {_fmt(stamp)}: {detail}"
            return status, detail

    def add_message(self, tf_message, static: bool = False) -> int:
        """Add every transform of a ``tf2_msgs/TFMessage``; returns how many were accepted."""
        return sum(bool(self.add(t, static)) for t in tf_message.transforms)

    def clear(self) -> None:
        """Drop all dynamic data (static transforms stay, as tf2 ``clear``)."""
        with self._cond:
            for edge in self._edges.values():
                if not edge.static:
                    edge.samples.clear()

    # --------------------------------------------------------------------------------------------- queries
    def frames(self) -> list[str]:
        """All known frame ids, sorted."""
        with self._cond:
            return sorted(self._frames)

    def has_frame(self, frame: str) -> bool:
        with self._cond:
            return frame.lstrip("/") in self._frames

    def latest_common_time(self, target_frame: str, source_frame: str) -> float:
        """Seconds of the newest time at which the chain between the frames is available (0.0 if all static).

        Raises:
            FrameNotFoundError, ConnectivityError: see :meth:`lookup`.
        """
        target, source = target_frame.lstrip("/"), source_frame.lstrip("/")
        with self._cond:
            if target == source:
                edge = self._edges.get(source)
                return (edge.latest()[0] if edge else 0) / _NS
            self._validate(target, source, 0)
            return self._latest_common_ns(target, source) / _NS

    def can_transform(self, target_frame: str, source_frame: str, stamp=0.0, timeout: float = 0.0) -> bool:
        """Whether :meth:`lookup` would succeed (waiting up to ``timeout`` seconds)."""
        try:
            self.lookup(target_frame, source_frame, stamp, timeout)
            return True
        except TransformError:
            return False

    def lookup(self, target_frame: str, source_frame: str, stamp=0.0, timeout: float = 0.0) -> np.ndarray:
        """``(4, 4)`` float64 ``T_target_source`` at ``stamp`` (``p_target = T @ p_source``).

        Args:
            target_frame: frame the result expresses points in.
            source_frame: frame the points are given in.
            stamp: seconds, a ``builtin_interfaces/Time`` / rclpy Time, or 0 for the latest common time.
            timeout: seconds to wait for missing data added by another thread (not for a
                :class:`RepeatedDataError`, which more data cannot resolve).

        Raises:
            FrameNotFoundError: a frame no transform mentions.
            ConnectivityError: the frames are in different trees.
            ExtrapolationError: ``stamp`` outside the buffered data of an edge on the chain.
            RepeatedDataError: (``strict_repeats``) a sample the result depends on is ambiguous.
            TransformError: an empty frame id, or a loop in the tree.
        """
        return self.lookup_with_time(target_frame, source_frame, stamp, timeout)[0]

    def lookup_with_time(self, target_frame: str, source_frame: str, stamp=0.0,
                         timeout: float = 0.0) -> tuple[np.ndarray, float]:
        """:meth:`lookup` plus the time (seconds) the transform is valid at (the resolved time for stamp 0)."""
        target, source = str(target_frame).lstrip("/"), str(source_frame).lstrip("/")
        ns = stamp_to_ns(stamp)
        deadline = _time.monotonic() + max(0.0, float(timeout))
        with self._cond:
            while True:
                try:
                    T, used = self._lookup(target, source, ns)
                    return T, used / _NS
                except RepeatedDataError:
                    raise
                except TransformError:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        raise
                    self._cond.wait(remaining)

    # -------------------------------------------------------------------------------------------- internals
    def _validate(self, target: str, source: str, ns: int) -> None:
        for arg, frame in (("target_frame", target), ("source_frame", source)):
            if not frame:
                raise TransformError(f"invalid argument: {arg} is empty", target, source, ns / _NS)
            if frame not in self._frames:
                known = ", ".join(sorted(self._frames)) or "none"
                raise FrameNotFoundError(
                    f'"{frame}" passed to lookup as {arg} does not exist (known frames: {known})',
                    target, source, ns / _NS,
                )

    def _chain_up(self, start: str, target: str, source: str):
        """Yield ``(frame, newest common stamp of the edges walked so far)`` from ``start`` up to the root."""
        frame, common = start, math.inf
        for _ in range(_MAX_DEPTH):
            yield frame, common
            edge = self._edges.get(frame)
            if edge is None:
                return
            latest, parent = edge.latest()
            if parent is None:
                return
            if latest:
                common = min(common, latest)
            frame = parent
        raise TransformError(f"the tf tree contains a loop above {start!r}", target, source, 0.0)

    def _latest_common_ns(self, target: str, source: str) -> int:
        """tf2 ``getLatestCommonTime`` (uses each edge's newest parent)."""
        src_min: dict[str, float] = {}
        for frame, common in self._chain_up(source, target, source):
            src_min[frame] = common
            if frame == target:
                return 0 if common == math.inf else int(common)
        for frame, common in self._chain_up(target, target, source):
            if frame in src_min:
                common = min(common, src_min[frame])
                return 0 if common == math.inf else int(common)
        raise ConnectivityError(self._connectivity_message(target, source), target, source, 0.0)

    @staticmethod
    def _connectivity_message(target: str, source: str) -> str:
        return (f"Could not find a connection between '{target}' and '{source}' because they are not part of "
                "the same tree (the tf data has two or more unconnected trees)")

    def _check_conflict(self, sample: _Sample, frame: str, ns: int, where: str, target: str, source: str) -> None:
        if self.strict_repeats and sample.conflict:
            raise RepeatedDataError(f"ambiguous transform of edge {frame!r} -> {sample.parent!r} at time {_fmt(ns)}: "
                                    f"{sample.conflict} (tf2 TF_REPEATED_DATA keeps the first){where}",
                                    target, source, ns / _NS)

    def _lookup(self, target: str, source: str, ns: int) -> tuple[np.ndarray, int]:
        if target == source:
            if ns == 0:
                edge = self._edges.get(source)
                ns = edge.latest()[0] if edge else 0
            return np.eye(4), ns
        self._validate(target, source, ns)
        if ns == 0:
            ns = self._latest_common_ns(target, source)
        where = f", when looking up transform from frame [{source}] to frame [{target}]"

        # walk from the source up; T_frame_source for each frame reached
        chain: dict[str, np.ndarray] = {}
        frame, acc = source, np.eye(4)
        source_error = ""
        for _ in range(_MAX_DEPTH):
            chain[frame] = acc
            if frame == target:
                return acc, ns
            edge = self._edges.get(frame)
            if edge is None:
                break  # a root
            sample, why = edge.sample(ns)
            if sample is None:
                source_error = f"{why} (edge {frame!r} -> its parent)"
                break
            self._check_conflict(sample, frame, ns, where, target, source)
            acc = rigid_matrix(sample.t, sample.q) @ acc
            frame = sample.parent
            if frame in chain:
                raise TransformError(f"the tf tree contains a loop through {frame!r}{where}", target, source, ns / _NS)
        else:
            raise TransformError(f"the tf tree is deeper than {_MAX_DEPTH} frames (a loop?){where}",
                                 target, source, ns / _NS)

        # walk from the target up until the source chain is met; T_frame_target
        frame, acc = target, np.eye(4)
        seen = set()
        for _ in range(_MAX_DEPTH):
            if frame in chain:
                return invert_rigid(acc) @ chain[frame], ns
            seen.add(frame)
            edge = self._edges.get(frame)
            if edge is None:
                break
            sample, why = edge.sample(ns)
            if sample is None:
                raise ExtrapolationError(f"{why} (edge {frame!r} -> its parent){where}", target, source, ns / _NS)
            self._check_conflict(sample, frame, ns, where, target, source)
            acc = rigid_matrix(sample.t, sample.q) @ acc
            frame = sample.parent
            if frame in seen:
                raise TransformError(f"the tf tree contains a loop through {frame!r}{where}", target, source, ns / _NS)
        if source_error:
            raise ExtrapolationError(source_error + where, target, source, ns / _NS)
        raise ConnectivityError(self._connectivity_message(target, source), target, source, ns / _NS)
