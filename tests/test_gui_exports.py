"""Figure exports of the explorer (offscreen): SVGs drawn like the screen, empty figures skipped, and where the
export dialogs start.

The SVG test parses what ``QSvgGenerator`` writes (flat ``<g transform="matrix(...)">`` groups holding
``<path d>`` / ``<polyline points>``), maps every point to SVG pixels and checks that the plotted curve lies
inside the rectangle spanned by the two axis lines (each drawn in a colour of its own), as on screen.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QApplication  # noqa: E402

_APP = QApplication.instance() or QApplication(["fvstudio-tests"])

from fvstudio.gui.export import write_figure, write_figures  # noqa: E402
from fvstudio.gui.plots import Figure  # noqa: E402

pytestmark = pytest.mark.gui

CURVE, BOTTOM, LEFT = "#ff00ff", "#00c000", "#0000e0"
_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _matrix(text: str) -> np.ndarray:
    m = re.search(r"matrix\(([^)]*)\)", text or "")
    a, b, c, d, e, f = (float(v) for v in m.group(1).split(",")) if m else (1, 0, 0, 1, 0, 0)
    return np.array([[a, c, e], [b, d, f], [0, 0, 1]])


def _stroked_points(svg: Path) -> Dict[str, List[Tuple[float, float]]]:
    """{stroke colour: points of every opaque stroked path / polyline, in SVG pixels}."""
    out: Dict[str, List[Tuple[float, float]]] = {}

    def walk(el, m, stroke, opacity):
        tag = el.tag.split("}")[-1]
        m = m @ _matrix(el.get("transform", ""))
        stroke = el.get("stroke", stroke)
        opacity = float(el.get("stroke-opacity", opacity))
        coords = el.get("d") if tag == "path" else el.get("points") if tag == "polyline" else None
        if coords and stroke not in (None, "none") and opacity > 0.99:
            xy = np.array([float(v) for v in _NUM.findall(coords)]).reshape(-1, 2)
            pts = (m @ np.c_[xy, np.ones(len(xy))].T)[:2].T
            out.setdefault(stroke.lower(), []).extend(map(tuple, pts))
        for child in el:
            walk(child, m, stroke, opacity)

    walk(ET.parse(svg).getroot(), np.eye(3), None, 1.0)
    return out


def _figure(qtbot) -> Figure:
    fig = Figure("em", "Has EM converged?", "EM iteration", None, "mean log-likelihood", "nats")
    qtbot.addWidget(fig)
    curve = fig.curve(color=CURVE)
    fig.draw_per_iteration(curve, [-3.0, -2.0, -1.5, -1.2, -1.1], "no GMM yet")
    item = fig.getPlotItem()
    item.getAxis("bottom").setPen(BOTTOM)
    item.getAxis("left").setPen(LEFT)
    fig.resize(600, 400)
    fig.show()
    qtbot.waitExposed(fig)
    return fig


def test_svg_axes_frame_the_plotted_curve_as_on_screen(qtbot, tmp_path):
    fig = _figure(qtbot)
    strokes = _stroked_points(write_figure(fig, tmp_path / "em.svg"))
    curve = np.array(strokes[CURVE])
    bottom, left = np.array(strokes[BOTTOM]), np.array(strokes[LEFT])
    x0, x1 = bottom[:, 0].min(), bottom[:, 0].max()   # the bottom axis line spans the data area's width
    y0, y1 = left[:, 1].min(), left[:, 1].max()       # the left axis line its height
    tol = 3.0
    assert x0 - tol <= curve[:, 0].min() and curve[:, 0].max() <= x1 + tol, (curve[:, 0], x0, x1)
    assert y0 - tol <= curve[:, 1].min() and curve[:, 1].max() <= y1 + tol, (curve[:, 1], y0, y1)
    # ... and fills it as on screen (auto-range: the curve spans most of the axes), not a quarter less
    assert np.ptp(curve[:, 0]) > 0.8 * (x1 - x0) and np.ptp(curve[:, 1]) > 0.8 * (y1 - y0)
    # the SVG's area is the widget's, at the widget's resolution
    assert (x1 - x0) > 0.75 * fig.width()


def test_export_plots_skips_figures_without_data(qtbot, tmp_path):
    full = _figure(qtbot)
    empty = Figure("pr_curves", "PR curves", "recall", "%", "precision", "%")
    qtbot.addWidget(empty)
    assert full.has_data() and not empty.has_data()
    written, skipped = write_figures([full, empty], tmp_path)
    assert sorted(p.name for p in written) == ["em.png", "em.svg"]
    assert skipped == ["pr_curves"]
    assert not list(tmp_path.glob("pr_curves*"))


# ----------------------------------------------------------------------------------------- export dialogs
def test_export_dialogs_start_in_a_visible_folder(tmp_path):
    from fvstudio.gui.dialogs import start_folder

    data = tmp_path / "photos" / "scenes"
    data.mkdir(parents=True)
    home = tmp_path / "home"
    last = tmp_path / "figures"
    assert start_folder(None, str(data), home=home) == data.parent  # nothing exported yet: beside the dataset
    last.mkdir()
    assert start_folder(str(last), str(data), home=home) == last  # then where the user exported last
    assert start_folder(str(tmp_path / "gone"), str(data), home=home) == data.parent  # unless it is gone
    hidden = tmp_path / ".cache" / "fvstudio" / "workspaces" / "x"
    hidden.mkdir(parents=True)
    assert start_folder(str(hidden), str(hidden / "ds"), home=home) == home  # never in a hidden folder
    assert start_folder(None, None, home=home) == home


def test_export_actions_remember_the_last_export_folder(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from fvstudio.gui.export import ExportActions

    data = tmp_path / "datasets" / "scenes"
    data.mkdir(parents=True)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    said = []
    fig = _figure(qtbot)
    actions = ExportActions(None, config=lambda: None, dataset_root=lambda: str(data), figures=lambda: [fig],
                            tables=lambda: {}, report=said.append, settings=settings)
    assert actions.start_folder() == data.parent
    actions.export_plots(tmp_path / "out" / "plots")
    assert actions.start_folder() == (tmp_path / "out" / "plots").resolve()
    assert "2 plot files written" in said[-1]


def test_folder_dialog_creates_a_new_folder_name(qtbot, tmp_path):
    from PySide6.QtWidgets import QLineEdit

    from fvstudio.gui.dialogs import FolderDialog

    dialog = FolderDialog(None, "Export every plot to", tmp_path)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.findChild(QLineEdit, "fileNameEdit").setText("new exports/figures")
    dialog.accept()  # Qt's own Directory mode says "Directory not found" and stays open
    assert dialog.result() == FolderDialog.DialogCode.Accepted
    assert (tmp_path / "new exports" / "figures").is_dir()
    assert [Path(p) for p in dialog.selectedFiles()] == [tmp_path / "new exports" / "figures"]
    dialog.grab().save(str(tmp_path / "dialog.png"))


# ----------------------------------------------------------------------------------------- EM figure
def test_em_figure_says_how_em_stopped(qtbot, tmp_path):
    from fvstudio.gui.diagnostics_panel import DiagnosticsPanel
    from fvstudio.pipeline.diagnostics import Diagnostics

    panel = DiagnosticsPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 700)
    panel.show()
    ll = np.array([-9.0, -7.5, -7.1, -7.0])
    panel.set_diagnostics(Diagnostics(log_likelihood=ll, em_stop="stopped at the iteration cap 4 (tol 0.0001 "
                                                                  "not reached)"))
    title = panel.loglik.getPlotItem().titleLabel.text
    assert "Has EM converged?" in title and "stopped at the iteration cap 4" in title
    panel.grab().save(str(tmp_path / "diagnostics.png"))
    panel.show_log_likelihood([-9.0, -8.0])  # a live fit: not known yet how it stops
    assert "iteration cap" not in panel.loglik.getPlotItem().titleLabel.text
