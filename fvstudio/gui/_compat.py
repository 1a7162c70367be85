"""Work-around for a reference-count bug of PySide6 6.12 under Python < 3.12.

Emitting a Qt signal that carries ``True`` (``Signal(bool)``; also the ones pyqtgraph and superqt emit
internally on every ``setData`` / ``setValue``) drops one reference to ``True`` too many: measured here,
-2 per emission. ``True`` and ``False`` are ordinary objects before Python 3.12 (immortal from 3.12
on), so after enough emissions their count reaches zero and the interpreter aborts with
"Fatal Python error: bool_dealloc" (seen at the end of the GUI test run; ``None`` suffers the same,
"none_dealloc"). Until PySide6 is fixed we add a large constant to these three counts once, at
import, without ever taking it back, which makes them effectively immortal as on Python 3.12.
Nothing else is touched; on Python 3.12+ this does nothing.
"""
from __future__ import annotations

import ctypes
import sys

_PAD = 1 << 40


def pin_bools() -> None:
    if sys.version_info >= (3, 12) or getattr(pin_bools, "done", False):
        return
    pin_bools.done = True
    if sys.implementation.name != "cpython":
        return
    for obj in (True, False, None):
        # ob_refcnt is the first field of every CPython object (Py_ssize_t), at id(obj).
        ctypes.c_ssize_t.from_address(id(obj)).value += _PAD


pin_bools()
