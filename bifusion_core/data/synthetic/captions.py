"""Words for the synthetic rooms' classes: the captions the stand-in CLIP towers are pre-trained on.

The stand-in towers (:mod:`bifusion_core.train.stand_in_clip`) learn to match image regions of the procedural
rooms with short captions: a template (:data:`TEMPLATES`) around one of the names of the region's class
(:data:`SYNONYMS`: the ScanNet200 name first, then everyday alternatives). What the text tower can understand
is exactly this vocabulary: a prompt with other words gets an embedding that means nothing.
"""
from __future__ import annotations

import numpy as np

from .scene import OBJECT_CLASSES, SHELL_CLASSES

CLASSES: tuple[str, ...] = SHELL_CLASSES + OBJECT_CLASSES
"""The 22 classes the generator produces, shell first (the label space of ``config/train/synthetic_small.yaml``)."""

SYNONYMS: dict[str, tuple[str, ...]] = {
    "wall": ("wall", "room wall"),
    "floor": ("floor", "ground", "flooring"),
    "ceiling": ("ceiling", "roof of the room"),
    "table": ("table", "dining table", "coffee table"),
    "chair": ("chair", "wooden chair", "seat"),
    "office chair": ("office chair", "swivel chair", "desk chair"),
    "bed": ("bed", "mattress"),
    "pillow": ("pillow", "cushion"),
    "nightstand": ("nightstand", "bedside table"),
    "lamp": ("lamp", "floor lamp", "light"),
    "couch": ("couch", "sofa"),
    "cabinet": ("cabinet", "cupboard", "dresser"),
    "bookshelf": ("bookshelf", "bookcase", "shelf"),
    "desk": ("desk", "writing desk"),
    "monitor": ("monitor", "screen", "computer monitor"),
    "keyboard": ("keyboard", "computer keyboard"),
    "door": ("door", "doorway"),
    "window": ("window", "glass window"),
    "picture": ("picture", "painting", "poster"),
    "trash can": ("trash can", "bin", "wastebasket"),
    "box": ("box", "cardboard box", "carton"),
    "plant": ("plant", "potted plant", "houseplant"),
}
"""Names per class; the first is the class name itself."""

TEMPLATES: tuple[str, ...] = (
    "a photo of a {name}.",
    "a {name}.",
    "a {name} in a room.",
    "the {name}.",
    "a picture of the {name}.",
    "{name}",
)
"""Caption templates; the first is ``Clip2DConfig.prompt_template``'s default."""


def caption(name: str, rng: np.random.Generator) -> str:
    """A random caption of class ``name``: a random template around a random one of its :data:`SYNONYMS`."""
    words = SYNONYMS[name]
    return TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(name=words[int(rng.integers(len(words)))])


def vocabulary() -> list[str]:
    """Every name the text tower is taught (class names and synonyms), in :data:`CLASSES` order."""
    return [w for c in CLASSES for w in SYNONYMS[c]]


def class_of(word: str) -> str | None:
    """The class a taught name belongs to (``None``: not in the vocabulary)."""
    w = word.strip().lower()
    for c in CLASSES:
        if w in SYNONYMS[c]:
            return c
    return None
