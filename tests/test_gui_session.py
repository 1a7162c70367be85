"""The explorer's session and dataset handling (pytest-qt, offscreen, no pipeline run): refused run ids,
"Save session as…" and opening it back, comparing only like runs, and opening another or an invalid dataset.

Runs are made from hand-built ``RunResult`` objects (what the evaluate step returns), so no step runs here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QApplication  # noqa: E402

_APP = QApplication.instance() or QApplication(["fvstudio-tests"])

from fvstudio.gui import session  # noqa: E402
from fvstudio.gui.app import default_config, make_window, sample_dataset_root  # noqa: E402
from fvstudio.gui.main_window import MainWindow  # noqa: E402
from fvstudio.pipeline.results import RunResult  # noqa: E402

from test_gui import _settings, _window  # noqa: E402  (the same window set-up as the main GUI tests)

pytestmark = pytest.mark.gui


def _config(root=None, **extra):
    if sample_dataset_root() is None:
        pytest.skip("sample_data/ is not present")
    cfg = default_config()
    if root is not None:
        cfg.set("dataset.root", str(root))
    cfg.update({"dataset.n_train": 4, "dataset.n_test": 3, **extra})
    return cfg


def _record(cfg, existing=(), accuracy=0.5, multilabel=False, classes=("a", "b")):
    """A run of ``cfg`` as the window records it: single-label (accuracy) or multi-label (AP)."""
    C = len(classes)
    metric = "ap" if multilabel else "accuracy"
    metrics = {"map": accuracy} if multilabel else {"mean_per_class_accuracy": accuracy, "accuracy": accuracy}
    res = RunResult(metrics=metrics, per_class={c: accuracy for c in classes}, class_names=list(classes),
                    multilabel=multilabel, confusion=None if multilabel else np.eye(C, dtype=np.int64) * 3,
                    per_class_metric=metric, primary_metric="map" if multilabel else "mean_per_class_accuracy",
                    test_ids=[[f"i{k}" for k in range(C)]], test_scores=[np.eye(C, dtype=np.float32)],
                    test_targets=[(2 * np.eye(C) - 1).astype(np.int8)],
                    test_labels=[np.arange(C)] if not multilabel else [np.zeros(0, int)])
    return session.record_from_result(res, cfg.to_dict(), set(existing))



def _with_runs(w: MainWindow, records) -> None:
    w.runs = list(records)
    w.results_panel.set_runs(w.runs, current=records[-1].id)


# ----------------------------------------------------------------------------------------- §2 run ids
def test_a_session_run_id_that_is_a_path_is_refused_with_a_message(qtbot, tmp_path):
    ws = tmp_path / "ws"
    cfg = _config()
    r1 = _record(cfg)
    r2 = _record(cfg, {r1.id}, accuracy=0.7)
    session.save_session(ws, cfg, [r1, r2], session.SessionState(current=r2.id))
    doc_path = ws / "session" / "session.json"
    doc = json.loads(doc_path.read_text())
    doc["runs"].append({**doc["runs"][0], "id": "../../../x"})
    doc_path.write_text(json.dumps(doc))
    w = make_window(ws, _settings(tmp_path))
    qtbot.addWidget(w)
    assert [r.id for r in w.runs] == [r1.id, r2.id]  # the rest of the session is restored
    assert w.results_panel.current_id() == r2.id
    assert w.error_box is not None and "'../../../x'" in w.error_box.text() and str(doc_path) in w.error_box.text()
    w.error_box.close()


# ----------------------------------------------------------------------------------------- save session as
def test_save_session_as_elsewhere_and_open_it_back(qtbot, tmp_path):
    ws = tmp_path / "ws"
    w = _window(qtbot, ws, _config(), tmp_path)
    texts = [a.text() for a in w.menuBar().actions()[0].menu().actions()]
    assert "Save session &as…" in texts and "Open sessio&n…" in texts
    r1 = _record(w.config)
    r2 = _record(w.config, {r1.id}, accuracy=0.8)
    _with_runs(w, [r1, r2])
    w.pipeline_panel.sections["pca"].form.editors["pca.whiten"].widget.setChecked(True)
    w.show_panel("results")
    config = w.config.copy()
    folder = w.save_session_as(tmp_path / "my sessions" / "whitened")  # a folder that does not exist yet
    assert (folder / "session.json").is_file() and (folder / "config.toml").is_file()
    w.close()

    other = _window(qtbot, tmp_path / "other-ws", _config(), tmp_path)
    assert other.open_session(folder / "session.json")
    assert other.config == config
    assert [r.id for r in other.runs] == [r1.id, r2.id] and other.results_panel.current_id() == r2.id
    assert other.current_panel() == "results"
    assert other.workspace == ws.resolve()  # the cache the session was made with
    assert not other.open_session(tmp_path)  # not a session folder: said, nothing changes
    assert other.config == config and "no session.json" in other.error_box.text()
    other.error_box.close()


# ----------------------------------------------------------------------------------------- comparing runs
def _legend_labels(fig):
    legend = fig.getPlotItem().legend
    return [] if legend is None else [label.text for _sample, label in legend.items]


def test_results_compare_only_runs_of_the_same_dataset_and_metric(qtbot, tmp_path):
    w = _window(qtbot, tmp_path / "ws", _config(), tmp_path)
    textures = w.config.copy()
    other = w.config.copy()
    other.set("dataset.root", str(tmp_path / "another"))
    a = _record(textures, accuracy=0.6)
    same = _record(textures, {a.id}, accuracy=0.7)
    elsewhere = _record(other, {a.id, same.id}, accuracy=0.9)
    multi = _record(textures, {a.id, same.id, elsewhere.id}, accuracy=0.4, multilabel=True)
    panel = w.results_panel
    panel.set_runs([same, elsewhere, multi, a], current=a.id, compare=elsewhere.id)
    w.show_panel("results")
    assert panel.compare_id() is None and panel.metrics.columnCount() == 2  # not paired
    assert "another dataset" in panel.diff_label.text()
    model = panel.run_b.model()
    enabled = {panel.run_b.itemData(i): model.item(i).isEnabled() for i in range(1, panel.run_b.count())}
    assert enabled == {same.id: True, elsewhere.id: False, multi.id: False, a.id: False}
    tip = model.item(panel.run_b.findData(multi.id)).toolTip()
    assert "another metric" in tip and "ap" in tip
    panel.run_b.setCurrentIndex(panel.run_b.findData(multi.id))  # chosen anyway (e.g. from a session)
    assert panel.compare_id() is None and "another metric" in panel.diff_label.text()
    assert not any("AP" in panel.per_class.horizontalHeaderItem(c).text() for c in range(panel.per_class.columnCount()))
    panel.run_b.setCurrentIndex(panel.run_b.findData(same.id))
    assert panel.compare_id() == same.id and panel.metrics.columnCount() == 4
    assert _legend_labels(panel.bars) == [f"A: {a.label}", f"B: {same.label}"]
    w.grab().save(str(tmp_path / "compare.png"))
    panel.run_b.setCurrentIndex(0)  # back to run A alone: the legend names it only
    assert _legend_labels(panel.bars) == [f"A: {a.label}"]
    panel.run_a.setCurrentIndex(panel.run_a.findData(same.id))
    assert _legend_labels(panel.bars) == [f"A: {same.label}"]


# ----------------------------------------------------------------------------------------- opening datasets
def _class_folders(root: Path, colours=("red", "green")) -> Path:
    from PySide6.QtGui import QColor, QImage

    for name in colours:
        (root / name).mkdir(parents=True)
        for i in range(8):
            img = QImage(40, 32, QImage.Format.Format_RGB32)
            img.fill(QColor(name).darker(100 + 10 * i))
            assert img.save(str(root / name / f"{name}{i}.png"))
    return root


def test_another_dataset_gets_its_own_workspace_and_an_invalid_folder_changes_nothing(qtbot, tmp_path):
    first = _class_folders(tmp_path / "data" / "first")
    second = _class_folders(tmp_path / "data" / "second", ("blue", "yellow", "gray"))
    not_a_dataset = tmp_path / "data" / "empty"
    not_a_dataset.mkdir()

    def workspace_for(cfg):
        return tmp_path / "workspaces" / Path(cfg.get("dataset.root")).name

    cfg = _config(first)
    w = MainWindow(workspace_for(cfg), cfg, _settings(tmp_path), workspace_for=workspace_for)
    qtbot.addWidget(w)
    w.show()
    r1 = _record(w.config, classes=("green", "red"))
    _with_runs(w, [r1])
    w.save_session(quiet=True)

    assert w.open_dataset(str(second))
    assert w.workspace == workspace_for(w.config) == tmp_path / "workspaces" / "second"
    assert w.pipeline.dataset.class_names == ["blue", "gray", "yellow"] and w.runs == []
    assert w.results_panel.current_id() is None  # no result of the first dataset is shown for this one
    assert w.open_dataset(str(first))  # back: its workspace, with its runs
    assert w.workspace == tmp_path / "workspaces" / "first" and [r.id for r in w.runs] == [r1.id]

    classes_before = w.dataset_panel.classes.rowCount()
    assert not w.open_dataset(str(not_a_dataset))
    assert w.error_box is not None and str(not_a_dataset) in w.error_box.text()
    assert "Still showing" in w.error_box.informativeText()
    w.error_box.close()
    assert w.config.get("dataset.root") == str(first) and w.pipeline.dataset.root == first
    assert w.dataset_panel.classes.rowCount() == classes_before == 3
    assert w.workspace == tmp_path / "workspaces" / "first"
    assert w.pipeline_panel.run_all_button.isEnabled() and w.run_all_action.isEnabled()
    w.grab().save(str(tmp_path / "kept.png"))


def test_without_a_valid_dataset_counts_are_cleared_and_run_is_disabled(qtbot, tmp_path):
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    w = _window(qtbot, tmp_path / "ws", _config(nothing), tmp_path)
    assert not w.has_dataset()
    assert w.dataset_panel.classes.rowCount() == 0 and w.dataset_panel.count_label.text() == ""
    assert not w.pipeline_panel.run_all_button.isEnabled() and not w.run_all_action.isEnabled()
    assert not any(sec.run_button.isEnabled() for sec in w.pipeline_panel.sections.values())
    assert not w.run_all()  # F5 does nothing either
    assert not w.open_dataset(str(nothing))
    assert "No dataset is loaded" in w.error_box.informativeText()
    w.error_box.close()
    assert not w.pipeline_panel.run_all_button.isEnabled()


# ----------------------------------------------------------------------------------------- thumbnails
def test_the_selected_thumbnail_is_framed_not_tinted(qtbot, tmp_path):
    from PySide6.QtCore import QItemSelectionModel, QPoint
    from PySide6.QtGui import QColor, QPalette

    root = _class_folders(tmp_path / "colours")
    w = _window(qtbot, tmp_path / "ws", _config(root), tmp_path)
    panel = w.dataset_panel
    qtbot.waitUntil(lambda: panel.model.loaded_count() >= 2, timeout=10_000)
    grid = panel.grid
    first, second = panel.model.index(0), panel.model.index(1)
    grid.selectionModel().setCurrentIndex(first, QItemSelectionModel.SelectionFlag.ClearAndSelect)
    qtbot.wait(50)
    shot = grid.viewport().grab().toImage()
    shot.save(str(tmp_path / "thumbnails.png"))

    def icon_centre(index):
        rect = grid.visualRect(index)
        return QPoint(rect.center().x(), rect.top() + 4 + 48)  # the middle of the 96 px icon

    truth = QColor(panel.model.data(first, 1).toImage().pixel(48, 48))  # the thumbnail's own colour
    seen = QColor(shot.pixel(icon_centre(first)))
    assert abs(seen.red() - truth.red()) <= 2 and abs(seen.green() - truth.green()) <= 2 \
        and abs(seen.blue() - truth.blue()) <= 2, (seen.name(), truth.name())  # not blended with the highlight
    highlight = grid.palette().color(QPalette.ColorGroup.Active, QPalette.ColorRole.Highlight)
    rect = grid.visualRect(first)
    frame = QColor(shot.pixel(QPoint(rect.center().x(), rect.top() + 2)))
    assert frame == highlight  # the selection is a frame of the highlight colour
    unselected = QColor(shot.pixel(QPoint(grid.visualRect(second).center().x(), grid.visualRect(second).top() + 2)))
    assert unselected != highlight
