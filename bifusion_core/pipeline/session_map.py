"""The online map of a running session (:class:`SessionMap`), as the node and replay both drive it (ROS-free).

A :class:`~bifusion_core.pipeline.session.FrameSession` built with a :class:`~bifusion_core.mapping.MapConfig`
holds one. Per processed frame, :meth:`SessionMap.merge_result` turns the result's instances into
observations (:func:`~bifusion_core.mapping.observations_from_result`), merges them into the
:class:`~bifusion_core.mapping.SceneMap` and returns a :class:`MapFrame`: the persistent map id of each of
the frame's instances and of each of its points, which the outputs then carry instead of the per-frame ids.

- **Thread safety**: every access goes through one lock, so the node's ``~/reset_map`` service (executor thread)
  and the worker's merges never interleave; :meth:`snapshot` copies what publishing needs under it.
- **Class changes** (the node's ``classes`` parameter) change what the class indices mean, so the map is reset
  with the new names (:meth:`reset`).
- **Rate limit** of the published map (:meth:`due`): the map goes out when at least ``publish_period`` seconds
  of *frame stamps* passed since the last time (0: every frame), so replay writes exactly the map messages the
  node would publish; a stamp going backwards (a looping bag, a restarted simulation clock) makes it due at once.
- A frame the map refuses (``ValueError`` from :meth:`SceneMap.update`, e.g. points out of the key range)
  leaves the map unchanged; :meth:`merge_result` returns None and the caller counts it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..mapping import MapConfig, MapInstance, SceneMap, observations_from_result
from ..mapping.config import check_float

__all__ = ["MapFrame", "MapSnapshot", "SessionMap"]


@dataclass(frozen=True)
class MapFrame:
    """What the map made of one frame.

    Attributes:
        instance_ids: the map id of each of the result's instances, in order (0: not in the map, i.e. fewer
            than ``min_points`` points).
        point_ids: ``(N,)`` int64 map id of each of the result's points (0: no instance).
    """

    instance_ids: tuple[int, ...]
    point_ids: np.ndarray


@dataclass(frozen=True)
class MapSnapshot:
    """A copy of the map for publishing (arrays ordered by voxel key).

    Attributes:
        centres: ``(V, 3)`` float64 voxel centres, metres (world frame).
        colours: ``(V, 3)`` uint8 mean colour. labels: ``(V,)`` int64 class index (-1: none).
        instance_ids: ``(V,)`` int64 map id (0: none).
        instances: the map's instances (persistent ids, boxes, classes, scores).
        class_names: what the class indices mean.
    """

    centres: np.ndarray
    colours: np.ndarray
    labels: np.ndarray
    instance_ids: np.ndarray
    instances: tuple[MapInstance, ...]
    class_names: tuple[str, ...]


class SessionMap:
    """The session's :class:`~bifusion_core.mapping.SceneMap` behind a lock (see the module doc).

    Args:
        config: the map settings.
        class_names: the processor's class list (what class indices mean).
        publish_period: seconds of frame stamps between two published maps (>= 0; 0: every frame);
            settable at run time.
    """

    def __init__(self, config: MapConfig, class_names=(), publish_period: float = 1.0):
        if not isinstance(config, MapConfig):
            raise ValueError(f"config must be a MapConfig, got {type(config).__name__}")
        self.config = config
        self._lock = threading.Lock()
        self._scene = SceneMap(config, list(class_names) or None)
        self.publish_period = publish_period
        self._last_published: float | None = None

    @property
    def publish_period(self) -> float:
        return self._period

    @publish_period.setter
    def publish_period(self, seconds) -> None:
        self._period = check_float("publish_period", seconds, 0.0)

    @property
    def scene(self) -> SceneMap:
        """The map itself (for saving and scoring once the session is over; not thread-safe)."""
        return self._scene

    def __len__(self) -> int:
        with self._lock:
            return len(self._scene.instance_map)

    def reset(self, class_names=None) -> int:
        """Empty the map (ids start at 1 again); with ``class_names`` the map takes the new class list.
        Returns the number of instances cleared."""
        with self._lock:
            n = len(self._scene.instance_map)
            if class_names is not None:
                self._scene = SceneMap(self.config, list(class_names) or None)
            else:
                self._scene.reset()
            self._last_published = None
            return n

    def merge(self, observations, owner: np.ndarray, result, stamp: float) -> MapFrame:
        """Merge ``observations`` (world frame) of a frame whose points (``result.points``, ``semantic``,
        ``colours``) feed the labelled voxel map; ``owner (N,)`` gives each point's observation (-1: none).
        Returns the map ids per observation and per point. Raises ``ValueError`` (map unchanged)."""
        with self._lock:
            ids = self._scene.update(observations, stamp, points=np.asarray(result.points),
                                     semantic=np.asarray(result.semantic, np.int64),
                                     colours=np.asarray(result.colours), point_observation=owner)
        owner = np.asarray(owner, np.int64)
        point_ids = np.where(owner >= 0, np.asarray(list(ids) + [0], np.int64)[owner], 0)
        return MapFrame(tuple(int(i) for i in ids), point_ids)

    def merge_result(self, result, stamp: float) -> MapFrame:
        """Merge a frame's model instances (see the module doc). Raises ``ValueError`` (map unchanged)."""
        obs, owner, source = observations_from_result(result, 1)
        frame = self.merge(obs, owner, result, stamp)
        per_instance = np.zeros(len(result.instances), np.int64)
        per_instance[source] = frame.instance_ids
        return MapFrame(tuple(int(i) for i in per_instance), frame.point_ids)

    def due(self, stamp: float) -> bool:
        """Whether the map should be published with the frame stamped ``stamp`` (seconds); marks it published
        when it is."""
        stamp = float(stamp)
        with self._lock:
            last = self._last_published
            if last is None or stamp < last or stamp - last >= self._period:
                self._last_published = stamp
                return True
            return False

    def snapshot(self) -> MapSnapshot:
        """A consistent copy of the map (see :class:`MapSnapshot`)."""
        with self._lock:
            vm = self._scene.voxel_map
            return MapSnapshot(vm.centres(), vm.colours, vm.labels, vm.instance_ids, self._scene.instances,
                               tuple(self._scene.class_names or ()))
