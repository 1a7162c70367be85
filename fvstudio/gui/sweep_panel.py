"""Sweeps panel: the sweep started from the Pipeline panel (Sweep…), drawn live as each variant finishes.

The sweep itself is :func:`sweep_job`: :func:`fvstudio.pipeline.sweep.run_sweep` on the plan, in the main
window's shared runner (one job at a time, progress and ETA in the status bar, Esc cancels; steps the variants
share are computed once). Before it runs, the config is written as ``config.toml`` into the output folder so
that the command line shown (:meth:`~fvstudio.pipeline.sweep_plan.SweepPlan.command_line`) replays the sweep
headless. Each finished variant arrives as a progress value ``sweep_result`` (label, its ``sweep.csv`` row,
its ``RunResult.to_json_dict()``); the panel then redraws its chart from
:func:`~fvstudio.pipeline.sweep_plan.line_series` (the headline metric against the first key's values, one
line per value of a second key) or, for the Table 1 preset, :func:`~fvstudio.pipeline.sweep_plan.table1_bars`
(grouped bars; another preset, ``findings``: one bar per variant), and fills a row of the table. *Export…* copies the output folder (the CLI's ``sweep.csv``,
``sweep.png``, ``sweep_bytes.png``, ``runs/`` and ``config.toml``) to a folder of the user's choice.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QSplitter,
                               QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from fvstudio.engine.progress import Progress
from fvstudio.engine.serialization import atomic_write_bytes
from fvstudio.pipeline.sweep import SweepResult, axis_label, run_sweep
from fvstudio.pipeline.sweep_plan import SweepPlan, line_series, table1_bars, variant_bars

from .dialogs import choose_folder
from .plots import Bars, Figure, set_category_ticks, series_colors

SWEEP_LABEL = "sweep"
_METRIC_NAMES = {"mean_per_class_accuracy": "mean per-class accuracy", "map": "mAP"}


def sweep_job(config, plan: SweepPlan, out: Path, workspace, progress=None, cancel=None) -> SweepResult:
    """Write ``config.toml`` into ``out``, then run the sweep; every finished variant is reported as the
    progress value ``sweep_result`` = (label, row, summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.toml", config.to_toml_string().encode("utf-8"))
    last = {"p": Progress(0.0, 1.0, "")}

    def forward(p: Progress) -> None:
        last["p"] = p
        if progress is not None:
            progress(p)

    def done(i, label, row, res) -> None:
        if progress is not None:
            p = last["p"]
            progress(Progress(p.done, p.total, f"variant {label} done",
                              {"sweep_result": (label, dict(row), res.to_json_dict())}))

    return run_sweep(config, plan.variants, out, workspace, progress=forward, cancel=cancel, on_result=done,
                     **plan.run_kwargs())


_TABLE1_QUESTION = "Table 1: what do PN, L2 and the spatial pyramid add?"


class SweepPanel(QWidget):
    variant_done = Signal(str, object)  # label, RunResult.to_json_dict() of a finished variant

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:sweeps")
        self.plan: Optional[SweepPlan] = None
        self.out: Optional[Path] = None
        self.scores: Dict[str, float] = {}
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.result: Optional[SweepResult] = None
        self.metric_name = "mean_per_class_accuracy"
        self.line = Figure("sweep", "How does accuracy change with the swept value?", "value", None,
                           "accuracy", "%")
        self._curves: List = []
        self.bars = Bars("sweep_table1", _TABLE1_QUESTION,
                         "normalisations of the Fisher vector", "accuracy", "%")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.line)
        self.stack.addWidget(self.bars)
        self.table = QTableWidget(0, 4)
        self.table.setObjectName("sweep_table")
        self.table.setHorizontalHeaderLabels(["variant", "accuracy (%)", "bytes / image", "seconds"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.state = QLabel("No sweep yet: Pipeline panel -> Sweep…")
        self.state.setWordWrap(True)
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setObjectName("sweep_command")
        self.command.setToolTip("Replays this sweep headless (same sweep.csv / sweep.png)")
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QApplication.clipboard().setText(self.command.text()))
        self.new_button = QPushButton("New sweep…")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Copy sweep.csv, sweep.png, runs/ and config.toml to a folder")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self.choose_export)
        cmd = QHBoxLayout()
        cmd.addWidget(QLabel("Headless:"))
        cmd.addWidget(self.command, 1)
        cmd.addWidget(copy)
        top = QHBoxLayout()
        top.addWidget(self.state, 1)
        top.addWidget(self.new_button)
        top.addWidget(self.export_button)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.stack)
        split.addWidget(self.table)
        split.setSizes([760, 420])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        lay.addLayout(cmd)
        self._draw()

    def figures(self) -> List[Figure]:
        return [self.line, self.bars]

    # ---------------------------------------------------------------- a sweep
    def begin(self, plan: SweepPlan, out: Path, workspace) -> None:
        self.plan, self.out = plan, Path(out)
        self.scores, self.rows, self.result = {}, {}, None
        self.command.setText(plan.command_line(self.out / "config.toml", self.out, workspace))
        self.export_button.setEnabled(False)
        self.state.setText(f"Sweep of {len(plan.variants)} variants running into {self.out}…")
        self.table.setRowCount(len(plan.variants))
        for r, (label, _) in enumerate(plan.variants):
            self._set_row(r, [label, "…", "", ""])
        self._draw()

    def on_progress(self, p: Progress) -> None:
        if "sweep_result" in p.values:
            label, row, summary = p.values["sweep_result"]
            self.add_result(label, row, summary)
        elif "variant_label" in p.values and self.plan is not None:
            i = p.values.get("variant", 0)
            self.state.setText(f"Variant {i + 1}: {p.values['variant_label']} — {p.message}")

    def add_result(self, label: str, row: Dict[str, Any], summary: Dict[str, Any]) -> None:
        self.metric_name = summary.get("primary_metric") or self.metric_name
        self.scores[label] = float(summary["metrics"][self.metric_name])
        self.rows[label] = row
        labels = [lab for lab, _ in self.plan.variants]
        if label in labels:
            self._set_row(labels.index(label), [label, f"{100 * self.scores[label]:.2f}",
                                                f"{row.get('bytes_per_image', 0):,.0f}",
                                                f"{row.get('seconds_total', 0):.1f}"])
        self._draw()
        self.variant_done.emit(label, summary)

    def finish(self, result: SweepResult) -> None:
        self.result = result
        skipped = "; ".join(f"{lab}: {why}" for lab, why in result.skipped)
        labels = [lab for lab, _ in self.plan.variants]
        for lab, why in result.skipped:
            if lab in labels:
                self._set_row(labels.index(lab), [lab, "skipped", "", ""], tooltip=why)
        self.state.setText(f"Sweep done: {len(result.rows)} variants, written to {self.out} (sweep.csv, "
                           f"sweep.png{', sweep_bytes.png' if result.bytes_png_path else ''})."
                           + (f" Skipped: {skipped}" if skipped else ""))
        self.export_button.setEnabled(True)

    def ended(self, how: str) -> None:
        """The sweep was cancelled or failed (``how`` says which)."""
        self.state.setText(f"Sweep {how} after {len(self.scores)} of {len(self.plan.variants) if self.plan else 0} "
                           f"variants; the finished steps stay cached.")

    def _set_row(self, r: int, texts: List[str], tooltip: str = "") -> None:
        for c, t in enumerate(texts):
            it = QTableWidgetItem(t)
            if c:
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if tooltip:
                it.setToolTip(tooltip)
            self.table.setItem(r, c, it)

    # ---------------------------------------------------------------- chart
    def _set_bars_title(self, table1: bool) -> None:
        question, xlabel = ((_TABLE1_QUESTION, "normalisations of the Fisher vector") if table1 else
                            (self.plan.title or "Accuracy of each variant", self.plan.xlabel or "variant"))
        self.bars.set_question(question, xlabel)

    def _draw(self) -> None:
        metric = _METRIC_NAMES.get(self.metric_name, self.metric_name)
        if self.plan is None:
            self.line.set_placeholder("no sweep yet")
            return
        if self.plan.preset:
            self.stack.setCurrentWidget(self.bars)
            t1 = self.plan.preset == "table1"
            groups, series = (table1_bars if t1 else variant_bars)(self.plan, self.scores)
            self._set_bars_title(t1)
            self.bars.set_series(groups, [100 * np.array([np.nan if v is None else v for v in s], float)
                                          for s in series.values()], list(series) if t1 else [])
            self.bars.getPlotItem().setLabel("left", metric, units="%")
            top = max([100 * v for v in self.scores.values()] or [100.0])
            self.bars.getPlotItem().setYRange(0, top * 1.25, padding=0)  # headroom for the legend
            self.bars.set_placeholder("" if self.scores else "running the first variant…")
            return
        self.stack.setCurrentWidget(self.line)
        cats, series = line_series(self.plan, self.scores)
        item = self.line.getPlotItem()
        colors = series_colors(max(1, len(series)))
        while len(self._curves) < len(series):
            self._curves.append(self.line.curve(colors[len(self._curves)], symbol="o"))
        legend = self.line.legend() if len(series) > 1 else item.legend
        if legend is not None:
            legend.clear()
        for j, curve in enumerate(self._curves):
            if j >= len(series):
                curve.setData([], [])
                continue
            name, values = list(series.items())[j]
            x = [i for i, v in enumerate(values) if v is not None]
            curve.setData(np.array(x, float), np.array([100 * values[i] for i in x], float))
            curve.setPen(colors[j], width=2)
            curve.setSymbolBrush(colors[j])
            curve.setSymbolSize(9)
            if legend is not None and name:
                legend.addItem(curve, name)
        set_category_ticks(item.getAxis("bottom"), cats)
        item.setLabel("bottom", axis_label(self.plan.x_key) if self.plan.x_key else "variant")
        item.setLabel("left", metric, units="%")
        item.setXRange(-0.3, len(cats) - 0.7, padding=0)
        self.line.set_placeholder("" if self.scores else "running the first variant…")

    def points(self) -> List[tuple]:
        """(x index, accuracy %) of every point drawn, over all series."""
        out = []
        for c in self._curves:
            x, y = c.getData()
            if x is not None:
                out += list(zip(x.tolist(), y.tolist()))
        return out

    # ---------------------------------------------------------------- export
    def export_to(self, folder) -> Path:
        """Copy the sweep's output folder into ``folder``; the command line then names the copy."""
        folder = Path(folder)
        shutil.copytree(self.out, folder, dirs_exist_ok=True)
        self.command.setText(self.command.text().replace(str(self.out), str(folder)))
        self.state.setText(f"Sweep exported to {folder}")
        return folder

    def choose_export(self) -> None:
        folder = choose_folder(self, "Export the sweep (CSV, PNG, runs) into", self.out.parent if self.out else Path.home())
        if folder:
            self.export_to(folder)
