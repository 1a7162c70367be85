"""Results panel: metrics of a run (overall and per class), per-class bars, confusion matrix or PR curves,
and the run history so two runs can be compared side by side.

Every number comes from a :class:`~fvstudio.gui.session.RunRecord` (a pipeline ``RunResult`` as
saved in the session): the overall metrics (``mean_per_class_accuracy``, ``accuracy``, ``top5_accuracy``
for single-label data, ``map`` for multi-label data), the per-class values (top-1 accuracy or AP), the
confusion matrix (rows = true class, summed over splits) and, for multi-label data, the PR curve of each
class from the test scores and targets through :func:`fvstudio.engine.metrics.precision_recall`.
Run B ("compare with") adds a second column / bar series and the config keys in which the runs differ;
only runs of the same dataset, classes and metric kind can be run B (the others are greyed out in its list,
their tooltip says why: :func:`~fvstudio.gui.session.comparison_refusal`). The bars' legend names the
runs drawn.
Clicking a confusion-matrix cell, or a class in the per-class table, lists the test images it holds as
thumbnails with their top-5 predictions (:class:`~fvstudio.gui.test_images_view.TestImagesView`);
double-clicking one emits ``open_image`` (the window shows it in the Dataset panel).
Tables export as CSV, figures as PNG/SVG (see the main window's Export menu).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QHeaderView, QLabel, QSplitter,
                               QStackedWidget, QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout,
                               QWidget)

from fvstudio.pipeline.results import storage_rows
from .plots import Bars, Figure, HeatMap, series_colors
from .session import RunRecord, comparison_refusal
from .test_images_view import TestImagesView

_METRIC_NAMES = {
    "mean_per_class_accuracy": "Mean per-class accuracy (%)",
    "accuracy": "Overall accuracy (%)",
    "top5_accuracy": "Top-5 accuracy (%)",
    "map": "mAP (%)",
}


def _is_fraction_metric(name: str) -> bool:
    return any(s in name for s in ("accuracy", "map", "ap", "precision", "recall"))


def _fmt(value: Optional[float], percent: bool) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


def config_diff(a: Dict, b: Dict) -> List[str]:
    """Dotted keys whose values differ between two nested config dicts, as 'key: a → b'."""
    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out
    fa, fb = flat(a), flat(b)
    return [f"{k}: {fa.get(k)} → {fb.get(k)}" for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and not k.startswith(("runtime.", "compute."))]


class ResultsPanel(QWidget):
    selection_changed = Signal()
    history_changed = Signal()
    open_image = Signal(int)  # a dataset index to show in the Dataset panel

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:results")
        self.runs: List[RunRecord] = []
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_tables())
        split.addWidget(self._build_figures())
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([430, 700])
        self.empty = QLabel("No results yet: press <b>Run all</b> (F5) in the Pipeline panel.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_run_choice())
        layout.addWidget(self.diff_label)
        layout.addWidget(split, 1)
        layout.addWidget(self.empty)
        self._refresh()  # the empty state, drawn like any other

    def _build_run_choice(self) -> QHBoxLayout:
        """Run A, Remove, run B ("compare with"), and the label listing their config differences."""
        self.run_a = QComboBox()
        self.run_a.setObjectName("run_a")
        self.run_a.setToolTip("The run whose results are shown")
        self.run_b = QComboBox()
        self.run_b.setObjectName("run_b")
        self.run_b.setToolTip("A second run to compare with (extra column, bars and config differences)")
        self.run_a.currentIndexChanged.connect(self._refresh)
        self.run_b.currentIndexChanged.connect(self._refresh)
        self.remove_button = QToolButton()
        self.remove_button.setText("Remove")
        self.remove_button.setObjectName("remove_run")
        self.remove_button.setToolTip("Remove run A from the history (its files go on the next session save)")
        self.remove_button.clicked.connect(self.remove_current)
        top = QHBoxLayout()
        top.addWidget(QLabel("Run:"))
        top.addWidget(self.run_a, 2)
        top.addWidget(self.remove_button)
        top.addWidget(QLabel("compare with:"))
        top.addWidget(self.run_b, 2)
        self.diff_label = QLabel("")
        self.diff_label.setWordWrap(True)
        self.diff_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return top

    def _build_tables(self) -> QWidget:
        self.metrics = QTableWidget(0, 2)
        self.metrics.setObjectName("metrics_table")
        self.per_class = QTableWidget(0, 2)
        self.per_class.setObjectName("per_class_table")
        for t in (self.metrics, self.per_class):
            t.verticalHeader().setVisible(False)
            t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
            t.setAlternatingRowColors(True)
            t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
            t.horizontalHeader().setMinimumSectionSize(64)
            t.setSortingEnabled(False)
        tables = QWidget()
        tl = QVBoxLayout(tables)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(QLabel("<b>Overall</b>"))
        tl.addWidget(self.metrics, 2)
        tl.addWidget(QLabel("<b>Per class</b>"))
        tl.addWidget(self.per_class, 3)
        return tables

    def _build_figures(self) -> QWidget:
        self.bars = Bars("per_class", "Which classes are recognised well? Per-class score on the test set",
                         "class", "score", "%")
        self.confusion = HeatMap("confusion", "Which classes are confused? Test images per (true, predicted)",
                                 "predicted class", "true class")
        self.pr = Figure("pr_curves", "How do precision and recall trade off? PR curve per class",
                         "recall", "%", "precision", "%")
        self.pr.getPlotItem().setRange(xRange=(0, 100), yRange=(0, 100))
        self._pr_curves: List = []
        self.stack = QStackedWidget()
        self.stack.addWidget(self.confusion)
        self.stack.addWidget(self.pr)
        self.test_images = TestImagesView()
        self.test_images.open_image.connect(self.open_image)
        self.confusion.cell_clicked.connect(lambda r, c: self.show_test_images(r, c))
        self.per_class.cellClicked.connect(lambda r, _c: self.show_test_images(r, None))
        for fig in (self.bars, self.confusion, self.pr):
            fig.setMinimumHeight(130)  # three rows must fit a small window
        figs = QSplitter(Qt.Orientation.Vertical)
        figs.addWidget(self.bars)
        figs.addWidget(self.stack)
        figs.addWidget(self.test_images)
        figs.setSizes([260, 340, 220])
        return figs

    def show_test_images(self, true: Optional[int], predicted: Optional[int]) -> bool:
        """Thumbnails of run A's test images of class ``true`` predicted as ``predicted`` (None: any)."""
        a = self.record(self.current_id())
        if a is None or a.multilabel:
            return False
        self.confusion.mark((true, predicted) if true is not None and predicted is not None else None)
        return self.test_images.show_selection(a, true, predicted)

    def set_image_resolver(self, resolve) -> None:
        """``resolve(image id) -> (dataset index, path)`` or None, for the test-image thumbnails."""
        self.test_images.resolve = resolve

    # ---------------------------------------------------------------- history
    def set_runs(self, runs: Sequence[RunRecord], current: Optional[str] = None,
                 compare: Optional[str] = None) -> None:
        self.runs = list(runs)
        for combo, sel, none in ((self.run_a, current, False), (self.run_b, compare, True)):
            combo.blockSignals(True)
            combo.clear()
            if none:
                combo.addItem("(none)", None)
            for r in reversed(self.runs):
                combo.addItem(self._run_title(r), r.id)
            i = combo.findData(sel) if sel is not None else (0 if not none else 0)
            combo.setCurrentIndex(max(0, i))
            combo.blockSignals(False)
        self._refresh()

    def remove_current(self) -> None:
        rid = self.current_id()
        if rid is None:
            return
        keep = [r for r in self.runs if r.id != rid]
        compare = self.compare_id()
        self.set_runs(keep, current=keep[-1].id if keep else None,
                      compare=compare if compare != rid else None)
        self.history_changed.emit()

    def add_run(self, record: RunRecord) -> None:
        prev = self.record(self.compare_id()) or self.record(self.current_id())
        if prev is not None and (prev.id == record.id or comparison_refusal(record, prev)):
            prev = None  # the new run is compared with the previous one only if they are alike
        self.set_runs(self.runs + [record], current=record.id, compare=prev.id if prev is not None else None)

    @staticmethod
    def _run_title(r: RunRecord) -> str:
        m = r.metrics
        head = m.get("mean_per_class_accuracy", m.get("map"))
        score = f" — {100 * head:.1f}%" if head is not None else ""
        return f"{r.label}{score}"

    def current_id(self) -> Optional[str]:
        return self.run_a.currentData()

    def compare_id(self) -> Optional[str]:
        return self.run_b.currentData()

    def record(self, rid: Optional[str]) -> Optional[RunRecord]:
        for r in self.runs:
            if r.id == rid:
                return r
        return None

    # ---------------------------------------------------------------- drawing
    def _mark_comparable(self, a: Optional[RunRecord]) -> str:
        """Grey out the runs B cannot be (another dataset or metric than run A, or A itself), with the
        reason as tooltip; if the chosen B is one of them, fall back to "(none)" and return the reason."""
        model = self.run_b.model()
        refused = ""
        for i in range(self.run_b.count()):
            r = self.record(self.run_b.itemData(i))
            why = ""
            if r is not None and a is not None:
                why = "it is run A" if r.id == a.id else comparison_refusal(a, r)
            item = model.item(i)
            item.setEnabled(not why)
            item.setToolTip(f"Not comparable with run A: {why}" if why else "")
            if why and i == self.run_b.currentIndex():
                if r.id != a.id:
                    refused = f"Run {r.label} is not compared with run A: {why}."
                self.run_b.blockSignals(True)
                self.run_b.setCurrentIndex(0)
                self.run_b.blockSignals(False)
        return refused

    def _refresh(self, *_) -> None:
        a = self.record(self.current_id())
        refused = self._mark_comparable(a)
        b = self.record(self.compare_id())
        self.empty.setVisible(a is None)
        self.remove_button.setEnabled(a is not None)
        self._fill_metrics(a, b)
        self._fill_per_class(a, b)
        self.test_images.clear()
        if a is not None and b is not None:
            diff = config_diff(a.config, b.config)
            self.diff_label.setText("<b>Config differences (A → B):</b> " + ("; ".join(diff) if diff else
                                                                             "none (same config)"))
        else:
            self.diff_label.setText(refused)
        self._draw(a, b)
        self.selection_changed.emit()

    def _fill_metrics(self, a: Optional[RunRecord], b: Optional[RunRecord]) -> None:
        cols = ["Metric", "A"] + (["B", "B − A"] if b else [])
        t = self.metrics
        t.clear()
        t.setColumnCount(len(cols))
        t.setHorizontalHeaderLabels(cols)
        if a is None:
            t.setRowCount(0)
            return
        names = list(a.metrics) + [k for k in (b.metrics if b else {}) if k not in a.metrics]
        std = a.metrics_std
        rows = []
        for n in names:
            pct = _is_fraction_metric(n)
            va, vb = a.metrics.get(n), (b.metrics.get(n) if b else None)
            label = _METRIC_NAMES.get(n, n.replace("_", " ") + (" (%)" if pct else ""))
            ta = _fmt(va, pct)
            if std.get(n):
                ta += f" ± {_fmt(std[n], pct)}"
            row = [label, ta]
            if b:
                d = None if va is None or vb is None else vb - va
                row += [_fmt(vb, pct), ("+" if d is not None and d > 0 else "") + _fmt(d, pct)]
            rows.append(row)
        times_a, times_b = a.timings, (b.timings if b else {})

        def t_text(r: RunRecord, times, step) -> str:
            if step in r.cached_steps:
                return "cached"
            return "—" if times.get(step) is None else f"{times[step]:.2f}"

        for s in list(times_a) + [k for k in times_b if k not in times_a]:
            row = [f"time: {s} (s)", t_text(a, times_a, s)]
            if b:
                row += [t_text(b, times_b, s), ""]
            rows.append(row)
        store_a = dict(storage_rows(a.summary))
        store_b = dict(storage_rows(b.summary)) if b else {}
        for label in list(store_a) + [k for k in store_b if k not in store_a]:
            row = [label, store_a.get(label, "—")]
            if b:
                row += [store_b.get(label, "—"), ""]
            rows.append(row)
        self._set_rows(t, rows)

    def _fill_per_class(self, a: Optional[RunRecord], b: Optional[RunRecord]) -> None:
        t = self.per_class
        t.clear()
        if a is None:
            t.setRowCount(0)
            t.setColumnCount(2)
            t.setHorizontalHeaderLabels(["Class", "A"])
            return
        metric, va = self._per_class_values(a)
        _, vb = self._per_class_values(b) if b else (None, None)
        cols = ["Class", f"{metric} A (%)"] + ([f"{metric} B (%)", "B − A"] if b is not None else [])
        t.setColumnCount(len(cols))
        t.setHorizontalHeaderLabels(cols)
        rows = []
        for i, name in enumerate(a.class_names):
            x = va[i] if va is not None and i < len(va) else None
            row = [name, _fmt(x, True)]
            if b is not None:
                y = vb[i] if vb is not None and i < len(vb) else None
                d = None if x is None or y is None else y - x
                row += [_fmt(y, True), ("+" if d is not None and d > 0 else "") + _fmt(d, True)]
            rows.append(row)
        self._set_rows(t, rows)

    @staticmethod
    def _per_class_values(r: Optional[RunRecord]):
        """(label of the per-class metric, its values) of run ``r``."""
        if r is None:
            return "", None
        if not r.per_class:
            return "score", None
        name, values = next(iter(r.per_class.items()))
        return {"ap": "AP"}.get(name, name), values

    @staticmethod
    def _set_rows(t: QTableWidget, rows: List[List[str]]) -> None:
        t.setRowCount(len(rows))
        t.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                t.setItem(r, c, item)

    def _draw(self, a: Optional[RunRecord], b: Optional[RunRecord]) -> None:
        if a is None:
            self.bars.set_series([], [])
            self.bars.set_placeholder("no results yet")
            self.stack.setCurrentWidget(self.confusion)
            self.confusion.clear_matrix("no results yet")
            return
        metric, va = self._per_class_values(a)
        series = [100 * np.asarray(va)] if va is not None else []
        labels = [f"A: {a.label}"]
        if b is not None:
            _, vb = self._per_class_values(b)
            if vb is not None and len(vb) == len(a.class_names):
                series.append(100 * np.asarray(vb))
                labels.append(f"B: {b.label}")
        self.bars.set_series(a.class_names, series, labels)
        self.bars.getPlotItem().setLabel("left", f"per-class {metric}", units="%")
        self.bars.getPlotItem().setYRange(0, 100, padding=0.02)
        if a.multilabel or a.confusion is None:
            self.stack.setCurrentWidget(self.pr)
            self._draw_pr(a)
        else:
            self.stack.setCurrentWidget(self.confusion)
            self.confusion.set_matrix(a.confusion, a.class_names)

    def _draw_pr(self, r: RunRecord) -> None:
        from fvstudio.engine.metrics import precision_recall

        scores, targets = r.scores, r.targets
        item = self.pr.getPlotItem()
        if scores is None or targets is None:
            for c in self._pr_curves:
                c.setData([], [])
            self.pr.set_placeholder("this run has no test scores")
            return
        n = scores.shape[1]
        colors = series_colors(n)
        legend = self.pr.legend()
        while len(self._pr_curves) < n:
            self._pr_curves.append(self.pr.curve(colors[len(self._pr_curves)], width=1.5))
        legend.clear()
        for c, curve in enumerate(self._pr_curves):
            if c >= n:
                curve.setData([], [])
                continue
            p, rec, _ = precision_recall(scores[:, c], targets[:, c])
            curve.setData(100 * np.r_[0.0, rec], 100 * np.r_[p[:1] if len(p) else [1.0], p])
            curve.setPen(colors[c], width=1.5)
            legend.addItem(curve, r.class_names[c] if c < len(r.class_names) else str(c))
        item.setRange(xRange=(0, 100), yRange=(0, 102), padding=0)
        self.pr.set_placeholder("")

    # ---------------------------------------------------------------- export
    def figures(self) -> List[Figure]:
        return [self.bars, self.confusion, self.pr]

    def tables(self) -> Dict[str, QTableWidget]:
        return {"metrics": self.metrics, "per_class": self.per_class}
