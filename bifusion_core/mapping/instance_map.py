"""The online instance map (:class:`InstanceMap`): ESAM-style merging of each frame's instances into a map of
persistent instances, in the world frame.

Per :meth:`InstanceMap.update` (one frame):

1. Observations with fewer than ``min_points`` points are ignored (their id is 0). The others are voxelised at
   ``voxel_size`` (a set of integer voxel keys, :mod:`.voxel_keys`).
2. **Duplicates within the frame** are resolved first: the new-vs-new score matrix is computed as below and
   every pair scoring above ``merge_threshold`` is joined (single linkage, i.e. the connected components of
   those pairs; the order of the pairs does not matter). Each component becomes one *group* holding its
   members' union of voxels and their averaged features, with merge count = number of members; all its
   observations get the same id.
3. **Memory vs groups**: score = cosine(embeddings) x geometric overlap, where the cosine is 1 when either
   side has no embedding and the overlap is the IoU of the axis-aligned voxel boxes (``overlap="box_iou"``,
   as ESAM), their intersection over the smaller box (``"box_iom"``) or the IoU of the voxel sets
   (``"voxel_iou"``); zero where the classes (argmax of the class evidence)
   disagree unless ``class_agnostic``. Scores at or below ``merge_threshold`` are zeroed, the rest go to the
   Hungarian assignment (``scipy.optimize.linear_sum_assignment``, maximising the total score), and assigned
   pairs scoring above the threshold merge: voxel sets unite, features average weighted by merge counts.
   Unmatched groups become new instances with new ids. An instance keeps at most ``max_instance_voxels``
   voxels (those nearest the box of its newest observation), so memory stays bounded even when a
   mis-segmentation keeps merging along a long structure.
4. **Eviction**: while more than ``max_instances`` instances are held, the one seen longest ago goes
   (smallest ``last_seen``; ties: fewest merges, then lowest score, then lowest id). Instances updated in
   this frame share the newest ``last_seen``, so they go only when every older one is gone; a new instance
   evicted in the very frame that created it still used up its id. Evicted ids are in :attr:`last_evicted`.

Ids start at 1 and are never reused within a session; :meth:`reset` starts a new session (ids from 1 again).

Averaged features of an instance (``n`` = merge count, the number of observations merged into it):
``score`` = mean of its observations' scores; ``class_evidence`` = per-class sum of their scores (class =
argmax, ties to the lowest class id); ``embedding`` = the L2-normalised mean of the unit embeddings of the
observations that carried one. Merging two means weights each by its count, so the result never depends on
the order of the merges. ``first_seen`` / ``last_seen`` = earliest / latest stamp.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.optimize import linear_sum_assignment

from .config import MapConfig, check_float
from .observation import Observation
from .overlap import box_iom, box_iou, boxes_intersect, voxel_iou
from .voxel_keys import index_bounds, pack_keys, point_keys, sorted_unique, union, unpack_keys, voxel_indices


@dataclass(frozen=True, eq=False)
class MapInstance:
    """Read-only snapshot of one map instance.

    Attributes:
        id: persistent id (>= 1, never reused within a session).
        class_id: argmax of ``class_evidence`` (ties: lowest class id).
        class_evidence: ``{class_id: sum of the scores of the observations of that class}``.
        score: mean score of the merged observations.
        embedding: ``(D,)`` unit merge embedding (normalised mean of the observations'), or None.
        merge_count: number of observations merged into it.
        voxel_keys: ``(K,)`` sorted int64 keys of its voxels (:mod:`.voxel_keys`), read-only.
        box_min, box_max: ``(3,)`` metres, the axis-aligned box of its voxels (voxel faces, not centres).
        first_seen, last_seen: stamps (seconds) of its first / latest observation.
        voxel_size: metres.
    """

    id: int
    class_id: int
    class_evidence: Mapping[int, float]
    score: float
    embedding: np.ndarray | None
    merge_count: int
    voxel_keys: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray
    first_seen: float
    last_seen: float
    voxel_size: float

    @property
    def num_voxels(self) -> int:
        return int(self.voxel_keys.shape[0])

    @property
    def box_center(self) -> np.ndarray:
        """``(3,)`` metres."""
        return (self.box_min + self.box_max) / 2

    @property
    def box_size(self) -> np.ndarray:
        """``(3,)`` metres."""
        return self.box_max - self.box_min

    def voxel_indices(self) -> np.ndarray:
        """``(K, 3)`` int64 voxel indices."""
        return unpack_keys(self.voxel_keys)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: the voxel of each of ``points (N, 3)`` (metres) is one of this instance's."""
        keys = point_keys(points, self.voxel_size)
        if self.num_voxels == 0:
            return np.zeros(len(keys), bool)
        pos = np.minimum(np.searchsorted(self.voxel_keys, keys), self.num_voxels - 1)
        return self.voxel_keys[pos] == keys


def _unit(v: np.ndarray | None) -> np.ndarray | None:
    """``v / |v|`` (read-only), ``v`` itself when zero, None for None."""
    if v is None:
        return None
    norm = float(np.linalg.norm(v))
    out = v / norm if norm > 0 else v.copy()
    out.setflags(write=False)
    return out


class _Entry:
    """Mutable state of one instance (or of one within-frame group before it enters the map)."""

    __slots__ = ("id", "evidence", "score", "emb_mean", "emb_weight", "merge_count", "keys", "lo", "hi",
                 "first_seen", "last_seen", "embedding")

    def __init__(self, id, evidence, score, emb_mean, emb_weight, merge_count, keys, lo, hi, first_seen,
                 last_seen):
        self.id, self.evidence, self.score = id, evidence, score
        self.emb_mean, self.emb_weight, self.merge_count = emb_mean, emb_weight, merge_count
        self.keys, self.lo, self.hi = keys, lo, hi
        self.first_seen, self.last_seen = first_seen, last_seen
        self.embedding = _unit(emb_mean)  # the normalised mean (None without embedding)

    @classmethod
    def from_observation(cls, obs: Observation, voxel_size: float, stamp: float) -> "_Entry":
        idx = voxel_indices(obs.points, voxel_size)
        keys = sorted_unique(pack_keys(idx))
        keys.setflags(write=False)
        has = obs.embedding is not None
        return cls(0, {obs.class_id: obs.score}, obs.score, obs.embedding if has else None, int(has), 1, keys,
                   idx.min(0), idx.max(0), stamp, stamp)

    @property
    def class_id(self) -> int:
        return max(sorted(self.evidence), key=self.evidence.__getitem__)

    def absorb(self, other: "_Entry") -> None:
        """Merge ``other`` into this one (counts-weighted means, voxel union)."""
        n_a, n_b = self.merge_count, other.merge_count
        self.score = (n_a * self.score + n_b * other.score) / (n_a + n_b)
        for c, v in other.evidence.items():
            self.evidence[c] = self.evidence.get(c, 0.0) + v
        if other.emb_mean is not None:
            if self.emb_mean is None:
                self.emb_mean, self.emb_weight = other.emb_mean, other.emb_weight
            else:
                w_a, w_b = self.emb_weight, other.emb_weight
                mean = (w_a * self.emb_mean + w_b * other.emb_mean) / (w_a + w_b)
                mean.setflags(write=False)
                self.emb_mean, self.emb_weight = mean, w_a + w_b
            self.embedding = _unit(self.emb_mean)
        self.merge_count = n_a + n_b
        keys = union(self.keys, other.keys)
        keys.setflags(write=False)
        self.keys = keys
        self.lo, self.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)

    def cap(self, max_voxels: int, lo: np.ndarray, hi: np.ndarray) -> None:
        """Keep at most ``max_voxels`` voxels: those nearest (Chebyshev distance in voxel indices) to the box
        ``[lo, hi]`` of the newest observation (ties: lowest key), so that an instance that keeps growing keeps
        the part seen last; the box shrinks to the kept voxels."""
        if len(self.keys) <= max_voxels:
            return
        idx = unpack_keys(self.keys)
        dist = np.maximum(np.maximum(lo - idx, idx - hi), 0).max(1)
        keep = np.sort(np.argsort(dist, kind="stable")[:max_voxels])
        keys = self.keys[keep]
        keys.setflags(write=False)
        self.keys = keys
        self.lo, self.hi = index_bounds(keys)

    def snapshot(self, voxel_size: float) -> MapInstance:
        box_min, box_max = self.lo * voxel_size, (self.hi + 1) * voxel_size
        box_min.setflags(write=False)
        box_max.setflags(write=False)
        return MapInstance(
            id=self.id, class_id=self.class_id, class_evidence=MappingProxyType(dict(self.evidence)),
            score=float(self.score), embedding=self.embedding, merge_count=self.merge_count, voxel_keys=self.keys,
            box_min=box_min, box_max=box_max, first_seen=self.first_seen,
            last_seen=self.last_seen, voxel_size=voxel_size)


class _Components:
    """Union-find over ``n`` items."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


class InstanceMap:
    """Persistent instances merged from per-frame observations (the rules are in the module docstring).

    Args:
        config: the map settings (default :class:`MapConfig`).
    """

    def __init__(self, config: MapConfig | None = None):
        if config is not None and not isinstance(config, MapConfig):
            raise ValueError(f"config must be a MapConfig, got {type(config).__name__}")
        self.config = config or MapConfig()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Empty the map and start a new session: the next id is 1 again."""
        self._entries: dict[int, _Entry] = {}
        self._next_id = 1
        self._dim: int | None = None
        self._last_evicted: tuple[int, ...] = ()

    @property
    def next_id(self) -> int:
        """The id the next new instance will get."""
        return self._next_id

    @property
    def embedding_dim(self) -> int | None:
        """D of the merge embeddings seen this session (None before the first)."""
        return self._dim

    @property
    def last_evicted(self) -> tuple[int, ...]:
        """Ids evicted by the latest :meth:`update` (ascending)."""
        return self._last_evicted

    @property
    def instances(self) -> tuple[MapInstance, ...]:
        """Snapshots of every instance, by ascending id."""
        vs = self.config.voxel_size
        return tuple(self._entries[i].snapshot(vs) for i in sorted(self._entries))

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[MapInstance]:
        return iter(self.instances)

    def __contains__(self, instance_id) -> bool:
        return instance_id in self._entries

    def __getitem__(self, instance_id: int) -> MapInstance:
        return self._entries[instance_id].snapshot(self.config.voxel_size)

    def get(self, instance_id: int) -> MapInstance | None:
        e = self._entries.get(instance_id)
        return None if e is None else e.snapshot(self.config.voxel_size)

    # ------------------------------------------------------------------ scoring
    def _scores(self, rows: Sequence[_Entry], cols: Sequence[_Entry]) -> np.ndarray:
        """``(R, C)`` merge score of every row/column pair (cosine x overlap, 0 across classes)."""
        n_r, n_c = len(rows), len(cols)
        if n_r == 0 or n_c == 0:
            return np.zeros((n_r, n_c))
        if self.config.class_agnostic:
            allowed = np.ones((n_r, n_c), bool)
        else:
            cls_r = np.array([e.class_id for e in rows])
            cls_c = np.array([e.class_id for e in cols])
            allowed = cls_r[:, None] == cls_c[None]
        lo_r, hi_r = np.stack([e.lo for e in rows]), np.stack([e.hi for e in rows])
        lo_c, hi_c = np.stack([e.lo for e in cols]), np.stack([e.hi for e in cols])
        if self.config.overlap in ("box_iou", "box_iom"):
            fn = box_iou if self.config.overlap == "box_iou" else box_iom
            geo = fn(lo_r, hi_r + 1, lo_c, hi_c + 1) * allowed
        else:
            geo = np.zeros((n_r, n_c))
            cand = boxes_intersect(lo_r, hi_r, lo_c, hi_c) & allowed
            r_any, c_any = np.flatnonzero(cand.any(1)), np.flatnonzero(cand.any(0))
            if len(r_any):
                sub = voxel_iou([rows[i].keys for i in r_any], [cols[j].keys for j in c_any])
                geo[np.ix_(r_any, c_any)] = sub * cand[np.ix_(r_any, c_any)]
        sim = np.ones((n_r, n_c))
        has_r = np.flatnonzero([e.emb_mean is not None for e in rows])
        has_c = np.flatnonzero([e.emb_mean is not None for e in cols])
        if len(has_r) and len(has_c):
            emb_r = np.stack([rows[i].embedding for i in has_r])
            emb_c = np.stack([cols[j].embedding for j in has_c])
            sim[np.ix_(has_r, has_c)] = emb_r @ emb_c.T
        return sim * geo

    # ------------------------------------------------------------------ update
    def _check_frame(self, observations, stamp) -> tuple[list[Observation], float]:
        if isinstance(observations, (str, bytes)) or not isinstance(observations, (Sequence, Iterator)):
            raise ValueError(f"observations must be a sequence of Observation, got {type(observations).__name__}")
        obs = list(observations)
        for i, o in enumerate(obs):
            if not isinstance(o, Observation):
                raise ValueError(f"observation {i} is a {type(o).__name__}, expected Observation")
        stamp = check_float("stamp", stamp)
        dims = {len(o.embedding) for o in obs if o.embedding is not None}
        if self._dim is not None:
            dims.add(self._dim)
        if len(dims) > 1:
            raise ValueError(f"merge embeddings of one session must share one size D, got sizes {sorted(dims)}")
        return obs, stamp

    def update(self, observations: Sequence[Observation], stamp: float) -> list[int]:
        """Merge one frame's observations into the map.

        Args:
            observations: the frame's instances (world frame).
            stamp: the frame's time, seconds.

        Returns:
            The map id given to each observation, in order (0 for one with fewer than ``min_points``
            points). The map is unchanged when a ``ValueError`` is raised.
        """
        obs, stamp = self._check_frame(observations, stamp)
        cfg = self.config
        valid = [i for i, o in enumerate(obs) if len(o) >= cfg.min_points]
        new = [_Entry.from_observation(obs[i], cfg.voxel_size, stamp) for i in valid]
        if new and self._dim is None:
            self._dim = next((len(obs[i].embedding) for i in valid if obs[i].embedding is not None), None)

        # 1. duplicates within the frame: connected components of the pairs scoring above the threshold
        comp = _Components(len(new))
        if len(new) > 1:
            s = self._scores(new, new)
            for i, j in zip(*np.nonzero(np.triu(s > cfg.merge_threshold, 1))):
                comp.union(int(i), int(j))
        roots: dict[int, list[int]] = {}
        for k in range(len(new)):
            roots.setdefault(comp.find(k), []).append(k)
        groups, group_of = [], [0] * len(new)
        for members in roots.values():
            g = new[members[0]]
            for k in members[1:]:
                g.absorb(new[k])
            if len(members) > 1:
                g.cap(cfg.max_instance_voxels, g.lo, g.hi)
            for k in members:
                group_of[k] = len(groups)
            groups.append(g)

        # 2. memory vs groups: Hungarian assignment on the thresholded scores
        memory = [self._entries[i] for i in sorted(self._entries)]
        group_id = [0] * len(groups)
        if memory and groups:
            s = self._scores(memory, groups)
            s[s <= cfg.merge_threshold] = 0.0
            r_any, c_any = np.flatnonzero(s.any(1)), np.flatnonzero(s.any(0))
            if len(r_any):
                sub = s[np.ix_(r_any, c_any)]
                rr, cc = linear_sum_assignment(sub, maximize=True)
                for r, c in zip(rr, cc):
                    if sub[r, c] > cfg.merge_threshold:
                        m, g = memory[r_any[r]], groups[c_any[c]]
                        lo, hi = g.lo, g.hi
                        m.absorb(g)
                        m.cap(cfg.max_instance_voxels, lo, hi)
                        group_id[c_any[c]] = m.id
        for gi, g in enumerate(groups):
            if group_id[gi] == 0:
                g.id = group_id[gi] = self._next_id
                self._next_id += 1
                self._entries[g.id] = g

        # 3. eviction: oldest last_seen first; ties: fewest merges, lowest score, lowest id
        evicted: list[int] = []
        excess = len(self._entries) - cfg.max_instances
        if excess > 0:
            order = sorted(self._entries.values(), key=lambda e: (e.last_seen, e.merge_count, e.score, e.id))
            evicted = [e.id for e in order[:excess]]
            for i in evicted:
                del self._entries[i]
        self._last_evicted = tuple(sorted(evicted))

        ids = [0] * len(obs)
        for k, i in enumerate(valid):
            ids[i] = group_id[group_of[k]]
        return ids

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole state as flat arrays (for :mod:`.storage`; :meth:`from_arrays` restores it exactly)."""
        entries = [self._entries[i] for i in sorted(self._entries)]
        dim = self._dim or 0
        emb = np.zeros((len(entries), dim))
        for k, e in enumerate(entries):
            if e.emb_mean is not None:
                emb[k] = e.emb_mean
        ev = [(k, c, v) for k, e in enumerate(entries) for c, v in sorted(e.evidence.items())]
        return {
            "next_id": np.array(self._next_id, np.int64),
            "embedding_dim": np.array(-1 if self._dim is None else self._dim, np.int64),
            "ids": np.array([e.id for e in entries], np.int64),
            "score": np.array([e.score for e in entries], np.float64),
            "merge_count": np.array([e.merge_count for e in entries], np.int64),
            "first_seen": np.array([e.first_seen for e in entries], np.float64),
            "last_seen": np.array([e.last_seen for e in entries], np.float64),
            "emb_mean": emb,
            "emb_weight": np.array([e.emb_weight for e in entries], np.int64),
            "voxel_offsets": np.cumsum([0] + [len(e.keys) for e in entries]).astype(np.int64),
            "voxel_keys": (np.concatenate([e.keys for e in entries]) if entries else np.zeros(0)).astype(np.int64),
            "evidence_row": np.array([t[0] for t in ev], np.int64),
            "evidence_class": np.array([t[1] for t in ev], np.int64),
            "evidence_sum": np.array([t[2] for t in ev], np.float64),
        }

    @classmethod
    def from_arrays(cls, config: MapConfig, arrays: Mapping[str, np.ndarray]) -> "InstanceMap":
        """Rebuild a map from :meth:`to_arrays`' output."""
        m = cls(config)
        try:
            ids = np.asarray(arrays["ids"], np.int64)
            offsets = np.asarray(arrays["voxel_offsets"], np.int64)
            keys = np.asarray(arrays["voxel_keys"], np.int64)
            if len(offsets) != len(ids) + 1 or offsets[-1] != len(keys):
                raise ValueError("instance voxel offsets do not match the instances")
            evidence: dict[int, dict[int, float]] = {}
            for r, c, v in zip(arrays["evidence_row"], arrays["evidence_class"], arrays["evidence_sum"]):
                evidence.setdefault(int(r), {})[int(c)] = float(v)
            for k, i in enumerate(ids):
                ks = keys[offsets[k]:offsets[k + 1]].copy()
                if len(ks) == 0 or k not in evidence:
                    raise ValueError(f"instance {int(i)} has no voxels or no class evidence")
                ks.setflags(write=False)
                lo, hi = index_bounds(ks)
                w = int(arrays["emb_weight"][k])
                mean = None
                if w > 0:
                    mean = np.array(arrays["emb_mean"][k], np.float64)
                    mean.setflags(write=False)
                m._entries[int(i)] = _Entry(int(i), evidence[k], float(arrays["score"][k]), mean, w,
                                            int(arrays["merge_count"][k]), ks, lo, hi,
                                            float(arrays["first_seen"][k]), float(arrays["last_seen"][k]))
            m._next_id = int(arrays["next_id"])
            dim = int(arrays["embedding_dim"])
            m._dim = None if dim < 0 else dim
        except KeyError as exc:
            raise ValueError(f"saved instance map lacks {exc}") from None
        if ids.size and m._next_id <= int(ids.max()):
            raise ValueError(f"saved next id {m._next_id} is not above the largest id {int(ids.max())}")
        return m
