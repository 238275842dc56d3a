"""ScanNet / ScanNet200 class tables (the benchmark's ids and names) and raw-category mapping.

This module is the single place that holds the class lists. Ids are ScanNet's *label ids* (the ``id`` column of
``scannetv2-labels.combined.tsv``; the numbering used by ScanNet200, by ``label-filt/*.png`` and by the benchmark's
ground-truth files), so they are sparse (1 .. 1191). Training code uses *contiguous indices* 0 .. C-1 instead;
:class:`ClassSet` converts between the two, with :data:`IGNORE_INDEX` (-100, PyTorch's default ``ignore_index``)
for anything outside the set.

* :data:`SCANNET200` -- the 200 ScanNet200 benchmark classes (``VALID_CLASS_IDS_200`` / ``CLASS_LABELS_200``).
* :data:`SCANNET200_INSTANCE` -- the 198 classes its instance benchmark scores (wall and floor excluded).
* :data:`SCANNET20` / :data:`SCANNET20_INSTANCE` -- the classic 20-class benchmark (NYU40 ids) and its 18
  instance classes.
* :func:`label_ids` / :func:`index_lookup` -- between a class list's contiguous indices and ScanNet label ids.
* :data:`SCANNET200_SPLITS` -- the benchmark's head / common / tail split of the 200 classes
  (:func:`split_means` averages per-class figures over each).

Raw categories (free-text ``label`` strings of ``*.aggregation.json``) map to ids through the official TSV
(:func:`load_label_map`) or, without it, through :func:`raw_category_to_id` (exact names plus common aliases).
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100
"""Contiguous training index of points/pixels outside the class set (unlabelled, void, other)."""

STUFF_CLASSES = ("wall", "floor", "ceiling")
"""Surfaces that are labelled but never instances (ScanNet's instance benchmark leaves them out)."""

VALID_CLASS_IDS_200 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29, 31, 32, 33,
    34, 35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57, 58, 59, 62, 63, 64, 65,
    66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86, 87, 88, 89, 90, 93, 95, 96, 97, 98,
    99, 100, 101, 102, 103, 104, 105, 106, 107, 110, 112, 115, 116, 118, 120, 121, 122, 125, 128, 130, 131, 132,
    134, 136, 138, 139, 140, 141, 145, 148, 154, 155, 156, 157, 159, 161, 163, 165, 166, 168, 169, 170, 177, 180,
    185, 188, 191, 193, 195, 202, 208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276, 283, 286, 300,
    304, 312, 323, 325, 331, 342, 356, 370, 392, 395, 399, 408, 417, 488, 540, 562, 570, 572, 581, 609, 748, 776,
    1156, 1163, 1164, 1165, 1166, 1167, 1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175, 1176, 1178, 1179, 1180,
    1181, 1182, 1183, 1184, 1185, 1186, 1187, 1188, 1189, 1190, 1191,
)

CLASS_LABELS_200 = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair", "bed",
    "pillow", "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book", "armchair",
    "coffee table", "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes", "tv", "nightstand",
    "counter", "dresser", "stool", "cushion", "plant", "ceiling", "bathtub", "end table", "dining table",
    "keyboard", "bag", "backpack", "toilet paper", "printer", "tv stand", "whiteboard", "blanket",
    "shower curtain", "trash can", "closet", "stairs", "microwave", "stove", "shoe", "computer tower", "bottle",
    "bin", "ottoman", "bench", "board", "washing machine", "mirror", "copier", "basket", "sofa chair",
    "file cabinet", "fan", "laptop", "shower", "paper", "person", "paper towel dispenser", "oven", "blinds",
    "rack", "plate", "blackboard", "piano", "suitcase", "rail", "radiator", "recycling bin", "container",
    "wardrobe", "soap dispenser", "telephone", "bucket", "clock", "stand", "light", "laundry basket", "pipe",
    "clothes dryer", "guitar", "toilet paper holder", "seat", "speaker", "column", "bicycle", "ladder",
    "bathroom stall", "shower wall", "cup", "jacket", "storage bin", "coffee maker", "dishwasher",
    "paper towel roll", "machine", "mat", "windowsill", "bar", "toaster", "bulletin board", "ironing board",
    "fireplace", "soap dish", "kitchen counter", "doorframe", "toilet paper dispenser", "mini fridge",
    "fire extinguisher", "ball", "hat", "shower curtain rod", "water cooler", "paper cutter", "tray",
    "shower door", "pillar", "ledge", "toaster oven", "mouse", "toilet seat cover dispenser", "furniture",
    "cart", "storage container", "scale", "tissue box", "light switch", "crate", "power outlet", "decoration",
    "sign", "projector", "closet door", "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones",
    "dish rack", "broom", "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar",
    "purse", "vent", "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock",
    "music stand", "projector screen", "divider", "laundry detergent", "bathroom counter", "object",
    "bathroom vanity", "closet wall", "laundry hamper", "bathroom stall door", "ceiling light", "trash bin",
    "dumbbell", "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod", "coffee kettle", "structure",
    "shower head", "keyboard piano", "case of water bottles", "coat rack", "storage organizer", "folded chair",
    "fire alarm", "power strip", "calendar", "poster", "potted plant", "luggage", "mattress",
)

VALID_CLASS_IDS_20 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
CLASS_LABELS_20 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)

NON_INSTANCE_NAMES = ("wall", "floor")
"""Classes the instance benchmarks do not score (the ScanNet200 constants' ``VALID_PANOPTIC_IDS``)."""


@dataclass(frozen=True)
class ClassSet:
    """An ordered set of benchmark classes: ``ids[i]`` (sparse label id) is contiguous index ``i``, named
    ``names[i]``."""

    name: str
    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if len(self.ids) != len(self.names):
            raise ValueError(f"{self.name}: {len(self.ids)} ids but {len(self.names)} names")
        if len(set(self.ids)) != len(self.ids) or len(set(self.names)) != len(self.names):
            raise ValueError(f"{self.name}: duplicate ids or names")

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def id_to_index(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.ids)}

    @cached_property
    def id_to_name(self) -> dict[int, str]:
        return dict(zip(self.ids, self.names))

    @cached_property
    def name_to_id(self) -> dict[str, int]:
        return dict(zip(self.names, self.ids))

    @cached_property
    def _index_lut(self) -> np.ndarray:
        lut = np.full(max(self.ids) + 1, IGNORE_INDEX, np.int64)
        lut[list(self.ids)] = np.arange(len(self.ids))
        return lut

    def id_of(self, name: str) -> int:
        """Label id of a class name; ``KeyError`` naming the set when unknown."""
        try:
            return self.name_to_id[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a {self.name} class") from None

    def to_index(self, label_ids) -> np.ndarray:
        """Sparse label ids (any shape, any int dtype) -> contiguous indices int64, :data:`IGNORE_INDEX` outside."""
        ids = np.asarray(label_ids).astype(np.int64)
        out = np.full(ids.shape, IGNORE_INDEX, np.int64)
        ok = (ids >= 0) & (ids < len(self._index_lut))
        out[ok] = self._index_lut[ids[ok]]
        return out

    def to_id(self, indices) -> np.ndarray:
        """Contiguous indices -> sparse label ids int64; indices outside ``[0, C)`` become 0 (unlabelled)."""
        idx = np.asarray(indices).astype(np.int64)
        table = np.asarray(self.ids, np.int64)
        ok = (idx >= 0) & (idx < len(table))
        out = np.zeros(idx.shape, np.int64)
        out[ok] = table[idx[ok]]
        return out

    def subset(self, name: str, exclude: tuple[str, ...]) -> "ClassSet":
        """The same set without the named classes (order kept)."""
        keep = [(i, n) for i, n in zip(self.ids, self.names) if n not in exclude]
        return ClassSet(name, tuple(i for i, _ in keep), tuple(n for _, n in keep))


SCANNET200 = ClassSet("scannet200", VALID_CLASS_IDS_200, CLASS_LABELS_200)
SCANNET200_INSTANCE = SCANNET200.subset("scannet200_instance", NON_INSTANCE_NAMES)
SCANNET20 = ClassSet("scannet20", VALID_CLASS_IDS_20, CLASS_LABELS_20)
SCANNET20_INSTANCE = SCANNET20.subset("scannet20_instance", NON_INSTANCE_NAMES)

CLASS_SETS = {c.name: c for c in (SCANNET200, SCANNET200_INSTANCE, SCANNET20, SCANNET20_INSTANCE)}

# ScanNet200's head / common / tail split (by the number of labelled instances in the training scans), as the
# benchmark reports it; tail is every other ScanNet200 class.
_HEAD = frozenset((
    "armchair", "backpack", "bathroom stall", "bathroom vanity", "bathtub", "bed", "blackboard", "blinds",
    "board", "book", "bookshelf", "box", "cabinet", "ceiling", "chair", "closet", "closet wall", "clothes",
    "clothes dryer", "coffee table", "copier", "couch", "counter", "curtain", "desk", "door", "doorframe",
    "dresser", "file cabinet", "floor", "kitchen cabinet", "kitchen counter", "lamp", "mailbox", "mirror",
    "monitor", "nightstand", "object", "office chair", "picture", "pillow", "plant", "radiator", "recycling bin",
    "refrigerator", "shelf", "shower", "shower curtain", "shower wall", "sink", "sofa chair", "stair rail",
    "stairs", "stool", "stove", "table", "toilet", "towel", "trash can", "tv", "tv stand", "wall", "wardrobe",
    "washing machine", "whiteboard", "window",
))
_COMMON = frozenset((
    "bag", "basket", "bathroom cabinet", "bathroom counter", "bathroom stall door", "bench", "bicycle", "bin",
    "blanket", "bottle", "bulletin board", "cart", "ceiling light", "closet door", "coffee maker", "column",
    "computer tower", "container", "cushion", "decoration", "dining table", "dish rack", "dishwasher", "divider",
    "end table", "fan", "fireplace", "furniture", "jacket", "keyboard", "ladder", "laptop", "laundry basket",
    "laundry hamper", "ledge", "light", "machine", "mat", "mattress", "microwave", "mini fridge", "ottoman",
    "oven", "paper towel dispenser", "person", "piano", "pillar", "pipe", "potted plant", "printer",
    "projector screen", "rack", "rail", "range hood", "seat", "shoe", "shower door", "stand", "storage bin",
    "storage organizer", "structure", "suitcase", "telephone", "toilet paper", "trash bin", "vacuum cleaner",
    "water cooler", "windowsill",
))
SCANNET200_SPLITS = {"head": _HEAD, "common": _COMMON,
                     "tail": frozenset(CLASS_LABELS_200) - _HEAD - _COMMON}
"""``{"head", "common", "tail"}`` -> the ScanNet200 class names in that split (66 / 68 / 66)."""


def split_means(class_names, values) -> dict[str, dict]:
    """Per ScanNet200 split, the mean of ``values`` (``(C,)`` or ``(C, K)``, NaN left out) over the classes of
    ``class_names`` in it: ``{split: {"mean": float | list | None, "classes": n with a value}}``; splits without
    any of the classes are left out (so a class list outside ScanNet200 gives ``{}``)."""
    v = np.asarray(values, np.float64)
    out = {}
    for split, members in SCANNET200_SPLITS.items():
        rows = [i for i, n in enumerate(class_names) if str(n) in members]
        if not rows:
            continue
        sub = v[rows]
        has = ~np.isnan(sub) if sub.ndim == 1 else ~np.isnan(sub).all(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: no class of the split has a value
            mean = np.atleast_1d(np.nanmean(sub, axis=0))
        mean = [None if np.isnan(x) else float(x) for x in mean]
        out[split] = {"mean": mean[0] if sub.ndim == 1 else mean, "classes": int(has.sum())}
    return out
"""All tables by name (the ``--classes`` choices of the evaluation CLI)."""


def label_ids(class_names) -> np.ndarray:
    """``(C,)`` int64 ScanNet label id of each name of a class list (0 for a name outside ScanNet200: never
    evaluated). The inverse of :func:`index_lookup`."""
    return np.array([SCANNET200.name_to_id.get(str(n), 0) for n in class_names], np.int64)


def index_lookup(class_names) -> np.ndarray:
    """ScanNet label id -> contiguous index into ``class_names`` (``IGNORE_INDEX`` for other ids): an
    ``(max id + 1,)`` int64 table."""
    lut = np.full(max(SCANNET200.ids) + 1, IGNORE_INDEX, np.int64)
    for idx, name in enumerate(class_names):
        if name in SCANNET200.name_to_id:
            lut[SCANNET200.name_to_id[name]] = idx
    return lut


def get_class_set(name: str) -> ClassSet:
    """A table of :data:`CLASS_SETS` by name; ``ValueError`` listing the choices otherwise."""
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise ValueError(f"unknown class set {name!r}; choose one of {sorted(CLASS_SETS)}") from None


# Raw ScanNet categories that are not literally a ScanNet200 name (a small, common subset of the TSV).
RAW_ALIASES = {
    "sofa": "couch", "couches": "couch", "sofas": "couch", "bookcase": "bookshelf", "bookshelves": "bookshelf",
    "trashcan": "trash can", "garbage can": "trash can", "wastebasket": "trash can", "trash": "trash can",
    "television": "tv", "computer monitor": "monitor", "screen": "monitor", "night stand": "nightstand",
    "lamp base": "lamp", "table lamp": "lamp", "floor lamp": "lamp", "bed frame": "bed", "fridge": "refrigerator",
    "shelves": "shelf", "cardboard box": "box", "boxes": "box", "kitchen cabinets": "kitchen cabinet",
    "cabinets": "cabinet", "doors": "door", "windows": "window", "chairs": "chair", "tables": "table",
    "desks": "desk", "pillows": "pillow", "pictures": "picture", "books": "book", "plants": "plant",
    "flower pot": "potted plant", "rug": "mat", "carpet": "mat", "walls": "wall",
}


def raw_category_to_id(raw: str, table: ClassSet = SCANNET200) -> int:
    """Label id of a raw category without the TSV: an exact (case-insensitive) class name, an alias from
    :data:`RAW_ALIASES`, or a trailing plural ``s`` removed; 0 (unlabelled) when none applies."""
    key = " ".join(raw.strip().lower().split())
    for cand in (key, RAW_ALIASES.get(key, ""), key[:-1] if key.endswith("s") else ""):
        if cand in table.name_to_id:
            return table.name_to_id[cand]
    return 0


def load_label_map(tsv_path, source: str = "raw_category", target: str = "id") -> dict[str, int]:
    """``{raw category: label id}`` from ScanNet's ``scannetv2-labels.combined.tsv``.

    ``target="id"`` gives ScanNet200 ids; ``target="nyu40id"`` gives the ScanNet20 (NYU40) numbering.
    Raises ``FileNotFoundError``/``ValueError`` naming the file when it is missing or lacks the columns.
    """
    path = Path(tsv_path)
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames or source not in reader.fieldnames or target not in reader.fieldnames:
            raise ValueError(f"{path}: expected tab-separated columns {source!r} and {target!r}, "
                             f"found {reader.fieldnames}")
        out: dict[str, int] = {}
        for lineno, row in enumerate(reader, start=2):
            key, val = (row.get(source) or "").strip(), (row.get(target) or "").strip()
            if not key or not val:
                continue
            try:
                out.setdefault(key, int(float(val)))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: {target} {val!r} is not an integer") from None
    return out


def palette(n: int = 1200, seed: int = 7) -> np.ndarray:
    """A deterministic ``(n, 3)`` uint8 colour per label id (index 0 black), for visualisation."""
    rng = np.random.default_rng(seed)
    pal = rng.integers(40, 256, (n, 3)).astype(np.uint8)
    pal[0] = 0
    return pal
