"""Pipeline panel: one section per step of ``fvstudio.pipeline.STEPS`` with its parameters, status and Run button.

The editors come from ``PipelineConfig.schema()`` (see :mod:`fvstudio.gui.config_form`); the schema's
section of a key decides the step it belongs to (``encoder.*`` -> ``encode``, ``evaluation.*`` ->
``evaluate``; the ``dataset`` section is edited in the dataset panel). A step's status is the pipeline's
own (``not run`` / ``cached`` / ``stale``) overlaid by what the explorer saw (``running`` / ``done`` /
``failed``). The panel emits requests; the main window runs them through the shared job runner. On the
right: Run all, Sweep… (the main window opens the sweep dialog), the run table (status and time per step) and the live GMM log-likelihood (one point per EM
iteration, from the progress values of the running fit). Which section shows a config key follows the
key's config section (:data:`SECTION_STEPS`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (QFrame, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QScrollArea,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .config_form import ConfigForm, SchemaEntry
from .plots import Figure

STEP_TITLES = {
    "descriptors": ("Descriptors", "Dense local descriptors on a regular grid (Sec. 3.1)"),
    "pca": ("PCA", "Decorrelate and reduce the descriptors (Sec. 2.3, 3.1)"),
    "gmm": ("GMM", "Diagonal Gaussian mixture = the visual vocabulary (Sec. 2.2, App. B)"),
    "encode": ("Encoder", "Fisher Vector (eq. 16-19) and its normalisations (Sec. 2.3)"),
    "compress": ("Compression", "Product quantisation of the FVs and the sparsity bit (Sec. 4.1-4.2); b = 0 is off"),
    "classifier": ("Classifier", "One-vs-rest linear classifiers (Sec. 3.1, 4.3) or k-NN (Sec. 5.1)"),
    "evaluate": ("Evaluation", "Accuracy / AP on the test split (Sec. 3)"),
}
#: The step whose section of the panel shows each config section (``PipelineConfig``'s SECTIONS). The
#: ``dataset`` keys are edited in the dataset panel; ``fusion``, ``runtime`` and ``compute`` are listed last,
#: with the evaluation.
SECTION_STEPS = {"dataset": None, "descriptors": "descriptors", "pca": "pca", "gmm": "gmm", "encoder": "encode",
                 "compression": "compress", "classifier": "classifier", "fusion": "evaluate", "evaluate": "evaluate",
                 "runtime": "evaluate", "compute": "evaluate"}

STATUS_TEXT = {
    "not run": "○ not run",
    "cached": "● cached",
    "stale": "◐ stale — parameters changed",
    "running": "▶ running…",
    "done": "✔ done",
    "failed": "✖ failed",
    "cancelled": "○ cancelled — not run",
}


class StepSection(QGroupBox):
    run_clicked = Signal(str)

    def __init__(self, step: str, index: int, entries: List[SchemaEntry], parent=None) -> None:
        title, blurb = STEP_TITLES[step]
        super().__init__(f"{index}. {title}", parent)
        self.step = step
        self.setObjectName(f"step:{step}")
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        note = QLabel(blurb)
        note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        note.setWordWrap(True)
        top.addWidget(note, 1)
        self.status = QLabel(STATUS_TEXT["not run"])
        self.status.setObjectName(f"status:{step}")
        f = QFont(self.status.font())
        f.setBold(True)
        self.status.setFont(f)
        top.addWidget(self.status)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName(f"run:{step}")
        self.run_button.setToolTip(f"Run the {title.lower()} step (and anything it needs that is not cached)")
        self.run_button.clicked.connect(lambda: self.run_clicked.emit(self.step))
        top.addWidget(self.run_button)
        lay.addLayout(top)
        self.form = ConfigForm(entries)
        lay.addWidget(self.form)
        self.state = "not run"

    def set_status(self, state: str, detail: str = "") -> None:
        self.state = state
        text = STATUS_TEXT.get(state, state)
        if detail:
            text += f" ({detail})"
        self.status.setText(text)
        role = {"running": QPalette.ColorRole.Highlight, "cached": QPalette.ColorRole.Link,
                "done": QPalette.ColorRole.Link, "not run": QPalette.ColorRole.PlaceholderText,
                "cancelled": QPalette.ColorRole.PlaceholderText}.get(state, QPalette.ColorRole.WindowText)
        self.status.setForegroundRole(role)


class PipelinePanel(QWidget):
    run_step_requested = Signal(str)
    run_all_requested = Signal()
    cancel_requested = Signal()
    sweep_requested = Signal()
    edited = Signal(str, object)

    def __init__(self, steps: Sequence[str], entries: Sequence[SchemaEntry], parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:pipeline")
        self.steps = tuple(steps)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_sections(entries))
        split.addWidget(self._build_run_view())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([640, 460])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

    def _build_sections(self, entries: Sequence[SchemaEntry]) -> QScrollArea:
        """Left: one section per step with its parameters, status and Run button."""
        by_step: Dict[str, List[SchemaEntry]] = {s: [] for s in self.steps}
        for e in entries:
            if SECTION_STEPS[e.section] is not None:
                by_step[SECTION_STEPS[e.section]].append(e)
        self.sections: Dict[str, StepSection] = {}
        inner = QWidget()
        il = QVBoxLayout(inner)
        for i, s in enumerate(self.steps, 1):
            sec = StepSection(s, i, by_step[s])
            sec.run_clicked.connect(self.run_step_requested)
            sec.form.edited.connect(self.edited)
            il.addWidget(sec)
            self.sections[s] = sec
        il.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(inner)
        return scroll

    def _build_run_view(self) -> QWidget:
        """Right: Run all / Cancel, the step table, the live log-likelihood."""
        self.run_all_button = QPushButton("Run all")
        self.run_all_button.setObjectName("run_all")
        self.run_all_button.setToolTip("Run every step; cached steps are skipped (F5)")
        f = self.run_all_button.font()
        f.setBold(True)
        self.run_all_button.setFont(f)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop the running step at its next checkpoint (Esc)")
        self.sweep_button = QPushButton("Sweep…")
        self.sweep_button.setObjectName("sweep")
        self.sweep_button.setToolTip("Run the pipeline once per value of one or two keys (or the Table 1 preset); "
                                     "the Sweeps panel draws it live")
        self.run_all_button.clicked.connect(self.run_all_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.sweep_button.clicked.connect(self.sweep_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_all_button, 1)
        buttons.addWidget(self.sweep_button)
        buttons.addWidget(self.cancel_button)
        self.ll_plot = Figure("gmm_log_likelihood", "Has EM converged? GMM log-likelihood per iteration",
                              "EM iteration", None, "mean log-likelihood", "nats/descriptor")
        self.ll_curve = self.ll_plot.curve(symbol="o")
        self._log_likelihood: List[float] = []
        self.show_log_likelihood([])
        self.message = QLabel("")
        self.message.setWordWrap(True)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addLayout(buttons)
        rl.addWidget(self._build_step_table())
        rl.addWidget(self.ll_plot, 1)
        rl.addWidget(self.message)
        return right

    def _build_step_table(self) -> QTableWidget:
        self.table = QTableWidget(len(self.steps), 3)
        self.table.setObjectName("step_table")
        self.table.setHorizontalHeaderLabels(["Step", "Status", "Time (s)"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for r, s in enumerate(self.steps):
            self.table.setItem(r, 0, QTableWidgetItem(STEP_TITLES[s][0]))
            self.table.setItem(r, 1, QTableWidgetItem(STATUS_TEXT["not run"]))
            t = QTableWidgetItem("")
            t.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(r, 2, t)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.resizeRowsToContents()
        self.table.setFixedHeight(self.table.verticalHeader().length() +
                                  self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth())
        return self.table

    # ---------------------------------------------------------------- binding
    def set_config(self, config) -> None:
        for sec in self.sections.values():
            sec.form.set_values(config)

    def set_status(self, step: str, state: str, detail: str = "") -> None:
        if step not in self.sections:
            return
        self.sections[step].set_status(state, detail)
        r = self.steps.index(step)
        self.table.item(r, 1).setText(STATUS_TEXT.get(state, state))

    def status(self, step: str) -> str:
        return self.sections[step].state

    def set_time(self, step: str, seconds: Optional[float]) -> None:
        if step in self.sections:
            self.table.item(self.steps.index(step), 2).setText("" if seconds is None else f"{seconds:.2f}")

    def set_busy(self, busy: bool, can_run: bool = True) -> None:
        """Run buttons enabled when no run is under way and there is a dataset to run on (``can_run``)."""
        self.run_all_button.setEnabled(not busy and can_run)
        self.run_all_button.setToolTip("Run every step; cached steps are skipped (F5)" if can_run else
                                       "No dataset is open: open one in the Dataset panel (Ctrl+O)")
        self.cancel_button.setEnabled(busy)
        self.sweep_button.setEnabled(not busy and can_run)
        for sec in self.sections.values():
            sec.run_button.setEnabled(not busy and can_run)

    # ---------------------------------------------------------------- live log-likelihood
    def show_log_likelihood(self, values: Sequence[float]) -> None:
        """The EM curve: mean log-likelihood per iteration of the GMM fit drawn (live while it runs)."""
        self._log_likelihood = [float(v) for v in values]
        self.ll_plot.draw_per_iteration(self.ll_curve, self._log_likelihood, "runs when the GMM step is fitted")

    def log_likelihood(self) -> List[float]:
        """The values the EM curve shows."""
        return list(self._log_likelihood)
