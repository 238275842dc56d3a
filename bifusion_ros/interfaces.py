"""The package's custom messages (``msg/*.msg``) for ``rosbags``.

colcon generates ``bifusion_ros.msg`` from the same files for rclpy. Without ROS, :func:`typestore`
parses those files at run time and registers them next to the standard ROS 2 types, so bags can hold
``bifusion_ros/msg/InstanceArray`` messages.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "bifusion_ros"


def msg_dir() -> Path:
    """Directory holding ``Instance.msg`` and ``InstanceArray.msg``: the source tree, or the install prefix."""
    candidates = [Path(__file__).resolve().parents[1] / "msg", Path(sys.prefix) / "share" / PACKAGE / "msg"]
    try:  # a colcon install
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory(PACKAGE)) / "msg")
    except Exception:  # noqa: BLE001 - ament_index is absent or the package is not installed with colcon
        pass
    for path in candidates:
        if (path / "InstanceArray.msg").is_file():
            return path
    raise FileNotFoundError(f"{PACKAGE} message definitions not found; looked in {[str(c) for c in candidates]}")


def message_definitions() -> dict[str, str]:
    """``{'bifusion_ros/msg/Instance': text, ...}`` read from the ``.msg`` files."""
    return {f"{PACKAGE}/msg/{p.stem}": p.read_text() for p in sorted(msg_dir().glob("*.msg"))}


def register(store) -> None:
    """Register the package's messages with a ``rosbags`` typestore (idempotent)."""
    from rosbags.typesys import get_types_from_msg

    types = {}
    for name, text in message_definitions().items():
        types.update(get_types_from_msg(text, name))
    new = {k: v for k, v in types.items() if k not in store.fielddefs}
    if new:
        store.register(new)


@lru_cache(maxsize=None)
def typestore(distro: str = "ROS2_HUMBLE"):
    """A ``rosbags`` typestore of the given ROS 2 distribution with the package's messages registered."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(getattr(Stores, distro))
    register(store)
    return store
