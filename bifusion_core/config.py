"""Config dataclasses: typed, validated fields, and nested configs <-> plain dicts (YAML/JSON/checkpoints).

Declare a config with :func:`configclass` (instead of ``@dataclass``; ``frozen=True`` etc. pass through) and,
where a field needs a range or a set of values, :func:`spec` (instead of a plain default or ``field()``)::

    @configclass
    class LogConfig:
        log_every: int = spec(10, gt=0)
        val_frames: int | None = spec(None, ge=1)
        mode: str = spec("fast", choices=("fast", "exact"))

        def __post_init__(self):  # optional: cross-field rules only; the fields are already checked
            ...

On construction every field is first checked against its annotation and coerced (:func:`check_value`):
``int`` takes ints (numpy ints too), never a bool or a float; ``float`` takes ints and floats (converted to
``float``), never a bool or a string, and must be finite unless the field's spec says ``allow_inf=True`` (NaN
never passes); ``bool`` takes only bools; ``str`` takes strings (and ``os.PathLike``, converted); ``X | None``;
``Literal[...]``; ``tuple[X, ...]`` / ``tuple[X, Y]`` and ``list[X]`` take lists or tuples (converted, each
element checked, fixed lengths enforced); ``dict[K, V]``; a nested config takes an instance or a mapping (built
with :func:`from_dict`), anything else is an error naming the key. Then the field's spec rules (``ge``, ``gt``,
``le``, ``lt``, ``choices``; for a tuple or list they apply to every element; ``None`` skips them), then the
class's own ``__post_init__``. Errors are :class:`FieldError` (a ``ValueError``) naming the field;
:func:`from_dict` prefixes the key path (``config.optim.lr must be > 0, got 0``).

Fields are checked at construction; assigning to an attribute later is not checked.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

RULE_KEY = "bifusion.config.rule"


class FieldError(ValueError):
    """A config field has a bad value: ``key`` (the field, or a dotted key path) and ``reason``
    (``"must be >= 1, got 0"``); ``str()`` is ``key + sep + reason`` (``"n must be >= 1, got 0"``,
    ``"config.optim: expected a mapping for OptimConfig, got int 3"``)."""

    def __init__(self, key: str, reason: str, sep: str = " "):
        self.key, self.reason, self.sep = key, reason, sep
        super().__init__(f"{key}{sep}{reason}")


# ---------------------------------------------------------------------------------------- scalar checks
def _show(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int; ``ValueError`` naming ``name`` for a bool, a float or a value out of range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise FieldError(name, f"must be an int, got {_show(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise FieldError(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise FieldError(name, f"must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value, minimum: float | None = None, maximum: float | None = None,
                min_inclusive: bool = True, max_inclusive: bool = True, allow_inf: bool = False) -> float:
    """``value`` as a finite Python float (ints accepted, bools and strings not; ``allow_inf``: +-inf pass);
    ``ValueError`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise FieldError(name, f"must be a number, got {_show(value)}")
    value = float(value)
    if math.isnan(value) or (not allow_inf and math.isinf(value)):
        raise FieldError(name, f"must be finite, got {value}")
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        raise FieldError(name, f"must be {'>=' if min_inclusive else '>'} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        raise FieldError(name, f"must be {'<=' if max_inclusive else '<'} {maximum}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise FieldError(name, f"must be a bool, got {_show(value)}")
    return bool(value)


# ---------------------------------------------------------------------------------------- field rules
@dataclasses.dataclass(frozen=True)
class Rule:
    """Range / value rules of one field (see :func:`spec`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    allow_inf: bool = False

    def check(self, key: str, value) -> None:
        if value is None:
            return
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                self.check(f"{key}[{i}]", v)
            return
        if self.choices is not None and value not in self.choices:
            raise FieldError(key, f"must be one of {self.choices}, got {value!r}")
        for bound, ok, op in ((self.ge, lambda v, b: v >= b, ">="), (self.gt, lambda v, b: v > b, ">"),
                              (self.le, lambda v, b: v <= b, "<="), (self.lt, lambda v, b: v < b, "<")):
            if bound is not None and not ok(value, bound):
                raise FieldError(key, f"must be {op} {bound}, got {value}")


def spec(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, ge=None, gt=None, le=None, lt=None,
         choices=None, allow_inf: bool = False, **field_kw):
    """A dataclass field (``dataclasses.field``) with validation rules, checked by :func:`configclass` after the
    type: ``ge`` / ``gt`` / ``le`` / ``lt`` bounds, ``choices`` (allowed values), ``allow_inf`` (a ``float``
    field may be +-inf). For a tuple or list field the rules apply to each element; ``None`` skips them."""
    rule = Rule(ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices is not None else None,
                allow_inf=allow_inf)
    meta = dict(field_kw.pop("metadata", None) or {})
    meta[RULE_KEY] = rule
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta, **field_kw)


# ---------------------------------------------------------------------------------------- type checks
_NONE = type(None)


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _describe(tp) -> str:
    if tp is _NONE:
        return "None"
    if _is_union(tp):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_value(key: str, value, tp, allow_inf: bool = False):
    """``value`` checked against the annotation ``tp`` and coerced (see the module doc); :class:`FieldError`
    naming ``key`` if it does not fit."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None:
            if _NONE in args:
                return None
            raise FieldError(key, f"must be {_describe(tp)}, got None")
        alts = [a for a in args if a is not _NONE]
        if len(alts) == 1:
            return check_value(key, value, alts[0], allow_inf)
        for a in alts:
            try:
                return check_value(key, value, a, allow_inf)
            except FieldError:
                pass
        raise FieldError(key, f"must be {_describe(tp)}, got {_show(value)}")
    if origin is typing.Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise FieldError(key, f"must be one of {args}, got {value!r}")
    if tp is bool:
        return check_bool(key, value)
    if tp is int:
        return check_int(key, value)
    if tp is float:
        return check_float(key, value, allow_inf=allow_inf)
    if tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise FieldError(key, f"must be a str, got {_show(value)}")
        return value
    if origin in (tuple, list) or tp in (tuple, list):
        kind = origin or tp
        if not isinstance(value, (tuple, list)):
            raise FieldError(key, f"must be a list of {_describe(tp)}, got {_show(value)}")
        if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise FieldError(key, f"must have {len(args)} entries ({_describe(tp)}), got {len(value)}: "
                                      f"{list(value)!r}")
            items = [check_value(f"{key}[{i}]", v, a, allow_inf) for i, (v, a) in enumerate(zip(value, args))]
        elif args:
            items = [check_value(f"{key}[{i}]", v, args[0], allow_inf) for i, v in enumerate(value)]
        else:
            items = list(value)
        return tuple(items) if kind is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise FieldError(key, f"must be a mapping, got {_show(value)}")
        if not args:
            return dict(value)
        return {check_value(f"{key} key", k, args[0]): check_value(f"{key}[{k!r}]", v, args[1], allow_inf)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, dict(value), key)
        raise FieldError(key, f"expected a mapping for {tp.__name__}, got {_show(value)}", ": ")
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise FieldError(key, f"must be a {tp.__name__}, got {_show(value)}")
        return value
    return value  # a typing construct this checker does not know: not checked


_HINTS: dict[type, dict[str, Any]] = {}


def _field_types(cls) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def validate_fields(obj) -> None:
    """Check and coerce every init field of the dataclass instance ``obj`` (type, then spec rules)."""
    hints = _field_types(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        rule = f.metadata.get(RULE_KEY)
        value = getattr(obj, f.name)
        new = check_value(f.name, value, hints.get(f.name, Any), rule.allow_inf if rule else False)
        if rule is not None:
            rule.check(f.name, new)
        if new is not value:
            object.__setattr__(obj, f.name, new)  # frozen classes too


def configclass(cls=None, /, **dataclass_kw):
    """``@dataclass`` (same keyword arguments, e.g. ``frozen=True``) whose ``__post_init__`` first validates
    every field (:func:`validate_fields`), then runs the class's own ``__post_init__`` (cross-field rules)."""

    def wrap(c):
        own = c.__dict__.get("__post_init__", getattr(c, "_config_own_post_init", None))

        def __post_init__(self) -> None:
            validate_fields(self)
            if own is not None:
                own(self)

        __post_init__.__qualname__ = f"{c.__qualname__}.__post_init__"
        __post_init__.__doc__ = own.__doc__ if own is not None else None
        c.__post_init__ = __post_init__
        c._config_own_post_init = own
        return dataclasses.dataclass(c, **dataclass_kw)

    return wrap if cls is None else wrap(cls)


def is_configclass(cls) -> bool:
    return dataclasses.is_dataclass(cls) and "_config_own_post_init" in getattr(cls, "__dict__", {})


# ---------------------------------------------------------------------------------------- dicts
def _dataclass_in(tp) -> type | None:
    """The dataclass inside ``tp`` (``X``, ``X | None``, ``Optional[X]``), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass ``cls`` from a dict, recursing into nested dataclass fields (``None``: the defaults).

    Raises ``ValueError`` naming the key path (``where`` is its root) for unknown keys, non-mapping sections
    and bad values (the fields' checks of :func:`configclass` and the classes' own ``__post_init__``).
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise FieldError(where, f"expected a mapping for {cls.__name__}, got {_show(data)}", ": ")
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for key, val in data.items():
        tp = types_.get(key)
        sub = _dataclass_in(tp)
        if sub is not None and not isinstance(val, sub) and not (val is None and _is_union(tp) and _NONE in typing.get_args(tp)):
            val = from_dict(sub, val, f"{where}.{key}")
        kwargs[key] = val
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise FieldError(f"{where}.{exc.key}", exc.reason, exc.sep) from exc
    except (TypeError, ValueError) as exc:
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


def one_line(text) -> str:
    """``text`` with its line breaks and runs of spaces collapsed (for one-line error messages)."""
    return " ".join(str(text).split())


_YAML_LOADER = None


def load_yaml(text: str):
    """``yaml.safe_load`` that also reads exponents without a dot as floats (``1e-4``; YAML 1.1 reads them as
    strings). Raises ``yaml.YAMLError``."""
    global _YAML_LOADER
    import re

    import yaml

    if _YAML_LOADER is None:
        class Loader(yaml.SafeLoader):
            pass

        Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
            r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
        _YAML_LOADER = Loader
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader subclass


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML, :func:`load_yaml`) to a nested dict, in place;
    returns it. ``ValueError`` naming the override for a malformed one or a value that is not valid YAML."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: empty key")
        node = data
        for p in parts[:-1]:
            if node.get(p) is None:  # absent, or an empty YAML section
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({one_line(exc)})") from exc
    return data
