"""The labelled voxel map (:class:`LabelledVoxelMap`): per world voxel the semantic evidence, its label, the
instance id, the mean colour and when it was last seen, bounded to ``max_voxels`` voxels.

Every frame's labelled points (all of them, not only those of instances) are :meth:`~LabelledVoxelMap.integrate`\\ d
at once, vectorised (``np.unique`` on packed int64 voxel keys; no Python loop per point):

* **evidence**: per voxel and class the number of points labelled with that class (points labelled -1 add
  none); the **label** is the argmax (ties: lowest class id; -1 while a voxel has no evidence). Evidence is
  stored sparsely, one entry per (voxel, class) seen, so memory follows the classes actually observed.
* **instance**: the map id most of the frame's points in the voxel carry (ties: the larger, i.e. newer, id);
  points with id 0 leave it unchanged, so a voxel keeps the latest instance that covered it.
  :meth:`~LabelledVoxelMap.clear_instances` resets ids of evicted instances to 0.
* **colour**: the mean RGB of all points (rounded); **last_seen**: the latest stamp; **point count**.
* **memory cap**: at most ``max_voxels`` voxels. When a frame brings new voxels beyond the cap, voxels not in
  this frame are evicted, least recently seen first (smallest ``last_seen``; ties: fewest points, then the
  lowest key). A frame with more distinct voxels than the cap keeps its ``max_voxels`` most populated ones
  (ties: lowest key) and drops the other points.

Arrays returned by the accessors are ordered by voxel key (x, then y, then z index).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .config import check_float, check_int
from .observation import check_colours, check_labels, check_points
from .voxel_keys import point_keys, voxel_centres

CLASS_BITS = 20
"""Evidence entries pack ``slot << CLASS_BITS | class``: class ids must be below ``2**20``."""
_CLASS_MASK = (1 << CLASS_BITS) - 1
_INSTANCE_BITS = 38


def check_labelled_points(points, semantic, colours, instance_ids):
    """Validated ``(points (N,3) float64, semantic (N,) int64 >= -1, colours (N,3) uint8 or None,
    instance_ids (N,) int64 >= 0)``; ``ValueError`` naming the input otherwise."""
    points = check_points("points", points)
    n = len(points)
    semantic = check_labels("semantic", semantic, n, -1)
    if semantic.size and semantic.max() > _CLASS_MASK:
        raise ValueError(f"semantic class ids must be < {_CLASS_MASK + 1}, got {semantic.max()}")
    if colours is not None:
        colours = check_colours("colours", colours, n)
    instance_ids = check_labels("instance_ids", instance_ids, n, 0)
    if instance_ids.size and instance_ids.max() >= (1 << _INSTANCE_BITS):
        raise ValueError(f"instance_ids must be < 2**{_INSTANCE_BITS}, got {instance_ids.max()}")
    return points, semantic, colours, instance_ids


def _grown(a: np.ndarray, cap: int, fill) -> np.ndarray:
    out = np.full((cap,) + a.shape[1:], fill, a.dtype)
    out[:len(a)] = a
    return out


def _group_last(sorted_group: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in ``sorted_group``."""
    return np.flatnonzero(np.r_[sorted_group[1:] != sorted_group[:-1], True])


class LabelledVoxelMap:
    """Labelled voxels of the world (rules in the module docstring).

    Args:
        voxel_size: voxel edge, metres.
        max_voxels: most voxels kept.
    """

    def __init__(self, voxel_size: float = 0.05, max_voxels: int = 250_000):
        self.voxel_size = check_float("voxel_size", voxel_size, 0.0, 10.0, min_inclusive=False)
        self.max_voxels = check_int("max_voxels", max_voxels, 1)
        self.reset()

    def reset(self) -> None:
        """Forget every voxel."""
        self._cap = 0
        self._top = 0  # slots below it have been handed out at least once
        self._n_used = 0
        self._free = np.zeros(0, np.int64)
        self._key = np.zeros(0, np.int64)
        self._used = np.zeros(0, bool)
        self._last = np.zeros(0, np.float64)
        self._hits = np.zeros(0, np.int64)
        self._csum = np.zeros((0, 3), np.float64)
        self._cn = np.zeros(0, np.int64)
        self._inst = np.zeros(0, np.int64)
        self._label = np.zeros(0, np.int64)
        self._ikeys = np.zeros(0, np.int64)  # sorted voxel keys ...
        self._islots = np.zeros(0, np.int64)  # ... and their slots
        self._ev_keys = np.zeros(0, np.int64)  # sorted slot << CLASS_BITS | class
        self._ev_n = np.zeros(0, np.int64)

    # ------------------------------------------------------------------ integration
    def integrate(self, points: np.ndarray, semantic: np.ndarray, colours: np.ndarray | None,
                  instance_ids: np.ndarray, stamp: float) -> None:
        """Add one frame's labelled points.

        Args:
            points: ``(N, 3)`` float world metres.
            semantic: ``(N,)`` integer class index per point (-1: unknown, adds no evidence).
            colours: ``(N, 3)`` uint8 RGB, or None (the points then leave the colours unchanged).
            instance_ids: ``(N,)`` integer map instance id per point (0: none).
            stamp: seconds.
        """
        checked = check_labelled_points(points, semantic, colours, instance_ids)
        self._integrate(*checked, check_float("stamp", stamp))

    def _integrate(self, points, semantic, colours, instance_ids, stamp: float) -> None:
        if len(points) == 0:
            return
        ukeys, inv, cnt = np.unique(point_keys(points, self.voxel_size), return_inverse=True,
                                    return_counts=True)
        inv = inv.ravel()
        if len(ukeys) > self.max_voxels:  # keep the most populated voxels of this frame
            keep = np.sort(np.lexsort((ukeys, -cnt))[:self.max_voxels])
            remap = np.full(len(ukeys), -1, np.int64)
            remap[keep] = np.arange(len(keep))
            inv = remap[inv]
            m = inv >= 0
            inv, semantic, instance_ids = inv[m], semantic[m], instance_ids[m]
            colours = None if colours is None else colours[m]
            ukeys, cnt = ukeys[keep], cnt[keep]
        n_u = len(ukeys)
        slots = np.empty(n_u, np.int64)
        found = self._find(ukeys)
        hit = found >= 0
        slots[hit] = found[hit]
        n_new = int(n_u - hit.sum())
        room = self.max_voxels - self._n_used
        if n_new > room:
            self._evict(n_new - room, protect=slots[hit])
        if n_new:
            new_keys = ukeys[~hit]
            new_slots = self._allocate(n_new)
            slots[~hit] = new_slots
            self._key[new_slots] = new_keys
            self._used[new_slots] = True
            self._last[new_slots] = -np.inf
            self._hits[new_slots] = 0
            self._csum[new_slots] = 0.0
            self._cn[new_slots] = 0
            self._inst[new_slots] = 0
            self._label[new_slots] = -1
            pos = np.searchsorted(self._ikeys, new_keys)
            self._ikeys = np.insert(self._ikeys, pos, new_keys)
            self._islots = np.insert(self._islots, pos, new_slots)
            self._n_used += n_new

        self._hits[slots] += cnt
        self._last[slots] = np.maximum(self._last[slots], stamp)
        if colours is not None:
            for c in range(3):
                self._csum[slots, c] += np.bincount(inv, weights=colours[:, c], minlength=n_u)
            self._cn[slots] += cnt
        m = instance_ids > 0
        if m.any():
            pair, pair_n = np.unique((inv[m] << _INSTANCE_BITS) | instance_ids[m], return_counts=True)
            pu, pi = pair >> _INSTANCE_BITS, pair & ((1 << _INSTANCE_BITS) - 1)
            order = np.lexsort((pi, pair_n, pu))  # per voxel: most points, then largest id, last
            last = order[_group_last(pu[order])]
            self._inst[slots[pu[last]]] = pi[last]
        m = semantic >= 0
        if m.any():
            ek, ek_n = np.unique((slots[inv[m]] << CLASS_BITS) | semantic[m], return_counts=True)
            pos = np.searchsorted(self._ev_keys, ek)
            have = pos < len(self._ev_keys)
            have[have] = self._ev_keys[pos[have]] == ek[have]
            self._ev_n[pos[have]] += ek_n[have]
            self._ev_keys = np.insert(self._ev_keys, pos[~have], ek[~have])
            self._ev_n = np.insert(self._ev_n, pos[~have], ek_n[~have])
            self._relabel(np.unique(ek >> CLASS_BITS))

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each of the sorted ``keys`` (-1 where absent)."""
        out = np.full(len(keys), -1, np.int64)
        if len(self._ikeys) == 0:
            return out
        pos = np.minimum(np.searchsorted(self._ikeys, keys), len(self._ikeys) - 1)
        m = self._ikeys[pos] == keys
        out[m] = self._islots[pos[m]]
        return out

    def _allocate(self, n: int) -> np.ndarray:
        take = min(n, len(self._free))
        reused = self._free[len(self._free) - take:]
        self._free = self._free[:len(self._free) - take]
        rest = n - take
        if self._top + rest > self._cap:
            cap = min(self.max_voxels, max(2 * self._cap, self._top + rest, 1024))
            self._key, self._used = _grown(self._key, cap, 0), _grown(self._used, cap, False)
            self._last, self._hits = _grown(self._last, cap, -np.inf), _grown(self._hits, cap, 0)
            self._csum, self._cn = _grown(self._csum, cap, 0.0), _grown(self._cn, cap, 0)
            self._inst, self._label = _grown(self._inst, cap, 0), _grown(self._label, cap, -1)
            self._cap = cap
        fresh = np.arange(self._top, self._top + rest, dtype=np.int64)
        self._top += rest
        return np.concatenate([reused, fresh])

    def _evict(self, k: int, protect: np.ndarray) -> None:
        """Drop the ``k`` least recently seen voxels outside ``protect`` (ties: fewest points, lowest key)."""
        used = np.flatnonzero(self._used)
        guarded = np.zeros(self._cap, bool)
        guarded[protect] = True
        cand = used[~guarded[used]]
        if k < len(cand):
            seen = self._last[cand]
            t = np.partition(seen, k - 1)[k - 1]
            older, tie = cand[seen < t], cand[seen == t]
            tie = tie[np.lexsort((self._key[tie], self._hits[tie]))[:k - len(older)]]
            cand = np.concatenate([older, tie])
        gone = np.zeros(self._cap, bool)
        gone[cand] = True
        pos = np.searchsorted(self._ikeys, self._key[cand])
        self._ikeys, self._islots = np.delete(self._ikeys, pos), np.delete(self._islots, pos)
        keep = ~gone[self._ev_keys >> CLASS_BITS]
        self._ev_keys, self._ev_n = self._ev_keys[keep], self._ev_n[keep]
        self._used[cand] = False
        self._inst[cand] = 0
        self._free = np.concatenate([self._free, cand])
        self._n_used -= len(cand)

    def _relabel(self, slots: np.ndarray) -> None:
        """Recompute the argmax label of ``slots`` from their evidence."""
        flag = np.zeros(self._cap, bool)
        flag[slots] = True
        sel = flag[self._ev_keys >> CLASS_BITS]
        ek, en = self._ev_keys[sel], self._ev_n[sel]
        es, ec = ek >> CLASS_BITS, ek & _CLASS_MASK
        self._label[slots] = -1
        if len(ek) == 0:
            return
        # per slot: most points first, then the lowest class (entries are sorted by slot, then class)
        order = np.lexsort((-ec, en, es))
        last = order[_group_last(es[order])]
        self._label[es[last]] = ec[last]

    def clear_instances(self, ids) -> None:
        """Set the instance id of voxels carrying any of ``ids`` to 0 (e.g. after the map evicted them)."""
        ids = np.asarray(list(ids), np.int64)
        if ids.size and self._cap:
            self._inst[self._used & np.isin(self._inst, ids)] = 0

    # ------------------------------------------------------------------ accessors (ordered by key)
    def __len__(self) -> int:
        return self._n_used

    @property
    def keys(self) -> np.ndarray:
        """``(V,)`` int64 sorted voxel keys (:mod:`.voxel_keys`)."""
        return self._ikeys.copy()

    def centres(self) -> np.ndarray:
        """``(V, 3)`` float64 voxel centres, metres."""
        return voxel_centres(self._ikeys, self.voxel_size)

    @property
    def labels(self) -> np.ndarray:
        """``(V,)`` int64 argmax class (-1: no evidence)."""
        return self._label[self._islots]

    @property
    def instance_ids(self) -> np.ndarray:
        """``(V,)`` int64 map instance id (0: none)."""
        return self._inst[self._islots]

    @property
    def colours(self) -> np.ndarray:
        """``(V, 3)`` uint8 mean colour (0 where no coloured point was seen)."""
        n = self._cn[self._islots][:, None]
        mean = np.divide(self._csum[self._islots], n, out=np.zeros((len(n), 3)), where=n > 0)
        return np.clip(np.rint(mean), 0, 255).astype(np.uint8)

    @property
    def last_seen(self) -> np.ndarray:
        """``(V,)`` float64 latest stamp, seconds."""
        return self._last[self._islots]

    @property
    def point_counts(self) -> np.ndarray:
        """``(V,)`` int64 points integrated per voxel."""
        return self._hits[self._islots]

    def class_counts(self, num_classes: int | None = None) -> np.ndarray:
        """``(V, C)`` int64 dense evidence (C: ``num_classes``, default the largest class seen + 1)."""
        rows = self._rows_of(self._ev_keys >> CLASS_BITS)
        cls = self._ev_keys & _CLASS_MASK
        c = int(cls.max()) + 1 if cls.size else 0
        c = c if num_classes is None else check_int("num_classes", num_classes, c)
        out = np.zeros((len(self._ikeys), c), np.int64)
        out[rows, cls] = self._ev_n
        return out

    def lookup(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` int64 row (into the key-ordered arrays) of the voxel of each of ``points (N, 3)``, -1 where
        that voxel is not in the map."""
        keys = point_keys(check_points("points", points), self.voxel_size)
        if len(self._ikeys) == 0:
            return np.full(len(keys), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._ikeys, keys), len(self._ikeys) - 1)
        return np.where(self._ikeys[pos] == keys, pos, -1)

    @property
    def nbytes(self) -> int:
        """Bytes held by the map's arrays."""
        return sum(a.nbytes for a in (self._free, self._key, self._used, self._last, self._hits, self._csum,
                                      self._cn, self._inst, self._label, self._ikeys, self._islots,
                                      self._ev_keys, self._ev_n))

    def _rows_of(self, slots: np.ndarray) -> np.ndarray:
        row = np.full(self._cap, -1, np.int64)
        row[self._islots] = np.arange(len(self._islots))
        return row[slots]

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole state as key-ordered arrays (:meth:`from_arrays` restores it exactly)."""
        s = self._islots
        return {"keys": self._ikeys.copy(), "last_seen": self._last[s], "point_counts": self._hits[s],
                "colour_sum": self._csum[s], "colour_count": self._cn[s], "instance": self._inst[s],
                "evidence_row": self._rows_of(self._ev_keys >> CLASS_BITS),
                "evidence_class": self._ev_keys & _CLASS_MASK, "evidence_count": self._ev_n.copy()}

    @classmethod
    def from_arrays(cls, voxel_size: float, max_voxels: int,
                    arrays: Mapping[str, np.ndarray]) -> "LabelledVoxelMap":
        """Rebuild a map from :meth:`to_arrays`' output."""
        m = cls(voxel_size, max_voxels)
        try:
            keys = np.asarray(arrays["keys"], np.int64)
            n = len(keys)
            if n > m.max_voxels:
                raise ValueError(f"saved voxel map has {n} voxels, more than max_voxels={m.max_voxels}")
            if n and (np.diff(keys) <= 0).any():
                raise ValueError("saved voxel keys are not sorted and unique")
            slots = m._allocate(n)
            m._key[slots], m._used[slots] = keys, True
            m._last[slots] = np.asarray(arrays["last_seen"], np.float64)
            m._hits[slots] = np.asarray(arrays["point_counts"], np.int64)
            m._csum[slots] = np.asarray(arrays["colour_sum"], np.float64).reshape(n, 3)
            m._cn[slots] = np.asarray(arrays["colour_count"], np.int64)
            m._inst[slots] = np.asarray(arrays["instance"], np.int64)
            m._label[slots] = -1
            m._ikeys, m._islots, m._n_used = keys.copy(), slots, n
            rows = np.asarray(arrays["evidence_row"], np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise ValueError("saved evidence refers to voxels that are not in the map")
            ev = (slots[rows] << CLASS_BITS) | np.asarray(arrays["evidence_class"], np.int64)
            order = np.argsort(ev, kind="stable")
            m._ev_keys, m._ev_n = ev[order], np.asarray(arrays["evidence_count"], np.int64)[order]
        except KeyError as exc:
            raise ValueError(f"saved voxel map lacks {exc}") from None
        m._relabel(slots)
        return m
