"""Class names / open-vocabulary prompts as users type them (CLI options, launch arguments, ROS parameters).

One parser (:func:`parse_class_list`) and one rule set (:func:`check_class_names`) for every entry point: the
model's :meth:`~bifusion_core.models.bifusion.BiFusionModel.set_classes` checks the names it is given, so a
list that reaches it from anywhere obeys the same rules.
"""
from __future__ import annotations

MAX_CLASSES = 2048
"""Most classes of one label space (LVIS has 1,203; ScanNet200 200): each open-vocabulary prompt costs a text
encoding and a column of every frame's logits."""

MAX_NAME_LENGTH = 200
"""Longest class name / prompt in characters (CLIP's tokenizer keeps 77 tokens anyway)."""


def check_class_names(names) -> list[str]:
    """Validate a class list; returns it as a list of stripped strings.

    Raises:
        ValueError: not a list/tuple of strings, empty, an empty or over-long name, a repeated name (two equal
        prompts make ties), or more than :data:`MAX_CLASSES` names.
    """
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"class names must be a list of strings, got {type(names).__name__}")
    if not names:
        raise ValueError("the class list is empty")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} class names; at most {MAX_CLASSES} are supported")
    out, seen = [], set()
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ValueError(f"class name {i} must be a string, got {type(name).__name__} {name!r}")
        name = name.strip()
        if not name:
            raise ValueError(f"class name {i} is empty")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"class name {i} has {len(name)} characters; at most {MAX_NAME_LENGTH}")
        if name in seen:
            raise ValueError(f"class name {name!r} is given twice")
        seen.add(name)
        out.append(name)
    return out


def parse_class_list(text) -> list[str]:
    """A user's class list -> list of strings: ``""`` -> ``[]``; ``"[chair, 'coffee table']"`` (YAML flow
    list) or ``"chair, coffee table"`` (comma separated) -> ``['chair', 'coffee table']``; a list/tuple is
    taken as is. A non-empty result obeys :func:`check_class_names`.

    Raises:
        ValueError: a YAML list holding something other than non-empty strings, an empty item, or a list
        :func:`check_class_names` refuses.
    """
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        s = str(text).strip()
        if not s:
            return []
        if s.startswith("["):
            import yaml

            try:
                items = yaml.safe_load(s)
            except yaml.YAMLError as exc:
                raise ValueError(f"not a valid list {text!r}: {exc.problem if hasattr(exc, 'problem') else exc}") from exc
            if not isinstance(items, list):
                raise ValueError(f"not a list: {text!r}")
        else:
            items = s.split(",")
    if not items:
        return []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"class names must be strings, got {item!r} in {text!r}")
        if not item.strip():
            raise ValueError(f"empty class name in {text!r}")
    return check_class_names(items)
