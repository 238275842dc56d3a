"""A stream of procedural rooms that does not run out: a pool of live rooms, some replaced by new ones each step.

``rooms`` rooms are live at a time; before step ``t`` draws its samples, ``renew`` of them (round robin over the
pool's slots) are replaced by rooms never seen before. Which rooms are live at step ``t`` is a pure function of
``(seed, rank, t)`` (:meth:`RoomStream.live_rooms`), so a resumed run sees exactly the rooms an uninterrupted
one would. Over ``T`` steps a run meets ``rooms + renew * T`` different rooms. With ``variety`` each room is
generated with :data:`~.scene.VARIED_SCENE` (more clutter, light, object sizes, repainted objects) and its own
depth sensor (noise, holes and colour noise drawn per room, around a RealSense D435's).

Room numbers are turned into generator seeds in ``[STREAM_SEED_BASE, 2 STREAM_SEED_BASE)``, above the fixed
rooms' seeds (training ``seed + k``, validation and test ``seed + 100000 + k``), so a stream never yields a
held-out room; distinct (room, rank) pairs get distinct seeds for the first 62,500 rooms of 16 ranks.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np

from ...config import configclass, spec
from ..frame import Frame
from .render import CameraConfig
from .scene import VARIED_SCENE, SceneConfig
from .sequence import SequenceConfig, SyntheticSequence

STREAM_SEED_BASE = 1_000_000


@configclass
class StreamConfig:
    """Attributes:
        rooms: rooms live at a time (0: no stream, the fixed rooms of ``data.scenes``).
        renew: live rooms replaced by new ones before each step.
        variety: varied rooms and per-room sensor noise (see the module docstring); off: default rooms.
        cache_frames: rendered frames kept in memory (least recently used are dropped).
    """

    rooms: int = spec(0, ge=0)
    renew: int = spec(1, ge=0)
    variety: bool = True
    cache_frames: int = spec(512, ge=1)

    def __post_init__(self) -> None:
        if self.rooms and self.renew > self.rooms:
            raise ValueError(f"stream.renew ({self.renew}) cannot exceed stream.rooms ({self.rooms})")


def varied_camera(base: CameraConfig, rng: np.random.Generator) -> CameraConfig:
    """``base`` with a per-room depth sensor: noise, holes, edge dropout and colour noise drawn around it."""
    return dataclasses.replace(
        base,
        noise_a=base.noise_a * float(rng.uniform(0.5, 2.0)),
        noise_b=base.noise_b * float(rng.uniform(0.6, 2.0)),
        hole_fraction=min(1.0, base.hole_fraction * float(rng.uniform(0.3, 4.0))),
        edge_dropout=float(rng.uniform(0.3, 0.8)),
        color_noise=base.color_noise * float(rng.uniform(0.5, 2.0)))


class RoomStream:
    """Rooms numbered ``0, 1, 2, ...`` in the order they enter the pool; frames rendered on demand, cached.

    Args:
        cfg: the stream's settings (``cfg.rooms >= 1``).
        frames: frames per room (its camera path is divided into that many views).
        camera: the base camera (size and intrinsics; noise varied per room with ``cfg.variety``).
        seed, rank: a run's seed and its process rank (ranks see different rooms).
        scene: room parameters without ``cfg.variety`` (default: the default rooms).
    """

    def __init__(self, cfg: StreamConfig, frames: int, camera: CameraConfig, seed: int = 0, rank: int = 0,
                 scene: SceneConfig | None = None):
        if cfg.rooms < 1:
            raise ValueError("a room stream needs stream.rooms >= 1")
        self.cfg, self.frames, self.camera = cfg, int(frames), camera
        self.seed, self.rank = int(seed), int(rank)
        self.scene = VARIED_SCENE if cfg.variety else (scene or SceneConfig())
        self._sequence = lru_cache(maxsize=max(1, 2 * cfg.rooms))(self._make_sequence)
        self._frame = lru_cache(maxsize=cfg.cache_frames)(self._render)

    def live_rooms(self, step: int) -> np.ndarray:
        """``(rooms,)`` int64: the number of the room in each slot of the pool at ``step`` (after that step's
        renewals). Room ``c >= rooms`` enters slot ``c % rooms`` at step ``(c - rooms) // renew``."""
        p, r = self.cfg.rooms, self.cfg.renew
        top = p + (int(step) + 1) * r - 1  # the newest room number at this step
        slots = np.arange(p, dtype=np.int64)
        return top - (top - slots) % p

    def room_seed(self, room: int) -> int:
        """The generator seed of room number ``room`` (in ``[STREAM_SEED_BASE, 2 STREAM_SEED_BASE)``)."""
        return STREAM_SEED_BASE + (self.seed * 104_729 + int(room) * 16 + self.rank % 16) % STREAM_SEED_BASE

    def sequence(self, room: int) -> SyntheticSequence:
        return self._sequence(int(room))

    def _make_sequence(self, room: int) -> SyntheticSequence:
        seed = self.room_seed(room)
        cam = self.camera
        if self.cfg.variety:
            cam = varied_camera(cam, np.random.default_rng([seed, 0xCA3]))
        return SyntheticSequence(seed, SequenceConfig(n_frames=self.frames, camera=cam, scene=self.scene))

    def frame(self, room: int, index: int) -> Frame:
        """Frame ``index`` of room ``room`` (rendered once, then cached)."""
        return self._frame(int(room), int(index))

    def _render(self, room: int, index: int) -> Frame:
        f = self.sequence(room).frame(index)
        return dataclasses.replace(f, name=f"room{room}/{index}")

    def at(self, step: int) -> "StreamView":
        """The pool at ``step`` as items ``0 .. rooms * frames - 1`` (slot-major)."""
        return StreamView(self, self.live_rooms(step))


class StreamView:
    """The live rooms of one step, addressed like a fixed frame pool: item ``i`` is frame ``i % frames`` of the
    room in slot ``i // frames``; ``get``, ``partners`` and ``len`` as :class:`~bifusion_core.train.data.FramePool`."""

    def __init__(self, stream: RoomStream, rooms: np.ndarray):
        self.stream, self.rooms = stream, rooms
        f = stream.frames
        self.scene_of = np.repeat(np.arange(len(rooms), dtype=np.int64), f)
        self.frame_of = np.tile(np.arange(f, dtype=np.int64), len(rooms))

    def __len__(self) -> int:
        return len(self.scene_of)

    def get(self, i: int) -> Frame:
        return self.stream.frame(int(self.rooms[self.scene_of[i]]), int(self.frame_of[i]))

    def partners(self, i: int, gap: int) -> np.ndarray:
        d = np.abs(self.frame_of - self.frame_of[i])
        return np.nonzero((self.scene_of == self.scene_of[i]) & (d >= 1) & (d <= gap))[0]
