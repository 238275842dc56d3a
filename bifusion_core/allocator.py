"""Keep the C heap's large blocks in the process between frames (glibc ``mallopt``).

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap threshold (128 KB at start,
raised dynamically up to 32 MB) with a fresh ``mmap`` and returns it with ``munmap`` on free, so a frame's
``(N, 256)`` float32 tensors (19 MB at the demo's 18,800 points) and the sparse U-Net's gathered matrices are
new zero-filled pages every frame: the demo's frame took 31,600-43,300 minor page faults (120-170 MB of pages
touched for the first time) and 72-88 ms of kernel CPU time filling them.
:func:`keep_heap_blocks` switches that off for the process (``M_MMAP_MAX = 0``: every block comes from the
heap, whatever its size; ``M_TRIM_THRESHOLD``: freed memory at the top of the heap is kept up to
:data:`TRIM_THRESHOLD` bytes; ``M_ARENA_MAX = 1``: threads started afterwards share the main heap, since a
thread's own arena is a set of 64 MB mmapped heaps that glibc shrinks, and refills with fresh pages, as
before), so the next frame reuses the pages: 4-550 faults per frame, on the main thread and on a worker
thread as the node runs it, 1-4 ms of kernel CPU time, and the demo's frame (p50 of 25 frames, float32) 227-276
ms instead of 295-343 ms (4 rounds, the two settings in alternate processes). The cost: the process keeps its
peak heap instead of shrinking after a large frame (it still returns free memory above the threshold). Call it
before starting threads.

Only glibc has ``mallopt``; elsewhere (musl, macOS) this is a no-op. Set ``BIFUSION_KEEP_HEAP=0`` to leave the
allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

ENV = "BIFUSION_KEEP_HEAP"
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = 1 << 30
"""Bytes of free memory the heap may keep at its top before it is returned to the system (1 GiB)."""

_done: bool | None = None


def _glibc():
    """The C library if it is glibc (it has ``gnu_get_libc_version`` and ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def keep_heap_blocks() -> bool:
    """Make glibc keep large freed blocks for reuse (see the module docstring). Idempotent; returns whether the
    setting is in effect (False on other C libraries, when ``BIFUSION_KEEP_HEAP=0``, or if glibc refused)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get(ENV, "1") == "0":
        return _done
    libc = _glibc()
    if libc is None:
        log.debug("not glibc: the allocator is left as it is")
        return _done
    ok = all(libc.mallopt(opt, value) == 1
             for opt, value in ((M_ARENA_MAX, 1), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_MMAP_MAX, 0)))
    if not ok:
        log.warning("glibc refused mallopt; large tensors stay mmap-backed (slower frames)")
    _done = ok
    return _done
