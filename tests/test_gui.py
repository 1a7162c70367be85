"""The explorer, offscreen (pytest-qt): it opens the sample data, runs the pipeline through its shared runner,
cancels and reruns a step, shows errors, restores a saved session and exports a replayable config.

The pipeline runs on a tiny config (1 scale, PCA 16, K = 4, a few images per class) so the whole file
stays well under a minute on two cores. Waits are armed before the click that starts the work.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

# Create the QApplication at collection time, before any other test could create a bare QGuiApplication:
# widgets abort the process under a QGuiApplication.
_APP = QApplication.instance() or QApplication(["fvstudio-tests"])

from fvstudio.engine.progress import Cancelled  # noqa: E402
from fvstudio.gui.app import default_config, make_window, sample_dataset_root  # noqa: E402
from fvstudio.gui.main_window import MainWindow  # noqa: E402
from fvstudio.gui.workers import BackgroundTask  # noqa: E402

pytestmark = pytest.mark.gui

TINY = {"dataset.n_train": 4, "dataset.n_test": 3, "dataset.max_pixels": 20_000, "descriptors.scales": 1,
        "descriptors.step": 8, "pca.n_components": 16, "pca.sample": 2_000, "gmm.n_components": 4,
        "gmm.max_iter": 10, "gmm.sample": 2_000, "classifier.select_lambda": False, "classifier.epochs": 5,
        "encoder.pyramid": "1x1", "descriptors.channels": ["sift"]}
RUN_TIMEOUT = 60_000


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory) -> Path:
    """One workspace for the run / restore / replay tests (later ones re-use the cached steps)."""
    return tmp_path_factory.mktemp("gui-ws")


def _settings(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def _tiny_config(**extra):
    if sample_dataset_root() is None:
        pytest.skip("sample_data/ is not present")
    cfg = default_config()
    cfg.update({**TINY, **extra})
    return cfg


def _window(qtbot, workspace, config, tmp_path) -> MainWindow:
    w = MainWindow(workspace, config, _settings(tmp_path))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


def _run_all(qtbot, w: MainWindow) -> str:
    """Click Run all and wait for the results to be recorded; returns the run id."""
    w.show_panel("pipeline")
    with qtbot.waitSignal(w.run_recorded, timeout=RUN_TIMEOUT) as blocker:
        w.pipeline_panel.run_all_button.click()
    return blocker.args[0]


def _wait_idle(qtbot, w: MainWindow) -> None:
    qtbot.waitUntil(w.is_idle, timeout=RUN_TIMEOUT)


def _table_text(table):
    return [[table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
            for r in range(table.rowCount())]


# ----------------------------------------------------------------------------------------- workers
def test_background_task_reports_errors_cancels_and_results(qtbot):
    runner = BackgroundTask()

    def boom(progress=None, cancel=None):
        raise RuntimeError("boom in a worker")  # superqt alone would only warn about a RuntimeError

    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.start("boom", boom)
    name, message, tb = blocker.args
    assert name == "boom" and "boom in a worker" in message and "Traceback" in tb
    qtbot.waitUntil(lambda: not runner.is_busy())

    def stop(progress=None, cancel=None):
        raise Cancelled("stopped")

    with qtbot.waitSignal(runner.cancelled, timeout=5000):
        runner.start("stop", stop)
    qtbot.waitUntil(lambda: not runner.is_busy())

    def answer(progress=None, cancel=None):
        for i in range(3):
            progress and progress(__import__("fvstudio.engine.progress", fromlist=["Progress"]).Progress(
                i + 1, 3, "x", {"step": "s", "log_likelihood": -float(i)}))
        return 42

    seen = []
    runner.progressed.connect(lambda n, p: seen.append(p.values.get("log_likelihood")))
    with qtbot.waitSignal(runner.succeeded, timeout=5000) as blocker:
        runner.start("answer", answer)
    assert blocker.args == ["answer", 42]
    qtbot.waitUntil(lambda: len(seen) == 3)  # values for live plots are never throttled away
    assert seen == [-0.0, -1.0, -2.0]


def test_a_new_task_of_a_slot_cancels_the_previous_one(qtbot):
    import time

    from fvstudio.engine.progress import check_cancel

    task = BackgroundTask()
    stopped = []

    def slow(progress=None, cancel=None):
        for _ in range(500):
            time.sleep(0.01)
            try:
                check_cancel(cancel, "slow")
            except Cancelled:
                stopped.append(True)
                raise
        return "slow finished"

    heard = []
    for signal in (task.succeeded, task.cancelled, task.failed):
        signal.connect(lambda *args: heard.append(args))
    busy = []
    task.busy_changed.connect(busy.append)
    task.start("slow", slow)
    assert task.current == "slow"
    with qtbot.waitSignal(task.succeeded, timeout=5000) as blocker:
        task.start("fast", lambda progress=None, cancel=None: 7)
    assert blocker.args == ["fast", 7]
    assert task.wait(5.0) and stopped == [True]  # the superseded job was cancelled at its next checkpoint
    qtbot.wait(50)
    assert heard == [("fast", 7)]  # ... and what it reported was dropped
    assert busy == [True, False] and not task.is_busy()


# ----------------------------------------------------------------------------------------- dataset
def test_opens_sample_dataset_with_thumbnails_and_patch_grid(qtbot, tmp_path):
    w = _window(qtbot, tmp_path / "ws", _tiny_config(), tmp_path)
    ds = w.pipeline.dataset
    panel = w.dataset_panel
    assert panel.classes.rowCount() == len(ds.class_names) + 1
    counts = [int(panel.classes.item(r, 1).text()) for r in range(1, panel.classes.rowCount())]
    assert sum(counts) == len(ds.paths) == int(panel.classes.item(0, 1).text())
    # the split follows the config: 4 train + 3 test per class
    assert [int(panel.classes.item(r, 2).text()) for r in range(1, panel.classes.rowCount())] == [4] * len(counts)
    qtbot.waitUntil(lambda: panel.model.loaded_count() > 0, timeout=10_000)
    # class filter
    panel.classes.selectRow(2)
    assert panel.model.rowCount() == counts[1]
    # large view + patch grid of the config's grid
    panel.select_image(int(np.flatnonzero(np.asarray(ds.labels) == 1)[0]))
    assert panel._view_image is not None
    panel.grid_toggle.setChecked(True)  # the grid's frames only: drawn at once, no background job
    assert not panel.view._grid.path().isEmpty()
    # editing the split in the dataset panel changes the config and the counts
    panel.split_form.editors["dataset.n_train"].widget.setValue(5)
    assert w.config.get("dataset.n_train") == 5
    assert int(panel.classes.item(1, 2).text()) == 5


def test_opens_a_voc_devkit_as_multilabel(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the devkit's own workspace goes there
    voc = sample_dataset_root().parent / "voc_mini" if sample_dataset_root() else None
    if voc is None or not voc.is_dir():
        pytest.skip("sample_data/voc_mini is not present")
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    w = _window(qtbot, tmp_path / "ws", _tiny_config(), tmp_path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(voc))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    w.dataset_panel.dropEvent(drop)  # drag-and-drop of a folder opens it
    assert w.pipeline_error is None and w.pipeline.dataset.multilabel
    assert "VOC" in w.dataset_panel.title.text() and "multi-label" in w.dataset_panel.title.text()
    assert w.config.get("dataset.root") == str(voc)
    assert w.workspace.is_relative_to(tmp_path / "cache") and w.workspace != tmp_path / "ws"
    assert w.dataset_panel.split is not None and len(w.dataset_panel.split.test) > 0


def test_every_schema_key_has_a_widget(qtbot, tmp_path):
    from fvstudio.pipeline import PipelineConfig

    w = _window(qtbot, tmp_path / "ws", _tiny_config(), tmp_path)
    bound = set(w.dataset_panel.split_form.editors)
    for sec in w.pipeline_panel.sections.values():
        bound |= set(sec.form.editors)
    assert bound == set(PipelineConfig.schema())
    ed = w.pipeline_panel.sections["gmm"].form.editors["gmm.n_components"]
    assert "Sec." in ed.widget.toolTip()
    ed.widget.setValue(6)
    assert w.config.get("gmm.n_components") == 6


# ----------------------------------------------------------------------------------------- runs
def test_run_all_from_the_gui_fills_results(qtbot, tmp_path, shared_workspace):
    w = _window(qtbot, shared_workspace, _tiny_config(), tmp_path)
    rid = _run_all(qtbot, w)
    assert w.results_panel.current_id() == rid
    metrics = _table_text(w.results_panel.metrics)
    assert any("accuracy" in row[0].lower() for row in metrics)
    n_classes = len(w.pipeline.dataset.class_names)
    assert w.results_panel.per_class.rowCount() == n_classes
    for s in w.steps:
        assert w.pipeline_panel.status(s) in ("done", "cached")
    _wait_idle(qtbot, w)  # diagnostics job
    assert len(w.pipeline_panel.log_likelihood()) > 0  # the live log-likelihood got points
    # a second run with another classifier setting re-uses the vocabulary and is comparable
    w.pipeline_panel.sections["classifier"].form.editors["classifier.epochs"].widget.setValue(3)
    qtbot.waitUntil(lambda: w.pipeline_panel.status("classifier") == "stale", timeout=5000)
    assert w.pipeline_panel.status("gmm") == "cached"
    rid2 = _run_all(qtbot, w)
    w.results_panel.run_b.setCurrentIndex(w.results_panel.run_b.findData(rid))
    assert w.results_panel.current_id() == rid2
    assert w.results_panel.metrics.columnCount() == 4
    assert "classifier.epochs" in w.results_panel.diff_label.text()
    _wait_idle(qtbot, w)
    files = w.exports.export_plots(tmp_path / "plots")
    assert all(p.exists() and p.stat().st_size > 0 for p in files)
    assert {p.suffix for p in files} == {".png", ".svg"}
    csvs = w.exports.export_tables(tmp_path / "tables")
    assert csvs and all(p.suffix == ".csv" and p.stat().st_size > 0 for p in csvs)
    text = (tmp_path / "tables" / "per_class.csv").read_text()
    assert text.count("\n") == n_classes + 1
    w.save_session()
    w.close()


def test_live_log_likelihood_draws_one_gmm_fit_at_a_time(qtbot, tmp_path):
    # two random splits: two vocabularies, each fitted by its own EM run
    w = _window(qtbot, tmp_path / "ws", _tiny_config(**{"dataset.repeats": 2, "gmm.max_iter": 6, "gmm.tol": 0.0}),
                tmp_path)
    _run_all(qtbot, w)
    _wait_idle(qtbot, w)
    last = w.pipeline.artifact("gmm", split=1)
    assert len(last.log_likelihood_) == 6
    # the curve shows the last fit (split 1) only, not both fits end to end
    assert w.pipeline_panel.log_likelihood() == pytest.approx(list(last.log_likelihood_), rel=1e-5)
    w.start_diagnostics()
    _wait_idle(qtbot, w)
    assert "Split 1 of 2" in w.diagnostics_panel.note.text()
    w.close()


def test_a_run_preempts_the_diagnostics_job(qtbot, tmp_path, shared_workspace):
    w = _window(qtbot, shared_workspace, _tiny_config(), tmp_path)
    _wait_idle(qtbot, w)
    w.start_diagnostics()
    assert w.diagnostics_panel.task.current == "diagnostics"
    assert w.pipeline_panel.run_all_button.isEnabled()  # a low-priority job does not block Run
    rid = _run_all(qtbot, w)  # cancels the diagnostics job, then runs (all steps cached here)
    assert w.results_panel.current_id() == rid
    _wait_idle(qtbot, w)


def test_saved_session_restores_the_same_state(qtbot, tmp_path, shared_workspace):
    w = _window(qtbot, shared_workspace, _tiny_config(), tmp_path)
    if not w.runs:
        _run_all(qtbot, w)
        _wait_idle(qtbot, w)
    w.pipeline_panel.sections["pca"].form.editors["pca.whiten"].widget.setChecked(True)
    state = w.session_state()
    metrics = _table_text(w.results_panel.metrics)
    per_class = _table_text(w.results_panel.per_class)
    w.save_session()
    config = w.config.copy()
    w.close()

    settings = _settings(tmp_path)
    w2 = make_window(shared_workspace, settings)
    qtbot.addWidget(w2)
    assert w2.config == config
    assert w2.pipeline_panel.sections["pca"].form.editors["pca.whiten"].get() is True
    assert w2.session_state().current == state.current
    assert [r.id for r in w2.runs] == [r.id for r in w.runs]
    assert _table_text(w2.results_panel.metrics) == metrics
    assert _table_text(w2.results_panel.per_class) == per_class
    _wait_idle(qtbot, w2)
    # removing a run from the history removes its saved arrays too
    n = len(w2.runs)
    gone = w2.results_panel.current_id()
    w2.results_panel.remove_button.click()
    assert len(w2.runs) == n - 1 and gone not in [r.id for r in w2.runs]
    assert not (shared_workspace / "session" / "runs" / f"{gone}.npz").exists()


def test_exported_toml_replays_headless_to_the_same_metrics(qtbot, tmp_path, shared_workspace):
    from fvstudio.pipeline import load_config, run

    w = _window(qtbot, tmp_path / "ws-replay", _tiny_config(), tmp_path)
    rid = _run_all(qtbot, w)
    rec = w.results_panel.record(rid)
    path = w.exports.export_config(tmp_path / "exported.toml")
    _wait_idle(qtbot, w)
    result = run(load_config(path), workspace=tmp_path / "fresh-workspace")
    assert set(result.metrics) == set(rec.metrics)
    for k, v in rec.metrics.items():
        assert math.isclose(result.metrics[k], v, rel_tol=1e-9, abs_tol=1e-12), k


# ----------------------------------------------------------------------------------------- cancel / errors
def test_cancel_a_step_midway_then_rerun_it(qtbot, tmp_path):
    # enough images that extraction takes a while: all 40 per class at the paper's 5 scales
    w = _window(qtbot, tmp_path / "ws", _tiny_config(**{"dataset.n_train": 30, "dataset.n_test": 0,
                                                       "dataset.max_pixels": 100_000,
                                                       "descriptors.scales": 5, "descriptors.step": 4}),
                tmp_path)
    fractions = []

    def cancel_early(name, p):
        if p.values.get("step") == "descriptors" and p.values.get("step_fraction", 0) > 0:
            fractions.append(p.values["step_fraction"])
            w.cancel_job()

    w.runner.progressed.connect(cancel_early)
    w.show_panel("pipeline")
    with qtbot.waitSignal(w.runner.cancelled, timeout=RUN_TIMEOUT):
        w.pipeline_panel.sections["descriptors"].run_button.click()
    w.runner.progressed.disconnect(cancel_early)
    assert fractions and fractions[0] < 1.0
    assert w.pipeline_panel.status("descriptors") == "cancelled"
    assert w.pipeline.status("descriptors") != "cached"
    assert "cancelled" in w.status_message.text()
    with qtbot.waitSignal(w.runner.succeeded, timeout=RUN_TIMEOUT):
        w.pipeline_panel.sections["descriptors"].run_button.click()
    _wait_idle(qtbot, w)
    assert w.pipeline.status("descriptors") == "cached"
    assert w.pipeline_panel.status("descriptors") == "done"


def test_a_failing_step_shows_the_error_with_traceback(qtbot, tmp_path):
    root = tmp_path / "unreadable"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"img{i}.jpg").write_bytes(b"not an image at all" * (i + 1))
    cfg = _tiny_config(**{"dataset.n_train": 2, "dataset.n_test": 1})
    cfg.set("dataset.root", str(root))
    w = _window(qtbot, tmp_path / "ws", cfg, tmp_path)
    with qtbot.waitSignal(w.runner.failed, timeout=RUN_TIMEOUT) as blocker:
        w.pipeline_panel.run_all_button.click()
    assert blocker.args[1]
    assert w.error_box is not None and w.error_box.isVisible()
    assert "Traceback" in w.error_box.detailedText()
    assert w.last_error[1] == blocker.args[1]
    assert "failed" in [w.pipeline_panel.status(s) for s in w.steps]
    assert "failed" in w.log_view.toPlainText()
    w.error_box.close()


def test_screenshot_entry_point(tmp_path):
    from fvstudio.gui.app import run_gui

    if sample_dataset_root() is None:
        pytest.skip("sample_data/ is not present")
    out = tmp_path / "shot.png"
    assert run_gui(workspace=str(tmp_path / "ws"), screenshot=str(out), panel="pipeline") == 0
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert not img.isNull() and img.width() >= 800


def test_window_geometry_and_panel_are_remembered(qtbot, tmp_path):
    w = _window(qtbot, tmp_path / "ws", _tiny_config(), tmp_path)
    w.resize(760, 555)
    w.show_panel("diagnostics")
    w.close()
    w2 = MainWindow(tmp_path / "ws", _tiny_config(), _settings(tmp_path))
    qtbot.addWidget(w2)
    # restored (the offscreen platform may add a few pixels of frame), not the 1360 x 860 default
    assert abs(w2.width() - 760) <= 30 and abs(w2.height() - 555) <= 40
    assert _settings(tmp_path).value("panel") == "diagnostics"
    assert _settings(tmp_path).value("last_workspace") == str(tmp_path / "ws")


def test_a_compressed_knn_run_from_the_gui_shows_bytes_and_hubness(qtbot, tmp_path, shared_workspace):
    w = _window(qtbot, shared_workspace, _tiny_config(), tmp_path)
    forms = w.pipeline_panel.sections
    forms["compress"].form.editors["compression.bits_per_dim"].widget.setValue(0.5)
    kind = forms["classifier"].form.editors["classifier.kind"].widget
    kind.setCurrentIndex(kind.findText("knn"))
    assert w.config.get("compression.bits_per_dim") == 0.5 and w.config.get("classifier.kind") == "knn"
    _run_all(qtbot, w)
    rows = {r[0]: r[1] for r in _table_text(w.results_panel.metrics)}
    assert rows["compression"].startswith("PQ b = 0.5, G = 8")
    assert int(rows["bytes per image"]) < int(rows["bytes per image as float32"])
    hub = [k for k in rows if k.startswith("k-NN hubness sift")]
    assert {k.split()[3] for k in hub} == {"uncompressed", "pq", "pq_renormalised"}
    _wait_idle(qtbot, w)
    w.show_panel("results")
    w.grab().save(str(tmp_path / "results_knn.png"))
    w.close()
