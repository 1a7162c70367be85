"""The explorer's main window: four panels over one pipeline config and one workspace, plus the job runner.

State held here (and nowhere else): the current ``PipelineConfig`` (edited by the panels' widgets), the
workspace folder (the pipeline's cache + the saved session), a ``Pipeline`` for statuses and the dataset
view, the run history (:class:`~fvstudio.gui.workspace.RunRecord`) and the explorer's own step states
(running / done / failed / cancelled) laid over the pipeline's ``status()``.

Every long action is a job of the single :class:`~fvstudio.gui.workers.JobRunner`: a run builds a fresh
``Pipeline(config.copy(), workspace)`` in the worker thread, so editing the config while it runs is safe
(the run keeps the values it started with). Progress goes to the status bar (bar, message, ETA, Cancel);
a failure opens a message box whose "Show Details" holds the traceback, and is logged (Log dock + the
``fvstudio.gui`` logger). Window geometry, the last workspace and panel live in ``QSettings``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QPlainTextEdit,
                               QProgressBar, QPushButton, QTabWidget)

from fvstudio.engine.progress import Progress

from . import workspace as ws_mod
from .config_form import ConfigForm, normalise_schema
from .dataset_panel import DatasetPanel
from .diagnostics_panel import DiagnosticsPanel, compute_diagnostics
from .pipeline_panel import DATASET_SECTIONS, PipelinePanel
from .plots import export_figure
from .results_panel import ResultsPanel, table_to_csv
from .workers import JobRunner, ProgressClock, format_eta

log = logging.getLogger("fvstudio.gui")

PANELS = ("dataset", "pipeline", "results", "diagnostics")


class _LogBridge(QObject):
    line = Signal(str)


class _QtLogHandler(logging.Handler):
    """Forwards log records (from any thread) to the Log dock through a queued signal."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.bridge = _LogBridge()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bridge.line.emit(self.format(record))
        except RuntimeError:  # the dock is gone (window closed)
            pass


def _assets_dir() -> Path:
    import fvstudio

    return Path(fvstudio.__file__).resolve().parents[1] / "assets"


def app_icon() -> QIcon:
    d = _assets_dir()
    icon = QIcon()
    for name in ("fvstudio.svg", "fvstudio.png"):
        if (d / name).exists():
            icon.addFile(str(d / name))
    return icon


class MainWindow(QMainWindow):
    run_recorded = Signal(str)        # run id, after a run's results are in the history
    diagnostics_ready = Signal()

    def __init__(self, workspace, config, settings: Optional[QSettings] = None, parent=None,
                 persist: bool = True) -> None:
        super().__init__(parent)
        from fvstudio.pipeline import STEPS, PipelineConfig

        self.setObjectName("fvstudio_main")
        self.settings = settings or QSettings()
        self.workspace = Path(workspace)
        self.config = config if config is not None else PipelineConfig()
        self.steps = tuple(STEPS)
        self.pipeline = None
        self.pipeline_error: Optional[str] = None
        self.runs: List[ws_mod.RunRecord] = []
        self.overlay: Dict[str, str] = {}
        self.last_error: Optional[tuple] = None
        self.error_box: Optional[QMessageBox] = None
        self._job_step: Optional[str] = None
        self._ll_unit: Optional[tuple] = None  # (channel, split) of the GMM fit drawn live
        self._queued: List[tuple] = []  # (name, fn) waiting for the runner
        self._step_t0 = 0.0
        self._clock = ProgressClock()
        self.persist = persist  # False: writes neither QSettings nor the session on close (screenshots)
        self.setWindowTitle("fvstudio")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)

        self.runner = JobRunner(self)
        entries = normalise_schema(PipelineConfig.schema())

        # ---- panels
        self.dataset_panel = DatasetPanel(self.runner)
        split_entries = [e for e in entries if e.section in DATASET_SECTIONS]
        self.dataset_panel.set_split_form(ConfigForm(split_entries))
        self.pipeline_panel = PipelinePanel(self.steps, entries)
        self.results_panel = ResultsPanel()
        self.diagnostics_panel = DiagnosticsPanel()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.dataset_panel, "&Dataset")
        self.tabs.addTab(self.pipeline_panel, "&Pipeline")
        self.tabs.addTab(self.results_panel, "&Results")
        self.tabs.addTab(self.diagnostics_panel, "Dia&gnostics")
        self.setCentralWidget(self.tabs)

        # ---- log dock
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("log_dock")
        self.log_dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.log_dock.hide()
        self._log_handler = _QtLogHandler()
        self._log_handler.bridge.line.connect(self.log_view.appendPlainText)
        logging.getLogger("fvstudio").addHandler(self._log_handler)
        if logging.getLogger("fvstudio").level == logging.NOTSET:
            logging.getLogger("fvstudio").setLevel(logging.INFO)

        # ---- status bar
        self.status_message = QLabel("Ready")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progress")
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setMaximumWidth(260)
        self.progress_bar.setTextVisible(True)
        self.eta_label = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("status_cancel")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.clicked.connect(self.cancel_job)
        sb = self.statusBar()
        sb.addWidget(self.status_message, 1)
        sb.addPermanentWidget(self.progress_bar)
        sb.addPermanentWidget(self.eta_label)
        sb.addPermanentWidget(self.cancel_button)
        self._set_busy_widgets(False)

        self._build_menus()

        # ---- wiring
        self.dataset_panel.open_requested.connect(self.open_dataset)
        self.dataset_panel.open_button.clicked.connect(self.choose_dataset)
        self.dataset_panel.split_edited.connect(self.edit_config)
        self.pipeline_panel.edited.connect(self.edit_config)
        self.pipeline_panel.run_all_requested.connect(self.run_all)
        self.pipeline_panel.run_step_requested.connect(self.run_step)
        self.pipeline_panel.cancel_requested.connect(self.cancel_job)
        self.results_panel.history_changed.connect(self._on_history_changed)
        self.runner.progressed.connect(self._on_progress)
        self.runner.succeeded.connect(self._on_succeeded)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.failed.connect(self._on_failed)
        self.runner.busy_changed.connect(self._set_busy_widgets)
        self.runner.finished.connect(lambda _name: QTimer.singleShot(0, self._start_queued))
        self.dataset_panel.submit = self.submit
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(150)
        self._status_timer.timeout.connect(self.refresh)

        for name, table in self.tables().items():
            table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            table.customContextMenuRequested.connect(lambda pos, n=name, t=table: self._table_menu(n, t, pos))

        self._restore_geometry()
        self.apply_config(self.config)

    # ================================================================== menus
    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&Open dataset…", self.choose_dataset, QKeySequence.StandardKey.Open,
                     "Open a class-folder dataset or a VOC devkit")
        self._action(f, "Open &workspace…", self.choose_workspace, "Ctrl+Shift+O",
                     "Open a workspace folder (cached steps + saved session)")
        self._action(f, "&Save session", self.save_session, QKeySequence.StandardKey.Save,
                     "Save config, results and run history into the workspace")
        f.addSeparator()
        self._action(f, "&Export config as TOML…", self.choose_export_config, "Ctrl+E",
                     "A config file that `fvstudio run` replays to the same numbers")
        self._action(f, "Export &plots (PNG + SVG)…", self.choose_export_plots, "Ctrl+Shift+E")
        self._action(f, "Export &tables (CSV)…", self.choose_export_tables, "Ctrl+Shift+T")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        r = mb.addMenu("&Run")
        self.run_all_action = self._action(r, "Run &all", self.run_all, "F5", "Run every step not cached yet")
        r.addSeparator()
        for s in self.steps:
            self._action(r, f"Run {s}", lambda _=False, s=s: self.run_step(s))
        r.addSeparator()
        self.cancel_action = self._action(r, "&Cancel", self.cancel_job, "Esc", "Stop the running job")
        v = mb.addMenu("&View")
        for i, name in enumerate(PANELS):
            self._action(v, f"{name.title()} panel", lambda _=False, n=name: self.show_panel(n), f"Ctrl+{i + 1}")
        v.addSeparator()
        log_action = self.log_dock.toggleViewAction()
        log_action.setShortcut(QKeySequence("Ctrl+L"))
        v.addAction(log_action)
        h = mb.addMenu("&Help")
        self._action(h, "&About fvstudio", self.about, "F1")

    def about(self) -> None:
        QMessageBox.about(self, "About fvstudio",
                          "<b>fvstudio</b> — image classification with the Fisher Vector<br>"
                          "(Sánchez, Perronnin, Mensink &amp; Verbeek, IJCV 2013).<br><br>"
                          "The explorer is a view over the same pipeline that <tt>fvstudio run</tt> executes.")

    def show_panel(self, name: str) -> None:
        if name in PANELS:
            self.tabs.setCurrentIndex(PANELS.index(name))

    def current_panel(self) -> str:
        return PANELS[self.tabs.currentIndex()]

    # ================================================================== config + pipeline
    def apply_config(self, config) -> None:
        """Use ``config`` (a PipelineConfig) everywhere: widgets, pipeline, dataset view, statuses."""
        self.config = config.copy()
        self.overlay.clear()
        self.dataset_panel.set_config(self.config)
        self.pipeline_panel.set_config(self.config)
        self._rebuild_pipeline()
        self.refresh()

    def _rebuild_pipeline(self) -> None:
        from fvstudio.pipeline import Pipeline

        self.pipeline_error = None
        try:
            self.pipeline = Pipeline(self.config.copy(), self.workspace)
            ds = self.pipeline.dataset
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self.pipeline_error = f"{exc}"
            log.warning("cannot open the dataset: %s", exc)
            self.dataset_panel.set_dataset(None)
            self.status_message.setText(f"Dataset: {exc}")
            return
        self._show_dataset(ds)

    def _show_dataset(self, ds) -> None:
        splits = None
        try:
            splits = self.pipeline.splits
        except Exception as exc:  # noqa: BLE001
            self.status_message.setText(f"Split: {exc}")
            log.warning("cannot make the split: %s", exc)
        self.dataset_panel.set_dataset(ds, splits)

    def edit_config(self, key: str, value: Any) -> None:
        """A widget changed ``key``: validate, update statuses (debounced) and dependent views."""
        try:
            self.config.set(key, value)
        except ValueError as exc:
            self.status_message.setText(str(exc))
            log.warning("%s", exc)
            self.dataset_panel.set_config(self.config)
            self.pipeline_panel.set_config(self.config)
            return
        for s, state in list(self.overlay.items()):
            if state != "running":
                del self.overlay[s]
        if key == "dataset.root":
            self._rebuild_pipeline()
        elif self.pipeline is not None:
            self.pipeline.config = self.config.copy()
            if key.startswith("dataset."):
                try:
                    self._show_dataset(self.pipeline.dataset)
                except Exception as exc:  # noqa: BLE001
                    self.status_message.setText(str(exc))
        if key.startswith("descriptors.") or key == "dataset.max_pixels":
            self.dataset_panel.set_config(self.config)
        self._status_timer.start()

    def _renew_pipeline(self) -> None:
        """A fresh Pipeline on the same dataset object: forgets what the old one memoised (descriptor
        store indexes, loaded models) after a job changed the workspace."""
        from fvstudio.pipeline import Pipeline

        if self.pipeline is None or self.pipeline_error is not None:
            return
        try:
            self.pipeline = Pipeline(self.config.copy(), self.workspace, dataset=self.pipeline.dataset)
        except Exception as exc:  # noqa: BLE001
            log.warning("pipeline: %s", exc)

    def refresh(self) -> None:
        """Step statuses: the pipeline's (cached / stale / not run) unless the explorer knows better."""
        for s in self.steps:
            state = self.overlay.get(s)
            if state is None:
                try:
                    state = self.pipeline.status(s) if self.pipeline is not None else "not run"
                except Exception as exc:  # noqa: BLE001
                    log.warning("status of %s: %s", s, exc)
                    state = "not run"
            detail = self._descriptor_failures() if s == "descriptors" and state in ("cached", "done") else ""
            self.pipeline_panel.set_status(s, state, detail)

    def _descriptor_failures(self) -> str:
        """'k of n images unreadable' for the split's images (from the descriptor store), or ''."""
        import numpy as np

        try:
            store = self.pipeline.artifact("descriptors")
            idx = np.unique(np.concatenate([np.r_[np.asarray(sp.train), np.asarray(sp.test)]
                                            for sp in self.pipeline.splits]).astype(np.int64))
            bad = int(np.sum(store.counts(idx) < 0)) if store is not None else 0
        except Exception:  # noqa: BLE001 - a detail only
            return ""
        return f"{bad} of {len(idx)} images unreadable" if bad else ""

    def open_dataset(self, path: str) -> None:
        path = str(Path(path).expanduser())
        self.config.set("dataset.root", path)
        for k in ("dataset.train_list", "dataset.test_list"):
            self.config.set(k, "")
        self.config.set("dataset.split", "auto")
        self.overlay.clear()
        self.dataset_panel.set_config(self.config)
        self.pipeline_panel.set_config(self.config)
        self._rebuild_pipeline()
        if self.pipeline_error:
            self.show_error("Cannot open the dataset", self.pipeline_error, "")
        else:
            self.status_message.setText(f"Opened {path}")
            self.show_panel("dataset")
        self.refresh()

    def choose_dataset(self) -> None:
        start = str(self.config.get("dataset.root") or Path.home())
        path = QFileDialog.getExistingDirectory(self, "Open a class-folder dataset or a VOC devkit", start)
        if path:
            self.open_dataset(path)

    # ================================================================== jobs
    def _set_busy_widgets(self, busy: bool) -> None:
        # A low-priority job (diagnostics, patch grid) shows its progress but leaves Run enabled:
        # starting a run cancels it (see submit).
        blocking = busy and self.runner.current not in self.LOW_PRIORITY
        self.progress_bar.setVisible(busy)
        self.eta_label.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.pipeline_panel.set_busy(blocking)
        if hasattr(self, "run_all_action"):
            self.run_all_action.setEnabled(not blocking)
        if busy:
            self.progress_bar.setValue(0)
            self.eta_label.setText(format_eta(None))
            self._clock.reset()

    LOW_PRIORITY = ("diagnostics", "patch grid")

    def submit(self, name: str, fn) -> bool:
        """Start a job now, or queue it behind the running one. A pipeline run pre-empts (cancels) a
        running low-priority job (diagnostics, patch grid); a second pipeline run is refused."""
        if not self.runner.is_busy() and not self._queued:
            return self.runner.start(name, fn)
        if not self.runner.is_busy():  # between two queued jobs: make sure the queue moves on
            QTimer.singleShot(0, self._start_queued)
        current = self.runner.current
        if name not in self.LOW_PRIORITY and current is not None and current not in self.LOW_PRIORITY:
            self.status_message.setText(f"{current} is still running")
            return False
        self._queued = [(n, f) for n, f in self._queued if n != name]
        if name in self.LOW_PRIORITY:
            self._queued.append((name, fn))
        else:
            self._queued.insert(0, (name, fn))
            if current in self.LOW_PRIORITY:
                self.runner.cancel()
        return True

    def _start_queued(self) -> None:
        if self._queued and not self.runner.is_busy():
            name, fn = self._queued.pop(0)
            self.runner.start(name, fn)

    def is_idle(self) -> bool:
        return not self.runner.is_busy() and not self._queued

    def cancel_job(self) -> None:
        if self.runner.is_busy():
            self.status_message.setText(f"Cancelling {self.runner.current}…")
            self.runner.cancel()

    def _job_pipeline(self):
        from fvstudio.pipeline import Pipeline

        ds = None
        if self.pipeline is not None and self.pipeline_error is None:
            try:
                ds = self.pipeline.dataset
            except Exception:  # noqa: BLE001
                ds = None
        config = self.config.copy()
        workspace = self.workspace
        return lambda: Pipeline(config, workspace, dataset=ds)

    def run_all(self) -> bool:
        return self._start_run("run all", "evaluate")

    def run_step(self, step: str) -> bool:
        return self._start_run(f"run {step}", step)

    def _start_run(self, name: str, step: str) -> bool:
        current = self.runner.current
        if current is not None and current not in self.LOW_PRIORITY:
            self.status_message.setText(f"{current} is still running")
            return False
        make = self._job_pipeline()

        def job(progress=None, cancel=None):
            p = make()
            out = p.run_step(step, progress=progress, cancel=cancel)
            return {"step": step, "output": out, "timings": dict(p.last_timings),
                    "cached": list(p.last_cached), "config": p.config.to_dict()}

        for s in self.steps:
            if self.overlay.get(s) in ("done", "failed", "cancelled"):
                del self.overlay[s]
        self._job_step = None
        self._ll_unit = None
        self.status_message.setText(f"{name}…")
        if step in self.steps[self.steps.index("gmm"):] and self.pipeline_panel.status("gmm") != "cached":
            self.pipeline_panel.reset_log_likelihood()
            self.diagnostics_panel.reset_log_likelihood()
        return self.submit(name, job)

    def _on_progress(self, name: str, p: Progress) -> None:
        self.progress_bar.setValue(int(round(1000 * p.fraction)))
        self.progress_bar.setFormat(f"{100 * p.fraction:.0f} %")
        self.eta_label.setText(format_eta(self._clock.update(p)))
        values = dict(p.values or {})
        if p.message:
            self.status_message.setText(p.message)
        step = values.get("step")
        if step in self.steps and name.startswith("run"):
            if step != self._job_step:
                now = time.monotonic()
                if self._job_step is not None and self.overlay.get(self._job_step) == "running":
                    self.overlay[self._job_step] = "done"
                    self.pipeline_panel.set_status(self._job_step, "done")
                    self.pipeline_panel.set_time(self._job_step, now - self._step_t0)
                self._step_t0 = now
                self._job_step = step
                self.overlay[step] = "running"
                self.pipeline_panel.set_status(step, "running")
            if "log_likelihood" in values and step == "gmm":
                # one curve per GMM fit: a new channel or split starts its own
                unit = (values.get("channel"), values.get("split"))
                if self._ll_unit is not None and unit != self._ll_unit:
                    self.pipeline_panel.reset_log_likelihood()
                    self.diagnostics_panel.reset_log_likelihood()
                self._ll_unit = unit
                self.pipeline_panel.add_log_likelihood(values["log_likelihood"])
                self.diagnostics_panel.add_log_likelihood(values["log_likelihood"])

    def _on_succeeded(self, name: str, payload: Any) -> None:
        if name == "patch grid":
            self.dataset_panel.on_job_done(name, payload)
            return
        if name == "diagnostics":
            self.diagnostics_panel.set_diagnostics(payload)
            if len(payload.get("log_likelihood", [])) and not self.pipeline_panel._ll:
                self.pipeline_panel.reset_log_likelihood(payload["log_likelihood"])
            self.status_message.setText("Diagnostics updated")
            self.diagnostics_ready.emit()
            return
        # a pipeline run
        self._renew_pipeline()
        same_config = payload["config"] == self.config.to_dict()
        for s, t in payload["timings"].items():
            if same_config and s not in payload["cached"]:
                self.overlay[s] = "done"
            elif self.overlay.get(s) == "running":
                del self.overlay[s]  # the config was edited meanwhile: show the pipeline's own status
            self.pipeline_panel.set_time(s, t)
        self._job_step = None
        self.refresh()
        out = payload["output"]
        if hasattr(out, "metrics") and hasattr(out, "to_json_dict"):  # a RunResult
            names = list(getattr(out, "class_names", []) or [])
            rec = ws_mod.record_from_result(out, payload["config"], names, {r.id for r in self.runs})
            self.runs.append(rec)
            self.results_panel.add_run(rec)
            m = rec.metrics
            head = m.get("mean_per_class_accuracy", m.get("map"))
            self.status_message.setText(f"Run {rec.id} done" + (f": {100 * head:.1f} %" if head is not None else ""))
            self.save_session(quiet=True)
            self.run_recorded.emit(rec.id)
            if self.current_panel() == "pipeline":
                self.show_panel("results")
        else:
            self.status_message.setText(f"{payload['step']} done")
        self.start_diagnostics()

    def _on_history_changed(self) -> None:
        self.runs = list(self.results_panel.runs)
        self.save_session(quiet=True)

    def start_diagnostics(self) -> bool:
        """Recompute the diagnostics figures from the cached artifacts (a short job)."""
        make = self._job_pipeline()

        def job(progress=None, cancel=None):
            return compute_diagnostics(make(), progress=progress, cancel=cancel)

        return self.submit("diagnostics", job)

    def _on_cancelled(self, name: str) -> None:
        if name in self.LOW_PRIORITY:
            return
        if self._job_step is not None:
            self.overlay[self._job_step] = "cancelled"
        self._job_step = None
        self._renew_pipeline()
        self.status_message.setText(f"{name} cancelled; caches are consistent")
        self.refresh()

    def _on_failed(self, name: str, message: str, tb: str) -> None:
        if self._job_step is not None:
            self.overlay[self._job_step] = "failed"
        elif name.startswith("run "):
            step = name.split(" ", 1)[1]
            if step in self.steps:
                self.overlay[step] = "failed"
        self._job_step = None
        self._renew_pipeline()
        self.refresh()
        self.status_message.setText(f"{name} failed: {message}")
        failed = [s for s in self.steps if self.overlay.get(s) == "failed"]
        info = ""
        if failed:
            info = (f"The {failed[0]} step failed; every cache stays consistent (finished steps are kept, the "
                    f"failed one is not written). The Log (Ctrl+L) has the details.")
            bad = self._descriptor_failures()
            if bad:
                info += f" Note: {bad}."
        self.show_error(f"{name} failed", message, tb, info)

    def show_error(self, title: str, message: str, tb: str, info: str = "") -> None:
        """A non-blocking message box; 'Show Details…' expands the traceback. Also logged."""
        self.last_error = (title, message, tb)
        log.error("%s: %s", title, message)
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        box.setObjectName("error_dialog")
        if info:
            box.setInformativeText(info)
        if tb:
            box.setDetailedText(tb)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self.error_box = box

    # ================================================================== session + export
    def session_state(self) -> Dict[str, Any]:
        return {"current": self.results_panel.current_id(), "compare": self.results_panel.compare_id(),
                "panel": self.current_panel()}

    def save_session(self, quiet: bool = False) -> Path:
        folder = ws_mod.save_session(self.workspace, self.config, self.runs, self.session_state())
        if self.persist:
            self.settings.setValue("last_workspace", str(self.workspace))
        if not quiet:
            self.status_message.setText(f"Session saved in {folder}")
        log.info("session saved in %s", folder)
        return folder

    def load_workspace(self, workspace) -> bool:
        """Open ``workspace``: its saved config and run history (if any) replace the current ones."""
        from fvstudio.pipeline import PipelineConfig

        if self.runner.is_busy():
            self.status_message.setText("Wait for the running job (or cancel it) before switching workspace")
            return False
        self.workspace = Path(workspace)
        try:
            config, runs, state = ws_mod.load_session(self.workspace)
        except Exception as exc:  # noqa: BLE001
            self.show_error("Cannot read the saved session", str(exc), "")
            config, runs, state = None, [], {}
        self.runs = list(runs)
        self.results_panel.set_runs(self.runs, state.get("current"), state.get("compare"))
        current = self.results_panel.record(self.results_panel.current_id())
        compute = (current.summary.get("compute_timings") or current.timings) if current is not None else {}
        for s in self.steps:  # time each step took when it was computed
            self.pipeline_panel.set_time(s, compute.get(s))
        self.diagnostics_panel.clear()
        self.apply_config(config if config is not None else self.config if self.config else PipelineConfig())
        if state.get("panel") in PANELS:
            self.show_panel(state["panel"])
        if self.persist:
            self.settings.setValue("last_workspace", str(self.workspace))
        self.setWindowTitle(f"fvstudio — {self.workspace}")
        if self.pipeline is not None and self.pipeline_error is None and self.steps and \
                self.pipeline_panel.status("gmm") == "cached":
            self.start_diagnostics()
        return True

    def choose_workspace(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a workspace folder", str(self.workspace))
        if path:
            self.load_workspace(path)

    def export_config(self, path) -> Path:
        path = Path(path)
        if path.suffix != ".toml":
            path = path.with_suffix(".toml")
        self.config.to_toml(path)
        self.status_message.setText(f"Config written to {path} (replay: fvstudio run {path.name} --out DIR)")
        return path

    def choose_export_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export config", str(self.workspace / "config.toml"),
                                              "TOML (*.toml)")
        if path:
            self.export_config(path)

    def figures(self):
        return ([self.pipeline_panel.ll_plot] + self.results_panel.figures() + self.diagnostics_panel.figures())

    def export_plots(self, folder) -> List[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        seen = set()
        for fig in self.figures():
            name = fig.name if fig.name not in seen else f"{fig.name}_live"
            seen.add(name)
            for ext in (".png", ".svg"):
                out.append(export_figure(fig, folder / f"{name}{ext}"))
        self.status_message.setText(f"{len(out)} plot files written to {folder}")
        return out

    def choose_export_plots(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export every plot (PNG + SVG) to", str(self.workspace))
        if path:
            self.export_plots(path)

    def tables(self):
        return {**self.results_panel.tables(), "steps": self.pipeline_panel.table,
                "classes": self.dataset_panel.classes}

    def export_tables(self, folder) -> List[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name, table in self.tables().items():
            p = folder / f"{name}.csv"
            p.write_text(table_to_csv(table), encoding="utf-8")
            out.append(p)
        self.status_message.setText(f"{len(out)} tables written to {folder}")
        return out

    def _table_menu(self, name: str, table, pos) -> None:
        from PySide6.QtWidgets import QApplication, QMenu

        menu = QMenu(table)
        menu.addAction("Copy as CSV", lambda: QApplication.clipboard().setText(table_to_csv(table)))

        def save():
            path, _ = QFileDialog.getSaveFileName(self, f"Export the {name} table", str(self.workspace / f"{name}.csv"),
                                                  "CSV (*.csv)")
            if path:
                Path(path).write_text(table_to_csv(table), encoding="utf-8")
                self.status_message.setText(f"{name} table written to {path}")
        menu.addAction("Export CSV…", save)
        menu.popup(table.viewport().mapToGlobal(pos))

    def choose_export_tables(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export every table (CSV) to", str(self.workspace))
        if path:
            self.export_tables(path)

    # ================================================================== window
    def _restore_geometry(self) -> None:
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1360, 860)
        st = self.settings.value("window_state")
        if st is not None:
            self.restoreState(st)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        self.dataset_panel.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        self.dataset_panel.dropEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802
        self._queued.clear()
        self.dataset_panel.model._queue.clear()  # pending thumbnails: the pool thread leaves at once
        if self.runner.is_busy():
            self.runner.cancel()
            self.runner.wait(10.0)
        if self.persist:
            self.settings.setValue("geometry", self.saveGeometry())
            self.settings.setValue("window_state", self.saveState())
            self.settings.setValue("panel", self.current_panel())
            try:
                self.save_session(quiet=True)
            except Exception as exc:  # noqa: BLE001 - closing must not fail
                log.warning("session not saved: %s", exc)
        logging.getLogger("fvstudio").removeHandler(self._log_handler)
        super().closeEvent(event)
