"""The node's ROS-free frame conversions, shared by the node (:mod:`bifusion_ros.node`) and rosbag replay
(:mod:`bifusion_ros.replay`), so that replay publishes exactly what the node would.

- :func:`frame_inputs`: a synchronised colour / depth / camera-info set (rclpy or ``rosbags`` messages) ->
  validated ``(rgb, depth_m, intrinsics)``, or :class:`FrameSkipped` with a reason of
  :data:`bifusion_core.pipeline.session.SKIP_REASONS`;
- :func:`result_outputs`: a ``bifusion_core.pipeline.FrameResult`` -> the cloud, markers, instances and alpha
  messages, built with a message factory (:func:`bifusion_ros.convert.rclpy_factory` or
  :func:`bifusion_ros.convert.rosbags_factory`).

No ROS import here (the node module imports rclpy at module level).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from bifusion_core.pipeline.session import FrameInputs, FrameSkipped
from bifusion_ros import convert
from bifusion_ros.params import UNKNOWN_LABEL
from bifusion_ros.sync import stamp_to_ns

__all__ = ["frame_inputs", "frame_outputs", "load_processor", "result_outputs"]


def load_processor(checkpoint: str | None, device: str = "auto", half: bool = False, voxel_size: float = 0.0):
    """``bifusion_core.pipeline.FrameProcessor.from_checkpoint`` from node-style settings: an empty
    ``checkpoint`` means the shipped demo checkpoint, ``voxel_size`` 0 the checkpoint's own. Raises
    ``FileNotFoundError`` / ``CheckpointError`` (a ``ValueError``) for a missing or invalid checkpoint."""
    from bifusion_core.pipeline import FrameProcessor

    return FrameProcessor.from_checkpoint(checkpoint or None, device, half=bool(half),
                                          voxel_size=float(voxel_size) or None)


def frame_inputs(color, depth, info, depth_scale: float = 0.001) -> FrameInputs:
    """Validate a synchronised colour / depth / camera-info set into the session's
    :class:`~bifusion_core.pipeline.session.FrameInputs`: ``rgb`` ``(H, W, 3)`` uint8, ``depth`` ``(H, W)``
    float32 metres (NaN = no reading), ``intrinsics`` ``(fx, fy, cx, cy)``, the colour image's stamp (seconds)
    and ``header.frame_id``.

    Raises:
        FrameSkipped: ``bad_encoding``, ``size_mismatch``, ``bad_image`` or ``bad_camera_info``.
    """
    if str(color.encoding) not in convert.COLOUR_ENCODINGS:
        raise FrameSkipped("bad_encoding", f"colour image encoding {color.encoding!r} is not one of "
                                           f"{', '.join(convert.COLOUR_ENCODINGS)}")
    if str(depth.encoding) not in convert.DEPTH_ENCODINGS:
        raise FrameSkipped("bad_encoding", f"depth image encoding {depth.encoding!r} is not one of "
                                           f"{', '.join(convert.DEPTH_ENCODINGS)}")
    try:
        h, w = convert.check_rgb_depth(color, depth)
    except ValueError as exc:
        raise FrameSkipped("size_mismatch", str(exc)) from None
    try:
        intrinsics = convert.camera_info_to_intrinsics(info)
    except (ValueError, TypeError, AttributeError) as exc:
        raise FrameSkipped("bad_camera_info", str(exc)) from None
    if (intrinsics.height, intrinsics.width) != (h, w):
        raise FrameSkipped("size_mismatch", f"camera info is {intrinsics.width}x{intrinsics.height} but the images "
                                            f"are {w}x{h}")
    try:
        rgb = convert.image_to_numpy(color)
        depth_m = convert.image_to_numpy(depth, depth_scale=depth_scale)
    except ValueError as exc:
        raise FrameSkipped("bad_image", str(exc)) from None
    i = intrinsics
    return FrameInputs(rgb, depth_m, (i.fx, i.fy, i.cx, i.cy), stamp_to_ns(color.header.stamp) / 1e9,
                       str(color.header.frame_id))


def _numpy(x) -> np.ndarray:
    """A numpy array from a numpy array, a sequence or a (possibly CUDA) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _plain_instance(inst) -> SimpleNamespace:
    """The fields :func:`bifusion_ros.convert.marker_array` / ``instance_array`` read, as plain Python / numpy."""
    orientation = getattr(inst, "orientation", None)
    return SimpleNamespace(id=int(inst.id), class_id=int(inst.class_id), class_name=str(inst.class_name),
                           score=float(inst.score), center=_numpy(inst.center), size=_numpy(inst.size),
                           point_count=int(inst.point_count),
                           orientation=None if orientation is None else _numpy(orientation))


def frame_outputs(result, stamp, out_frame: str, camera_frame: str, world_frame: str, msgs,
                  score_threshold: float = 0.0) -> dict[str, Any]:
    """:func:`result_outputs` for a result whose points are in ``out_frame`` (the world frame, or the camera
    frame when its pose was missing and replaced by the identity), stamped with the colour image's ``stamp``;
    markers stand up along world z, or along -y in an optical camera frame (y down)."""
    header = convert.make_header(msgs, out_frame, stamp)
    camera_header = convert.make_header(msgs, camera_frame, stamp)
    up = (0.0, 0.0, 1.0) if out_frame == world_frame else (0.0, -1.0, 0.0)
    return result_outputs(result, header, camera_header, msgs, score_threshold=score_threshold, up=up)


def result_outputs(result, header, camera_header, msgs, *, score_threshold: float = 0.0,
                   up=(0.0, 0.0, 1.0)) -> dict[str, Any]:
    """A ``FrameResult`` -> ``{"cloud", "markers", "instances", "alpha"}`` messages (``alpha`` None when the
    result has no ``alpha_image``).

    ``header`` (frame of ``result.points``) goes on the cloud, markers and instances, ``camera_header`` on the
    α image. Instances scoring below ``score_threshold`` are left out and their points get instance 0.
    Semantic -1 (unknown) is written as :data:`~bifusion_ros.params.UNKNOWN_LABEL`.
    """
    kept = [_plain_instance(inst) for inst in result.instances if float(inst.score) >= score_threshold]
    instance = np.asarray(result.instance).reshape(-1).astype(np.int64)
    if len(kept) != len(result.instances):
        keep_ids = np.asarray([int(i.id) for i in kept], dtype=np.int64)
        instance = np.where(np.isin(instance, keep_ids), instance, 0)
    semantic = np.asarray(result.semantic).reshape(-1).astype(np.int64)
    label = np.where(semantic < 0, UNKNOWN_LABEL, semantic)
    cloud = convert.labelled_cloud(result.points, result.colours, label, instance, result.score, result.alpha,
                                   header, msgs)
    markers = convert.marker_array(kept, header, msgs, up=up)
    instances = convert.instance_array(kept, header, msgs)
    alpha = None
    if getattr(result, "alpha_image", None) is not None:
        alpha = convert.numpy_to_image(np.asarray(result.alpha_image, dtype=np.float32), "32FC1", camera_header, msgs)
    return {"cloud": cloud, "markers": markers, "instances": instances, "alpha": alpha}
