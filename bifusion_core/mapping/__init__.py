"""The online 3D map (DESIGN.md §5b), ROS-free, in the world frame.

* :class:`InstanceMap` (:mod:`.instance_map`): ESAM-style merging of each frame's :class:`Observation`\\ s into
  instances with persistent ids, voxel sets, boxes, class evidence and merge embeddings.
* :class:`LabelledVoxelMap` (:mod:`.voxel_map`): per-voxel semantic evidence, label, instance id and colour of
  every integrated point, capped in memory.
* :class:`SceneMap` (:mod:`.scene_map`): both, fed together per frame; saved to / loaded from a directory
  (PLY, JSON, exact state, ScanNet-format predictions: :mod:`.storage`).
* :mod:`.online`: observations from a frame's result or from ground truth (oracle), and
  :class:`OnlineMapScorer` (ESAM's online protocol: scene AP of the map, ID consistency, fragmentation, switches).
* :class:`MapConfig` (:mod:`.config`); voxel keys (:mod:`.voxel_keys`); box / voxel IoU (:mod:`.overlap`).
"""
from .config import MapConfig
from .instance_map import InstanceMap, MapInstance
from .observation import Observation
from .online import OnlineMapScorer, observations_from_result, oracle_observations
from .overlap import box_iom, box_iou, voxel_iou
from .scene_map import SceneMap
from .voxel_keys import pack_keys, point_keys, unpack_keys, voxel_centres, voxel_set
from .voxel_map import LabelledVoxelMap

__all__ = ["MapConfig", "InstanceMap", "MapInstance", "Observation", "OnlineMapScorer", "observations_from_result",
           "oracle_observations", "box_iom", "box_iou", "voxel_iou", "SceneMap",
           "pack_keys", "point_keys", "unpack_keys", "voxel_centres", "voxel_set", "LabelledVoxelMap"]
