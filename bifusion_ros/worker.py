"""ROS-free "latest frame wins" worker and a per-stage latency accumulator for the node.

:class:`LatestFrameWorker` runs a slow function (the model) on a background thread over a **one-slot
mailbox**: :meth:`~LatestFrameWorker.submit` never blocks and never queues more than one item; an item that is
still waiting when a newer one arrives is replaced and counted as dropped. So the node always works on the
newest frame and its memory stays bounded however slow the model is.

Invariant (once idle or stopped): ``submitted == processed + failed + dropped``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

__all__ = ["LatestFrameWorker"]

_log = logging.getLogger(__name__)


class LatestFrameWorker:
    """Runs ``process_fn(item)`` on a worker thread, newest item first, at most one item waiting.

    Args:
        process_fn: ``item -> result``; runs on the worker thread.
        on_result: ``(item, result) -> None`` after a successful ``process_fn`` (worker thread).
        on_error: ``(item, exception) -> None`` when ``process_fn`` or ``on_result`` raised (worker
            thread). Without it the exception is logged. An exception never stops the worker.
        name: thread name.
        start: start the thread now (else call :meth:`start`).

    Counters (read at any time): ``submitted``, ``processed`` (``process_fn`` and ``on_result`` returned),
    ``failed`` (one of them raised), ``dropped`` (replaced while waiting, discarded by :meth:`stop`, or
    submitted after :meth:`stop`).
    """

    def __init__(self, process_fn: Callable[[Any], Any],
                 on_result: Callable[[Any, Any], None] | None = None,
                 on_error: Callable[[Any, BaseException], None] | None = None,
                 *, name: str = "bifusion-worker", start: bool = True):
        self._process_fn = process_fn
        self._on_result = on_result
        self._on_error = on_error
        self._name = name
        self._cond = threading.Condition()
        self._slot: tuple[Any] | None = None  # (item,) so that None can be an item
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.submitted = 0
        self.processed = 0
        self.failed = 0
        self.dropped = 0
        if start:
            self.start()

    # ------------------------------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the worker thread (idempotent; ``RuntimeError`` after :meth:`stop`)."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("LatestFrameWorker was stopped; create a new one")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def submit(self, item) -> bool:
        """Put ``item`` into the mailbox; returns True when it replaced (dropped) a waiting item.

        Never blocks on the processing. After :meth:`stop` the item is counted as dropped.
        """
        with self._cond:
            self.submitted += 1
            if self._stopping:
                self.dropped += 1
                return False
            replaced = self._slot is not None
            if replaced:
                self.dropped += 1
            self._slot = (item,)
            self._cond.notify_all()
            return replaced

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop accepting items, discard (count as dropped) a waiting one, let the running one finish and
        join the thread for up to ``timeout`` seconds. Returns True when the thread has ended."""
        with self._cond:
            self._stopping = True
            if self._slot is not None:
                self._slot = None
                self.dropped += 1
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(timeout)
        return not thread.is_alive()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing waits and nothing runs (True), or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is not None or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # ------------------------------------------------------------------------------------------ state
    @property
    def pending(self) -> int:
        """Items waiting in the mailbox: 0 or 1."""
        with self._cond:
            return int(self._slot is not None)

    @property
    def busy(self) -> bool:
        """Whether ``process_fn`` / ``on_result`` is running now."""
        with self._cond:
            return self._busy

    @property
    def running(self) -> bool:
        """Whether the thread is alive and accepting items."""
        with self._cond:
            return self._thread is not None and self._thread.is_alive() and not self._stopping

    def counters(self) -> dict[str, int]:
        """A consistent snapshot of the counters and the mailbox."""
        with self._cond:
            return {"submitted": self.submitted, "processed": self.processed, "failed": self.failed,
                    "dropped": self.dropped, "pending": int(self._slot is not None), "busy": int(self._busy)}

    # ------------------------------------------------------------------------------------------ thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    self._cond.notify_all()
                    return
                (item,), self._slot = self._slot, None
                self._busy = True
            ok = True
            try:
                result = self._process_fn(item)
                if self._on_result is not None:
                    self._on_result(item, result)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything a frame does
                ok = False
                self._report(item, exc)
            with self._cond:
                self._busy = False
                if ok:
                    self.processed += 1
                else:
                    self.failed += 1
                self._cond.notify_all()

    def _report(self, item, exc: BaseException) -> None:
        if self._on_error is None:
            _log.error("frame processing failed: %s: %s", type(exc).__name__, exc)
            return
        try:
            self._on_error(item, exc)
        except Exception:  # noqa: BLE001
            _log.exception("on_error callback raised")
