"""ROS-free approximate time synchronisation, with exactly the pairing rule of ROS 2 ``message_filters``.

:class:`ApproximateTimeSynchronizer` mirrors the *Python* ``message_filters.ApproximateTimeSynchronizer``
of ROS 2 (``ros2/message_filters``, ``src/message_filters/__init__.py``, method ``add``; the same code in
Humble through Rolling), not the C++ ``ApproximateTime`` policy, so that replaying a bag offline pairs
colour, depth and camera info exactly as the live node (which uses the Python class) does:

1. the message is stored in its input's queue under its stamp in integer nanoseconds (a second message
   with the same stamp replaces the first but keeps its queue position); while the queue holds more than
   ``queue_size`` entries the one with the smallest stamp is dropped (possibly the message just added);
2. for every *other* input, the candidates are its queued stamps within ``slop`` of the new stamp
   (``|s - t| <= slop``), sorted by that distance (ties keep queue insertion order); an input with no
   candidate ends the call (nothing is emitted);
3. the candidate combinations are tried in ``itertools.product`` order (first input varying slowest), the
   new stamp inserted at its own index; the first combination whose spread is *strictly* below
   ``slop`` (``max - min < slop``) and whose stamps are all still queued is emitted (callbacks get the
   messages in input order) and its messages are removed from the queues; other queued messages stay
   (older ones are only dropped by the ``queue_size`` bound). At most one set is emitted per ``add``.

``slop`` seconds are converted to nanoseconds by truncation, as ``rclpy.duration.Duration(seconds=slop)``.
Messages without a ``header.stamp`` and no explicit stamp are ignored (with a warning) unless
``allow_headerless`` is set, in which case they get ``clock()`` as their stamp (``allow_headerless`` False
is the message_filters default and what the node uses).

Differences that do not change the pairing: inputs are fed by index through :meth:`add` instead of
subscriber objects, the stamp may be passed explicitly, callbacks run after the internal lock is released
(so a callback may call :meth:`add`), and :meth:`add` also returns the emitted tuple.
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from numbers import Real
from typing import Any, Callable

__all__ = ["ApproximateTimeSynchronizer", "stamp_to_ns", "stamp_to_sec", "ns_to_sec_nanosec"]

_log = logging.getLogger(__name__)
_NS = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """A stamp -> integer nanoseconds.

    Accepts a ``builtin_interfaces/Time`` message (rclpy or rosbags: ``sec`` + ``nanosec``), an
    ``rclpy.time.Time`` (``nanoseconds``), a message with a ``header.stamp`` or a ``stamp``, or a plain
    number of **seconds** (float or int; rounded to the nearest nanosecond, so a float of a wall-clock stamp
    is exact only to ~0.2 µs: pass the Time message where exactness matters).

    Raises:
        TypeError: an object that is none of these.
        ValueError: a non-finite number.
    """
    if isinstance(stamp, Real) and not isinstance(stamp, bool):
        value = float(stamp)
        if not math.isfinite(value):
            raise ValueError(f"stamp must be finite, got {stamp}")
        if isinstance(stamp, int):
            return int(stamp) * _NS
        return int(round(value * _NS))
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * _NS + int(stamp.nanosec)
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    header = getattr(stamp, "header", None)
    if header is not None and hasattr(header, "stamp"):
        return stamp_to_ns(header.stamp)
    if hasattr(stamp, "stamp"):
        return stamp_to_ns(stamp.stamp)
    raise TypeError(f"cannot read a time stamp from {type(stamp).__name__}")


def stamp_to_sec(stamp) -> float:
    """A stamp (see :func:`stamp_to_ns`) -> float seconds."""
    ns = stamp_to_ns(stamp)
    return ns // _NS + (ns % _NS) / _NS


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)``, ``0 <= nanosec < 1e9`` (``builtin_interfaces/Time`` fields)."""
    ns = int(ns)
    return ns // _NS, ns % _NS


class ApproximateTimeSynchronizer:
    """Pairs messages of ``n_inputs`` streams whose stamps lie within ``slop`` seconds (see the module doc).

    Args:
        n_inputs: number of input streams (>= 1); messages are added with their input index.
        queue_size: per-input bound on queued messages (>= 1).
        slop: maximum stamp spread of an emitted set, seconds (>= 0).
        allow_headerless: accept messages without ``header.stamp`` (stamped with ``clock()``).
        clock: seconds source for headerless messages (default ``time.time``).

    Example::

        sync = ApproximateTimeSynchronizer(3, queue_size=10, slop=0.05)
        sync.register_callback(lambda rgb, depth, info: ...)
        sync.add(0, rgb_msg)                  # stamp read from rgb_msg.header.stamp
        sync.add(1, depth_msg, 12.345)        # or given explicitly (seconds or a Time message)
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float, allow_headerless: bool = False,
                 clock: Callable[[], float] | None = None):
        if int(n_inputs) < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not (math.isfinite(float(slop)) and float(slop) >= 0):
            raise ValueError(f"slop must be a finite number of seconds >= 0, got {slop}")
        self.n_inputs = int(n_inputs)
        self.queue_size = int(queue_size)
        self.slop = float(slop)
        self.slop_ns = int(float(slop) * _NS)  # rclpy Duration(seconds=...) truncates
        self.allow_headerless = bool(allow_headerless)
        self._clock = clock or time.time
        self.queues: list[dict[int, Any]] = [{} for _ in range(self.n_inputs)]
        self._callbacks: dict[int, tuple[Callable, tuple]] = {}
        self._lock = threading.Lock()

    def register_callback(self, fn: Callable, *args) -> int:
        """Call ``fn(msg_0, ..., msg_{n-1}, *args)`` for every synchronised set; returns a connection id."""
        conn = len(self._callbacks)
        self._callbacks[conn] = (fn, args)
        return conn

    registerCallback = register_callback  # message_filters spelling

    def add(self, index: int, msg, stamp=None) -> tuple | None:
        """Add ``msg`` to input ``index``; returns the emitted tuple of messages (in input order) or None.

        ``stamp``: seconds, a Time message or an rclpy Time (see :func:`stamp_to_ns`); default
        ``msg.header.stamp``.
        """
        if not 0 <= int(index) < self.n_inputs:
            raise IndexError(f"input index {index} out of range for {self.n_inputs} inputs")
        index = int(index)
        if stamp is None:
            header = getattr(msg, "header", None)
            if header is None or not hasattr(header, "stamp"):
                if not self.allow_headerless:
                    _log.warning("message without header.stamp on input %d ignored (allow_headerless is False)", index)
                    return None
                t = stamp_to_ns(float(self._clock()))
            else:
                t = stamp_to_ns(header.stamp)
        else:
            t = stamp_to_ns(stamp)

        with self._lock:
            emitted = self._add_locked(index, msg, t)
        if emitted is not None:
            for fn, args in list(self._callbacks.values()):
                fn(*(emitted + args))
        return emitted

    def _add_locked(self, index: int, msg, t: int) -> tuple | None:
        mine = self.queues[index]
        mine[t] = msg
        while len(mine) > self.queue_size:
            del mine[min(mine)]
        candidates: list[list[int]] = []
        for j, queue in enumerate(self.queues):
            if j == index:
                continue
            near = [(s, abs(s - t)) for s in queue if abs(s - t) <= self.slop_ns]
            if not near:
                return None
            near.sort(key=lambda pair: pair[1])  # stable: ties keep insertion order
            candidates.append([s for s, _ in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, t)
            if max(stamps) - min(stamps) < self.slop_ns and all(s in q for q, s in zip(self.queues, stamps)):
                msgs = tuple(q[s] for q, s in zip(self.queues, stamps))
                for q, s in zip(self.queues, stamps):
                    del q[s]
                return msgs
        return None

    def queued_stamps(self, index: int) -> list[float]:
        """Stamps (seconds, queue order) currently waiting on input ``index``."""
        with self._lock:
            return [s / _NS for s in self.queues[index]]

    def clear(self) -> None:
        """Drop every queued message."""
        with self._lock:
            for q in self.queues:
                q.clear()
