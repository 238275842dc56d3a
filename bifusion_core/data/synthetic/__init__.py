"""Procedural synthetic data (the project's embedded default: no data set ships with it).

* :func:`synthetic_room_cloud` -- a quick room point cloud for backbone benchmarks.
* :func:`generate_scene` / :class:`SyntheticSequence` -- furnished rooms rendered as RGB-D sequences with
  ScanNet200 ground truth; ``python -m bifusion_core.data.synthetic`` writes them to disk in ScanNet's layout
  (``python -m bifusion_ros.synthetic_bag`` writes them as rosbag2 recordings).
"""
from .export import ExportConfig, export_sequence
from .render import CameraConfig, RenderedFrame, Renderer
from .scene import OBJECT_CLASSES, Primitive, SceneConfig, SyntheticScene, generate_scene
from .sequence import SequenceConfig, SyntheticSequence, to_frame
from .trajectory import camera_poses

__all__ = ["synthetic_room_cloud", "ExportConfig", "export_sequence", "CameraConfig", "RenderedFrame", "Renderer",
           "OBJECT_CLASSES", "Primitive", "SceneConfig", "SyntheticScene", "generate_scene", "SequenceConfig",
           "SyntheticSequence", "to_frame", "camera_poses"]


def __getattr__(name):
    # synthetic_room_cloud returns torch tensors: import it (and torch) only when asked for
    if name == "synthetic_room_cloud":
        from .cloud import synthetic_room_cloud

        return synthetic_room_cloud
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
