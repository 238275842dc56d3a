"""BiFusion core: ROS-free model, data, training, evaluation, mapping and the frame pipeline."""
from . import openmp as _openmp

_openmp.configure()
