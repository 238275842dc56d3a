"""A small, honest test double of the ROS 2 Python API the node uses, for machines without ROS.

:func:`install` puts modules into ``sys.modules`` **only when ``import rclpy`` fails** (a sourced ROS 2
install is always preferred). What the double provides, and how it behaves:

- ``rclpy``: ``init`` / ``ok`` / ``shutdown`` / ``try_shutdown`` / ``spin``; ``rclpy.node.Node`` records
  declared parameters (value, type, descriptor), subscriptions (message type, resolved topic, callback, QoS),
  publishers (and what they publish), timers and log lines. Parameters follow rclpy's rules: the type is
  inferred from the default (an empty list is a BYTE_ARRAY, as in rclpy), overrides replace the default, a
  statically typed parameter keeps its type, ``FloatingPointRange`` / ``IntegerRange`` and ``read_only`` are
  enforced, ``set_parameters`` runs the on-set callbacks before applying the values. Topic names are resolved
  (``~/x`` -> ``/<ns>/<node>/x``); ``publish`` rejects a message of the wrong type. Nothing is sent anywhere:
  tests call the recorded subscription callbacks (what an executor would do) and read what was published.
- ``rclpy.qos`` (``QoSProfile``, the policies, ``qos_profile_sensor_data`` = best effort / keep last 5 /
  volatile), ``rclpy.parameter.Parameter``, ``rclpy.time.Time``, ``rclpy.duration.Duration``,
  ``rclpy.clock.Clock``, ``rclpy.exceptions``, ``rclpy.executors.ExternalShutdownException``.
  A statically typed parameter whose override has another type is refused at declare time
  (``InvalidParameterTypeException``, as rclpy's ``declare_parameter``); with ``dynamic_typing`` the
  descriptor's type follows the value. An exception raised by an on-set callback escapes ``set_parameters``
  (in rclpy it escapes ``spin`` and ends the node). ``rclpy.logging.get_logger`` returns recording loggers.
- ``message_filters``: ``Subscriber`` (creates its subscription on the node, like the real one) and
  ``ApproximateTimeSynchronizer`` wrapping :class:`bifusion_ros.sync.ApproximateTimeSynchronizer`, which
  pairs exactly as the Python ``message_filters`` does; like it, the callbacks run while the synchroniser's
  ``lock`` is held (taken without ``finally``: a callback that raises leaves it held).
- ``tf2_ros``: ``Buffer`` wrapping :class:`bifusion_ros.tf_buffer.TransformBuffer` (``lookup_transform``
  returns a ``TransformStamped``, waits up to ``timeout``, raises tf2's exception types) and
  ``TransformListener`` subscribing ``/tf`` and ``/tf_static`` on the node. As tf2's ``setTransform``, an
  invalid transform (NaN, a zero quaternion, an empty frame id) is logged on the ``tf2`` logger and dropped,
  never raised; a quaternion that is not unit length is normalised.

``test_real_ros_agrees_with_the_double`` (in ``test_real_ros.py``) runs the behaviours above against real
rclpy where it is installed.
- message packages (``sensor_msgs.msg``, ``rcl_interfaces.msg``, ``bifusion_ros.msg``, ...): the ``rosbags``
  classes of :func:`bifusion_ros.interfaces.typestore` through :func:`bifusion_ros.convert.rosbags_factory`
  (every field defaulted, constants as attributes), so whatever the node publishes can be CDR-serialised.
- services: ``Node.create_service`` records a :class:`Service` (resolved name, callback); ``Service.call``
  runs the callback as rclpy's executor does (a fresh ``Response()``, which the callback must return);
  ``std_srvs.srv.Trigger`` (request without fields, response ``success`` / ``message``).
"""
from __future__ import annotations

import enum
import importlib
import math
import sys
import threading
import time
import types
from dataclasses import dataclass

from bifusion_ros.convert import rosbags_factory
from bifusion_ros.interfaces import typestore
from bifusion_ros.sync import ApproximateTimeSynchronizer as _Sync
from bifusion_ros.sync import stamp_to_ns
from bifusion_ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    TransformBuffer,
    TransformError,
)

STORE = typestore()
MSGS = rosbags_factory(STORE)
MESSAGE_PACKAGES = ("builtin_interfaces", "std_msgs", "geometry_msgs", "sensor_msgs", "visualization_msgs",
                    "diagnostic_msgs", "tf2_msgs", "rcl_interfaces")


def real_ros_available() -> bool:
    try:
        importlib.import_module("rclpy")
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# rclpy
# ---------------------------------------------------------------------------------------------------------------
class _Context:
    def __init__(self):
        self.initialized = False
        self.lock = threading.Lock()
        self.overrides: dict = {}  # name -> Parameter, from `--ros-args -p name:=value` given to init()


def _parameter_arguments(args) -> dict:
    """``-p`` / ``--param name:=value`` inside ``--ros-args`` (up to ``--``), the value read as YAML: what rclpy
    turns into global parameter overrides."""
    import yaml

    out, inside, it = {}, False, iter(args or [])
    for a in it:
        if a == "--ros-args":
            inside = True
        elif a == "--":
            inside = False
        elif inside and a in ("-p", "--param"):
            name, sep, text = next(it, "").partition(":=")
            if not sep or not name:
                raise RuntimeError(f"Couldn't parse parameter override rule: '{name}{sep}{text}'")
            out[name] = Parameter(name, value=yaml.safe_load(text))
    return out


_CONTEXT = _Context()


def init(args=None, context=None, **kwargs):
    with _CONTEXT.lock:
        if _CONTEXT.initialized:
            raise RuntimeError("rclpy.init() has already been called")
        _CONTEXT.overrides = _parameter_arguments(args)
        _CONTEXT.initialized = True


def ok(context=None) -> bool:
    return _CONTEXT.initialized


def shutdown(context=None):
    with _CONTEXT.lock:
        if not _CONTEXT.initialized:
            raise RuntimeError("rclpy.shutdown() called without rclpy.init()")
        _CONTEXT.initialized = False


def try_shutdown(context=None):
    with _CONTEXT.lock:
        _CONTEXT.initialized = False


def spin_once(node, *, executor=None, timeout_sec=None):
    """Fire every timer of ``node`` that is due (the double has no transport: subscriptions are driven by tests)."""
    now = time.monotonic()
    for timer in list(node.timers):
        if not timer.is_canceled() and now >= timer._next:
            timer._next = now + timer.timer_period_ns / 1e9
            timer.callback()
    if timeout_sec:
        time.sleep(min(timeout_sec, 0.01))


def spin(node, executor=None):
    """Fire timers until ``rclpy.shutdown()``."""
    while ok():
        spin_once(node, timeout_sec=0.01)


class ReliabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2


class HistoryPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2


class DurabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2


@dataclass
class QoSProfile:
    depth: int = 10
    reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE
    history: HistoryPolicy = HistoryPolicy.KEEP_LAST
    durability: DurabilityPolicy = DurabilityPolicy.VOLATILE


qos_profile_sensor_data = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
qos_profile_system_default = QoSProfile(depth=10, reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
                                        history=HistoryPolicy.SYSTEM_DEFAULT, durability=DurabilityPolicy.SYSTEM_DEFAULT)


def _qos(qos_profile) -> QoSProfile:
    if isinstance(qos_profile, QoSProfile):
        return qos_profile
    if isinstance(qos_profile, int) and not isinstance(qos_profile, bool) and qos_profile >= 0:
        return QoSProfile(depth=qos_profile)
    raise TypeError(f"qos_profile must be a QoSProfile or a depth, got {qos_profile!r}")


class ParameterException(Exception):
    pass


class ParameterNotDeclaredException(ParameterException):
    pass


class ParameterAlreadyDeclaredException(ParameterException):
    pass


class InvalidParameterValueException(ParameterException):
    pass


class InvalidParameterTypeException(ParameterException):
    pass


class ExternalShutdownException(Exception):
    pass


class Parameter:
    """``rclpy.parameter.Parameter``: ``name``, ``type_`` (inferred from the value like rclpy), ``value``."""

    class Type(enum.IntEnum):
        NOT_SET = 0
        BOOL = 1
        INTEGER = 2
        DOUBLE = 3
        STRING = 4
        BYTE_ARRAY = 5
        BOOL_ARRAY = 6
        INTEGER_ARRAY = 7
        DOUBLE_ARRAY = 8
        STRING_ARRAY = 9

        @classmethod
        def from_parameter_value(cls, value):
            if value is None:
                return cls.NOT_SET
            if isinstance(value, bool):
                return cls.BOOL
            if isinstance(value, int):
                return cls.INTEGER
            if isinstance(value, float):
                return cls.DOUBLE
            if isinstance(value, str):
                return cls.STRING
            if isinstance(value, (list, tuple)):  # rclpy's order: an empty list is a BYTE_ARRAY
                for kind, t in ((bytes, cls.BYTE_ARRAY), (bool, cls.BOOL_ARRAY), (int, cls.INTEGER_ARRAY),
                                (float, cls.DOUBLE_ARRAY), (str, cls.STRING_ARRAY)):
                    if all(isinstance(v, kind) for v in value):
                        return t
            raise TypeError(f"the given value is not a valid parameter value: {value!r}")

    def __init__(self, name, type_=None, value=None):
        self._name = name
        self._type = Parameter.Type.from_parameter_value(value) if type_ is None else Parameter.Type(type_)
        self._value = value

    name = property(lambda self: self._name)
    type_ = property(lambda self: self._type)
    value = property(lambda self: self._value)

    def __repr__(self):
        return f"Parameter({self._name!r}, {self._type.name}, {self._value!r})"


class Duration:
    def __init__(self, *, seconds=0, nanoseconds=0):
        self.nanoseconds = int(round(float(seconds) * 1e9)) + int(nanoseconds)


class Time:
    def __init__(self, *, seconds=0, nanoseconds=0, clock_type=None):
        self.nanoseconds = int(round(float(seconds) * 1e9)) + int(nanoseconds)

    @classmethod
    def from_msg(cls, msg, clock_type=None):
        return cls(seconds=int(msg.sec), nanoseconds=int(msg.nanosec))

    def to_msg(self):
        return MSGS("builtin_interfaces/msg/Time")(sec=self.nanoseconds // 1_000_000_000,
                                                   nanosec=self.nanoseconds % 1_000_000_000)

    def seconds_nanoseconds(self):
        return self.nanoseconds // 1_000_000_000, self.nanoseconds % 1_000_000_000


class Clock:
    def now(self) -> Time:
        return Time(nanoseconds=time.time_ns())


class Logger:
    """Records ``(level, message, kwargs)`` of every call."""

    def __init__(self, name):
        self.name = name
        self.records: list[tuple[str, str, dict]] = []

    def _log(self, level, message, **kwargs):
        self.records.append((level, str(message), kwargs))
        return True

    def debug(self, m, **k):
        return self._log("debug", m, **k)

    def info(self, m, **k):
        return self._log("info", m, **k)

    def warning(self, m, **k):
        return self._log("warning", m, **k)

    warn = warning

    def error(self, m, **k):
        return self._log("error", m, **k)

    def fatal(self, m, **k):
        return self._log("fatal", m, **k)

    def messages(self, level=None) -> list[str]:
        return [m for lv, m, _ in self.records if level is None or lv == level]


_LOGGERS: dict[str, Logger] = {}


def get_logger(name: str) -> Logger:
    """``rclpy.logging.get_logger``: one recording logger per name."""
    return _LOGGERS.setdefault(name, Logger(name))


class Subscription:
    def __init__(self, msg_type, topic, topic_name, callback, qos_profile):
        self.msg_type, self.topic, self.topic_name = msg_type, topic, topic_name
        self.callback, self.qos_profile = callback, qos_profile


class Publisher:
    def __init__(self, msg_type, topic, topic_name, qos_profile):
        self.msg_type, self.topic, self.topic_name, self.qos_profile = msg_type, topic, topic_name, qos_profile
        self.published: list = []
        self._lock = threading.Lock()

    def publish(self, msg):
        cls = getattr(self.msg_type, "cls", self.msg_type)
        if not isinstance(msg, cls):
            raise TypeError(f"publish on {self.topic_name}: expected {cls.__name__}, got {type(msg).__name__}")
        with self._lock:
            self.published.append(msg)

    def get_subscription_count(self):
        return 0


class Service:
    """``rclpy.service.Service``: :meth:`call` is what the executor does with a request: the callback gets the
    request and a fresh ``srv_type.Response()`` and must return a response of that type (rclpy's
    ``send_response`` fails on anything else)."""

    def __init__(self, srv_type, name, service_name, callback, qos_profile):
        self.srv_type, self.name, self.service_name = srv_type, name, service_name
        self.callback, self.qos_profile = callback, qos_profile

    def call(self, request=None):
        request = self.srv_type.Request() if request is None else request
        if not isinstance(request, self.srv_type.Request):
            raise TypeError(f"{self.service_name}: expected {self.srv_type.__name__}.Request, got "
                            f"{type(request).__name__}")
        response = self.callback(request, self.srv_type.Response())
        if not isinstance(response, self.srv_type.Response):
            raise TypeError(f"{self.service_name}: the callback returned {type(response).__name__}, expected "
                            f"{self.srv_type.__name__}.Response")
        return response


@dataclass
class _TriggerRequest:
    """``std_srvs/srv/Trigger`` request: no fields."""


@dataclass
class _TriggerResponse:
    """``std_srvs/srv/Trigger`` response."""

    success: bool = False
    message: str = ""


class Trigger:
    """``std_srvs.srv.Trigger`` (``Trigger.Request``, ``Trigger.Response``)."""

    Request = _TriggerRequest
    Response = _TriggerResponse


class Timer:
    def __init__(self, period_sec, callback):
        self.timer_period_ns = int(round(float(period_sec) * 1e9))
        self.callback = callback
        self._canceled = False
        self._next = time.monotonic() + float(period_sec)

    def cancel(self):
        self._canceled = True

    def is_canceled(self):
        return self._canceled


def _resolve(topic: str, name: str, namespace: str) -> str:
    ns = namespace.rstrip("/")
    if topic.startswith("/"):
        return topic
    if topic.startswith("~"):
        return f"{ns}/{name}{topic[1:]}"
    return f"{ns}/{topic}"


class Node:
    """``rclpy.node.Node`` with recording (see the module doc)."""

    def __init__(self, node_name, *, context=None, cli_args=None, namespace=None, use_global_arguments=True,
                 enable_rosout=True, start_parameter_services=True, parameter_overrides=None,
                 allow_undeclared_parameters=False, automatically_declare_parameters_from_overrides=False):
        if not _CONTEXT.initialized:
            raise RuntimeError("rclpy.init() has not been called")
        self._name = node_name
        self._namespace = "/" + (namespace or "").strip("/")
        # as rclpy: the global `--ros-args -p` overrides, then the node's own (which win)
        self._overrides = dict(_CONTEXT.overrides) if use_global_arguments else {}
        self._overrides.update({p.name: p for p in (parameter_overrides or [])})
        self._parameters: dict[str, Parameter] = {}
        self._descriptors: dict[str, object] = {}
        self._param_callbacks: list = []
        self._subscriptions: list[Subscription] = []
        self._publishers: list[Publisher] = []
        self._timers: list[Timer] = []
        self._services: list[Service] = []
        self._logger = Logger(node_name)
        self._clock = Clock()
        self.destroyed = False
        self.declare_parameter("use_sim_time", False)

    # names, clock, logger
    def get_name(self):
        return self._name

    def get_namespace(self):
        return self._namespace

    def get_fully_qualified_name(self):
        return _resolve("~", self._name, self._namespace)

    def get_clock(self):
        return self._clock

    def get_logger(self):
        return self._logger

    @property
    def subscriptions(self):
        return list(self._subscriptions)

    @property
    def publishers(self):
        return list(self._publishers)

    @property
    def timers(self):
        return list(self._timers)

    @property
    def services(self):
        return list(self._services)

    # parameters
    def declare_parameter(self, name, value=None, descriptor=None, ignore_override=False):
        if name in self._parameters:
            raise ParameterAlreadyDeclaredException(name)
        descriptor = descriptor if descriptor is not None else MSGS("rcl_interfaces/msg/ParameterDescriptor")()
        static_type = Parameter.Type.from_parameter_value(value)
        if not ignore_override and name in self._overrides:
            value = self._overrides[name].value
        param = Parameter(name, value=value)
        if not descriptor.dynamic_typing and static_type != Parameter.Type.NOT_SET and param.type_ != static_type:
            raise InvalidParameterTypeException(
                f"Trying to set parameter '{name}' to '{value}' of type '{param.type_.name}', "
                f"expecting type '{static_type.name}'")
        if descriptor.dynamic_typing:
            descriptor.type = int(param.type_)  # as rclpy: a dynamically typed parameter's type follows its value
        reason = self._check_range(param, descriptor)
        if reason:
            raise InvalidParameterValueException(f"{name}: {reason}")
        for callback in self._param_callbacks:
            result = callback([param])
            if not result.successful:
                raise InvalidParameterValueException(f"{name}: {result.reason}")
        self._parameters[name] = param
        self._descriptors[name] = descriptor
        return param

    @staticmethod
    def _check_range(param, descriptor) -> str:
        v = param.value
        if param.type_ == Parameter.Type.DOUBLE and len(descriptor.floating_point_range):
            r = descriptor.floating_point_range[0]
            tol = 1e-9 * max(1.0, abs(r.from_value), abs(r.to_value))
            if not (r.from_value - tol <= v <= r.to_value + tol):
                return f"value {v} is not in the range [{r.from_value}, {r.to_value}]"
            if r.step and not math.isclose(((v - r.from_value) / r.step) % 1.0, 0.0, abs_tol=1e-9):
                return f"value {v} is not a multiple of step {r.step} from {r.from_value}"
        if param.type_ == Parameter.Type.INTEGER and len(descriptor.integer_range):
            r = descriptor.integer_range[0]
            if not (r.from_value <= v <= r.to_value):
                return f"value {v} is not in the range [{r.from_value}, {r.to_value}]"
            if r.step and (v - r.from_value) % r.step and v != r.to_value:
                return f"value {v} is not a multiple of step {r.step} from {r.from_value}"
        return ""

    def has_parameter(self, name):
        return name in self._parameters

    def get_parameter(self, name):
        if name not in self._parameters:
            raise ParameterNotDeclaredException(name)
        return self._parameters[name]

    def get_parameters(self, names):
        return [self.get_parameter(n) for n in names]

    def describe_parameter(self, name):
        if name not in self._descriptors:
            raise ParameterNotDeclaredException(name)
        return self._descriptors[name]

    def add_on_set_parameters_callback(self, callback):
        self._param_callbacks.insert(0, callback)

    def remove_on_set_parameters_callback(self, callback):
        self._param_callbacks.remove(callback)

    def set_parameters(self, parameter_list):
        return [self.set_parameters_atomically([p]) for p in parameter_list]

    def set_parameters_atomically(self, parameter_list):
        result_ctor = MSGS("rcl_interfaces/msg/SetParametersResult")
        for p in parameter_list:
            if p.name not in self._parameters:
                raise ParameterNotDeclaredException(p.name)
            d = self._descriptors[p.name]
            current = self._parameters[p.name]
            if d.read_only:
                return result_ctor(successful=False, reason=f"Trying to set a read-only parameter: {p.name}.")
            if not d.dynamic_typing and p.type_ != current.type_:
                return result_ctor(successful=False, reason=(
                    f"Wrong parameter type, expected '{current.type_!r}' got '{p.type_!r}'"))
            reason = self._check_range(p, d)
            if reason:
                return result_ctor(successful=False, reason=reason)
        for callback in self._param_callbacks:
            result = callback(list(parameter_list))  # an exception here escapes, as in rclpy (and ends spin)
            if not result.successful:
                return result
        for p in parameter_list:
            self._parameters[p.name] = p
            if self._descriptors[p.name].dynamic_typing:
                self._descriptors[p.name].type = int(p.type_)
        return result_ctor(successful=True, reason="")

    # pub / sub / timers
    def create_subscription(self, msg_type, topic, callback, qos_profile, *, callback_group=None,
                            event_callbacks=None, raw=False, **kwargs):
        sub = Subscription(msg_type, topic, _resolve(topic, self._name, self._namespace), callback, _qos(qos_profile))
        self._subscriptions.append(sub)
        return sub

    def create_publisher(self, msg_type, topic, qos_profile, *, callback_group=None, event_callbacks=None, **kwargs):
        pub = Publisher(msg_type, topic, _resolve(topic, self._name, self._namespace), _qos(qos_profile))
        self._publishers.append(pub)
        return pub

    def create_service(self, srv_type, srv_name, callback, *, qos_profile=None, callback_group=None):
        if not (hasattr(srv_type, "Request") and hasattr(srv_type, "Response")):
            raise TypeError(f"{srv_type!r} is not a service type")
        srv = Service(srv_type, srv_name, _resolve(srv_name, self._name, self._namespace), callback,
                      _qos(qos_profile if qos_profile is not None else QoSProfile(depth=10)))
        self._services.append(srv)
        return srv

    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None):
        if not timer_period_sec > 0:
            raise ValueError(f"timer period must be > 0, got {timer_period_sec}")
        timer = Timer(timer_period_sec, callback)
        self._timers.append(timer)
        return timer

    def destroy_node(self):
        self.destroyed = True
        for t in self._timers:
            t.cancel()
        return True


# ---------------------------------------------------------------------------------------------------------------
# message_filters
# ---------------------------------------------------------------------------------------------------------------
class SimpleFilter:
    def __init__(self):
        self.callbacks: dict[int, tuple] = {}

    def registerCallback(self, cb, *args):
        conn = len(self.callbacks)
        self.callbacks[conn] = (cb, args)
        return conn

    def signalMessage(self, *msg):
        for cb, args in list(self.callbacks.values()):
            cb(*(msg + args))


class Subscriber(SimpleFilter):
    """``message_filters.Subscriber(node, msg_type, topic, qos_profile=...)``: subscribes on the node."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.node, self.msg_type, self.topic = args[0], args[1], args[2]
        kwargs.setdefault("qos_profile", 10)
        self.sub = self.node.create_subscription(*args[1:], self.callback, **kwargs)

    def callback(self, msg):
        self.signalMessage(msg)

    def getTopic(self):
        return self.topic


class ApproximateTimeSynchronizer(SimpleFilter):
    """``message_filters.ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)``."""

    def __init__(self, fs, queue_size, slop, allow_headerless=False):
        super().__init__()
        self.queue_size, self.slop = queue_size, slop
        self.lock = threading.Lock()
        self.sync = _Sync(len(fs), queue_size, slop, allow_headerless=allow_headerless)
        self.sync.register_callback(self.signalMessage)
        for i, f in enumerate(fs):
            f.registerCallback(self._input(i))

    def _input(self, i):
        def add(msg):
            # as message_filters' ApproximateTimeSynchronizer.add: the callbacks run while self.lock is held,
            # taken with acquire()/release() and no finally (a callback that raises leaves it held and the
            # exception goes to the executor)
            self.lock.acquire()
            self.sync.add(i, msg)
            self.lock.release()

        return add


# ---------------------------------------------------------------------------------------------------------------
# tf2_ros
# ---------------------------------------------------------------------------------------------------------------
class TransformException(Exception):
    pass


class LookupException(TransformException):
    pass


class ConnectivityException(TransformException):
    pass


class ExtrapolationException(TransformException):
    pass


class InvalidArgumentException(TransformException):
    pass


class TimeoutException(TransformException):
    pass


class Buffer:
    """``tf2_ros.Buffer`` over :class:`~bifusion_ros.tf_buffer.TransformBuffer`."""

    def __init__(self, cache_time=None, node=None):
        seconds = 10.0 if cache_time is None else cache_time.nanoseconds / 1e9
        self.core = TransformBuffer(cache_time=seconds)

    def set_transform(self, transform, authority):
        self._set(transform, authority, static=False)

    def set_transform_static(self, transform, authority):
        self._set(transform, authority, static=True)

    def _set(self, transform, authority, static):
        """As tf2's ``BufferCore::setTransform``: an invalid transform (NaN, a quaternion whose norm is off by more
        than 0.01, an empty frame id) is logged (``TF_NAN_INPUT`` ...) and dropped; nothing is raised and nothing
        returned (tf2_ros' Python ``set_transform`` returns None)."""
        try:
            self.core.add(transform, static=static)
        except ValueError as exc:
            get_logger("tf2").error(f"Ignoring transform for child_frame_id {transform.child_frame_id!r} from "
                                    f"authority {authority!r}: {exc}")

    def lookup_transform(self, target_frame, source_frame, time, timeout=None):
        wait = 0.0 if timeout is None else timeout.nanoseconds / 1e9
        try:
            matrix, used = self.core.lookup_with_time(target_frame, source_frame, time, wait)
        except FrameNotFoundError as exc:
            raise LookupException(str(exc)) from None
        except ConnectivityError as exc:
            raise ConnectivityException(str(exc)) from None
        except ExtrapolationError as exc:
            raise ExtrapolationException(str(exc)) from None
        except TransformError as exc:
            raise InvalidArgumentException(str(exc)) from None
        from bifusion_ros.convert import make_header, matrix_to_transform

        return matrix_to_transform(matrix, MSGS, header=make_header(MSGS, target_frame, Time(nanoseconds=stamp_to_ns(
            used))), child_frame_id=source_frame)

    def can_transform(self, target_frame, source_frame, time, timeout=None):
        try:
            self.lookup_transform(target_frame, source_frame, time, timeout)
            return True
        except TransformException:
            return False


class TransformListener:
    """Subscribes ``/tf`` and ``/tf_static`` on the node and feeds the buffer (as tf2_ros does)."""

    def __init__(self, buffer, node, *, spin_thread=False, qos=None, static_qos=None):
        self.buffer, self.node = buffer, node
        tf_msg = MSGS("tf2_msgs/msg/TFMessage")
        node.create_subscription(tf_msg, "/tf", self.callback, qos or QoSProfile(depth=100))
        node.create_subscription(tf_msg, "/tf_static", self.static_callback, static_qos or QoSProfile(
            depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def callback(self, data):
        for t in data.transforms:
            self.buffer.set_transform(t, "default_authority")

    def static_callback(self, data):
        for t in data.transforms:
            self.buffer.set_transform_static(t, "default_authority")


# ---------------------------------------------------------------------------------------------------------------
# installation
# ---------------------------------------------------------------------------------------------------------------
def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__ros_double__ = True
    return mod


def _message_module(package: str) -> types.ModuleType:
    mod = _module(f"{package}.msg")

    def __getattr__(type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        try:
            return MSGS(f"{package}/msg/{type_name}")
        except KeyError:
            raise AttributeError(f"module {package}.msg has no message {type_name}") from None

    mod.__getattr__ = __getattr__
    return mod


def modules() -> dict[str, types.ModuleType]:
    """The double's modules by import name."""
    g = globals()
    rclpy = _module("rclpy", init=init, ok=ok, shutdown=shutdown, try_shutdown=try_shutdown, spin=spin,
                    spin_once=spin_once)
    mods = {
        "rclpy": rclpy,
        "rclpy.logging": _module("rclpy.logging", get_logger=get_logger),
        "rclpy.node": _module("rclpy.node", Node=Node),
        "rclpy.qos": _module("rclpy.qos", QoSProfile=QoSProfile, ReliabilityPolicy=ReliabilityPolicy,
                             HistoryPolicy=HistoryPolicy, DurabilityPolicy=DurabilityPolicy,
                             qos_profile_sensor_data=qos_profile_sensor_data,
                             qos_profile_system_default=qos_profile_system_default),
        "rclpy.parameter": _module("rclpy.parameter", Parameter=Parameter),
        "rclpy.time": _module("rclpy.time", Time=Time),
        "rclpy.duration": _module("rclpy.duration", Duration=Duration),
        "rclpy.clock": _module("rclpy.clock", Clock=Clock),
        "rclpy.exceptions": _module("rclpy.exceptions", **{k: g[k] for k in (
            "ParameterException", "ParameterNotDeclaredException", "ParameterAlreadyDeclaredException",
            "InvalidParameterValueException", "InvalidParameterTypeException")}),
        "rclpy.executors": _module("rclpy.executors", ExternalShutdownException=ExternalShutdownException),
        "message_filters": _module("message_filters", SimpleFilter=SimpleFilter, Subscriber=Subscriber,
                                   ApproximateTimeSynchronizer=ApproximateTimeSynchronizer),
        "tf2_ros": _module("tf2_ros", Buffer=Buffer, TransformListener=TransformListener, **{k: g[k] for k in (
            "TransformException", "LookupException", "ConnectivityException", "ExtrapolationException",
            "InvalidArgumentException", "TimeoutException")}),
    }
    for sub in ("node", "qos", "parameter", "time", "duration", "clock", "exceptions", "executors", "logging"):
        setattr(rclpy, sub, mods[f"rclpy.{sub}"])
    for package in MESSAGE_PACKAGES:
        msg = _message_module(package)
        mods[package] = _module(package, msg=msg)
        mods[f"{package}.msg"] = msg
    mods["bifusion_ros.msg"] = _message_module("bifusion_ros")
    srv = _module("std_srvs.srv", Trigger=Trigger)
    mods["std_srvs"] = _module("std_srvs", srv=srv)
    mods["std_srvs.srv"] = srv
    return mods


def install(monkeypatch) -> bool:
    """Install the double with ``monkeypatch`` (undone after the test) unless real rclpy is importable.
    Returns True when the double was installed."""
    if real_ros_available():
        return False
    import bifusion_ros

    try_shutdown()
    for name, mod in modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(bifusion_ros, "msg", sys.modules["bifusion_ros.msg"], raising=False)
    monkeypatch.delitem(sys.modules, "bifusion_ros.node", raising=False)
    return True
