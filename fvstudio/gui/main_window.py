"""The explorer's main window: four panels over one pipeline config and one workspace.

State held here (and nowhere else): the current ``PipelineConfig`` (edited by the panels' widgets), the
workspace folder (the pipeline's cache + the saved session), a ``Pipeline`` for statuses and the dataset
view, and the run history (:class:`~fvstudio.gui.session.RunRecord`). The rest lives where it belongs:

- **Pipeline runs** go through ``runner``, the window's :class:`~fvstudio.gui.workers.BackgroundTask`
  shared by the Run buttons, the Run menu and F5: one run at a time (Run is disabled while one runs), each
  :func:`~fvstudio.gui.runs.run_pipeline_step` on a copy of the config in the worker thread, so editing
  the config meanwhile is safe. :class:`~fvstudio.gui.runs.StepStates` turns the run's progress into step
  states, :class:`~fvstudio.gui.runs.EMTrace` into the live EM curve.
- **Panels own their background work**: the diagnostics panel its refresh task (a run cancels it, and
  starts it again when it has succeeded), the dataset panel its thumbnail queue, the compression panel its
  distortion and neighbour jobs (a run cancels them; a k-NN run starts the neighbour job again).
- **Sweeps** (Pipeline panel -> Sweep…, :mod:`fvstudio.gui.sweep_dialog`) go through ``runner`` too, as the
  task labelled :data:`~fvstudio.gui.sweep_panel.SWEEP_LABEL`: its progress and outcome go to the Sweeps
  panel, its finished variants also to the compression panel's accuracy-against-bytes figure.
- The saved session is :mod:`fvstudio.gui.session`, the exports :mod:`fvstudio.gui.export`, the progress
  in the status bar (bar, ETA, Cancel) :class:`~fvstudio.gui.status_bar.TaskProgress`.

A failure opens a message box whose "Show Details" holds the traceback, and is logged (Log dock + the
``fvstudio.gui`` logger). Window geometry, the last workspace and panel live in ``QSettings``.
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QPlainTextEdit, QTabWidget

from fvstudio.engine.progress import Progress
from fvstudio.pipeline import STEPS, Pipeline, PipelineConfig
from fvstudio.pipeline.context import open_configured_dataset
from fvstudio.pipeline.runner import default_workspace
from fvstudio.pipeline.diagnostics import Diagnostics, unreadable_images

from . import session
from .config_form import ConfigForm, entries_from_schema
from .dataset_panel import DatasetPanel
from .diagnostics_panel import DiagnosticsPanel
from .compression_panel import CompressionPanel
from .dialogs import choose_folder
from .export import ExportActions
from .pipeline_panel import SECTION_STEPS, PipelinePanel
from .results_panel import ResultsPanel
from .runs import EMTrace, RunOutcome, StepStates, run_pipeline_step
from .status_bar import TaskProgress
from .sweep_dialog import SweepDialog
from .sweep_panel import SWEEP_LABEL, SweepPanel
from .window_rooms import SweepsAndCompression
from .teaching_panel import TeachingPanel
from .workers import BackgroundTask

log = logging.getLogger("fvstudio.gui")

PANELS = ("dataset", "pipeline", "results", "diagnostics", "compression", "sweeps", "teaching")


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


class MainWindow(SweepsAndCompression, QMainWindow):
    run_recorded = Signal(str)        # run id, after a run's results are in the history

    def __init__(self, workspace, config: PipelineConfig, settings: Optional[QSettings] = None, parent=None,
                 persist: bool = True, workspace_for: Callable[[PipelineConfig], Path] = default_workspace) -> None:
        super().__init__(parent)
        self.workspace_for = workspace_for  # the workspace of a dataset opened (the pipeline's default)
        self.setObjectName("fvstudio_main")
        self.settings = settings or QSettings()
        self.workspace = Path(workspace)
        self.config = config
        self.steps = tuple(STEPS)
        self.pipeline: Optional[Pipeline] = None
        self.pipeline_error: Optional[str] = None
        self.runs: List[session.RunRecord] = []
        self.sweep_runs: List[tuple] = []  # (label, summary, config) of the sweep variants finished here
        self.sweep_dialog: Optional[SweepDialog] = None
        self.step_states = StepStates(self.steps)
        self.em_trace = EMTrace()
        self.last_error: Optional[tuple] = None
        self.error_box: Optional[QMessageBox] = None
        self._single_step: Optional[str] = None  # the step of the single-step run under way (None: run all)
        self.persist = persist  # False: writes neither QSettings nor the session on close (screenshots)
        self.setWindowTitle("fvstudio")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.runner = BackgroundTask(self)  # the shared runner of pipeline runs
        self._build_panels()
        self._build_log_dock()
        self._build_status_bar()
        self.exports = ExportActions(self, config=lambda: self.config,
                                     dataset_root=lambda: self.config.get("dataset.root"), figures=self.figures,
                                     tables=self.tables, report=self.status_message.setText,
                                     settings=self.settings if persist else None)
        self._build_menus()
        self._connect()
        self._restore_geometry()
        self.apply_config(self.config)

    # ================================================================== building
    def _build_panels(self) -> None:
        entries = entries_from_schema(PipelineConfig.schema())
        self.dataset_panel = DatasetPanel()
        self.dataset_panel.set_pipeline_factory(self._pipeline_factory)
        self.dataset_panel.set_split_form(ConfigForm([e for e in entries if SECTION_STEPS[e.section] is None]))
        self.pipeline_panel = PipelinePanel(self.steps, entries)
        self.results_panel = ResultsPanel()
        self.diagnostics_panel = DiagnosticsPanel()
        self.compression_panel = CompressionPanel()
        self.sweep_panel = SweepPanel()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.dataset_panel, "&Dataset")
        self.tabs.addTab(self.pipeline_panel, "&Pipeline")
        self.tabs.addTab(self.results_panel, "&Results")
        self.tabs.addTab(self.diagnostics_panel, "Dia&gnostics")
        self.tabs.addTab(self.compression_panel, "&Compression")
        self.tabs.addTab(self.sweep_panel, "S&weeps")
        self.teaching_panel = TeachingPanel()
        self.tabs.addTab(self.teaching_panel, "&Teaching")
        self.setCentralWidget(self.tabs)

    def _build_log_dock(self) -> None:
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

    def _build_status_bar(self) -> None:
        self.status_message = QLabel("Ready")
        self.task_progress = TaskProgress()
        self.task_progress.watch(self.runner)
        self.task_progress.watch(self.diagnostics_panel.task)
        for task in self.compression_panel.tasks():
            self.task_progress.watch(task)
        self.task_progress.message.connect(self.status_message.setText)
        self.statusBar().addWidget(self.status_message, 1)
        self.statusBar().addPermanentWidget(self.task_progress)

    def _connect(self) -> None:
        dp, pp = self.dataset_panel, self.pipeline_panel
        dp.open_requested.connect(self.open_dataset)
        dp.split_edited.connect(self.edit_config)
        pp.edited.connect(self.edit_config)
        pp.run_all_requested.connect(self.run_all)
        pp.run_step_requested.connect(self.run_step)
        pp.cancel_requested.connect(self.cancel_job)
        pp.sweep_requested.connect(self.open_sweep_dialog)
        self.sweep_panel.new_button.clicked.connect(self.open_sweep_dialog)
        self.sweep_panel.variant_done.connect(self._on_sweep_variant)
        self.compression_panel.open_image.connect(self.open_in_dataset)
        self.results_panel.open_image.connect(self.open_in_dataset)
        self.compression_panel.set_pipeline_source(lambda: self._pipeline_factory() if self.has_dataset() else None)
        self.results_panel.set_image_resolver(self._resolve_image)
        self.results_panel.history_changed.connect(self._on_history_changed)
        self.runner.progressed.connect(self._on_run_progress)
        self.runner.succeeded.connect(self._on_run_succeeded)
        self.runner.cancelled.connect(self._on_run_cancelled)
        self.runner.failed.connect(self._on_run_failed)
        self.runner.busy_changed.connect(self._set_running)
        self.diagnostics_panel.updated.connect(self._on_diagnostics)
        self.diagnostics_panel.task.failed.connect(
            lambda label, message, tb: self.show_error(f"{label} failed", message, tb))
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(150)
        self._status_timer.timeout.connect(self.refresh)
        self.exports.add_table_menus()

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
        self._action(f, "&Open dataset…", self.dataset_panel.choose_folder, QKeySequence.StandardKey.Open,
                     "Open a class-folder dataset or a VOC devkit")
        self._action(f, "Open &workspace…", self.choose_workspace, "Ctrl+Shift+O",
                     "Open a workspace folder (cached steps + saved session)")
        self._action(f, "&Save session", self.save_session, QKeySequence.StandardKey.Save,
                     "Save config, results and run history into the workspace")
        self._action(f, "Save session &as…", self.choose_save_session_as, QKeySequence.StandardKey.SaveAs,
                     "Save config, results and run history into a folder of your choice")
        self._action(f, "Open sessio&n…", self.choose_open_session, None,
                     "Open a session saved with Save session as… (config, results, run history)")
        f.addSeparator()
        self._action(f, "&Export config as TOML…", self.exports.choose_export_config, "Ctrl+E",
                     "A config file that `fvstudio run` replays to the same numbers")
        self._action(f, "Export &plots (PNG + SVG)…", self.exports.choose_export_plots, "Ctrl+Shift+E")
        self._action(f, "Export &tables (CSV)…", self.exports.choose_export_tables, "Ctrl+Shift+T")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        r = mb.addMenu("&Run")
        self.run_all_action = self._action(r, "Run &all", self.run_all, "F5", "Run every step not cached yet")
        r.addSeparator()
        self.run_step_actions = [self._action(r, f"Run {s}", lambda _=False, s=s: self.run_step(s))
                                 for s in self.steps]
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
    def apply_config(self, config: PipelineConfig) -> None:
        """Use ``config`` everywhere: widgets, pipeline, dataset view, statuses."""
        self.config = config.copy()
        self.step_states.clear()
        self.dataset_panel.set_config(self.config)
        self.pipeline_panel.set_config(self.config)
        self._open_pipeline()
        self.refresh()

    def _open_pipeline(self, dataset=None) -> None:
        """A Pipeline on the config and workspace (on ``dataset`` if already opened); without a dataset the
        panels are emptied and Run is disabled."""
        self.pipeline_error = None
        try:
            self.pipeline = Pipeline(self.config.copy(), self.workspace, dataset=dataset)
            ds = self.pipeline.dataset
        except Exception as exc:  # noqa: BLE001 - any folder can be opened: what goes wrong is shown, not raised
            self.pipeline_error = f"{exc}"
            log.warning("cannot open the dataset: %s", exc)
            self.dataset_panel.set_dataset(None)
            self.status_message.setText(f"Dataset: {exc}")
            self._set_running(self.runner.is_busy())
            return
        self._show_dataset(ds)
        self._set_running(self.runner.is_busy())

    def _show_dataset(self, ds) -> None:
        splits = None
        try:
            splits = self.pipeline.splits
        except (ValueError, OSError) as exc:  # ConfigError: e.g. more training images asked than there are
            self.status_message.setText(f"Split: {exc}")
            log.warning("cannot make the split: %s", exc)
        self.dataset_panel.set_dataset(ds, splits)
        self._update_bytes_figure()

    def edit_config(self, key: str, value: Any) -> None:
        """A widget changed ``key``: validate, update statuses (debounced) and dependent views. A new
        ``dataset.root`` opens that folder like the Open dataset dialog (:meth:`open_dataset`)."""
        if key == "dataset.root":
            if not value or not self.open_dataset(str(value)):
                self.dataset_panel.set_config(self.config)  # the editor shows the dataset still open
            return
        try:
            self.config.set(key, value)
        except ValueError as exc:
            self.status_message.setText(str(exc))
            log.warning("%s", exc)
            self.dataset_panel.set_config(self.config)
            self.pipeline_panel.set_config(self.config)
            return
        self.step_states.config_edited()
        if self.pipeline is not None:
            self.pipeline.config = self.config.copy()
            if key.startswith("dataset."):
                try:
                    self._show_dataset(self.pipeline.dataset)
                except (ValueError, OSError) as exc:
                    self.status_message.setText(str(exc))
        if key.startswith("descriptors.") or key == "dataset.max_pixels":
            self.dataset_panel.set_config(self.config)
        self._status_timer.start()

    def _renew_pipeline(self) -> None:
        """A fresh Pipeline on the same dataset object: forgets what the old one memoised (descriptor
        store indexes, loaded models) after a run changed the workspace."""
        if self.pipeline is None or self.pipeline_error is not None:
            return
        self.pipeline = Pipeline(self.config.copy(), self.workspace, dataset=self.pipeline.dataset)

    def _pipeline_factory(self) -> Callable[[], Pipeline]:
        """Builds, where it is called (a worker thread), a Pipeline on a copy of the current config; the
        dataset already opened is re-used."""
        ds = self.pipeline.dataset if self.pipeline is not None and self.pipeline_error is None else None
        return functools.partial(Pipeline, self.config.copy(), self.workspace, dataset=ds)

    def _pipeline_status(self, step: str) -> str:
        return self.pipeline.status(step) if self.pipeline is not None else "not run"

    def refresh(self) -> None:
        """Step statuses: the pipeline's (cached / stale / not run) unless the explorer saw better."""
        for s in self.steps:
            state = self.step_states.state(s, self._pipeline_status)
            detail = self._unreadable_detail() if s == "descriptors" and state in ("cached", "done") else ""
            self.pipeline_panel.set_status(s, state, detail)

    def _unreadable_detail(self) -> str:
        """'k of n images unreadable' among the images the descriptors step extracts, or ''."""
        if self.pipeline is None or self.pipeline_error is not None:
            return ""
        try:
            bad, total = unreadable_images(self.pipeline)
        except (ValueError, OSError):  # no split can be made: a detail only
            return ""
        return f"{len(bad)} of {total} images unreadable, left out" if bad else ""

    def open_dataset(self, path: str) -> bool:
        """Open the folder ``path`` as the dataset, in its own workspace (``workspace_for``; its saved runs
        come with it). A folder that is no dataset is reported and changes nothing: the dataset loaded
        before stays, or, if there is none, the panels stay empty and Run is disabled."""
        if self.runner.is_busy():
            self.status_message.setText("Wait for the running job (or cancel it) before opening a dataset")
            return False
        path = str(Path(path).expanduser())
        candidate = self.config.copy()
        candidate.set("dataset.root", path)
        for k in ("dataset.train_list", "dataset.test_list"):
            candidate.set(k, "")
        candidate.set("dataset.split", "auto")
        try:
            ds = open_configured_dataset(candidate)
        except Exception as exc:  # noqa: BLE001 - any folder can be dropped: what is wrong is shown, not raised
            log.warning("cannot open %s as a dataset: %s", path, exc)
            kept = self.pipeline is not None and self.pipeline_error is None
            self.show_error("Cannot open the dataset", f"{path}: {exc}", "",
                            f"Still showing {self.config.get('dataset.root')}." if kept else "No dataset is loaded.")
            return False
        workspace = Path(self.workspace_for(candidate))
        if workspace.resolve() != self.workspace.resolve():
            self._switch_workspace(workspace, candidate, ds)
        else:
            self.config = candidate
            self.step_states.clear()
            self.dataset_panel.set_config(self.config)
            self.pipeline_panel.set_config(self.config)
            self._open_pipeline(ds)
            self.refresh()
        self.status_message.setText(f"Opened {path} (workspace {self.workspace})")
        self.show_panel("dataset")
        return True

    def _switch_workspace(self, workspace: Path, config: PipelineConfig, ds) -> None:
        """Leave the current workspace (its session saved) for ``workspace`` with ``config`` on dataset
        ``ds``; the runs saved there for that dataset come back, its saved config only if on that dataset."""
        if self.persist:
            try:
                self.save_session(quiet=True)
            except OSError as exc:
                log.warning("session not saved: %s", exc)
        problems: List[str] = []
        try:
            saved, runs, state = session.load_session(workspace, problems)
        except Exception as exc:  # noqa: BLE001 - a damaged session file is reported, then ignored
            self.show_error("Cannot read the saved session", str(exc), "")
            saved, runs, state = None, [], session.SessionState()
        same_dataset = saved is not None and saved.get("dataset.root") == config.get("dataset.root")
        if not same_dataset:
            saved, runs, state = None, [r for r in runs if r.dataset_root == config.get("dataset.root")], \
                session.SessionState()
        self.workspace = workspace
        self.setWindowTitle(f"fvstudio — {self.workspace}")
        if self.persist:
            self.settings.setValue("last_workspace", str(self.workspace))
        self._show_runs(runs, state)
        self.diagnostics_panel.clear()
        self.em_trace.reset()
        self.pipeline_panel.show_log_likelihood([])
        self.config = (saved if same_dataset else config).copy()
        self.step_states.clear()
        self.dataset_panel.set_config(self.config)
        self.pipeline_panel.set_config(self.config)
        self._open_pipeline(ds)
        self.refresh()
        self._report_refused(problems)
        if self.pipeline_panel.status("gmm") == "cached":
            self.start_diagnostics()

    # ================================================================== pipeline runs
    def run_all(self) -> bool:
        return self._start_run("run all", "evaluate", single_step=None)

    def run_step(self, step: str) -> bool:
        return self._start_run(f"run {step}", step, single_step=step)

    def _start_run(self, label: str, step: str, single_step: Optional[str]) -> bool:
        if self.runner.is_busy():
            self.status_message.setText(f"{self.runner.current} is still running")
            return False
        if not self.has_dataset():
            self.status_message.setText(f"No dataset to run on: {self.pipeline_error or 'open one first'}")
            return False
        self.diagnostics_panel.cancel()  # it reads artifacts this run may replace; it runs again afterwards
        self.compression_panel.cancel()
        fits_gmm = self.steps.index(step) >= self.steps.index("gmm") and self._pipeline_status("gmm") != "cached"
        self.em_trace.reset([] if fits_gmm else self.em_trace.values)
        if fits_gmm:
            self._show_em_trace()
        self.step_states.run_started()
        self._single_step = single_step
        self.status_message.setText(f"{label}…")
        self.runner.start(label, run_pipeline_step, self._pipeline_factory(), step)
        return True

    def has_dataset(self) -> bool:
        """A dataset is open (Run is possible)."""
        return self.pipeline is not None and self.pipeline_error is None

    def _set_running(self, running: bool) -> None:
        can_run = self.has_dataset()
        self.pipeline_panel.set_busy(running, can_run)
        if hasattr(self, "run_all_action"):
            self.run_all_action.setEnabled(not running and can_run)
            for a in self.run_step_actions:
                a.setEnabled(not running and can_run)

    def is_idle(self) -> bool:
        """No pipeline run and no diagnostics refresh under way."""
        return (not self.runner.is_busy() and not self.diagnostics_panel.task.is_busy()
                and not self.compression_panel.is_busy())

    def cancel_job(self) -> None:
        """Stop the pipeline run, or else the task the status bar shows, at its next checkpoint."""
        if self.runner.is_busy():
            self.status_message.setText(f"Cancelling {self.runner.current}…")
            self.runner.cancel()
        else:
            self.task_progress.cancel()

    def _on_run_progress(self, label: str, p: Progress) -> None:
        if label == SWEEP_LABEL:
            self.sweep_panel.on_progress(p)
            return
        step = p.values.get("step")
        if step not in self.steps:
            return
        if step != self.step_states.running:
            finished = self.step_states.step_started(step, time.monotonic())
            if finished is not None:
                self.pipeline_panel.set_status(finished[0], "done")
                self.pipeline_panel.set_time(*finished)
            self.pipeline_panel.set_status(step, "running")
        if step == "gmm" and "log_likelihood" in p.values:
            self.em_trace.add(p.values["log_likelihood"], p.values.get("channel"), p.values.get("split"))
            self._show_em_trace()

    def _show_em_trace(self) -> None:
        """The live EM curve in both panels (how EM stops is not known yet: no note)."""
        self.pipeline_panel.show_log_likelihood(self.em_trace.values)
        self.pipeline_panel.ll_plot.set_note("")
        self.diagnostics_panel.show_log_likelihood(self.em_trace.values)

    def _on_run_succeeded(self, label: str, outcome: RunOutcome) -> None:
        if label == SWEEP_LABEL:
            self._on_sweep_done(outcome)
            return
        self._renew_pipeline()
        self.step_states.run_succeeded(outcome, same_config=outcome.config == self.config.to_dict())
        for s, t in outcome.timings.items():
            self.pipeline_panel.set_time(s, t)
        self.refresh()
        if outcome.step == "evaluate":
            self._record_run(outcome)
        else:
            self.status_message.setText(f"{outcome.step} done")
        self.start_diagnostics()

    def _record_run(self, outcome: RunOutcome) -> None:
        rec = session.record_from_result(outcome.output, outcome.config, {r.id for r in self.runs})
        self.runs.append(rec)
        self.results_panel.add_run(rec)
        m = rec.metrics
        head = m.get("mean_per_class_accuracy", m.get("map"))
        self.status_message.setText(f"Run {rec.id} done" + (f": {100 * head:.1f} %" if head is not None else ""))
        self.save_session(quiet=True)
        self._update_bytes_figure()
        if self.config.get("classifier.kind") == "knn" and outcome.config == self.config.to_dict():
            self.compression_panel.compute_neighbours(self.config.get("classifier.knn_k"))
        self.run_recorded.emit(rec.id)
        if self.current_panel() == "pipeline":
            self.show_panel("results")

    def _on_run_cancelled(self, label: str) -> None:
        if label == SWEEP_LABEL:
            self.sweep_panel.ended("cancelled")
        self.step_states.run_cancelled()
        self._renew_pipeline()
        self.status_message.setText(f"{label} cancelled; caches are consistent")
        self.refresh()

    def _on_run_failed(self, label: str, message: str, tb: str) -> None:
        if label == SWEEP_LABEL:
            self.sweep_panel.ended("failed")
        self.step_states.run_failed(self._single_step)
        self._renew_pipeline()
        self.refresh()
        failed = self.step_states.failed_steps()
        info = ""
        if failed:
            info = (f"The {failed[0]} step failed; every cache stays consistent (finished steps are kept, the "
                    f"failed one is not written). The Log (Ctrl+L) has the details.")
            bad = self._unreadable_detail()
            if bad:
                info += f" Note: {bad}."
        self.show_error(f"{label} failed", message, tb, info)

    # ================================================================== diagnostics
    def start_diagnostics(self) -> None:
        """Recompute the diagnostics figures from the cached artifacts (the diagnostics panel's task)."""
        self.diagnostics_panel.refresh(self._pipeline_factory())

    def _on_diagnostics(self, d: Diagnostics) -> None:
        if d.log_likelihood is not None and len(d.log_likelihood) and not self.em_trace.values:
            self.em_trace.reset(d.log_likelihood)
            self.pipeline_panel.show_log_likelihood(self.em_trace.values)
        # the Pipeline panel's curve may be another split's fit (the last one run): its note only if it is this one
        same_fit = (d.log_likelihood is not None and len(self.em_trace.values) == len(d.log_likelihood)
                    and np.allclose(self.em_trace.values, d.log_likelihood, rtol=1e-6))
        self.pipeline_panel.ll_plot.set_note((d.em_stop or "") if same_fit else "")
        self.status_message.setText("Diagnostics updated")

    # ================================================================== errors
    def show_error(self, title: str, message: str, tb: str, info: str = "") -> None:
        """A non-blocking message box; 'Show Details…' expands the traceback. Also logged and in the status bar."""
        self.status_message.setText(f"{title}: {message}")
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

    # ================================================================== session
    def session_state(self) -> session.SessionState:
        return session.SessionState(current=self.results_panel.current_id(), compare=self.results_panel.compare_id(),
                                    panel=self.current_panel())

    def save_session(self, quiet: bool = False) -> Path:
        folder = session.save_session(self.workspace, self.config, self.runs, self.session_state())
        if self.persist:
            self.settings.setValue("last_workspace", str(self.workspace))
        if not quiet:
            self.status_message.setText(f"Session saved in {folder}")
        log.info("session saved in %s", folder)
        return folder

    def save_session_as(self, folder) -> Path:
        """Write the session into ``folder`` (new, empty or a saved session); the workspace keeps its own."""
        folder = session.save_session_to(folder, self.config, self.runs, self.session_state(),
                                          workspace=self.workspace)
        self.status_message.setText(f"Session saved in {folder}")
        log.info("session saved in %s", folder)
        return folder

    def choose_save_session_as(self) -> None:
        folder = choose_folder(self, "Save the session (config, results, run history) in", self.exports.start_folder())
        if folder:
            try:
                self.save_session_as(folder)
            except (ValueError, OSError) as exc:
                self.show_error("Cannot save the session there", str(exc), "")

    def open_session(self, folder) -> bool:
        """Restore a session saved with :meth:`save_session_as` (``folder`` or its ``session.json``): its
        config, runs and panels; its workspace if that folder still exists, else the current one."""
        if self.runner.is_busy():
            self.status_message.setText("Wait for the running job (or cancel it) before opening a session")
            return False
        folder = Path(folder)
        if folder.name == "session.json":
            folder = folder.parent
        if not (folder / "session.json").is_file():
            self.show_error("Cannot open the session", f"{folder} holds no session.json (not a saved session)", "")
            return False
        problems: List[str] = []
        try:
            config, runs, state = session.load_session_from(folder, problems)
        except Exception as exc:  # noqa: BLE001 - an unreadable session file is reported, nothing changes
            self.show_error("Cannot read the session", str(exc), "")
            return False
        ws = session.saved_workspace(folder)
        if ws is not None and ws.is_dir():
            self.workspace = ws
            self.setWindowTitle(f"fvstudio — {self.workspace}")
        self._restore(config, runs, state)
        self._report_refused(problems)
        self.status_message.setText(f"Session opened from {folder}")
        return True

    def choose_open_session(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a saved session folder", str(self.exports.start_folder()))
        if folder:
            self.open_session(folder)

    def _report_refused(self, problems: List[str]) -> None:
        if problems:
            self.show_error(f"{len(problems)} saved run(s) left out", problems[0], "\n".join(problems),
                            "The other runs of the session are restored.")

    def _on_history_changed(self) -> None:
        self.runs = list(self.results_panel.runs)
        self.save_session(quiet=True)
        self._update_bytes_figure()

    def load_workspace(self, workspace) -> bool:
        """Open ``workspace``: its saved config and run history (if any) replace the current ones."""
        if self.runner.is_busy():
            self.status_message.setText("Wait for the running job (or cancel it) before switching workspace")
            return False
        self.workspace = Path(workspace)
        problems: List[str] = []
        try:
            config, runs, state = session.load_session(self.workspace, problems)
        except Exception as exc:  # noqa: BLE001 - a damaged session file is reported, then ignored
            self.show_error("Cannot read the saved session", str(exc), "")
            config, runs, state = None, [], session.SessionState()
        self._restore(config, runs, state)
        if self.persist:
            self.settings.setValue("last_workspace", str(self.workspace))
        self.setWindowTitle(f"fvstudio — {self.workspace}")
        self._report_refused(problems)
        return True

    def _restore(self, config, runs: List[session.RunRecord], state: session.SessionState) -> None:
        """Show a loaded session: its runs, its config (None: keep the current one), its panel."""
        self._show_runs(runs, state)
        self.diagnostics_panel.clear()
        self.apply_config(config if config is not None else self.config)
        if state.panel in PANELS:
            self.show_panel(state.panel)
        if self.pipeline is not None and self.pipeline_error is None and self.pipeline_panel.status("gmm") == "cached":
            self.start_diagnostics()

    def _show_runs(self, runs: List[session.RunRecord], state: session.SessionState) -> None:
        """The restored history in the results panel; each step's time as computed for run A."""
        self.runs = list(runs)
        self.results_panel.set_runs(self.runs, state.current, state.compare)
        current = self.results_panel.record(self.results_panel.current_id())
        compute = (current.compute_timings or current.timings) if current is not None else {}
        for s in self.steps:
            self.pipeline_panel.set_time(s, compute.get(s))
        self._update_bytes_figure()

    def choose_workspace(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a workspace folder", str(self.workspace))
        if path:
            self.load_workspace(path)

    # ================================================================== exports
    def figures(self) -> List:
        return ([self.pipeline_panel.ll_plot] + self.results_panel.figures() + self.diagnostics_panel.figures()
                + self.compression_panel.figures() + self.sweep_panel.figures())

    def tables(self) -> Dict[str, Any]:
        return {**self.results_panel.tables(), "steps": self.pipeline_panel.table,
                "classes": self.dataset_panel.classes, **self.compression_panel.tables(),
                "sweep": self.sweep_panel.table}

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
        self.dataset_panel.stop_loading()  # pending thumbnails: the pool thread leaves at once
        self.diagnostics_panel.cancel()
        self.compression_panel.cancel()
        self.compression_panel.hubs.stop_loading()
        self.results_panel.test_images.strip.stop_loading()
        self.runner.cancel()
        self.runner.wait(10.0)
        self.diagnostics_panel.task.wait(10.0)
        self.compression_panel.wait(10.0)
        if self.persist:
            self.settings.setValue("geometry", self.saveGeometry())
            self.settings.setValue("window_state", self.saveState())
            self.settings.setValue("panel", self.current_panel())
            try:
                self.save_session(quiet=True)
            except OSError as exc:  # closing must not fail (e.g. the workspace is gone)
                log.warning("session not saved: %s", exc)
        logging.getLogger("fvstudio").removeHandler(self._log_handler)
        super().closeEvent(event)
