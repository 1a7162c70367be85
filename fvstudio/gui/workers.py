"""The one worker mechanism of the explorer: every long job runs off the GUI thread through :class:`JobRunner`.

A job is a plain callable ``fn(*args, progress=..., cancel=..., **kwargs)`` following the engine's
progress/cancel protocol (:mod:`fvstudio.engine.progress`). The runner starts it on a thread of Qt's
global pool through superqt's ``create_worker`` and turns what happens into signals on the GUI thread:

- ``started(name)``, then ``progressed(name, Progress)`` (throttled to ~20 updates/s, but an update that
  carries plot values such as ``log_likelihood`` or starts a new ``step`` is always delivered),
- ``busy_changed(False)``, then exactly one of ``succeeded(name, result)``, ``cancelled(name)``,
  ``failed(name, message, traceback)`` (a handler may start the next job), then ``finished(name)``.

Worker threads lower their own scheduling priority (Linux: nice +10 for that thread, inherited by the
threads it spawns, e.g. the two extraction workers), so on a busy two-core machine the GUI thread gets
the CPU first and the event loop stays responsive; numba kernels release the GIL (``nogil=True``).

When a job ends the runner runs Python's cyclic garbage collector once (a pause of a few tens of ms
where the user is waiting for the result anyway) instead of letting a full collection of the job's
leftovers fall, later, into thumbnail scrolling (measured: an 85 ms stall 1.4 s into scrolling).

The job body never lets an exception reach superqt: it is caught in the worker thread and returned as a
tagged tuple, so nothing is swallowed (superqt only *warns* about a ``RuntimeError``) and a cancel
(:class:`~fvstudio.engine.progress.Cancelled`) is told apart from an error. ``errored`` is still connected
for failures of the wrapper itself. Only one job runs at a time: panels ask :meth:`JobRunner.is_busy`.

:class:`BackgroundQueue` is the same idea for many tiny requests (thumbnails): a LIFO queue served by one
pool thread, so what the user looks at now is loaded first.
"""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Signal
from superqt.utils import create_worker

from fvstudio.engine.progress import CancelToken, Cancelled, Progress

log = logging.getLogger("fvstudio.gui")

_THROTTLE_S = 0.05
_WORKER_NICE = int(os.environ.get("FVSTUDIO_WORKER_NICE", "10"))  # 0 = leave priorities alone
_niced = threading.local()


def lower_thread_priority() -> None:
    """Make the calling (worker) thread yield the CPU to the GUI thread (Linux per-thread nice)."""
    if getattr(_niced, "done", False) or _WORKER_NICE <= 0:
        return
    _niced.done = True
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), _WORKER_NICE))
        except OSError:  # not permitted / not supported: run at normal priority
            pass


class _Bridge(QObject):
    """Lives on the GUI thread; signals emitted from the worker thread are queued to it."""

    progress = Signal(str, object)


class JobRunner(QObject):
    started = Signal(str)
    progressed = Signal(str, object)
    succeeded = Signal(str, object)
    cancelled = Signal(str)
    failed = Signal(str, str, str)
    finished = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._bridge = _Bridge(self)
        self._bridge.progress.connect(self.progressed)
        self._worker = None
        self._token: Optional[CancelToken] = None
        self._name: Optional[str] = None
        self._done_event = threading.Event()
        self._done_event.set()

    # ---------------------------------------------------------------- state
    def is_busy(self) -> bool:
        return self._name is not None

    @property
    def current(self) -> Optional[str]:
        return self._name

    def cancel(self) -> None:
        """Ask the running job to stop at its next checkpoint (it then emits ``cancelled``)."""
        if self._token is not None:
            log.info("cancel requested for %s", self._name)
            self._token.cancel()

    # ---------------------------------------------------------------- start
    def start(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Run ``fn(*args, progress=, cancel=, **kwargs)`` in the background; False if a job is running."""
        if self.is_busy():
            log.warning("job %s not started: %s is still running", name, self._name)
            return False
        token = CancelToken()
        self._token = token
        self._name = name
        self._done_event.clear()
        bridge = self._bridge
        last = {"t": 0.0, "step": None}

        def progress(p: Progress) -> None:
            now = time.monotonic()
            values = dict(p.values or {})
            step = values.get("step")
            urgent = (step != last["step"]) or any(k != "step" for k in values) or p.done >= p.total
            if urgent or now - last["t"] >= _THROTTLE_S:
                last["t"] = now
                last["step"] = step
                bridge.progress.emit(name, p)

        def body():
            lower_thread_priority()
            try:
                return ("ok", fn(*args, progress=progress, cancel=token, **kwargs))
            except Cancelled as exc:
                return ("cancelled", str(exc))
            except BaseException as exc:  # noqa: BLE001 - reported to the user, never swallowed
                return ("error", (f"{type(exc).__name__}: {exc}",
                                  "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))

        worker = create_worker(body, _start_thread=False,
                               _connect={"returned": self._on_returned, "errored": self._on_errored})
        self._worker = worker
        log.info("job %s started", name)
        self.busy_changed.emit(True)
        self.started.emit(name)
        worker.start()
        return True

    def wait(self, timeout: float = 60.0) -> bool:
        """Block (without an event loop) until the running job's body has returned; for scripts."""
        return self._done_event.wait(timeout)

    # ---------------------------------------------------------------- endings
    def _finish(self) -> str:
        name = self._name or ""
        self._name = None
        self._token = None
        self._worker = None
        self._done_event.set()
        return name

    def _on_returned(self, outcome) -> None:
        kind, payload = outcome
        name = self._finish()
        # A job leaves many short-lived Python objects behind; collecting them now, while the result is
        # being shown, avoids a 50-90 ms full collection later in the middle of scrolling or a live plot.
        t0 = time.perf_counter()
        gc.collect()
        log.debug("gc after job %s: %.1f ms", name, 1000 * (time.perf_counter() - t0))
        # Not busy any more *before* the outcome is announced, so a handler may start the next job.
        self.busy_changed.emit(False)
        if kind == "ok":
            log.info("job %s done", name)
            self.succeeded.emit(name, payload)
        elif kind == "cancelled":
            log.info("job %s cancelled (%s)", name, payload)
            self.cancelled.emit(name)
        else:
            message, tb = payload
            log.error("job %s failed: %s\n%s", name, message, tb)
            self.failed.emit(name, message, tb)
        self.finished.emit(name)

    def _on_errored(self, exc: BaseException) -> None:
        name = self._finish()
        self.busy_changed.emit(False)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("job %s failed in the worker wrapper: %s\n%s", name, exc, tb)
        self.failed.emit(name, f"{type(exc).__name__}: {exc}", tb)
        self.finished.emit(name)


class ProgressClock:
    """ETA of the current phase: restarts whenever the phase (``values["step"]``) changes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._phase = None
        self._t0 = time.monotonic()

    def update(self, p: Progress) -> Optional[float]:
        phase = (p.values or {}).get("step")
        if phase != self._phase:
            self._phase = phase
            self._t0 = time.monotonic()
        f = p.fraction
        elapsed = time.monotonic() - self._t0
        if f <= 0.02 or elapsed < 0.5:
            return None
        return elapsed * (1.0 - f) / f


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "ETA …"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"ETA {seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"ETA {seconds // 60} min {seconds % 60:02d} s"
    return f"ETA {seconds} s"


class _QueueSignals(QObject):
    ready = Signal(object, object)  # key, result


class BackgroundQueue(QObject):
    """Serve many small requests (``fn(key)``) on one pool thread, most recent request first.

    ``ready(key, result)`` is emitted on the GUI thread; a ``fn`` that raises yields ``result=None``
    and a log line. Requests already queued are not duplicated; beyond ``max_pending`` the oldest are
    dropped (a view asks again when it shows them); :meth:`clear` drops the backlog (e.g. when another
    dataset is opened).
    """

    ready = Signal(object, object)

    def __init__(self, fn: Callable[[Any], Any], parent: Optional[QObject] = None, max_pending: int = 512) -> None:
        super().__init__(parent)
        self._fn = fn
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: "OrderedDict[Any, None]" = OrderedDict()
        self._alive = False
        self._signals = _QueueSignals()
        self._signals.ready.connect(self.ready)
        self._worker = None

    def request(self, key: Any) -> None:
        start = False
        with self._lock:
            if key in self._pending:
                self._pending.move_to_end(key)
            else:
                self._pending[key] = None
                while len(self._pending) > self._max_pending:  # scrolled far past: forget the oldest asks
                    self._pending.popitem(last=False)
            if not self._alive:
                self._alive = start = True
        if start:
            self._worker = create_worker(self._serve, _start_thread=False,
                                         _connect={"errored": self._on_errored})
            self._worker.start()

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending and not self._alive

    def _serve(self) -> None:
        lower_thread_priority()
        # The thread leaves as soon as the backlog is empty, so it never holds a pool slot while idle.
        while True:
            with self._lock:
                if not self._pending:
                    self._alive = False
                    return
                key = self._pending.popitem(last=True)[0]
            try:
                result = self._fn(key)
            except Exception as exc:  # noqa: BLE001
                log.warning("background request %r failed: %s", key, exc)
                result = None
            self._signals.ready.emit(key, result)

    def _on_errored(self, exc: BaseException) -> None:
        log.error("background queue stopped: %s", exc)
        with self._lock:
            self._alive = False
