"""bifusion_ros.worker: the one-slot "latest frame wins" mailbox and the latency accumulator (no ROS)."""
import threading
import time

import pytest

from bifusion_core.pipeline.session import LatencyStats
from bifusion_ros.worker import LatestFrameWorker


class Gate:
    """A process_fn that blocks on each item until released; records what it processed."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()
        self.seen = []

    def __call__(self, item):
        self.seen.append(item)
        self.started.set()
        assert self.release.wait(5), "test never released the worker"
        return item * 10


def test_processes_an_item_and_reports_the_result():
    results = []
    w = LatestFrameWorker(lambda x: x + 1, lambda item, res: results.append((item, res)))
    try:
        assert w.submit(1) is False
        assert w.wait_idle(5)
        assert results == [(1, 2)]
        assert w.counters() == {"submitted": 1, "processed": 1, "failed": 0, "dropped": 0, "pending": 0, "busy": 0}
    finally:
        assert w.stop()


def test_newest_item_replaces_the_waiting_one():
    gate = Gate()
    results = []
    w = LatestFrameWorker(gate, lambda item, res: results.append(res))
    try:
        w.submit(1)
        assert gate.started.wait(5)  # 1 is running, the mailbox is empty
        assert w.busy and w.pending == 0
        assert w.submit(2) is False
        assert w.submit(3) is True  # replaced 2
        assert w.submit(4) is True  # replaced 3
        assert w.pending == 1 and w.dropped == 2
        gate.release.set()
        assert w.wait_idle(5)
        assert gate.seen == [1, 4]
        assert results == [10, 40]
        c = w.counters()
        assert (c["submitted"], c["processed"], c["dropped"], c["failed"]) == (4, 2, 2, 0)
    finally:
        gate.release.set()
        w.stop()


def test_exceptions_are_reported_and_the_worker_survives():
    errors, results = [], []

    def process(x):
        if x == "bad":
            raise RuntimeError("broken frame")
        return x

    def on_result(item, res):
        if res == "bad-publish":
            raise ValueError("cannot publish")
        results.append(res)

    w = LatestFrameWorker(process, on_result, lambda item, exc: errors.append((item, type(exc).__name__)))
    try:
        for item in ("bad", "bad-publish", "good"):
            w.submit(item)
            assert w.wait_idle(5)
        assert errors == [("bad", "RuntimeError"), ("bad-publish", "ValueError")]
        assert results == ["good"]
        assert (w.processed, w.failed, w.dropped) == (1, 2, 0)
        assert w.running
    finally:
        w.stop()


def test_a_raising_error_handler_does_not_kill_the_worker():
    def on_error(item, exc):
        raise KeyError("handler bug")

    w = LatestFrameWorker(lambda x: 1 / x, None, on_error)
    try:
        w.submit(0)
        assert w.wait_idle(5)
        w.submit(2)
        assert w.wait_idle(5)
        assert (w.processed, w.failed) == (1, 1)
    finally:
        w.stop()


def test_none_is_a_valid_item():
    seen = []
    w = LatestFrameWorker(lambda x: seen.append(x))
    try:
        w.submit(None)
        assert w.wait_idle(5)
        assert seen == [None] and w.processed == 1
    finally:
        w.stop()


def test_stop_discards_the_waiting_item_and_later_submissions():
    gate = Gate()
    w = LatestFrameWorker(gate)
    w.submit(1)
    assert gate.started.wait(5)
    w.submit(2)  # waiting
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    deadline = time.monotonic() + 5
    while w.running and time.monotonic() < deadline:
        time.sleep(0.001)
    assert w.pending == 0 and not w.running and w.busy  # 2 discarded, 1 still running
    gate.release.set()
    stopper.join(5)
    assert not stopper.is_alive()
    assert w.submit(3) is False
    assert gate.seen == [1]
    c = w.counters()
    assert (c["submitted"], c["processed"], c["dropped"], c["failed"]) == (3, 1, 2, 0)
    assert c["submitted"] == c["processed"] + c["dropped"] + c["failed"]
    with pytest.raises(RuntimeError):
        w.start()


def test_not_started_worker_keeps_one_item():
    w = LatestFrameWorker(lambda x: x, start=False)
    w.submit(1)
    w.submit(2)
    assert (w.pending, w.dropped) == (1, 1)
    assert w.wait_idle(0.01) is False
    w.start()
    assert w.wait_idle(5)
    assert (w.processed, w.dropped) == (1, 1)
    w.stop()


def test_under_load_frames_are_dropped_not_queued():
    seen = []

    def slow(x):
        seen.append(x)
        time.sleep(0.005)
        return x

    w = LatestFrameWorker(slow)
    max_pending = 0
    try:
        for i in range(200):
            w.submit(i)
            max_pending = max(max_pending, w.pending)
        assert w.wait_idle(10)
        c = w.counters()
        assert c["submitted"] == 200
        assert c["processed"] + c["dropped"] == 200 and c["failed"] == 0
        assert c["dropped"] > 0 and max_pending <= 1
        assert seen[-1] == 199  # the newest frame is always processed
        assert seen == sorted(seen)
    finally:
        w.stop()


def test_latency_stats():
    s = LatencyStats(window=3)
    for v in (1.0, 2.0, 3.0, 4.0):
        s.add("model", v)
    s.update({"convert": 0.5}, prefix="pre/")
    summary = s.summary()
    # the window keeps 2, 3, 4; p95 by linear interpolation: 3 + 0.9 * (4 - 3)
    assert summary["model"] == pytest.approx({"mean": 3.0, "p50": 3.0, "p95": 3.9, "max": 4.0, "last": 4.0,
                                              "count": 3.0})
    assert list(summary) == ["model", "pre/convert"]
    assert s.format() == "model 3000.0/4000.0 ms, pre/convert 500.0/500.0 ms"
    assert s.summary_ms()["model"] == {"mean": 3000.0, "p50": 3000.0, "p95": 3900.0, "max": 4000.0, "n": 3}
    everything = LatencyStats(window=None)
    for v in range(1, 102):
        everything.add("x", v / 1000)
    assert everything.summary_ms()["x"] == {"mean": 51.0, "p50": 51.0, "p95": 96.0, "max": 101.0, "n": 101}
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError):
            LatencyStats(window=bad)
