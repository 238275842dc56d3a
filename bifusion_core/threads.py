"""Intra-op thread count that follows the CPU other processes leave free.

PyTorch's CPU kernels split each operation over ``torch.get_num_threads()`` OpenMP threads that spin at the end
of every parallel region. When another process holds a core (a robot's normal state: camera driver, planner,
...), a frame's thousands of short regions each wait for the thread that shares its core, and the sparse U-Net
forward ran 1.7-2.7x slower at 2 threads than at 1 with one core busy (``bench sparse --busy 1 --threads 1 2``,
several runs).
Making the threads sleep instead (``GOMP_SPINCOUNT=0``) cured that but cost 1.75x on an idle machine (the
demo's frame-sized U-Net, 2 threads: 182 vs 104 ms, processes alternated, medians of 9), where the spinning
is what makes short regions cheap. So the thread count is adapted instead: :class:`ThreadGovernor`
looks at how much CPU the rest of the machine used while the frames were processed (``/proc/stat`` minus this
process's own time) and uses the cores that were left free, between 1 and the count it started with.
"""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from typing import Callable

import torch

log = logging.getLogger(__name__)

ADAPTIVE_ENV = "BIFUSION_ADAPTIVE_THREADS"


def adaptive_threads_enabled() -> bool:
    """Whether frame processing and training adapt their thread count (:class:`ThreadGovernor`): yes unless
    the environment sets ``BIFUSION_ADAPTIVE_THREADS=0`` (the test suite does, so that the runs it compares
    keep one thread count and bit-reproducible float sums)."""
    return os.environ.get(ADAPTIVE_ENV, "1") != "0"


def machine_busy_seconds(path: str = "/proc/stat") -> float | None:
    """CPU seconds the whole machine has spent busy since boot (all cores; None where unreadable)."""
    try:
        with open(path) as f:
            vals = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(vals) < 4:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)  # idle + iowait
    return (sum(vals[:8]) - idle) / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100.0)


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) and its finished children used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ThreadGovernor:
    """Chooses the intra-op thread count from the cores other processes leave free.

    Wrap each unit of work (a frame) in ``with governor.work():`` from the thread that runs it. The CPU time
    the rest of the machine used *while the work ran* is summed until the work has taken ``window_s`` seconds
    in all; then ``threads = clamp(floor(cpus - others + margin), 1, max_threads)``, ``others`` being the
    mean number of cores other processes kept busy meanwhile, and it applies from the next unit on. Only the
    work's own time counts, so what runs between frames (or, in a benchmark, the alternatives timed in turn)
    is not mistaken for load. Where the machine's CPU time cannot be read it keeps ``max_threads``. The
    readers and the setter are parameters so the policy can be tested.
    """

    def __init__(self, max_threads: int | None = None, window_s: float = 0.5, margin: float = 0.35,
                 cpus: int | None = None, busy: Callable[[], float | None] = machine_busy_seconds,
                 own: Callable[[], float] = own_cpu_seconds, clock: Callable[[], float] = time.monotonic,
                 set_threads: Callable[[int], None] = torch.set_num_threads):
        self.max_threads = int(torch.get_num_threads() if max_threads is None else max_threads)
        if self.max_threads < 1 or window_s <= 0 or not 0 <= margin < 1:
            raise ValueError("need max_threads >= 1, window_s > 0 and 0 <= margin < 1")
        self.cpus = int(cpus or os.cpu_count() or 1)
        self.window_s, self.margin = float(window_s), float(margin)
        self._busy, self._own, self._clock, self._set = busy, own, clock, set_threads
        self.threads = self.max_threads
        self.others: float | None = None  # cores the rest of the machine used during the last window's work
        self.changes = 0
        self._wall = self._other_cpu = 0.0

    def _sample(self):
        busy = self._busy()
        return None if busy is None else (self._clock(), busy, self._own())

    @contextmanager
    def work(self):
        """Measure the rest of the machine while the body runs; re-decide once a window is complete."""
        start = self._sample()
        try:
            yield self.threads
        finally:
            end = self._sample() if start is not None else None
            if end is not None:
                self._wall += end[0] - start[0]
                self._other_cpu += max(0.0, (end[1] - start[1]) - (end[2] - start[2]))
                if self._wall >= self.window_s:
                    self._decide(self._other_cpu / self._wall)
                    self._wall = self._other_cpu = 0.0

    def _decide(self, others: float) -> None:
        self.others = others
        target = max(1, min(self.max_threads, math.floor(self.cpus - others + self.margin)))
        if target != self.threads:
            log.info("using %d of %d CPU threads: other processes kept %.1f of %d cores busy",
                     target, self.max_threads, others, self.cpus)
            self.threads = target
            self.changes += 1
            self._set(target)
