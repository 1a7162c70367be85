"""The progress part of the status bar: bar, ETA and Cancel for the background tasks it watches.

:class:`TaskProgress` watches any number of :class:`~fvstudio.gui.workers.BackgroundTask` slots (the
shared pipeline runner, the diagnostics panel's task): while one is busy it shows the progress of the
task that started last, the ETA of the current phase (:class:`~fvstudio.gui.workers.ProgressClock`) and a
Cancel button for that task; ``message(str)`` forwards the progress messages (the window's status text).
"""
from __future__ import annotations

from typing import List, Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from fvstudio.engine.progress import Progress

from .workers import BackgroundTask, ProgressClock, format_eta

__all__ = ["TaskProgress"]


class TaskProgress(QWidget):
    message = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._tasks: List[BackgroundTask] = []
        self._shown: Optional[BackgroundTask] = None
        self._clock = ProgressClock()
        self.bar = QProgressBar()
        self.bar.setObjectName("progress")
        self.bar.setRange(0, 1000)
        self.bar.setMaximumWidth(260)
        self.bar.setTextVisible(True)
        self.eta = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("status_cancel")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.eta)
        layout.addWidget(self.cancel_button)
        self.setVisible(False)

    def watch(self, task: BackgroundTask) -> None:
        self._tasks.append(task)
        task.started.connect(lambda _label, t=task: self._on_started(t))
        task.progressed.connect(lambda _label, p, t=task: self._on_progress(t, p))
        task.busy_changed.connect(lambda _busy: self._update_shown())

    def shown_task(self) -> Optional[BackgroundTask]:
        """The task whose progress is shown (None when no watched task is busy)."""
        return self._shown

    def cancel(self) -> Optional[str]:
        """Cancel the task shown; returns its label (None if nothing runs)."""
        task = self._shown
        if task is None or not task.is_busy():
            return None
        label = task.current
        self.message.emit(f"Cancelling {label}…")
        task.cancel()
        return label

    def _on_started(self, task: BackgroundTask) -> None:
        self._shown = task
        self._clock.reset()
        self.bar.setValue(0)
        self.bar.setFormat("0 %")
        self.eta.setText(format_eta(None))
        self.setVisible(True)

    def _on_progress(self, task: BackgroundTask, p: Progress) -> None:
        if task is not self._shown:
            return
        self.bar.setValue(int(round(1000 * p.fraction)))
        self.bar.setFormat(f"{100 * p.fraction:.0f} %")
        self.eta.setText(format_eta(self._clock.update(p)))
        if p.message:
            self.message.emit(p.message)

    def _update_shown(self) -> None:
        if self._shown is not None and self._shown.is_busy():
            return
        busy = [t for t in self._tasks if t.is_busy()]
        self._shown = busy[-1] if busy else None
        self.setVisible(self._shown is not None)
