"""Exports of the explorer: the config as TOML, figures as PNG / SVG, tables as CSV.

- :func:`write_config`: the current config as a TOML file that ``fvstudio run`` replays to the same numbers;
- :func:`write_figure` / :func:`write_figures`: a figure (``plots.Figure``) as a vector SVG (its own QPainter
  calls recorded by ``QSvgGenerator`` at the widget's logical DPI) or a PNG raster (pyqtgraph's
  ``ImageExporter``, at least 800 px wide); figures without data are skipped and named;
- :func:`table_to_csv` / :func:`write_tables`: a table's header and cells as CSV;
- :func:`show_table_menu`: a table's context menu (copy as CSV, export CSV);
- :class:`ExportActions`: the File menu's export actions of a window (dialogs, then the writers above). Its
  dialogs open in :func:`fvstudio.gui.dialogs.start_folder` (the last export folder, else the dataset's
  parent, else home; never the hidden workspace) and the folder ones accept a new folder name.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401 - registers ImageExporter
from PySide6.QtWidgets import QFileDialog, QTableWidget

from .dialogs import choose_folder, start_folder

__all__ = ["write_config", "write_figure", "write_figures", "table_to_csv", "write_tables", "show_table_menu",
           "ExportActions"]


def write_config(config, path) -> Path:
    """``config`` as TOML at ``path`` (the suffix becomes ``.toml``); returns the path written."""
    path = Path(path)
    if path.suffix != ".toml":
        path = path.with_suffix(".toml")
    config.to_toml(path)
    return path


def _write_svg(fig, path: Path) -> Path:
    # QSvgGenerator records the figure's own QPainter calls as vector SVG (pyqtgraph's SVGExporter
    # fails on some paths, e.g. bar outlines and text items).
    from PySide6.QtCore import QRect, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    # The generator must have the widget's resolution: pyqtgraph's axes replay a QPicture recorded on screen
    # (96 dpi), which QPicture rescales to the device's DPI (QSvgGenerator's default: 72 dpi), so axes,
    # ticks and labels came out at 72/96 = 75 % of the data area while the curves kept their size.
    size = fig.size() if fig.width() > 10 else QSize(800, 500)
    if fig.width() <= 10:
        fig.resize(size)
    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setResolution(round(fig.logicalDpiX()))
    gen.setSize(size)
    gen.setViewBox(QRect(0, 0, size.width(), size.height()))
    gen.setTitle(fig.question)
    gen.setDescription(f"fvstudio figure {fig.name}")
    painter = QPainter(gen)
    try:
        fig.render(painter)
    finally:
        painter.end()
    return path


def write_figure(fig, path) -> Path:
    """Write ``fig`` to ``path``: ``.svg`` as vector graphics, anything else as a PNG raster."""
    path = Path(path)
    if path.suffix.lower() == ".svg":
        return _write_svg(fig, path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    exporter = pg.exporters.ImageExporter(fig.getPlotItem())
    exporter.parameters()["width"] = max(800, fig.width() * 2)
    exporter.export(str(path))
    return path


def write_figures(figures: Iterable, folder) -> Tuple[List[Path], List[str]]:
    """Every figure with data as ``<name>.png`` and ``<name>.svg`` in ``folder`` (a repeated name gets
    ``_live``); returns (paths written, names of the figures skipped because they have no data yet)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: List[Path] = []
    skipped: List[str] = []
    seen = set()
    for fig in figures:
        name = fig.name if fig.name not in seen else f"{fig.name}_live"
        seen.add(name)
        if not fig.has_data():
            skipped.append(name)
            continue
        for ext in (".png", ".svg"):
            out.append(write_figure(fig, folder / f"{name}{ext}"))
    return out, skipped


def table_to_csv(table: QTableWidget) -> str:
    """The table's header and cells as CSV text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([table.horizontalHeaderItem(c).text() if table.horizontalHeaderItem(c) else ""
                for c in range(table.columnCount())])
    for r in range(table.rowCount()):
        w.writerow([table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())])
    return buf.getvalue()


def write_tables(tables: Dict[str, QTableWidget], folder) -> List[Path]:
    """Every table as ``<name>.csv`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, table in tables.items():
        path = folder / f"{name}.csv"
        path.write_text(table_to_csv(table), encoding="utf-8")
        out.append(path)
    return out


def show_table_menu(parent, name: str, table: QTableWidget, pos, folder: Callable[[], Path],
                    report: Callable[[str], None]) -> None:
    """The context menu of a table at ``pos``: copy it as CSV, or save it as a CSV file in a dialog opening in
    ``folder()``; ``report(text, folder)`` tells what was written."""
    from PySide6.QtWidgets import QApplication, QMenu

    def save() -> None:
        path, _ = QFileDialog.getSaveFileName(parent, f"Export the {name} table", str(folder() / f"{name}.csv"),
                                              "CSV (*.csv)")
        if path:
            Path(path).write_text(table_to_csv(table), encoding="utf-8")
            report(f"{name} table written to {path}", Path(path).parent)

    menu = QMenu(table)
    menu.addAction("Copy as CSV", lambda: QApplication.clipboard().setText(table_to_csv(table)))
    menu.addAction("Export CSV…", save)
    menu.popup(table.viewport().mapToGlobal(pos))


class ExportActions:
    """The File menu's exports and the tables' context menus of a window.

    ``config``, ``figures`` and ``tables`` are callables returning the current ones (the window's) and
    ``dataset_root`` the current dataset folder; ``report(text)`` shows what was written (the window's status
    text). ``settings`` (a ``QSettings``, or None) remembers the last export folder (key
    ``last_export_folder``), where the next dialog opens.
    """

    SETTINGS_KEY = "last_export_folder"

    def __init__(self, parent, *, config: Callable, dataset_root: Callable, figures: Callable, tables: Callable,
                 report: Callable[[str], None], settings=None) -> None:
        self.parent = parent
        self._config, self._dataset_root, self._figures, self._tables = config, dataset_root, figures, tables
        self._report = report
        self.settings = settings

    def start_folder(self) -> Path:
        """Where the export dialogs open (see :func:`fvstudio.gui.dialogs.start_folder`)."""
        last = self.settings.value(self.SETTINGS_KEY) if self.settings is not None else None
        return start_folder(last, self._dataset_root())

    def _done(self, text: str, folder) -> None:
        if self.settings is not None:
            self.settings.setValue(self.SETTINGS_KEY, str(Path(folder).resolve()))
        self._report(text)

    def export_config(self, path) -> Path:
        path = write_config(self._config(), path)
        self._done(f"Config written to {path} (replay: fvstudio run {path.name} --out DIR)", path.parent)
        return path

    def export_plots(self, folder) -> List[Path]:
        paths, skipped = write_figures(self._figures(), folder)
        note = f"; skipped (no data yet): {', '.join(skipped)}" if skipped else ""
        self._done(f"{len(paths)} plot files written to {folder}{note}", folder)
        return paths

    def export_tables(self, folder) -> List[Path]:
        paths = write_tables(self._tables(), folder)
        self._done(f"{len(paths)} tables written to {folder}", folder)
        return paths

    def choose_export_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Export config", str(self.start_folder() / "config.toml"),
                                              "TOML (*.toml)")
        if path:
            self.export_config(path)

    def choose_export_plots(self) -> None:
        folder = choose_folder(self.parent, "Export every plot (PNG + SVG) to", self.start_folder())
        if folder:
            self.export_plots(folder)

    def choose_export_tables(self) -> None:
        folder = choose_folder(self.parent, "Export every table (CSV) to", self.start_folder())
        if folder:
            self.export_tables(folder)

    def add_table_menus(self) -> None:
        """Give every table a context menu (copy as CSV, export CSV)."""
        from PySide6.QtCore import Qt

        for name, table in self._tables().items():
            table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            table.customContextMenuRequested.connect(
                lambda pos, n=name, t=table: show_table_menu(self.parent, n, t, pos, self.start_folder, self._done))
