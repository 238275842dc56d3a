"""One object for the whole online map (:class:`SceneMap`): the instance map and the labelled voxel map side by
side, fed together once per frame, reset together, saved and loaded together.

The two maps stay separate classes (:class:`~.instance_map.InstanceMap` knows nothing of per-point labels,
:class:`~.voxel_map.LabelledVoxelMap` nothing of merging); this facade links them: the ids the instance map
gives a frame's observations become the per-point instance ids of the voxel map, and ids the instance map
evicts are cleared from the voxel map.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .config import MapConfig, check_float
from .instance_map import InstanceMap, MapInstance
from .observation import Observation, check_labels, check_points
from .storage import load_map_files, save_map_files
from .voxel_keys import voxel_indices
from .voxel_map import LabelledVoxelMap, check_labelled_points


def _check_class_names(class_names) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise ValueError("class_names must be a sequence of str")
    return tuple(class_names)


class SceneMap:
    """The online map of one session.

    Args:
        config: map settings (default :class:`MapConfig`).
        class_names: optional names of the class indices (written to ``instances.json``; with them
            :meth:`save` can derive ScanNet label ids).
    """

    def __init__(self, config: MapConfig | None = None, class_names: Sequence[str] | None = None):
        self.instance_map = InstanceMap(config)
        self.config = self.instance_map.config
        self.voxel_map = LabelledVoxelMap(self.config.voxel_size, self.config.max_voxels)
        self.class_names = _check_class_names(class_names)

    @property
    def instances(self) -> tuple[MapInstance, ...]:
        """Snapshots of the map's instances, by id."""
        return self.instance_map.instances

    def reset(self) -> None:
        """Empty both maps; ids start at 1 again."""
        self.instance_map.reset()
        self.voxel_map.reset()

    def update(self, observations: Sequence[Observation], stamp: float, points: np.ndarray | None = None,
               semantic: np.ndarray | None = None, colours: np.ndarray | None = None,
               point_observation: np.ndarray | None = None) -> list[int]:
        """Merge one frame into the map.

        Args:
            observations: the frame's instances (world frame).
            stamp: seconds.
            points: ``(N, 3)`` float world metres, the frame's full labelled cloud; None: the observations'
                points (with their ``semantic``, else their ``class_id``, and their ``colours`` when every
                observation has them) are integrated instead.
            semantic: ``(N,)`` integer class per point (-1 unknown); required with ``points``.
            colours: ``(N, 3)`` uint8, optional.
            point_observation: ``(N,)`` integer index into ``observations`` of the instance each point belongs
                to (-1: none); None: no point belongs to an instance.

        Returns:
            The map id of each observation (see :meth:`InstanceMap.update`). Invalid inputs raise
            ``ValueError`` before either map changes.
        """
        stamp = check_float("stamp", stamp)
        obs = observations
        if isinstance(obs, (Sequence, Iterator)) and not isinstance(obs, (str, bytes)):
            obs = list(obs)  # else InstanceMap.update refuses it
        if points is None:
            if semantic is not None or colours is not None or point_observation is not None:
                raise ValueError("semantic, colours and point_observation need points")
            cloud = None
            if isinstance(obs, list) and obs and all(isinstance(o, Observation) for o in obs):
                sem = np.concatenate([o.semantic if o.semantic is not None else np.full(len(o), o.class_id)
                                      for o in obs]).astype(np.int64)
                col = (np.concatenate([o.colours for o in obs]) if all(o.colours is not None for o in obs)
                       else None)
                cloud = check_labelled_points(np.concatenate([o.points for o in obs]), sem, col,
                                              np.zeros(len(sem), np.int64))
            po = None
        else:
            if semantic is None:
                raise ValueError("semantic is required with points")
            n = len(check_points("points", points))
            po = (np.full(n, -1, np.int64) if point_observation is None
                  else check_labels("point_observation", point_observation, n, -1))
            if po.size and isinstance(obs, list) and po.max() >= len(obs):
                raise ValueError(f"point_observation indexes observation {po.max()}, but the frame has "
                                 f"{len(obs)}")
            cloud = check_labelled_points(points, semantic, colours, np.zeros(n, np.int64))
        if cloud is not None:
            voxel_indices(cloud[0], self.config.voxel_size)  # range check before anything changes
        ids = self.instance_map.update(obs, stamp)
        evicted = self.instance_map.last_evicted
        self.voxel_map.clear_instances(evicted)
        if cloud is None:  # a frame without observations and without a cloud
            return ids
        pts, sem, col, _ = cloud
        if po is None:  # the observations' own points
            inst = np.repeat(np.asarray(ids, np.int64), [len(o) for o in obs])
        else:
            inst = np.asarray(list(ids) + [0], np.int64)[po]  # index -1 reads the appended 0
        if evicted:
            inst = np.where(np.isin(inst, evicted), 0, inst)
        self.voxel_map._integrate(pts, sem, col, inst, stamp)
        return ids

    # ------------------------------------------------------------------ files
    def save(self, directory, scene_points: np.ndarray | None = None, label_ids=None,
             scene: str = "scene") -> dict[str, Path]:
        """Write the map to ``directory`` (see :mod:`.storage` for the files).

        Args:
            scene_points: ``(P, 3)`` float metres, the scene's points (e.g. the ScanNet mesh vertices); with
                them ScanNet-format instance predictions are written to ``directory/scannet``.
            label_ids: ``(C,)`` ScanNet label id of each class index (default: derived from ``class_names``).
            scene: scene name of the predictions (``scannet/SCENE.txt``).

        Returns:
            ``{"ply", "png", "json", "state"[, "scannet"]}`` paths written.
        """
        return save_map_files(directory, self.config, self.class_names, self.instance_map, self.voxel_map,
                              scene_points=scene_points, label_ids=label_ids, scene=scene)

    @classmethod
    def load(cls, directory) -> "SceneMap":
        """The map :meth:`save` wrote to ``directory``."""
        config, class_names, instance_map, voxel_map = load_map_files(directory)
        m = cls(config, class_names)
        m.instance_map, m.voxel_map = instance_map, voxel_map
        return m
