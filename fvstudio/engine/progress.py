"""Progress reporting and cancellation: the one protocol every long-running step uses.

A step takes ``progress=None`` (a callable receiving a :class:`Progress`) and ``cancel=None``
(a :class:`CancelToken`, a ``threading.Event``, or a zero-argument callable returning True when the
user asked to stop). It calls :func:`report` at natural checkpoints (an EM iteration, an image, an
epoch) and :func:`check_cancel` between them; a cancelled step raises :class:`Cancelled` and must
leave nothing half-written on disk. Nothing here knows about Qt: the GUI wraps these in signals.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union


class Cancelled(Exception):
    """Raised by a step whose cancel token was set. Not a RuntimeError (Qt workers swallow those)."""


@dataclass(frozen=True)
class Progress:
    """One progress update: ``done`` out of ``total`` units, a human message, and named values.

    ``values`` carries what a live plot needs (e.g. ``{"log_likelihood": -81.2}`` per EM iteration).
    """

    done: float
    total: float
    message: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """A thread-safe flag a caller sets to ask a running step to stop at its next checkpoint."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:  # duck-types as threading.Event
        return self._event.is_set()


CancelLike = Union[None, CancelToken, threading.Event, Callable[[], bool]]


def is_cancelled(cancel: CancelLike) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, (CancelToken, threading.Event)):
        return bool(cancel.is_set())
    return bool(cancel())


def check_cancel(cancel: CancelLike, what: str = "operation") -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set."""
    if is_cancelled(cancel):
        raise Cancelled(f"{what} cancelled")


def report(progress: Optional[ProgressCallback], done: float, total: float, message: str = "",
           **values: Any) -> None:
    """Send one update to ``progress`` if there is a callback."""
    if progress is not None:
        progress(Progress(done, total, message, values))


def scaled(progress: Optional[ProgressCallback], start: float, stop: float,
           prefix: str = "") -> Optional[ProgressCallback]:
    """A callback mapping a sub-step's fraction into [start, stop] of the parent's unit range."""
    if progress is None:
        return None

    def _cb(p: Progress) -> None:
        msg = f"{prefix}{p.message}" if prefix else p.message
        progress(Progress(start + (stop - start) * p.fraction, 1.0, msg, p.values))

    return _cb
