"""bifusion_core.allocator: large freed blocks stay in the heap, so repeated frames stop page-faulting."""
import json
import os
import platform
import subprocess
import sys

import pytest

from bifusion_core import allocator

# One round allocates, fills and frees what a frame does: a 64 MB block (the U-Net's gathered neighbourhoods: above the
# 32 MB up to which glibc's own threshold adapts, so always a fresh mmap by default) and a 24 MB and an 8 MB one (its
# (N, 256) float32 features). On the main thread or on a worker thread (as the node runs its frames), it prints the
# minor page faults of 30 rounds after 20 (aligned allocations grow the heap for a few rounds before it reuses them).
PROBE = r"""
import json, resource, sys, threading
from bifusion_core.allocator import keep_heap_blocks
applied = keep_heap_blocks()
import torch
out = {}
def work():
    def frame():
        big = torch.ones(16 << 20)
        feats = [torch.ones(6 << 20), torch.ones(2 << 20)]
        del big, feats
    for _ in range(20):
        frame()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        frame()
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
if sys.argv[1] == "thread":
    t = threading.Thread(target=work); t.start(); t.join()
else:
    work()
print(json.dumps({"applied": applied, **out}))
"""


def _probe(where: str, keep: bool) -> dict:
    env = dict(os.environ, BIFUSION_KEEP_HEAP="1" if keep else "0")
    res = subprocess.run([sys.executable, "-c", PROBE, where], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


# Skipped only where the C library really is not glibc (decided by the platform, not by the code under test, so a
# broken glibc lookup fails here instead of skipping); CI and these machines run Debian's glibc.
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt exists only in glibc (this test's subject)")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_large_blocks_are_reused_instead_of_faulted_in_again(where):
    off, on = _probe(where, keep=False), _probe(where, keep=True)
    assert off["applied"] is False and on["applied"] is True
    # without: the 64 MB block is a fresh mmap each round (16,384 pages); with: the heap's pages are reused
    assert off["faults"] > 30 * 8000, off
    assert on["faults"] < off["faults"] / 20, (on, off)


def test_switched_off_by_the_environment_and_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.keep_heap_blocks() is False
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv(allocator.ENV, "1")
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.keep_heap_blocks() is False
    # decided once per process: a second call does not try again
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("asked the C library twice"))
    assert allocator.keep_heap_blocks() is False


def test_a_refused_setting_is_reported_not_assumed(monkeypatch, caplog):
    class Libc:
        calls = []

        def mallopt(self, opt, value):
            self.calls.append(opt)
            return 0  # glibc returns 0 on error

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv(allocator.ENV, "1")
    monkeypatch.setattr(allocator, "_glibc", Libc)
    with caplog.at_level("WARNING"):
        assert allocator.keep_heap_blocks() is False
    assert "refused" in caplog.text
