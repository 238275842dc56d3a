"""2D instance masks from another node (a SAM / FastSAM / Grounded-SAM segmenter), matched to frames by stamp.

Why a cache and not a fourth input of the colour / depth / camera-info synchroniser: a 2D segmenter is usually
slower than the camera (FastSAM ~10-20 FPS, SAM far less) and skips frames. In a four-way approximate-time
synchroniser every colour frame without a mask would be dropped (the segmenter's rate would become the node's),
and a segmenter that stops would stop the node. With the cache, every synchronised frame goes on: when it is
processed, the mask with its colour image's stamp (within ``slop``) is taken from the cache, waiting at most
``timeout`` seconds for it; a frame whose mask does not come in time is segmented with VCCS superpoints alone
(counted, ``frames_without_mask``). Segmenters stamp their mask with the header of the image they segmented, so
``slop`` is 0 by default (exact stamps).

A mask that cannot be used (an encoding other than mono8 / mono16 / 16UC1 / 32SC1, malformed data, or a size
other than the colour image's) is a counted skip of the mask only (``mask_skipped``: ``bad_encoding``,
``bad_image``, ``size_mismatch``): its frame is processed without it.

The node (real time: :meth:`MaskCache.take` waits on a condition) and replay (bag time: it decides when a set
is due and calls ``take`` with no wait) share this class.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict

import numpy as np

MASK_SKIP_REASONS = ("bad_encoding", "bad_image", "size_mismatch")


def masks_kept(sync_queue_size: int) -> int:
    """How many masks the node and replay keep: at least 30, and 4 synchroniser queues' worth (a segmenter may
    run that far ahead of the synchronised sets)."""
    return max(30, 4 * int(sync_queue_size))


class MaskCache:
    """The last ``keep`` masks by stamp (ns). Thread-safe: the subscriber adds, the worker takes.

    Args:
        keep: masks kept (the oldest are dropped first).
        slop: largest stamp difference (s) between a frame and its mask.
        timeout: seconds :meth:`take` waits for a frame's mask by default.
    """

    def __init__(self, keep: int = 30, slop: float = 0.0, timeout: float = 0.1):
        if keep < 1 or slop < 0 or timeout < 0:
            raise ValueError(f"need keep >= 1, slop >= 0 and timeout >= 0, got {keep}, {slop}, {timeout}")
        self.keep, self.slop_ns, self.timeout = int(keep), int(round(slop * 1e9)), float(timeout)
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cond = threading.Condition()
        self.counts: Counter = Counter()

    # -- the subscriber's side ------------------------------------------------------------------------------
    def add(self, stamp_ns: int, masks: np.ndarray) -> None:
        """A converted mask image ``(H, W)`` integer ids (0 or negative: no mask) stamped ``stamp_ns``."""
        with self._cond:
            self._masks[int(stamp_ns)] = masks
            self._masks.move_to_end(int(stamp_ns))
            while len(self._masks) > self.keep:
                self._masks.popitem(last=False)
            self.counts["received"] += 1
            self._cond.notify_all()

    def reject(self, reason: str) -> None:
        """A mask message that could not be converted (``bad_encoding`` / ``bad_image``): counted."""
        if reason not in MASK_SKIP_REASONS:
            raise ValueError(f"unknown mask skip reason {reason!r}")
        with self._cond:
            self.counts["received"] += 1
            self.counts[f"skipped_{reason}"] += 1

    # -- the worker's side ----------------------------------------------------------------------------------
    def _find(self, stamp_ns: int) -> int | None:
        best = None
        for s in self._masks:
            d = abs(s - stamp_ns)
            if d <= self.slop_ns and (best is None or d < abs(best - stamp_ns)):
                best = s
        return best

    def has(self, stamp_ns: int) -> bool:
        with self._cond:
            return self._find(int(stamp_ns)) is not None

    def take(self, stamp_ns: int, shape: tuple[int, int], wait: float | None = None) -> tuple[np.ndarray | None, str]:
        """The mask of the frame stamped ``stamp_ns`` whose images are ``shape`` ``(H, W)``, waiting up to
        ``wait`` seconds (default ``timeout``). Returns ``(masks or None, why)``: ``why`` is ``""`` when a mask is
        returned, else ``"none"`` (none came in time) or ``"size_mismatch"`` (one came, of another size: counted
        as a skipped mask). Every call is counted (``used`` / ``frames_without_mask``)."""
        wait = self.timeout if wait is None else float(wait)
        deadline = time.monotonic() + wait
        with self._cond:
            while (key := self._find(int(stamp_ns))) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.counts["frames_without_mask"] += 1
                    return None, "none"
                self._cond.wait(left)
            masks = self._masks.pop(key)
            if tuple(masks.shape) != tuple(shape):
                self.counts["skipped_size_mismatch"] += 1
                self.counts["frames_without_mask"] += 1
                return None, "size_mismatch"
            self.counts["used"] += 1
            return masks, ""

    def summary(self) -> dict:
        """``{"received", "used", "frames_without_mask", "skipped": {reason: n}}``."""
        with self._cond:
            c = self.counts
            return {"received": c["received"], "used": c["used"], "frames_without_mask": c["frames_without_mask"],
                    "skipped": {r: c[f"skipped_{r}"] for r in MASK_SKIP_REASONS}}
