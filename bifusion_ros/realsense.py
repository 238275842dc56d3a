"""realsense2_camera's parameter and topic names, which changed in release 4.55 (ROS-free; used by
``launch/realsense.launch.py``).

=========================  =====================================  ==========================================
realsense-ros              profiles                               topics of node ``/camera/camera``
=========================  =====================================  ==========================================
4.51, 4.54                 ``rgb_camera.profile``,                relative to the namespace:
                           ``depth_module.profile``               ``/camera/color/image_raw``, ...
4.55 and newer             ``rgb_camera.color_profile``,          private (``~/``):
                           ``depth_module.depth_profile``         ``/camera/camera/color/image_raw``, ...
=========================  =====================================  ==========================================

A parameter the driver does not declare is ignored by it without a word, so with the wrong names the camera
streams its default profile and the node, subscribed to topics nobody publishes, gets no frames.
:func:`detect_version` reads the installed driver's ``package.xml``; the launch argument ``realsense_version``
overrides it.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = [
    "PRIVATE_TOPICS_SINCE",
    "DEFAULT_VERSION",
    "parse_version",
    "detect_version",
    "camera_parameters",
    "camera_topics",
]

PRIVATE_TOPICS_SINCE = (4, 55)
"""First realsense-ros release with ``*.color_profile`` / ``*.depth_profile`` and ``~/`` topic names."""

DEFAULT_VERSION = "4.55"
"""Assumed when the driver is not installed where the launch file runs (the node's default topic names)."""


def parse_version(text) -> tuple[int, ...]:
    """``"4.54.1"`` -> ``(4, 54, 1)``; ``ValueError`` for anything that is not dotted integers (at least two)."""
    s = str(text).strip()
    if not re.fullmatch(r"\d+(\.\d+)+", s):
        raise ValueError(f"not a realsense-ros version (like 4.54.1 or 4.55): {text!r}")
    return tuple(int(x) for x in s.split("."))


def detect_version(package_xml) -> str | None:
    """The ``<version>`` of realsense2_camera's ``package.xml`` at ``package_xml`` (a path, or None when the
    package is not installed), or None when it cannot be read."""
    if package_xml is None:
        return None
    try:
        root = ET.parse(Path(package_xml)).getroot()
        text = (root.findtext("version") or "").strip()
        parse_version(text)
        return text
    except (OSError, ET.ParseError, ValueError):
        return None


def _private_topics(version: str) -> bool:
    return parse_version(version)[:2] >= PRIVATE_TOPICS_SINCE


def camera_parameters(version: str, width: int = 640, height: int = 480, fps: int = 30) -> dict:
    """realsense2_camera parameters for colour and depth at ``width`` x ``height`` @ ``fps``, depth aligned to
    colour (``align_depth.enable``: the aligned topics exist only then), synchronised frames, no point cloud,
    the camera's own TF published; profile names as ``version`` spells them."""
    profile = f"{int(width)}x{int(height)}x{int(fps)}"
    if _private_topics(version):
        names = {"rgb_camera.color_profile": profile, "depth_module.depth_profile": profile}
    else:
        names = {"rgb_camera.profile": profile, "depth_module.profile": profile}
    return {
        "camera_name": "camera",
        "enable_color": True,
        "enable_depth": True,
        **names,
        "align_depth.enable": True,
        "enable_sync": True,
        "pointcloud.enable": False,
        "publish_tf": True,
    }


def camera_topics(version: str, namespace: str = "camera", name: str = "camera") -> dict[str, str]:
    """The bifusion node's input topic parameters for a driver node ``/<namespace>/<name>`` of ``version``."""
    base = f"/{namespace.strip('/')}/{name}" if _private_topics(version) else f"/{namespace.strip('/')}"
    return {
        "color_topic": f"{base}/color/image_raw",
        "depth_topic": f"{base}/aligned_depth_to_color/image_raw",
        "camera_info_topic": f"{base}/aligned_depth_to_color/camera_info",
    }
