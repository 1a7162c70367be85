"""The explorer's Compression and Sweeps panels and the Results panel's test images, offscreen (pytest-qt).

On test_gui.py's tiny config of the shipped sample data: a two-value sweep started from the Pipeline panel's
dialog draws both points live and replays headless from the command line it shows to the same numbers; a
confusion-matrix cell lists its test images with their top-5 classes and opens one in the Dataset panel; a
compressed k-NN run shows Fig. 10's three curves with RunResult's own hubness figures, hub thumbnails, a k
control, and a distortion heat map equal to distortion_sweep's MSEs. One workspace for the whole module, so
later tests re-use the descriptors, PCA and GMM of the first.
"""
from __future__ import annotations

import csv
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from test_gui import RUN_TIMEOUT, _run_all, _tiny_config, _wait_idle, _window  # noqa: E402

from fvstudio.engine.hubness import distortion_sweep  # noqa: E402
from fvstudio.pipeline.sweep_plan import plan_sweep, table1_bars, variant_bars  # noqa: E402

pytestmark = pytest.mark.gui

KNN = {"compression.bits_per_dim": 0.5, "compression.group": 8, "classifier.kind": "knn", "classifier.knn_k": 5}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rooms1-ws")


def _click_view(qtbot, fig, x: float, y: float, double: bool = False) -> None:
    """A mouse click on a pyqtgraph figure at view coordinates (x, y)."""
    vb = fig.getPlotItem().getViewBox()
    pos = fig.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    (qtbot.mouseDClick if double else qtbot.mouseClick)(fig.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_a_two_value_sweep_draws_both_points_live_and_replays_headless(qtbot, tmp_path, workspace):
    w = _window(qtbot, workspace, _tiny_config(), tmp_path)
    w.show_panel("pipeline")
    w.pipeline_panel.sweep_button.click()
    dialog = w.sweep_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.key.setCurrentText("classifier.lam")
    dialog.values.setText("1e-5, x")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()  # refused: the dialog says why, stays
    assert dialog.isVisible() and "classifier.lam" in dialog.error.text() and "'x'" in dialog.error.text()
    dialog.values.setText("1e-5, 1e-2")
    out = tmp_path / "sweep"
    dialog.out_edit.setText(str(out))
    live = []
    w.sweep_panel.variant_done.connect(lambda label, _s: live.append((label, len(w.sweep_panel.points()))))
    with qtbot.waitSignal(w.runner.succeeded, timeout=2 * RUN_TIMEOUT):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert w.current_panel() == "sweeps"
    assert live == [("classifier.lam=1e-05", 1), ("classifier.lam=0.01", 2)]  # the chart filled in as they ran
    result = w.sweep_panel.result
    metrics = [r.metrics["mean_per_class_accuracy"] for r in result.results]
    pts = sorted(w.sweep_panel.points())
    assert [x for x, _ in pts] == [0.0, 1.0] and [y for _, y in pts] == pytest.approx([100 * m for m in metrics])
    assert [w.sweep_panel.table.item(r, 1).text() for r in range(2)] == [f"{100 * m:.2f}" for m in metrics]
    for name in ("sweep.csv", "sweep.png", "config.toml"):
        assert (out / name).is_file()
    cmd = w.sweep_panel.command.text()
    assert "--set classifier.lam=1e-05,0.01" in cmd and f"--out {out}" in cmd
    # both variants are points of the accuracy-against-bytes figure (uncompressed FVs: 4 x 2 x (16 + 2) x 4
    # bytes, D = 16 PCA dims + the 2 position coordinates), the size of the FVs the runs stored
    bpts = [p for p in w.compression_panel.points if p.label.startswith("sweep ")]
    assert [(p.series, p.bytes_per_image) for p in bpts] == [("uncompressed", 576.0)] * 2
    assert 4 * w.pipeline.artifact("encode").fvs.shape[1] == 576
    _wait_idle(qtbot, w)
    w.close()
    # the command line shown replays the same sweep headless (every step cached by now)
    from fvstudio.cli import main

    replay = tmp_path / "replay"
    assert main(shlex.split(cmd.replace(f"--out {out}", f"--out {replay}"))[1:] + ["-q"]) == 0
    rows = list(csv.DictReader(open(replay / "sweep.csv")))
    assert [float(r["mean_per_class_accuracy"]) for r in rows] == pytest.approx(metrics, abs=1e-6)


def test_table1_preset_groups_its_bars_by_normalisation():
    plan = plan_sweep([], "table1")
    scores = {label: i / 10 for i, (label, _) in enumerate(plan.variants)}
    groups, series = table1_bars(plan, scores)
    assert groups == ["none", "PN", "L2", "PN+L2"]
    assert series["without SP (1x1)"] == [scores["none"], scores["PN"], scores["L2"], scores["PN+L2"]]
    assert series["with SP (1x1+3x1)"] == [scores["SP"], scores["PN+SP"], scores["L2+SP"], scores["PN+L2+SP"]]


def test_the_findings_preset_draws_one_bar_per_variant_with_its_own_title(qtbot, tmp_path):
    from fvstudio.gui.sweep_panel import SweepPanel

    panel = SweepPanel()
    qtbot.addWidget(panel)
    panel.resize(1100, 500)
    plan = plan_sweep([], "findings")
    panel.begin(plan, tmp_path / "out", tmp_path / "ws")
    assert "--preset findings" in panel.command.text()
    scores = {"FV": 0.74, "soft-BoV": 0.31, "no PCA": 0.70}
    for label, v in scores.items():
        panel.add_result(label, {"bytes_per_image": 4096.0, "seconds_total": 1.0},
                         {"primary_metric": "mean_per_class_accuracy", "metrics": {"mean_per_class_accuracy": v}})
    assert panel.stack.currentWidget() is panel.bars
    assert "soft-BoV" in panel.bars.question and "Table 1" not in panel.bars.question
    cats, series = variant_bars(plan, scores)
    assert cats == [label for label, _ in plan.variants] and series[""][:3] == [0.74, 0.31, 0.70]
    assert series[""][3] is None  # the empirical FIM has not finished
    bar = panel.bars._bars[0]
    heights = bar.opts["height"]
    assert np.allclose(heights[:3], [74.0, 31.0, 70.0]) and heights[3] == 0
    assert [panel.table.item(r, 1).text() for r in range(4)] == ["74.00", "31.00", "70.00", "…"]
    panel.grab().save(str(tmp_path / "findings.png"))
    assert (tmp_path / "findings.png").stat().st_size > 5_000


def test_a_confusion_cell_shows_its_test_images_with_top5_and_opens_one(qtbot, tmp_path, workspace):
    w = _window(qtbot, workspace, _tiny_config(), tmp_path)
    _run_all(qtbot, w)
    _wait_idle(qtbot, w)
    rp = w.results_panel
    rec = rp.record(rp.current_id())
    conf = rec.confusion
    off = np.argwhere((conf > 0) & ~np.eye(len(conf), dtype=bool))
    r, c = (off[0] if len(off) else np.argwhere(conf > 0)[0]).tolist()
    _click_view(qtbot, rp.confusion, c, r)
    assert rp.confusion.marked() == (r, c)
    strip = rp.test_images.strip
    assert strip.count() == conf[r, c]
    ds = w.pipeline.dataset
    labels = rec.arrays["labels"]
    for im in rp.test_images.images:
        assert im.true == rec.class_names[r] and im.predicted == rec.class_names[c]
        assert len(im.top) == 5 and im.top[0][0] == im.predicted
        assert [s for _n, s in im.top] == sorted((s for _n, s in im.top), reverse=True)
    first = strip.item(0)
    im0 = rp.test_images.images[0]
    assert f"{im0.top[0][1]:+.2f}" in first.text() and labels[im0.row] == r
    qtbot.waitUntil(strip.loaded, timeout=10_000)
    assert not first.icon().pixmap(80, 80).toImage().isNull()
    # a class: every test image of it, right or wrong
    rp.per_class.cellClicked.emit(r, 0)
    assert strip.count() == int(conf[r].sum())
    # double-click opens the image in the Dataset panel
    item = strip.item(0)
    pos = strip.visualItemRect(item).center()
    qtbot.mouseClick(strip.viewport(), Qt.MouseButton.LeftButton, pos=pos)  # a view takes a double click
    qtbot.mouseDClick(strip.viewport(), Qt.MouseButton.LeftButton, pos=pos)  # on the item it was pressed on
    assert w.current_panel() == "dataset"
    assert ds.ids[w.dataset_panel._view_index] == rp.test_images.images[0].id
    _wait_idle(qtbot, w)
    w.close()


def test_compressed_knn_run_neighbour_frequency_and_distortion_views(qtbot, tmp_path, workspace):
    w = _window(qtbot, workspace, _tiny_config(**KNN), tmp_path)
    cp = w.compression_panel
    w.show_panel("pipeline")
    with qtbot.waitSignals([w.run_recorded, cp.neighbour_task.succeeded], timeout=RUN_TIMEOUT):
        w.pipeline_panel.run_all_button.click()  # a k-NN run recomputes the neighbour view at its k
    _wait_idle(qtbot, w)
    res = w.pipeline.result()
    stored = res.hubness[0]["sift"]
    assert set(stored) == {"uncompressed", "pq", "pq_renormalised"}
    view = cp.view
    assert view.k == 5 and set(view.databases) == set(stored)
    for name, curve in cp.curves.items():
        x, y = curve.xData, curve.yData  # the data (getData() gives the log10 drawn)
        assert len(x) > 1  # three curves drawn
        want = np.asarray(stored[name]["sorted_k_occurrence"], float)
        assert y.tolist() == want[want > 0].tolist()
    rows = {row[0]: row[1:] for row in cp.summary_rows()}
    titles = {"uncompressed": "uncompressed FVs", "pq": "PQ codes", "pq_renormalised": "PQ + re-normalised"}
    for name, h in stored.items():
        assert rows[titles[name]] == [f"{h['largest']}", f"{h['skewness']:.2f}", f"{h['robin_hood']:.2f}",
                                      f"{100 * h['never_chosen']:.0f}%"]
        s = view.databases[name].summary
        assert (s["largest"], s["k"]) == (h["largest"], h["k"])
        assert s["skewness"] == pytest.approx(h["skewness"]) and s["robin_hood"] == pytest.approx(h["robin_hood"])
    # clicking the head of the PQ curve shows its hubs, most chosen first, with how often each was chosen
    pq = view.databases["pq"].sorted_k_occurrence
    _click_view(qtbot, cp.nfreq, 0.0, float(np.log10(pq[0])))
    assert cp.hub_database in ("pq", "pq_renormalised", "uncompressed")
    hubs = view.hubs(cp.hub_database, cp.hubs.count())
    assert cp.hubs.count() >= 8 and hubs[0].chosen == view.databases[cp.hub_database].summary["largest"]
    assert f"chosen {hubs[0].chosen}×" in cp.hubs.item(0).text()
    labels = np.asarray(w.pipeline.dataset.labels)
    d = view.databases[cp.hub_database]
    i = int(np.argmax(d.k_occurrence))
    q_labels = labels[view.test_indices]
    assert hubs[0].disagree == int(np.sum((d.neighbours == i) & (q_labels[:, None] != labels[view.train_indices[i]])))
    # the k control recomputes the lists
    cp.k_spin.setValue(3)
    with qtbot.waitSignal(cp.neighbour_task.succeeded, timeout=RUN_TIMEOUT):
        cp.k_button.click()
    assert cp.view.k == 3 and all(db.summary["k"] == 3 for db in cp.view.databases.values())
    # the distortion heat map: its cells are distortion_sweep's MSEs on the split's training / test FVs
    cp.bits_edit.setText("0.5, 1, 3")
    cp.groups_edit.setText("4, 8")
    with qtbot.waitSignal(cp.distortion_task.succeeded, timeout=RUN_TIMEOUT):
        cp.distortion_button.click()
    grid = cp.grid
    enc = w.pipeline.artifact("encode")
    sp = w.pipeline.context().splits[0]
    X_tr = np.asarray(enc.fvs[enc.rows_for(sp.train)], np.float32)
    X_te = np.asarray(enc.fvs[enc.rows_for(sp.test)], np.float32)
    settings = [(0.5, 4), (0.5, 8), (1.0, 4), (1.0, 8), (3.0, 4)]
    want = distortion_sweep(X_tr, X_te, settings, layout=enc.encoder.block_layout(),
                            n_iter=w.config.get("compression.n_iter"), seed=w.config.get("compression.seed"))
    shown = cp.distortion.image.image
    for p in want:
        r, c = grid.cell(p.bits_per_dim, p.group)
        assert shown[r, c] == pytest.approx(p.mse, rel=1e-9)
        assert grid.bytes_per_image[r, c] == p.bytes_per_vector
    assert np.isnan(shown[2, 1]) and set(grid.refused) == {(3.0, 8)}  # 24 bits a code: refused
    assert cp.distortion.marked() == grid.cell(0.5, 8)  # the config's setting is framed
    # the run is a PQ point and a PQ + sparsity bit point of the accuracy-against-bytes figure
    mine = [p for p in cp.points if p.label == w.runs[-1].label]
    assert {p.series for p in mine} == {"PQ", "PQ + sparsity bit"}
    assert {p.bytes_per_image for p in mine if p.series == "PQ"} == {res.compression["bytes_pq"]}
    _wait_idle(qtbot, w)
    w.close()
