"""Nested dataclass configs <-> plain dicts (YAML/JSON/checkpoints), with clear errors for unknown keys."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(tp) -> type | None:
    """The dataclass inside ``tp`` (``X``, ``X | None``, ``Optional[X]``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass ``cls`` from a dict, recursing into nested dataclass fields.

    Raises ``ValueError`` naming the key path for unknown keys or non-dict sections; the dataclasses'
    own ``__post_init__`` validation reports bad values.
    """
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    types = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for key, val in data.items():
        sub = _dataclass_in(types.get(key))
        if sub is not None and isinstance(val, dict):
            val = from_dict(sub, val, f"{where}.{key}")
        elif isinstance(val, list) and typing.get_origin(types.get(key)) is tuple:
            val = tuple(val)
        kwargs[key] = val
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def to_dict(obj) -> dict:
    """Dataclass -> plain dict of builtins (tuples become lists)."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(obj)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place; returns it."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data
