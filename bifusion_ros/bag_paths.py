"""Where rosbag2 bags are: the one naming rule the bag writer, the synthetic-bag CLI, replay and the demo share.

A rosbag2 bag is a **directory** holding ``metadata.yaml`` and the storage file(s). On the command line a bag
may be named by that directory or, as a file name, by ``NAME.mcap`` / ``NAME.db3``, which stands for the bag
directory ``NAME`` with MCAP / sqlite3 storage (``out/rec.mcap`` -> ``out/rec/``, holding ``rec.mcap``):

- :func:`bag_location` -- where a **new** bag goes, and its storage;
- :func:`scene_bag_path` -- the name of scene ``NAME``'s bag when one name is given for several scenes
  (``rec.mcap`` -> ``rec_NAME.mcap``);
- :func:`resolve_bag_path` -- the directory of an **existing** bag named in any of the accepted ways.

No ``rosbags`` import: these are path rules only.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["BAG_SUFFIXES", "STORAGES", "bag_location", "scene_bag_path", "resolve_bag_path"]

BAG_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
"""File-name suffix -> rosbag2 storage plugin it implies."""

STORAGES = ("mcap", "sqlite3")


def _split(path: Path) -> tuple[Path, str | None]:
    """``NAME.mcap`` -> (``NAME``, ``"mcap"``); ``NAME.db3`` -> (``NAME``, ``"sqlite3"``); else (path, None)."""
    storage = BAG_SUFFIXES.get(path.suffix.lower())
    return (path.with_suffix(""), storage) if storage else (path, None)


def bag_location(path, storage: str | None = None) -> tuple[Path, str]:
    """The bag directory a new bag named ``path`` goes to, and its storage (``"mcap"`` or ``"sqlite3"``).

    ``out/rec.mcap`` -> (``out/rec``, ``"mcap"``), ``out/rec.db3`` -> (``out/rec``, ``"sqlite3"``); a name
    without those suffixes is the directory itself, with ``storage`` (default ``"mcap"``).

    Raises:
        ValueError: a suffix that contradicts ``storage``, or an unknown ``storage``.
    """
    path = Path(path).expanduser()
    directory, inferred = _split(path)
    if inferred is not None:
        if storage is not None and storage != inferred:
            raise ValueError(f"{path}: suffix {path.suffix.lower()} contradicts storage {storage!r}")
        return directory, inferred
    storage = storage or "mcap"
    if storage not in STORAGES:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    return directory, storage


def scene_bag_path(path, name: str, n_scenes: int) -> Path:
    """The name of scene ``name``'s bag when ``path`` names the bags of ``n_scenes`` scenes: ``path`` itself
    for one scene, else ``path`` with ``_NAME`` appended before a ``.mcap`` / ``.db3`` suffix
    (``rec.mcap`` -> ``rec_synth0000_00.mcap``, ``rec`` -> ``rec_synth0000_00``)."""
    path = Path(path)
    if n_scenes == 1:
        return path
    stem, storage = _split(path)
    suffix = path.suffix if storage else ""
    return stem.with_name(f"{stem.name}_{name}{suffix}")


def resolve_bag_path(path) -> Path:
    """The directory of the existing rosbag2 bag ``path`` names: the bag directory, its ``metadata.yaml`` or a
    storage file in it, or ``NAME.mcap`` / ``NAME.db3`` for a bag directory ``NAME`` (what :func:`bag_location`
    makes of that name).

    Raises:
        FileNotFoundError: nothing of that name (message ``bag not found: PATH``).
        ValueError: a directory without ``metadata.yaml``, or a file that is not part of a bag.
    """
    p = Path(path).expanduser()
    if p.is_file() and (p.parent / "metadata.yaml").is_file():
        return p.parent
    if p.is_dir():
        if not (p / "metadata.yaml").is_file():
            raise ValueError(f"{p} is not a rosbag2 bag: it has no metadata.yaml (a bag recorded without one can "
                             "get it back with `ros2 bag reindex`)")
        return p
    directory, storage = _split(p)
    if storage is not None and (directory / "metadata.yaml").is_file():
        return directory
    if p.is_file():
        raise ValueError(f"{p} is a file without a metadata.yaml next to it; pass a rosbag2 bag directory")
    raise FileNotFoundError(f"bag not found: {p}")
