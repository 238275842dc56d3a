"""ScanNet / ScanNet200: class tables, exported-frame and labelled-cloud readers (training crops: ``train.data``)."""
from .classes import (CLASS_SETS, IGNORE_INDEX, SCANNET20, SCANNET20_INSTANCE, SCANNET200, SCANNET200_INSTANCE,
                      ClassSet, get_class_set, load_label_map, raw_category_to_id)
from .frames import FrameReaderConfig, ScanNetFrames, list_scenes
from .scene import ScenePoints, load_scene, read_ply_vertices, write_labelled_cloud

__all__ = ["CLASS_SETS", "IGNORE_INDEX", "SCANNET20", "SCANNET20_INSTANCE", "SCANNET200", "SCANNET200_INSTANCE",
           "ClassSet", "get_class_set", "load_label_map", "raw_category_to_id", "FrameReaderConfig", "ScanNetFrames",
           "list_scenes", "ScenePoints", "load_scene", "read_ply_vertices", "write_labelled_cloud"]
