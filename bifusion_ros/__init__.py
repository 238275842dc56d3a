"""BiFusion ROS 2 adapters (imports bifusion_core first, so its OpenMP setting precedes torch)."""
import bifusion_core  # noqa: F401
