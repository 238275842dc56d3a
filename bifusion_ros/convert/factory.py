"""Message factories: building ROS messages for rclpy *and* ``rosbags`` with one code path.

Building a message needs its *class*, and the classes differ between the two worlds. Every builder of
:mod:`bifusion_ros.convert` therefore takes a **message factory** ``msgs``: a callable (or a mapping) from a ROS
type name (``"sensor_msgs/msg/Image"``; ``"sensor_msgs/Image"`` works too) to a constructor that accepts keyword
arguments and fills every field it is not given with its default.

- the node passes :func:`rclpy_factory()` (imports ``<package>.msg`` lazily, rclpy classes already default
  every field);
- replay, the synthetic bag writer and tests pass :func:`rosbags_factory(store) <rosbags_factory>` (``rosbags``
  dataclasses have no defaults, the factory supplies them).

``uint8[]`` payloads are written as a ``uint8`` numpy array for ``rosbags`` constructors (recognised by their
``__msgtype__`` attribute) and as ``array.array('B')`` otherwise (what rclpy stores; it is copied without a
Python-level loop); ``float64[]`` / ``float64[N]`` fields as a ``float64`` numpy array for ``rosbags`` and a list
of Python floats otherwise (rclpy accepts it for fixed-size arrays and sequences alike). Scalars are passed as
plain Python ``int``/``float`` (rclpy rejects numpy scalars).
"""
from __future__ import annotations

import importlib
from array import array as _pyarray
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from bifusion_ros.sync import ns_to_sec_nanosec, stamp_to_ns

__all__ = ["MessageFactory", "rosbags_factory", "rclpy_factory", "make_time", "make_header"]

MessageFactory = Callable[[str], Callable[..., Any]] | Mapping[str, Callable[..., Any]]


def _full_type_name(name: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    parts = name.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS message type name: {name!r} (expected 'package/msg/Type')")
    return "/".join(parts)


_NUMPY_BASE = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


class _RosbagsConstructor:
    """Calls a ``rosbags`` message dataclass with defaults for every field not given."""

    def __init__(self, store, typename: str, cache: dict | None = None):
        self._store = store
        self._cache = {} if cache is None else cache
        self.__msgtype__ = typename
        self.cls = store.types[typename]
        self._consts = {name: value for name, _, value in store.fielddefs[typename][0]}

    def __getattr__(self, name):  # constants such as Marker.CUBE or PointField.FLOAT32
        consts = self.__dict__.get("_consts", {})
        if name in consts:
            return consts[name]
        raise AttributeError(name)

    def _default(self, desc):
        kind, spec = desc
        kind = int(kind)
        if kind == 1:  # BASE
            base = spec[0]
            if base in ("string", "wstring"):
                return ""
            if base == "bool":
                return False
            if base.startswith("float"):
                return 0.0
            return 0
        if kind == 2:  # NAME
            if spec not in self._cache:
                self._cache[spec] = _RosbagsConstructor(self._store, spec, self._cache)
            return self._cache[spec]()
        sub, length = spec
        if int(sub[0]) == 1 and sub[1][0] in _NUMPY_BASE:
            n = length if kind == 3 else 0
            return np.zeros(n, dtype=_NUMPY_BASE[sub[1][0]])
        if kind == 3:  # fixed-size array of strings or messages
            return [self._default(sub) for _ in range(length)]
        return []  # sequence

    def __call__(self, **fields):
        names = [name for name, _ in self._store.fielddefs[self.__msgtype__][1]]
        unknown = set(fields) - set(names)
        if unknown:
            raise TypeError(f"{self.__msgtype__} has no field(s) {sorted(unknown)}; fields: {names}")
        for name, desc in self._store.fielddefs[self.__msgtype__][1]:
            if name not in fields:
                fields[name] = self._default(desc)
        return self.cls(**fields)


def rosbags_factory(store=None) -> Callable[[str], Callable[..., Any]]:
    """Message factory over a ``rosbags`` typestore (default: :func:`bifusion_ros.interfaces.typestore`).

    ``factory("sensor_msgs/msg/Image")(height=2, ...)`` builds a ``rosbags`` message, every omitted field
    set to its default (0, ``""``, ``False``, empty / zero arrays, default sub-messages). Class constants
    are available as attributes of the constructor (``factory("visualization_msgs/msg/Marker").CUBE``).
    """
    if store is None:
        from bifusion_ros.interfaces import typestore

        store = typestore()
    cache: dict[str, _RosbagsConstructor] = {}

    def factory(name: str) -> _RosbagsConstructor:
        full = _full_type_name(name)
        if full not in cache:
            if full not in store.types:
                raise KeyError(f"message type {full!r} is not in the rosbags typestore")
            cache[full] = _RosbagsConstructor(store, full, cache)
        return cache[full]

    return factory


def rclpy_factory() -> Callable[[str], Any]:
    """Message factory returning the rclpy (rosidl-generated) classes, imported on first use."""

    def factory(name: str):
        pkg, _, typ = _full_type_name(name).split("/")
        try:
            return getattr(importlib.import_module(f"{pkg}.msg"), typ)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"ROS message class {pkg}/msg/{typ} not importable (is ROS 2 sourced?): {exc}") from exc

    return factory


def _ctor(msgs: MessageFactory, name: str):
    if isinstance(msgs, Mapping):
        full = _full_type_name(name)
        return msgs[full] if full in msgs else msgs[name]
    return msgs(name)


def _uint8_payload(ctor, data: bytes):
    """A ``uint8[]`` field value in the representation the constructor's message class expects."""
    if hasattr(ctor, "__msgtype__"):  # rosbags
        return np.frombuffer(bytes(data), dtype=np.uint8).copy()
    return _pyarray("B", bytes(data))


def _float64_payload(ctor, values):
    """A ``float64[]`` / ``float64[N]`` field value in the representation the constructor's class expects."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if hasattr(ctor, "__msgtype__"):  # rosbags
        return a.copy()
    return [float(v) for v in a]


def _as_uint8(data) -> np.ndarray:
    """Any ``uint8[]`` field value (bytes, array.array, numpy, list) -> 1-D ``uint8`` numpy view or copy."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.astype(np.uint8)
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, _pyarray)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(list(data), dtype=np.uint8)


def make_time(msgs: MessageFactory, stamp_ns: int):
    """A ``builtin_interfaces/Time`` of ``stamp_ns`` integer nanoseconds (exact; ``0 <= nanosec < 1e9``)."""
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    return _ctor(msgs, "builtin_interfaces/msg/Time")(sec=int(sec), nanosec=int(nanosec))


def make_header(msgs: MessageFactory, frame_id: str, stamp=0.0):
    """A ``std_msgs/Header`` in ``frame_id``; ``stamp`` as accepted by :func:`bifusion_ros.sync.stamp_to_ns`
    (a number of seconds, a ``builtin_interfaces/Time`` or an ``rclpy.time.Time``; for integer nanoseconds pass
    :func:`make_time`'s message)."""
    return _ctor(msgs, "std_msgs/msg/Header")(stamp=make_time(msgs, stamp_to_ns(stamp)), frame_id=str(frame_id))
