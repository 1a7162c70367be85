"""The one worker mechanism of the explorer: :class:`BackgroundTask`, a task slot that its owner (a panel, or
the window for pipeline runs) starts work in, off the GUI thread. The idea is Orange's ``ConcurrentMixin``.

A job is a plain callable ``fn(*args, progress=..., cancel=..., **kwargs)`` following the engine's
progress/cancel protocol (:mod:`fvstudio.engine.progress`). ``task.start(label, fn, *args)`` runs it on a
thread of Qt's global pool through superqt's ``create_worker`` and reports, on the GUI thread:

- ``started(label)``, then ``progressed(label, Progress)`` (throttled to ~20 updates/s, but an update that
  carries plot values such as ``log_likelihood`` or starts a new ``step`` is always delivered),
- ``busy_changed(False)``, then exactly one of ``succeeded(label, result)``, ``cancelled(label)``,
  ``failed(label, message, traceback)`` (a handler may start the next task), then ``finished(label)``.

Starting a task while the slot's previous one still runs cancels the previous one (its cancel token) and
drops whatever it reports afterwards: only the newest task of a slot is heard from. Different slots run
independently; ``is_busy()`` / ``current`` / ``cancel()`` / ``wait()`` concern one slot.

Worker threads lower their own scheduling priority (Linux: nice +10 for that thread, inherited by the
threads it spawns, e.g. the two extraction workers), so on a busy two-core machine the GUI thread gets
the CPU first and the event loop stays responsive; numba kernels release the GIL (``nogil=True``).

When a task ends the slot runs Python's cyclic garbage collector once (a pause of a few tens of ms
where the user is waiting for the result anyway) instead of letting a full collection of the job's
leftovers fall, later, into thumbnail scrolling (measured: an 85 ms stall 1.4 s into scrolling).

The job body never lets an exception reach superqt: it is caught in the worker thread and returned as a
tagged outcome, so nothing is swallowed (superqt only *warns* about a ``RuntimeError``) and a cancel
(:class:`~fvstudio.engine.progress.Cancelled`) is told apart from an error. superqt's ``errored`` is still
connected, for failures of the wrapper itself.

:class:`BackgroundQueue` serves many tiny requests (thumbnails): a LIFO queue served by one pool thread,
so what the user looks at now is loaded first.
"""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

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
    """Lives on the GUI thread; signals emitted from worker threads are queued to it."""

    progress = Signal(int, object)  # run number, Progress


class _Run:
    """One started job of a slot: its number, label, cancel token and 'body has returned' event."""

    def __init__(self, number: int, label: str) -> None:
        self.number = number
        self.label = label
        self.token = CancelToken()
        self.returned = threading.Event()
        self.worker = None


def _throttled(run: _Run, emit: Callable[[int, Progress], None]) -> Callable[[Progress], None]:
    """The progress callback handed to the job: at most one update per ``_THROTTLE_S``, except updates
    that start a new step, carry plot values or finish."""
    last = {"t": 0.0, "step": None}

    def progress(p: Progress) -> None:
        now = time.monotonic()
        step = p.values.get("step")
        urgent = (step != last["step"]) or any(k != "step" for k in p.values) or p.done >= p.total
        if urgent or now - last["t"] >= _THROTTLE_S:
            last["t"] = now
            last["step"] = step
            emit(run.number, p)

    return progress


def _outcome(fn, args, kwargs, progress, token) -> tuple:
    """Run the job in the worker thread: ("ok", result) | ("cancelled", reason) | ("error", (message, tb))."""
    lower_thread_priority()
    try:
        return ("ok", fn(*args, progress=progress, cancel=token, **kwargs))
    except Cancelled as exc:
        return ("cancelled", str(exc))
    except BaseException as exc:  # noqa: BLE001 - reported to the user, never swallowed
        return ("error", (f"{type(exc).__name__}: {exc}",
                          "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))


class BackgroundTask(QObject):
    """A task slot: ``start(label, fn, *args, **kwargs)`` runs ``fn`` in the background (see the module doc)."""

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
        self._bridge.progress.connect(self._on_progress)
        self._count = 0
        self._run: Optional[_Run] = None  # the newest run, until it has reported
        self._live: Dict[int, _Run] = {}  # runs whose body has not returned yet (the newest and superseded ones)

    # ---------------------------------------------------------------- state
    def is_busy(self) -> bool:
        return self._run is not None

    @property
    def current(self) -> Optional[str]:
        """The label of the running task, or None."""
        return self._run.label if self._run is not None else None

    def cancel(self) -> None:
        """Ask the running task to stop at its next checkpoint (it then reports ``cancelled``)."""
        if self._run is not None:
            log.info("cancel requested for %s", self._run.label)
            self._run.token.cancel()

    def wait(self, timeout: float = 60.0) -> bool:
        """Block (without an event loop) until every started body has returned; False on timeout."""
        deadline = time.monotonic() + timeout
        for run in list(self._live.values()):
            if not run.returned.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # ---------------------------------------------------------------- start
    def start(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, progress=, cancel=, **kwargs)`` in the background; cancels this slot's previous task."""
        previous = self._run
        if previous is not None:
            log.info("%s supersedes %s (cancelled)", label, previous.label)
            previous.token.cancel()
        self._count += 1
        run = _Run(self._count, label)
        self._run = run
        self._live[run.number] = run
        progress = _throttled(run, self._bridge.progress.emit)

        def body():
            try:
                return run.number, _outcome(fn, args, kwargs, progress, run.token)
            finally:
                run.returned.set()

        run.worker = create_worker(body, _start_thread=False,
                                   _connect={"returned": self._on_returned, "errored": self._on_errored})
        log.info("task %s started", label)
        if previous is None:
            self.busy_changed.emit(True)
        self.started.emit(label)
        run.worker.start()

    # ---------------------------------------------------------------- reports (GUI thread)
    def _on_progress(self, number: int, p: Progress) -> None:
        if self._run is not None and self._run.number == number:
            self.progressed.emit(self._run.label, p)

    def _take(self, number: Optional[int]) -> Optional[_Run]:
        """The newest run if ``number`` is it (None: a wrapper failure, blamed on the newest run)."""
        if number is not None:
            self._live.pop(number, None)
        run = self._run
        if run is None or (number is not None and run.number != number):
            return None  # a superseded run: its outcome is dropped
        self._run = None
        return run

    def _on_returned(self, value) -> None:
        number, (kind, payload) = value
        run = self._take(number)
        if run is None:
            log.info("outcome of a superseded task dropped (%s)", kind)
            return
        # A job leaves many short-lived Python objects behind; collecting them now, while the result is
        # being shown, avoids a 50-90 ms full collection later in the middle of scrolling or a live plot.
        t0 = time.perf_counter()
        gc.collect()
        log.debug("gc after task %s: %.1f ms", run.label, 1000 * (time.perf_counter() - t0))
        # Not busy any more *before* the outcome is announced, so a handler may start the next task.
        self.busy_changed.emit(False)
        if kind == "ok":
            log.info("task %s done", run.label)
            self.succeeded.emit(run.label, payload)
        elif kind == "cancelled":
            log.info("task %s cancelled (%s)", run.label, payload)
            self.cancelled.emit(run.label)
        else:
            message, tb = payload
            log.error("task %s failed: %s\n%s", run.label, message, tb)
            self.failed.emit(run.label, message, tb)
        self.finished.emit(run.label)

    def _on_errored(self, exc: BaseException) -> None:
        run = self._take(None)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("a task failed in the worker wrapper: %s\n%s", exc, tb)
        if run is None:
            return
        self._live.pop(run.number, None)
        self.busy_changed.emit(False)
        self.failed.emit(run.label, f"{type(exc).__name__}: {exc}", tb)
        self.finished.emit(run.label)


class ProgressClock:
    """ETA of the current phase: restarts whenever the phase (``values["step"]``) changes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._phase = None
        self._t0 = time.monotonic()

    def update(self, p: Progress) -> Optional[float]:
        phase = p.values.get("step")
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
