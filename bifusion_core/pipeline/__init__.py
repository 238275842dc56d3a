"""ROS-free inference pipeline: frame in, labelled points out."""
from .processor import FrameProcessor, default_checkpoint, pick_device
from .types import Frame, FrameResult

__all__ = ["Frame", "FrameResult", "FrameProcessor", "default_checkpoint", "pick_device"]
