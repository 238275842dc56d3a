"""OpenMP wait policy for a process that shares its CPU (imported by ``bifusion_core/__init__``).

PyTorch's CPU kernels run on libgomp, whose threads spin (``GOMP_SPINCOUNT``, 300,000 iterations by default)
at the end of every parallel region before they sleep. When another process holds one of the cores, as on a
robot, the threads that wait spin against the one that works, and the sparse U-Net, with thousands of short
parallel regions per frame, slowed down 4x at 2 threads with one core busy (``bench sparse --busy 1``). With
a spin count of 0 the waiting threads sleep at once: under that load the forward pass is 2x faster, and
without load the cost is small (figures in the README, "Speed").

libgomp reads the setting when it is loaded, i.e. at ``import torch``, so it only applies when
``bifusion_core`` is imported first (every ``python -m bifusion_core...`` entry point, and the ``bifusion_ros``
node, replay and demo, whose first torch import comes through ``bifusion_core``);
a value the user has set is kept.
"""
from __future__ import annotations

import os
import sys

SPINCOUNT = "0"


def configure(environ=None, modules=None) -> bool:
    """Set ``GOMP_SPINCOUNT`` (unless already set) while torch is not imported yet; True when it took effect."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "torch" in modules or "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return True
