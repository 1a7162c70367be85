"""Compression panel: what product quantisation costs and does to k-NN (paper Sec. 4-5), three figures.

Every number comes from :mod:`fvstudio.pipeline.compression_views`; the panel only draws:

- *How much does PQ distort the FVs?* A heat map of the test MSE (eq. 42) over the (b, G) settings typed
  in, each cell also giving the bytes per image its code costs; the config's own setting is framed.
  :func:`~fvstudio.pipeline.compression_views.distortion_grid` fits one PQ per setting on the split's
  cached training FVs, in the panel's ``distortion_task`` (progress in the status bar, Esc cancels).
- *What does a byte buy?* Accuracy against bytes per image (log axis), one point per run of the current
  dataset in the history and per sweep variant: uncompressed FVs, PQ codes, PQ codes + sparsity bit
  (:func:`~fvstudio.pipeline.compression_views.bytes_points`).
- *Do a few images become everybody's neighbour?* (Fig. 10) The sorted k-occurrence N_k of the training
  images among the test FVs' k nearest neighbours, log-log, for the uncompressed FVs, PQ and re-normalised
  PQ; the k box recomputes the lists (:func:`~fvstudio.pipeline.compression_views.neighbour_view`, in the
  ``neighbour_task``); the table beside gives largest N_k, skewness, Robin Hood index and the share never
  chosen. Clicking the head of a curve shows its hub images as thumbnails, with how often each was chosen
  and how often by a query of another class; double-click opens one in the Dataset panel.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                               QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from fvstudio.pipeline.compression_views import (DATABASES, DEFAULT_BITS, DEFAULT_GROUPS, SERIES, DistortionGrid,
                                                 NeighbourView, bytes_points, distortion_grid, neighbour_view)

from .plots import Figure, HeatMap, series_colors, set_log_ticks
from .thumbs import ThumbItem, ThumbStrip
from .workers import BackgroundTask

DB_TITLES = {"uncompressed": "uncompressed FVs", "pq": "PQ codes", "pq_renormalised": "PQ + re-normalised"}
#: Hub thumbnails shown at least / at most for a click on a curve.
HUBS_MIN, HUBS_MAX = 8, 40


def _distortion_job(make_pipeline: Callable, bits, groups, progress=None, cancel=None) -> DistortionGrid:
    return distortion_grid(make_pipeline(), bits, groups, progress=progress, cancel=cancel)


def _neighbour_job(make_pipeline: Callable, k: int, progress=None, cancel=None) -> NeighbourView:
    return neighbour_view(make_pipeline(), k, progress=progress, cancel=cancel)


def _parse_list(text: str, kind) -> List:
    out = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            out.append(kind(float(part)) if kind is int else kind(part))
    return out


class CompressionPanel(QWidget):
    open_image = Signal(int)  # a dataset index to show in the Dataset panel

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:compression")
        self.distortion_task = BackgroundTask(self)
        self.neighbour_task = BackgroundTask(self)
        self.distortion_task.succeeded.connect(lambda _l, grid: self.set_distortion(grid))
        self.neighbour_task.succeeded.connect(lambda _l, view: self.set_neighbours(view))
        self.distortion_task.failed.connect(lambda _l, msg, _tb: self.distortion_note.setText(f"Failed: {msg}"))
        self.neighbour_task.failed.connect(lambda _l, msg, _tb: self.neighbour_note.setText(f"Failed: {msg}"))
        self._factory: Optional[Callable] = None
        self.grid: Optional[DistortionGrid] = None
        self.view: Optional[NeighbourView] = None
        self.points = []
        self.hub_database: Optional[str] = None
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self._build_distortion())
        top.addWidget(self._build_bytes())
        bottom = self._build_neighbours()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setSizes([380, 480])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

    # ---------------------------------------------------------------- building
    def _build_distortion(self) -> QWidget:
        self.distortion = HeatMap("pq_distortion", "How much does PQ distort the FVs? Test MSE per (b, G)",
                                  "G, dimensions per sub-quantiser", "b, bits per dimension")
        self.distortion.clear_matrix("press Compute (needs the encode step cached)")
        self.bits_edit = QLineEdit(", ".join(f"{b:g}" for b in DEFAULT_BITS))
        self.bits_edit.setToolTip("Bits per dimension b to try (Sec. 4.1: b = 1 is x32 below float32)")
        self.groups_edit = QLineEdit(", ".join(str(g) for g in DEFAULT_GROUPS))
        self.groups_edit.setToolTip("Group sizes G to try: each sub-quantiser codes G dimensions with bG bits")
        self.distortion_button = QPushButton("Compute")
        self.distortion_button.setObjectName("compute_distortion")
        self.distortion_button.setToolTip("Fit one PQ per (b, G) on the split's training FVs, measure it on its "
                                          "test FVs (background job; Esc cancels)")
        self.distortion_button.clicked.connect(self.compute_distortion)
        row = QHBoxLayout()
        row.addWidget(QLabel("b:"))
        row.addWidget(self.bits_edit, 2)
        row.addWidget(QLabel("G:"))
        row.addWidget(self.groups_edit, 2)
        row.addWidget(self.distortion_button)
        self.distortion_note = QLabel("Each cell: test MSE (eq. 42) and the bytes per image of its code. "
                                      "The framed cell is the config's setting.")
        self.distortion_note.setWordWrap(True)
        self.distortion_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.distortion, 1)
        lay.addWidget(self.distortion_note)
        return box

    def _build_bytes(self) -> QWidget:
        self.bytes_fig = Figure("accuracy_vs_bytes", "What does a byte buy? Accuracy against bytes per image",
                                "bytes per image (log)", None, "accuracy", "%")
        self.bytes_fig.getPlotItem().setLogMode(x=True, y=False)
        colors = series_colors(3)
        symbols = {"uncompressed": "o", "PQ": "s", "PQ + sparsity bit": "t"}
        self.bytes_series: Dict[str, pg.ScatterPlotItem] = {}
        legend = self.bytes_fig.legend()
        for name, color in zip(SERIES, colors):
            sc = pg.ScatterPlotItem(size=11, symbol=symbols[name], brush=color, pen=pg.mkPen(None), hoverable=True,
                                    tip=lambda x, y, data: f"{data}: {y:.2f}% at {10 ** x:,.0f} bytes per image")
            self.bytes_fig.getPlotItem().addItem(sc)
            legend.addItem(sc, name)
            self.bytes_series[name] = sc
        self.bytes_fig.set_placeholder("no run of this dataset yet")
        return self.bytes_fig

    def _build_neighbours(self) -> QWidget:
        self.nfreq = Figure("neighbour_frequency", "Do a few images become everybody's neighbour? Sorted "
                            "k-occurrence (Fig. 10)", "training images ranked by N_k (log)", None,
                            "N_k, times among the test images' k nearest (log)", None)
        item = self.nfreq.getPlotItem()
        item.setLogMode(x=True, y=True)
        colors = series_colors(3)
        self.curves: Dict[str, pg.PlotDataItem] = {}
        legend = self.nfreq.legend()
        for name, color in zip(DATABASES, colors):
            c = self.nfreq.curve(color, width=2, symbol="o")
            c.setSymbolSize(4)
            self.curves[name] = c
            legend.addItem(c, DB_TITLES[name])
        item.scene().sigMouseClicked.connect(self._on_curve_click)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 1000)
        self.k_spin.setValue(10)
        self.k_spin.setPrefix("k = ")
        self.k_spin.setToolTip("Neighbours per test image (Fig. 10 uses the classifier's k)")
        self.k_button = QPushButton("Recompute")
        self.k_button.setObjectName("compute_neighbours")
        self.k_button.setToolTip("Search the test FVs' k nearest training items in each database (background job)")
        self.k_button.clicked.connect(lambda: self.compute_neighbours(self.k_spin.value()))
        self.summary = QTableWidget(0, 5)
        self.summary.setObjectName("hubness_table")
        self.summary.setHorizontalHeaderLabels(["database", "largest N_k", "skewness", "Robin Hood", "never chosen"])
        self.summary.verticalHeader().setVisible(False)
        self.summary.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.summary.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.summary.setMaximumHeight(130)
        self.neighbour_note = QLabel("Neighbour lists appear after a k-NN run, or press Recompute.")
        self.neighbour_note.setWordWrap(True)
        self.hubs_label = QLabel("Click the head of a curve to see its hub images.")
        self.hubs_label.setWordWrap(True)
        self.hubs = ThumbStrip(72, 3)
        self.hubs.setObjectName("hub_thumbnails")
        self.hubs.open_image.connect(self.open_image)
        krow = QHBoxLayout()
        krow.addWidget(self.k_spin)
        krow.addWidget(self.k_button)
        krow.addStretch(1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addLayout(krow)
        rl.addWidget(self.summary)
        rl.addWidget(self.neighbour_note)
        rl.addWidget(self.hubs_label)
        rl.addWidget(self.hubs, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.nfreq)
        split.addWidget(right)
        split.setSizes([640, 560])
        return split

    def figures(self) -> List[Figure]:
        return [self.distortion, self.bytes_fig, self.nfreq]

    def tables(self) -> Dict[str, QTableWidget]:
        return {"hubness": self.summary}

    def tasks(self) -> List[BackgroundTask]:
        return [self.distortion_task, self.neighbour_task]

    # ---------------------------------------------------------------- jobs
    def set_pipeline_source(self, source: Optional[Callable[[], Callable]]) -> None:
        """``source()`` (on the GUI thread, when a job starts) gives the callable that builds, in the worker
        thread, a Pipeline of the current config; None: no dataset is open."""
        self._factory = source

    def compute_distortion(self) -> bool:
        if self._factory is None:
            self.distortion_note.setText("No dataset is open.")
            return False
        try:
            bits = _parse_list(self.bits_edit.text(), float)
            groups = _parse_list(self.groups_edit.text(), int)
        except ValueError:
            self.distortion_note.setText("b and G must be comma-separated numbers, e.g. 0.5, 1, 2 and 4, 8")
            return False
        if not bits or not groups:
            self.distortion_note.setText("Give at least one b and one G.")
            return False
        self.distortion_note.setText(f"Fitting {len(bits) * len(groups)} quantisers…")
        self.distortion_task.start("PQ distortion", _distortion_job, self._factory(), bits, groups)
        return True

    def compute_neighbours(self, k: Optional[int] = None) -> bool:
        if self._factory is None:
            self.neighbour_note.setText("No dataset is open.")
            return False
        k = int(k or self.k_spin.value())
        self.k_spin.setValue(k)
        self.neighbour_note.setText(f"Searching the {k} nearest neighbours…")
        self.neighbour_task.start(f"neighbours (k = {k})", _neighbour_job, self._factory(), k)
        return True

    def cancel(self) -> None:
        for t in self.tasks():
            t.cancel()

    def is_busy(self) -> bool:
        return any(t.is_busy() for t in self.tasks())

    def wait(self, timeout: float = 10.0) -> None:
        for t in self.tasks():
            t.wait(timeout)

    # ---------------------------------------------------------------- distortion
    def set_distortion(self, grid: DistortionGrid) -> None:
        self.grid = grid
        texts = []
        for r, b in enumerate(grid.bits):
            row = []
            for c, g in enumerate(grid.groups):
                if (b, g) in grid.refused:
                    row.append("refused")
                else:
                    row.append(f"{grid.mse[r, c]:.3g}\n{grid.bytes_per_image[r, c]:.0f} B")
            texts.append(row)
        self.distortion.set_matrix(grid.mse, [f"b = {b:g}" for b in grid.bits], texts=texts,
                                   col_names=[f"G = {g}" for g in grid.groups])
        chosen = ""
        if grid.chosen is not None and grid.chosen[0] in grid.bits and grid.chosen[1] in grid.groups:
            self.distortion.mark(grid.cell(*grid.chosen))
            chosen = f" Framed: the config's b = {grid.chosen[0]:g}, G = {grid.chosen[1]}."
        elif grid.chosen is None:
            chosen = " Compression is off in the config (no cell framed)."
        refused = " Refused: " + "; ".join(f"b = {b:g}, G = {g}: {why}" for (b, g), why in grid.refused.items()) \
            if grid.refused else ""
        self.distortion_note.setText(
            f"PQ fitted on {grid.n_train} training FVs, MSE on {grid.n_test} test FVs ({grid.channel}, split "
            f"{grid.split + 1}); float32 FV = {grid.float32_bytes:,} B.{chosen}{refused}")

    # ---------------------------------------------------------------- accuracy vs bytes
    def set_runs(self, runs: Sequence[Tuple[str, Dict[str, Any], Dict[str, Any]]], dataset_root: Optional[str]) -> None:
        """(label, summary, config) of the runs and sweep variants to place (only ``dataset_root``'s)."""
        self.points = bytes_points(runs, dataset_root)
        item = self.bytes_fig.getPlotItem()
        for name, sc in self.bytes_series.items():
            pts = [p for p in self.points if p.series == name]
            sc.setData([np.log10(p.bytes_per_image) for p in pts], [100 * p.score for p in pts],
                       data=[p.label for p in pts])
        if self.points:
            b = [p.bytes_per_image for p in self.points]
            lo, hi = min(b) / 1.6, max(b) * 1.6
            set_log_ticks(item.getAxis("bottom"), lo, hi)
            item.setXRange(np.log10(lo), np.log10(hi), padding=0)
            y = [100 * p.score for p in self.points]
            pad = max(2.0, 0.15 * (max(y) - min(y)))
            item.setYRange(max(0.0, min(y) - pad), min(100.0, max(y) + pad), padding=0)
        self.bytes_fig.set_placeholder("" if self.points else "no run of this dataset yet")

    # ---------------------------------------------------------------- neighbour frequency
    def set_neighbours(self, view: NeighbourView) -> None:
        self.view = view
        self.k_spin.setValue(view.k)
        for name, curve in self.curves.items():
            d = view.databases.get(name)
            if d is None:
                curve.setData([], [])
                continue
            y = d.sorted_k_occurrence
            y = y[y > 0]
            curve.setData(np.arange(1, len(y) + 1), y.astype(float))
        item = self.nfreq.getPlotItem()
        n_max = max(int(np.count_nonzero(d.k_occurrence)) for d in view.databases.values())
        top = max(int(d.summary["largest"]) for d in view.databases.values())
        set_log_ticks(item.getAxis("bottom"), 1, max(2, n_max))
        set_log_ticks(item.getAxis("left"), 1, max(2, top))
        item.setXRange(-0.05, np.log10(max(2, n_max)) + 0.05, padding=0)
        item.setYRange(-0.05, np.log10(max(2, top)) + 0.1, padding=0)
        self.nfreq.set_placeholder("")
        self.nfreq.set_note(f"k = {view.k}, {len(view.test_indices)} test queries, {len(view.train_indices)} "
                            f"training images")
        rows = self.summary_rows()
        self.summary.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                it = QTableWidgetItem(text)
                if c:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.summary.setItem(r, c, it)
        mean = next(iter(view.databases.values())).summary["mean"]
        self.neighbour_note.setText(f"Mean N_k = {mean:.2f} (= queries x k / training images). "
                                    + " ".join(view.notes))
        self.show_hubs(next(iter(view.databases)), HUBS_MIN)

    def summary_rows(self) -> List[List[str]]:
        """The table's text: database, largest N_k, skewness, Robin Hood index, share never chosen."""
        if self.view is None:
            return []
        out = []
        for name, d in self.view.databases.items():
            s = d.summary
            out.append([DB_TITLES[name], f"{s['largest']}", f"{s['skewness']:.2f}", f"{s['robin_hood']:.2f}",
                        f"{100 * s['never_chosen']:.0f}%"])
        return out

    def curve_at(self, x_log: float, y_log: float) -> Optional[Tuple[str, int]]:
        """(database, rank) of the curve nearest to a click at log10 coordinates (x_log, y_log)."""
        if self.view is None:
            return None
        rank = max(1, int(round(10 ** x_log)))
        best = None
        for name, d in self.view.databases.items():
            y = d.sorted_k_occurrence
            if rank > len(y) or y[rank - 1] <= 0:
                continue
            dist = abs(np.log10(y[rank - 1]) - y_log)
            if best is None or dist < best[0]:
                best = (dist, name)
        return (best[1], rank) if best is not None else None

    def _on_curve_click(self, event) -> None:
        vb = self.nfreq.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        p = vb.mapSceneToView(event.scenePos())
        hit = self.curve_at(p.x(), p.y())
        if hit is not None:
            self.show_hubs(hit[0], hit[1])

    def show_hubs(self, database: str, rank: int) -> None:
        """The hub images of ``database`` down to ``rank`` (at least HUBS_MIN, at most HUBS_MAX)."""
        if self.view is None or database not in self.view.databases:
            return
        self.hub_database = database
        hubs = self.view.hubs(database, min(HUBS_MAX, max(HUBS_MIN, rank)))
        self.hubs.set_items([ThumbItem(h.dataset_index, h.path,
                                       f"#{h.rank} {h.label}\nchosen {h.chosen}×\n{h.disagree}× other class",
                                       f"{h.id} ({h.label})\nrank {h.rank}: among the {self.view.k} nearest of "
                                       f"{h.chosen} test images, {h.disagree} of them of another class\n"
                                       f"double-click: open in the Dataset panel")
                             for h in hubs])
        self.hubs_label.setText(f"<b>Hubs of the {DB_TITLES[database]}</b>: the {len(hubs)} most chosen training "
                                f"images, how often each is among a test image's {self.view.k} nearest, and how "
                                f"often that test image has another class.")
