"""The node's ROS-free frame conversions, shared by the node (:mod:`bifusion_ros.node`) and rosbag replay
(:mod:`bifusion_ros.replay`), so that replay publishes exactly what the node would.

- :func:`frame_inputs`: a synchronised colour / depth / camera-info set (rclpy or ``rosbags`` messages) ->
  validated ``(rgb, depth_m, intrinsics)``, or :class:`FrameSkipped` with a reason of
  :data:`bifusion_core.pipeline.session.SKIP_REASONS`;
- :func:`result_outputs`: a ``bifusion_core.pipeline.FrameResult`` -> the cloud, markers, instances and alpha
  messages, built with a message factory (:func:`bifusion_ros.convert.rclpy_factory` or
  :func:`bifusion_ros.convert.rosbags_factory`); with the map on, carrying the persistent map ids;
- :func:`map_outputs`: the online map (a :class:`bifusion_core.pipeline.session_map.MapSnapshot`) -> the
  ``~/map_cloud`` and ``~/map_markers`` messages.

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

__all__ = ["frame_inputs", "frame_outputs", "load_processor", "result_outputs", "map_outputs"]


def load_processor(checkpoint: str | None, device: str = "auto", half: bool = False, voxel_size: float = 0.0,
                   superpoints_from_masks: bool = False):
    """``bifusion_core.pipeline.FrameProcessor.from_checkpoint`` from node-style settings: an empty
    ``checkpoint`` means the shipped demo checkpoint, ``voxel_size`` 0 the checkpoint's own;
    ``superpoints_from_masks`` as the node's parameter. Raises ``FileNotFoundError`` / ``CheckpointError`` (a
    ``ValueError``) for a missing or invalid checkpoint."""
    from bifusion_core.pipeline import FrameProcessor

    return FrameProcessor.from_checkpoint(checkpoint or None, device, half=bool(half),
                                          voxel_size=float(voxel_size) or None,
                                          superpoints_from_masks=bool(superpoints_from_masks))


def mask_message(cache, msg) -> str:
    """A segmenter's mask message into the :class:`~bifusion_core.pipeline.mask_cache.MaskCache` (converted
    with :func:`bifusion_ros.convert.id_image_to_numpy`). Returns ``""``, or why the mask was skipped (counted
    by the cache: ``bad_encoding``, ``bad_image``) with the details, for the caller's log."""
    encoding = str(getattr(msg, "encoding", ""))
    if encoding not in convert.ID_ENCODINGS:
        cache.reject("bad_encoding")
        return f"bad_encoding: mask encoding {encoding!r} is not one of {', '.join(convert.ID_ENCODINGS)}"
    try:
        masks = convert.id_image_to_numpy(msg)
    except (ValueError, TypeError) as exc:
        cache.reject("bad_image")
        return f"bad_image: {exc}"
    cache.add(stamp_to_ns(msg.header.stamp), masks)
    return ""


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
                  score_threshold: float = 0.0, map_frame=None) -> dict[str, Any]:
    """:func:`result_outputs` for a result whose points are in ``out_frame`` (the world frame, or the camera
    frame when its pose was missing and replaced by the identity), stamped with the colour image's ``stamp``;
    markers stand up along world z, or along -y in an optical camera frame (y down)."""
    header = convert.make_header(msgs, out_frame, stamp)
    camera_header = convert.make_header(msgs, camera_frame, stamp)
    up = (0.0, 0.0, 1.0) if out_frame == world_frame else (0.0, -1.0, 0.0)
    return result_outputs(result, header, camera_header, msgs, score_threshold=score_threshold, up=up,
                          map_frame=map_frame)


def _map_instances(instances: list, map_ids) -> list[SimpleNamespace]:
    """The frame's instances under their map ids: those the map did not take (id 0) are left out; several
    instances of the frame merged into one map instance become one (box = union of their boxes, point count =
    sum, class and score of the best-scoring), so that no id is published twice."""
    by_id: dict[int, list[SimpleNamespace]] = {}
    for inst, mid in zip(instances, map_ids):
        if mid > 0:
            by_id.setdefault(int(mid), []).append(inst)
    out = []
    for mid in sorted(by_id):
        group = by_id[mid]
        best = max(group, key=lambda i: i.score)
        lo = np.min([i.center - i.size / 2 for i in group], axis=0)
        hi = np.max([i.center + i.size / 2 for i in group], axis=0)
        out.append(SimpleNamespace(id=mid, class_id=best.class_id, class_name=best.class_name, score=best.score,
                                   center=(lo + hi) / 2 if len(group) > 1 else best.center,
                                   size=hi - lo if len(group) > 1 else best.size,
                                   point_count=sum(i.point_count for i in group),
                                   orientation=None if len(group) > 1 else best.orientation))
    return out


def result_outputs(result, header, camera_header, msgs, *, score_threshold: float = 0.0,
                   up=(0.0, 0.0, 1.0), map_frame=None) -> dict[str, Any]:
    """A ``FrameResult`` -> ``{"cloud", "markers", "instances", "alpha"}`` messages (``alpha`` None when the
    result has no ``alpha_image``).

    ``header`` (frame of ``result.points``) goes on the cloud, markers and instances, ``camera_header`` on the
    α image. Instances scoring below ``score_threshold`` are left out and their points get instance 0.
    Semantic -1 (unknown) is written as :data:`~bifusion_ros.params.UNKNOWN_LABEL`.

    With ``map_frame`` (the :class:`~bifusion_core.pipeline.session_map.MapFrame` of this result) every id is
    the instance's persistent map id (cloud ``instance`` field, marker ids, ``InstanceArray`` ids), markers
    take the id's colour (:func:`~bifusion_ros.convert.id_colour`) and instances the map did not take are left
    out (see :func:`_map_instances`); without it the ids are the frame's own (1..K) and markers are coloured by
    class.
    """
    above = [float(inst.score) >= score_threshold for inst in result.instances]
    kept = [_plain_instance(inst) for inst, ok in zip(result.instances, above) if ok]
    if map_frame is not None:
        if len(map_frame.instance_ids) != len(result.instances):
            raise ValueError(f"map ids for {len(map_frame.instance_ids)} instances, the result has "
                             f"{len(result.instances)}")
        kept = _map_instances(kept, [m for m, ok in zip(map_frame.instance_ids, above) if ok])
        instance = np.asarray(map_frame.point_ids).reshape(-1).astype(np.int64)
        if instance.shape != (len(result.points),):
            raise ValueError(f"map ids for {instance.size} points, the result has {len(result.points)}")
    else:
        instance = np.asarray(result.instance).reshape(-1).astype(np.int64)
    if map_frame is not None or len(kept) != len(result.instances):
        keep_ids = np.asarray([int(i.id) for i in kept], dtype=np.int64)
        instance = np.where(np.isin(instance, keep_ids), instance, 0)
    semantic = np.asarray(result.semantic).reshape(-1).astype(np.int64)
    label = np.where(semantic < 0, UNKNOWN_LABEL, semantic)
    cloud = convert.labelled_cloud(result.points, result.colours, label, instance, result.score, result.alpha,
                                   header, msgs)
    markers = convert.marker_array(kept, header, msgs, up=up, colour_by="class" if map_frame is None else "id")
    instances = convert.instance_array(kept, header, msgs)
    alpha = None
    if getattr(result, "alpha_image", None) is not None:
        alpha = convert.numpy_to_image(np.asarray(result.alpha_image, dtype=np.float32), "32FC1", camera_header, msgs)
    return {"cloud": cloud, "markers": markers, "instances": instances, "alpha": alpha}


def map_outputs(snapshot, header, msgs) -> dict[str, Any]:
    """The online map -> ``{"map_cloud", "map_markers"}`` messages, both with ``header`` (the world frame).

    ``map_cloud``: a labelled ``PointCloud2`` of the map's voxel centres with ``x, y, z, rgb`` (mean colour),
    ``label`` (class index; :data:`~bifusion_ros.params.UNKNOWN_LABEL` for a voxel without evidence) and
    ``instance`` (persistent map id, 0: none). ``map_markers``: a box and a label per map instance (id = map
    id, the id's colour; the box is the instance's voxel box).
    """
    label = np.where(snapshot.labels < 0, UNKNOWN_LABEL, snapshot.labels)
    cloud = convert.labelled_cloud(snapshot.centres, snapshot.colours, label, snapshot.instance_ids, None, None,
                                   header, msgs)
    names = snapshot.class_names
    instances = [SimpleNamespace(id=i.id, class_id=i.class_id,
                                 class_name=names[i.class_id] if 0 <= i.class_id < len(names) else str(i.class_id),
                                 score=i.score, center=i.box_center, size=i.box_size, point_count=i.num_voxels)
                 for i in snapshot.instances]
    markers = convert.marker_array(instances, header, msgs, colour_by="id")
    return {"map_cloud": cloud, "map_markers": markers}
