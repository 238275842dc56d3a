"""The BiFusion ROS 2 node (``ros2 run bifusion_ros bifusion_node``, ``python -m bifusion_ros.node``).

Data flow::

    colour ┐
    depth  ├─ message_filters.ApproximateTimeSynchronizer ─► _on_synced: validate + convert (executor thread)
    info   ┘                                                        │ submit (one-slot mailbox, newest wins)
                                                                    ▼
          LatestFrameWorker thread: TF pose (world_frame <- camera frame at the image stamp, tf_timeout)
          ─► FrameProcessor.process(Frame) ─► online map (persistent ids) ─► PointCloud2 + MarkerArray
          + InstanceArray + α Image; every map_publish_period: ~/map_cloud + ~/map_markers

- Subscriptions use sensor-data QoS (best effort: also connects to realsense2_camera's reliable publishers).
- The TF lookup runs on the worker thread, so waiting ``tf_timeout`` for the pose never blocks the executor
  (which keeps receiving ``/tf`` meanwhile).
- A bad frame (encoding, sizes, camera info, missing TF, processor or publishing exception) is logged
  (first occurrence of each reason, then at most every 5 s), counted per reason
  (:data:`bifusion_core.pipeline.session.SKIP_REASONS`) and skipped; the node keeps running. The policy
  and book-keeping per frame are :class:`bifusion_core.pipeline.session.FrameSession`, which replay runs too.
- ``/diagnostics`` gets a ``DiagnosticArray`` every ``diagnostics_period``: counts and per-stage latency.
- With ``mask_topic`` a segmenter's 2D instance masks (SAM, FastSAM) go into a cache by stamp
  (:class:`bifusion_core.pipeline.mask_cache.MaskCache`; not a fourth synchroniser input, so a slow or stopped
  segmenter never holds frames back); the worker takes a frame's mask, waiting at most ``mask_timeout``, and
  the superpoints follow it (``superpoints_from_masks``); a frame whose mask does not come is processed with
  VCCS superpoints alone, a bad mask is a counted skip of the mask only.
- ``classes`` may be changed at run time; the change is applied between two frames
  (``FrameProcessor.set_classes``) and rejected with a reason when the processor refuses it. The map's class
  indices then mean other classes, so the map is reset (and when ``world_frame`` changes).
- With ``map`` (default on) the frame's instances merge into the session's online map
  (:class:`bifusion_core.pipeline.session_map.SessionMap`, ESAM-style); the cloud's ``instance`` field, the
  markers (coloured by id) and ``~/instances`` carry the persistent map ids. A frame without a pose
  (``on_missing_tf: identity``) is not merged (its points are in the camera frame). ``~/map_cloud`` (labelled
  voxels) and ``~/map_markers`` (one box per map instance) go out at most every ``map_publish_period`` seconds
  of image stamps, reliable and transient local (a late RViz gets the latest map). ``~/reset_map``
  (``std_srvs/Trigger``) empties the map; ids start at 1 again.

Parameters: :data:`bifusion_ros.params.PARAMS`. Every ROS import of the package lives in this module;
conversions are in :mod:`bifusion_ros.convert`, the mailbox in :mod:`bifusion_ros.worker`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import message_filters
import rclpy
import rclpy.logging
import tf2_ros
from bifusion_ros.msg import InstanceArray
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from bifusion_core.allocator import keep_heap_blocks
from bifusion_core.pipeline.mask_cache import MaskCache, masks_kept
from bifusion_core.pipeline.session import FrameInputs, FrameSession, FrameSkipped
from bifusion_ros import convert
from bifusion_ros.frame_io import frame_inputs, frame_outputs, load_processor, map_outputs, mask_message
from bifusion_ros.params import NODE_NAME, PARAMS, coerce, map_config, spec
from bifusion_ros.sync import stamp_to_ns
from bifusion_ros.worker import LatestFrameWorker

__all__ = ["BiFusionNode", "StartupError", "main"]

OUTPUT_QOS_DEPTH = 2
"""Keep-last depth of the (reliable) output publishers: a late subscriber gets the newest frame, never a backlog."""

MAP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""``~/map_cloud`` / ``~/map_markers``: the latest map only, kept for subscribers that join later (as nav2's map)."""

RESET_MAP_SERVICE = "~/reset_map"

_SKIP_LOG_PERIOD = 5.0


class StartupError(Exception):
    """The node cannot start: a parameter of the wrong type or out of range, an unloadable checkpoint, a class
    list the checkpoint refuses. :func:`main` logs it as one line and exits with status 1."""


@dataclass
class _Job:
    """What the sync callback hands to the worker: the validated set and its ROS stamp."""

    inputs: FrameInputs
    stamp: Any                 # builtin_interfaces/Time of the colour image
    received: float            # time.monotonic() when the set arrived
    submitted: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------------------------
_PARAM_TYPES = {bool: "PARAMETER_BOOL", int: "PARAMETER_INTEGER", float: "PARAMETER_DOUBLE",
                str: "PARAMETER_STRING", list: "PARAMETER_STRING_ARRAY"}


def _descriptor(p) -> Any:
    kwargs: dict[str, Any] = {
        "name": p.name, "type": int(getattr(ParameterType, _PARAM_TYPES[p.type])), "description": p.description,
        "additional_constraints": p.constraints, "read_only": bool(p.read_only),
        # rclpy fixes a statically typed parameter's type from its default and refuses anything else, at
        # declare time (``-p tf_timeout:=0``) and on ``ros2 param set``. Dynamic typing lets
        # :func:`~bifusion_ros.params.validate` decide instead, for
        # - float parameters: users type integers for doubles all the time (``depth_scale:=1``);
        # - the string list: an empty default would be typed BYTE_ARRAY by rclpy (ros2/rclpy#912).
        "dynamic_typing": p.type in (list, float),
    }
    if p.range is not None and p.type is float:
        kwargs["floating_point_range"] = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                             step=0.0)]
    elif p.range is not None and p.type is int:
        kwargs["integer_range"] = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
    return ParameterDescriptor(**kwargs)


class BiFusionNode(Node):
    """The ``bifusion`` node (see the module doc).

    Args:
        processor: an object with ``process(Frame) -> FrameResult``, ``set_classes(list[str])`` and
            ``class_names``; default: :func:`load_processor` from the ``checkpoint`` / ``device`` / ``half`` /
            ``voxel_size`` parameters.
        node_name: node name (default ``bifusion``).
        **node_kwargs: passed to ``rclpy.node.Node`` (``namespace``, ``parameter_overrides``, ...).
    """

    def __init__(self, processor=None, *, node_name: str = NODE_NAME, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.msgs = convert.rclpy_factory()
        self._log_times: dict[str, float] = {}
        self._started = time.monotonic()
        self._last_received = 0.0
        self._diag_prev = (0, 0)

        for p in PARAMS:
            try:
                self.declare_parameter(p.name, p.default, _descriptor(p))
            except (ParameterException, ValueError, TypeError) as exc:  # rclpy's wrong-type / out-of-range override
                raise StartupError(f"invalid parameter {p.name}: {exc}") from None
        self._cfg = self._read_parameters()
        cfg = self._cfg

        # the model; classes are applied after loading so that the checkpoint's list is known
        if processor is None:
            try:
                processor = load_processor(cfg["checkpoint"], cfg["device"], cfg["half"], cfg["voxel_size"],
                                           cfg["superpoints_from_masks"])
            except (OSError, ValueError, RuntimeError) as exc:
                where = cfg["checkpoint"] or "the shipped demo checkpoint"
                raise StartupError(f"cannot load {where}: {type(exc).__name__}: {exc}") from None
        self.processor = processor
        # the per-frame policy and book-keeping, shared with bifusion_ros.replay
        self.session = FrameSession(processor, world_frame=cfg["world_frame"], camera_frame=cfg["camera_frame"],
                                    on_missing_tf=cfg["on_missing_tf"], latency_window=100, log=self.get_logger(),
                                    log_period=_SKIP_LOG_PERIOD)
        self.stats = self.session.latency
        if cfg["map"]:
            try:
                self.session.enable_map(map_config(cfg), cfg["map_publish_period"])
            except ValueError as exc:
                raise StartupError(f"invalid map parameters: {exc}") from None
        self.checkpoint_classes = list(getattr(processor, "class_names", []) or [])
        if cfg["classes"]:
            try:
                processor.set_classes(list(cfg["classes"]))
            except (ValueError, TypeError, RuntimeError) as exc:
                raise StartupError(f"invalid parameter classes: {exc}") from None
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # TF: the listener's subscriptions run on this node's executor; lookups happen on the worker thread
        self.tf_buffer = tf2_ros.Buffer()
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)

        # outputs
        self.pub_cloud = self.create_publisher(PointCloud2, cfg["cloud_topic"], OUTPUT_QOS_DEPTH)
        self.pub_markers = self.create_publisher(MarkerArray, cfg["markers_topic"], OUTPUT_QOS_DEPTH)
        self.pub_instances = self.create_publisher(InstanceArray, cfg["instances_topic"], OUTPUT_QOS_DEPTH)
        self.pub_alpha = self.create_publisher(Image, cfg["alpha_topic"], OUTPUT_QOS_DEPTH)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pub_map_cloud = self.pub_map_markers = self.reset_map_service = None
        if self.session.map is not None:
            self.pub_map_cloud = self.create_publisher(PointCloud2, cfg["map_cloud_topic"], MAP_QOS)
            self.pub_map_markers = self.create_publisher(MarkerArray, cfg["map_markers_topic"], MAP_QOS)
            self.reset_map_service = self.create_service(Trigger, RESET_MAP_SERVICE, self._on_reset_map)

        # the worker before the inputs, so that no synchronised set arrives without it
        self.worker = LatestFrameWorker(self._process_job, self._publish_outputs, self._on_job_error,
                                        name="bifusion-worker")

        # inputs
        self.sub_color = message_filters.Subscriber(self, Image, cfg["color_topic"],
                                                    qos_profile=qos_profile_sensor_data)
        self.sub_depth = message_filters.Subscriber(self, Image, cfg["depth_topic"],
                                                    qos_profile=qos_profile_sensor_data)
        self.sub_info = message_filters.Subscriber(self, CameraInfo, cfg["camera_info_topic"],
                                                   qos_profile=qos_profile_sensor_data)
        self.sync = message_filters.ApproximateTimeSynchronizer(
            [self.sub_color, self.sub_depth, self.sub_info], cfg["sync_queue_size"], cfg["sync_slop"])
        self.sync.registerCallback(self._on_synced)
        self.masks = self.sub_masks = None
        if cfg["mask_topic"]:
            self.masks = MaskCache(keep=masks_kept(cfg["sync_queue_size"]), slop=0.0, timeout=cfg["mask_timeout"])
            self.sub_masks = self.create_subscription(Image, cfg["mask_topic"], self._on_mask, qos_profile_sensor_data)

        self.diagnostics_timer = self.create_timer(cfg["diagnostics_period"], self.publish_diagnostics)
        outputs = [self.pub_cloud, self.pub_markers, self.pub_instances, self.pub_alpha]
        if self.session.map is not None:
            outputs += [self.pub_map_cloud, self.pub_map_markers]
        self.get_logger().info(
            f"bifusion: {cfg['color_topic']} + {cfg['depth_topic']} + {cfg['camera_info_topic']} "
            f"(slop {cfg['sync_slop']} s)" + (f" + masks {cfg['mask_topic']}" if self.masks is not None else "")
            + " -> " + ", ".join(pub.topic_name for pub in outputs)
            + f" in {cfg['world_frame']!r}; {len(self.class_names)} classes; "
            + (f"online map on ({cfg['map_voxel_size']} m voxels, at most {cfg['map_max_instances']} instances)"
               if self.session.map is not None else "online map off"))

    # ------------------------------------------------------------------------------------------ parameters
    def _read_parameters(self) -> dict[str, Any]:
        cfg = {}
        for p in PARAMS:
            value, err = coerce(p.name, self.get_parameter(p.name).value)
            if err:
                raise StartupError(f"invalid parameter: {err}")
            cfg[p.name] = value
        return cfg

    def _on_set_parameters(self, parameters) -> Any:
        """rclpy's on-set callback: accept or refuse with a reason; never raises (an exception here would
        escape ``rclpy.spin`` and end the node)."""
        try:
            return self._apply_parameters(parameters)
        except Exception as exc:  # noqa: BLE001 - refuse the change, keep the node
            return SetParametersResult(successful=False, reason=f"{type(exc).__name__}: {exc}")

    def _apply_parameters(self, parameters) -> Any:
        updates: dict[str, Any] = {}
        for prm in parameters:
            try:
                p = spec(prm.name)
            except KeyError:
                continue  # use_sim_time and other parameters that are not ours
            value, err = coerce(p.name, prm.value)
            if err is None and p.read_only and value != self._cfg[p.name]:
                err = f"{p.name} is read-only (restart the node to change it)"
            if err:
                return SetParametersResult(successful=False, reason=err)
            updates[p.name] = value
        if "classes" in updates and updates["classes"] != self._cfg["classes"]:
            names = updates["classes"] or self.checkpoint_classes
            try:
                cleared = self.session.set_classes(names)  # between two frames; resets the map
            except Exception as exc:  # noqa: BLE001 - report to the caller instead of dying
                return SetParametersResult(successful=False, reason=f"set_classes failed: {exc}")
            self.get_logger().info(f"classes set to {list(names)}")
            if self.session.map is not None:
                self.get_logger().info(f"map reset ({cleared} instances cleared): the class list changed")
        if "map_publish_period" in updates and self.session.map is not None:
            self.session.map.publish_period = updates["map_publish_period"]
        new_world = updates.get("world_frame", self._cfg["world_frame"])
        if self.session.map is not None and new_world != self._cfg["world_frame"]:
            n = self.session.map.reset()
            self.get_logger().info(f"map reset ({n} instances cleared): world_frame changed to {new_world!r}")
        self._cfg = {**self._cfg, **updates}
        for name in ("world_frame", "camera_frame", "on_missing_tf"):
            setattr(self.session, name, self._cfg[name])
        return SetParametersResult(successful=True, reason="")

    @property
    def config(self) -> dict[str, Any]:
        """The current parameter values."""
        return dict(self._cfg)

    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.processor, "class_names", []) or [])

    def _on_reset_map(self, request, response):
        """``~/reset_map`` (std_srvs/Trigger): empty the map; ids start at 1 again. Never raises."""
        try:
            n = self.session.map.reset()
            response.success = True
            response.message = f"map reset: {n} instances cleared"
            self.get_logger().info(response.message)
        except Exception as exc:  # noqa: BLE001 - answer the caller, keep the node
            response.success = False
            response.message = f"map reset failed: {type(exc).__name__}: {exc}"
        return response

    # ------------------------------------------------------------------------------------------ counters
    @property
    def skipped(self) -> dict[str, int]:
        """Skipped frames per reason (every reason of SKIP_REASONS, 0 included)."""
        return self.session.skipped

    def counters(self) -> dict[str, int]:
        """Frame counts: ``received`` (synchronised sets), ``published``, ``dropped`` (replaced in the mailbox),
        ``failed`` (the worker's: skipped after the mailbox), ``skipped`` (all reasons), ``identity_pose``,
        ``pending`` (0 or 1)."""
        w = self.worker.counters()
        s = self.session
        return {"received": s.counter("received"), "published": s.counter("processed"), "dropped": w["dropped"],
                "failed": w["failed"], "skipped": sum(s.skipped.values()), "identity_pose": s.counter("identity_pose"),
                "pending": w["pending"]}

    # ------------------------------------------------------------------------------------------ input
    def _on_synced(self, color, depth, info) -> None:
        """Synchronised set -> validated arrays -> mailbox. Never raises."""
        t0 = time.monotonic()
        self.session.count("received")
        self._last_received = t0
        try:
            inputs = frame_inputs(color, depth, info, self._cfg["depth_scale"])
        except FrameSkipped as skip:
            self.session.skip(skip.reason, skip.detail)
            return
        except Exception as exc:  # noqa: BLE001 - a malformed message must not kill the node
            self.session.skip("bad_image", f"{type(exc).__name__}: {exc}")
            return
        job = _Job(inputs, color.header.stamp, t0)
        job.submitted = time.monotonic()
        inputs.timings["convert"] = job.submitted - t0
        self.worker.submit(job)

    def _on_mask(self, msg) -> None:
        """A segmenter's mask -> the cache (one that cannot be read is counted and logged). Never raises."""
        try:
            why = mask_message(self.masks, msg)
        except Exception as exc:  # noqa: BLE001 - a malformed message must not kill the node
            self.masks.reject("bad_image")
            why = f"bad_image: {type(exc).__name__}: {exc}"
        if why:
            self.session.warn_throttled("mask_" + why.split(":")[0],
                                        f"2D mask skipped ({why}); its frame is processed without it")

    # ------------------------------------------------------------------------------------------ worker
    def camera_pose(self, job: _Job) -> tuple[np.ndarray, str]:
        """``(T_world_camera (4, 4), output frame)`` at the set's stamp, waiting up to ``tf_timeout`` for TF;
        without a pose the session's ``on_missing_tf`` policy (identity in the camera frame, or
        :class:`FrameSkipped` ``missing_tf``)."""
        camera = self.session.camera(job.inputs.image_frame)
        world = self.session.world_frame
        try:
            if not camera:
                raise ValueError("the colour image has an empty header.frame_id and camera_frame is not set")
            tf = self.tf_buffer.lookup_transform(world, camera, Time.from_msg(job.stamp),
                                                 timeout=Duration(seconds=float(self._cfg["tf_timeout"])))
            return convert.transform_to_matrix(tf), world
        except (tf2_ros.TransformException, ValueError, TypeError) as exc:
            return self.session.without_pose(job.inputs, str(exc))

    def _process_job(self, job: _Job):
        cfg = self._cfg
        t0 = time.monotonic()
        job.inputs.timings["wait"] = t0 - job.submitted
        pose, out_frame = self.camera_pose(job)
        t1 = time.monotonic()
        job.inputs.timings["tf"] = t1 - t0
        if self.masks is not None:  # the mask of this frame's stamp, waiting up to mask_timeout (s)
            job.inputs.masks, why = self.masks.take(stamp_to_ns(job.stamp), job.inputs.rgb.shape[:2])
            job.inputs.timings["mask_wait"] = time.monotonic() - t1
            if why == "size_mismatch":
                self.session.warn_throttled("mask_size_mismatch", "2D mask of another size than the colour image: "
                                                                  "skipped, frame processed without it")
        result = self.session.process(job.inputs, pose, out_frame)
        return result, out_frame, cfg, self.session.map_frame(job.inputs, result, out_frame)

    def _publish_outputs(self, job: _Job, processed) -> None:
        result, out_frame, cfg, map_frame = processed
        t0 = time.monotonic()
        try:
            out = frame_outputs(result, job.stamp, out_frame, self.session.camera(job.inputs.image_frame),
                                cfg["world_frame"], self.msgs, float(cfg["score_threshold"]), map_frame)
            smap = self.session.map
            if smap is not None and smap.due(job.inputs.stamp):
                header = convert.make_header(self.msgs, self.session.world_frame, job.stamp)
                out.update(map_outputs(smap.snapshot(), header, self.msgs))
            self.pub_cloud.publish(out["cloud"])
            self.pub_markers.publish(out["markers"])
            self.pub_instances.publish(out["instances"])
            if out["alpha"] is not None:
                self.pub_alpha.publish(out["alpha"])
            if "map_cloud" in out:
                self.pub_map_cloud.publish(out["map_cloud"])
                self.pub_map_markers.publish(out["map_markers"])
        except Exception as exc:  # noqa: BLE001
            raise FrameSkipped("publish_error", f"{type(exc).__name__}: {exc}") from exc
        now = time.monotonic()
        timings = job.inputs.timings
        timings["publish"] = now - t0
        timings["total"] = now - job.received
        try:
            timings["age"] = (self.get_clock().now().nanoseconds - stamp_to_ns(job.stamp)) / 1e9
        except Exception:  # noqa: BLE001 - a clock without nanoseconds
            pass
        self.session.done(job.inputs, result)
        period = float(self._cfg["latency_log_period"])
        last = self._log_times.get("latency")
        if period == 0.0 or last is None or t0 - last >= period:
            self._log_times["latency"] = t0
            c = self.counters()
            self.get_logger().info(
                f"{len(result.points)} points, "
                f"{len(result.instances)} instances | latency mean/max: {self.stats.format()} | "
                f"published {c['published']}, dropped {c['dropped']}, skipped {c['skipped']}")

    def _on_job_error(self, job: _Job, exc: BaseException) -> None:
        if isinstance(exc, FrameSkipped):
            self.session.skip(exc.reason, exc.detail)
        else:
            self.session.skip("processor_error", f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------------------------------ diagnostics
    def diagnostics_message(self):
        """The ``DiagnosticArray`` the timer publishes (one status ``bifusion: pipeline``)."""
        status_ctor = self.msgs("diagnostic_msgs/msg/DiagnosticStatus")
        kv = self.msgs("diagnostic_msgs/msg/KeyValue")
        c = self.counters()
        skipped = self.skipped
        prev_received, prev_published = self._diag_prev
        self._diag_prev = (c["received"], c["published"])
        now = time.monotonic()
        idle = now - (self._last_received or self._started)
        if c["received"] == 0 or idle > max(5.0, 5 * float(self._cfg["diagnostics_period"])):
            level, message = status_ctor.WARN, (
                f"no synchronised colour/depth/camera_info input for {idle:.0f} s "
                f"({self._cfg['color_topic']}, {self._cfg['depth_topic']}, {self._cfg['camera_info_topic']})")
        elif c["received"] > prev_received and c["published"] == prev_published and not c["pending"] \
                and not self.worker.busy:
            reasons = ", ".join(f"{r} {n}" for r, n in skipped.items() if n) or "none"
            level, message = status_ctor.WARN, f"frames arrive but none was published (skipped: {reasons})"
        else:
            level, message = status_ctor.OK, f"{c['published']} frames published"
        values = [kv(key=k, value=str(v)) for k, v in c.items()]
        values += [kv(key=f"skipped/{r}", value=str(n)) for r, n in skipped.items()]
        for stage, v in self.stats.summary().items():
            values.append(kv(key=f"latency_ms/{stage}", value=f"{v['mean'] * 1e3:.1f}"))
        values.append(kv(key="classes", value=str(len(self.class_names))))
        if self.masks is not None:
            m = self.masks.summary()
            values += [kv(key=f"masks/{k}", value=str(m[k])) for k in ("received", "used", "frames_without_mask")]
            values += [kv(key=f"masks/skipped/{r}", value=str(n)) for r, n in m["skipped"].items()]
        if self.session.map is not None:
            values += [kv(key="map/instances", value=str(len(self.session.map))),
                       kv(key="map/errors", value=str(self.session.counter("map_errors"))),
                       kv(key="map/without_pose", value=str(self.session.counter("map_without_pose")))]
        status = status_ctor(level=level, name=f"{self.get_name()}: pipeline", message=message,
                             hardware_id=str(self._cfg["device"]), values=values)
        header = convert.make_header(self.msgs, "", self.get_clock().now())
        return self.msgs("diagnostic_msgs/msg/DiagnosticArray")(header=header, status=[status])

    def publish_diagnostics(self) -> None:
        try:
            self.pub_diagnostics.publish(self.diagnostics_message())
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"diagnostics failed: {exc}")

    # ------------------------------------------------------------------------------------------ shutdown
    def destroy_node(self):
        self.worker.stop(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> int:
    """Spin the node until Ctrl-C / shutdown. ``args``: the command line for ``rclpy.init`` (``--ros-args ...``).

    Returns the exit status: 0 after a normal shutdown, 1 when the node could not start (:class:`StartupError`:
    logged as one line, no traceback)."""
    keep_heap_blocks()  # before rclpy starts threads: the frame worker shares the main heap (see the module)
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = BiFusionNode()
        rclpy.spin(node)
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        status = 1
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # rclpy.executors.ExternalShutdownException
        if type(exc).__name__ != "ExternalShutdownException":
            raise
    finally:
        try:
            if node is not None:
                node.destroy_node()
        except KeyboardInterrupt:  # a second Ctrl-C during clean-up (ros2 launch forwards one of its own)
            pass
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
