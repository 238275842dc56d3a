"""Backend registry: ``torch`` (default, always there) and ``minkowski`` (when MinkowskiEngine imports)."""
from __future__ import annotations

from functools import lru_cache

BACKENDS = ("torch", "minkowski")


@lru_cache(maxsize=None)
def get_backend(name: str):
    """Return the backend object for ``name``; raises ``ValueError`` for unknown names and
    ``ImportError`` (with how to install it) when MinkowskiEngine is unavailable."""
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend()
    if name == "minkowski":
        from .minkowski_backend import MinkowskiBackend

        return MinkowskiBackend()
    raise ValueError(f"unknown sparse backend {name!r}; choose one of {BACKENDS}")


def available_backends() -> list[str]:
    names = ["torch"]
    try:
        get_backend("minkowski")
        names.append("minkowski")
    except ImportError:
        pass
    return names
