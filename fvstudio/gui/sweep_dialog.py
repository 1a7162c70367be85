"""The sweep dialog (Pipeline panel -> Sweep…): which config key(s) to vary over which values, or a preset,
and the folder the sweep writes ``sweep.csv`` / ``sweep.png`` / ``runs/`` into.

Values are typed as on the command line (``16, 64, 256``; choices by name; booleans true/false) and checked
by :func:`fvstudio.pipeline.sweep.parse_set_option` (the schema's type and range) before the dialog closes;
the result is a :class:`~fvstudio.pipeline.sweep_plan.SweepPlan`, the same as ``fvstudio sweep`` builds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QVBoxLayout, QWidget)

from fvstudio.pipeline.config import SCHEMA, ConfigError
from fvstudio.pipeline.sweep import parse_set_option
from fvstudio.pipeline.sweep_plan import SweepPlan, format_value, plan_sweep, sweepable_keys

from .dialogs import choose_folder

__all__ = ["SweepDialog"]


def _hint(key: str, config) -> str:
    p = SCHEMA[key]
    now = f"; now {format_value(config.get(key))} (default {format_value(p.default)})"
    if p.choices:
        return "one of " + ", ".join(format_value(c) for c in p.choices) + now
    if p.type == "bool":
        return "true or false" + now
    lo = f"{p.min:g}" if p.min is not None else "-inf"
    hi = f"{p.max:g}" if p.max is not None else "inf"
    return f"{'integers' if p.type == 'int' else 'numbers'} in [{lo}, {hi}]{now}"


class SweepDialog(QDialog):
    """Choose a sweep; ``plan`` and ``out`` hold it once accepted."""

    def __init__(self, config, out: Path, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sweep a parameter")
        self.setObjectName("sweep_dialog")
        self.config = config
        self.plan: Optional[SweepPlan] = None
        self.out: Path = Path(out)
        keys = sweepable_keys()
        self.key = QComboBox()
        self.key.addItems(keys)
        self.key.setCurrentText("gmm.n_components")
        self.values = QLineEdit()
        self.values.setPlaceholderText("e.g. 16, 64, 256")
        self.key_hint = QLabel()
        self.second = QCheckBox("and a second key (a grid: one line per value)")
        self.key2 = QComboBox()
        self.key2.addItems(keys)
        self.key2.setCurrentText("encoder.power")
        self.values2 = QLineEdit()
        self.key2_hint = QLabel()
        self.preset = QComboBox()
        self.preset.addItem("(none: the keys above)", None)
        self.preset.addItem("Table 1: PN / L2 / SP on and off (8 runs)", "table1")
        self.preset.addItem("Findings: FV vs soft-BoV, PCA vs raw descriptors, closed vs empirical FIM (4 runs)",
                            "findings")
        self.out_edit = QLineEdit(str(self.out))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setObjectName("sweep_error")
        form = QFormLayout()
        form.addRow("Key", self.key)
        form.addRow("Values", self.values)
        form.addRow("", self.key_hint)
        form.addRow("", self.second)
        form.addRow("Second key", self.key2)
        form.addRow("Values", self.values2)
        form.addRow("", self.key2_hint)
        form.addRow("Or a preset", self.preset)
        form.addRow("Output folder", self._wrap(out_row))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run sweep")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Every variant runs the whole pipeline in this workspace: steps the variants share are "
                             "computed once. The output folder gets the same sweep.csv / sweep.png as "
                             "<tt>fvstudio sweep</tt>."))
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        self.key.currentTextChanged.connect(self._update)
        self.key2.currentTextChanged.connect(self._update)
        self.second.toggled.connect(self._update)
        self.preset.currentIndexChanged.connect(self._update)
        self._update()

    @staticmethod
    def _wrap(layout) -> QWidget:
        w = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        w.setLayout(layout)
        return w

    def _browse(self) -> None:
        folder = choose_folder(self, "Write the sweep into", Path(self.out_edit.text()).parent)
        if folder:
            self.out_edit.setText(str(folder))

    def _update(self, *_) -> None:
        preset = self.preset.currentData() is not None
        for w in (self.key, self.values, self.second):
            w.setEnabled(not preset)
        for w in (self.key2, self.values2):
            w.setEnabled(not preset and self.second.isChecked())
        self.key_hint.setText(_hint(self.key.currentText(), self.config))
        self.key2_hint.setText(_hint(self.key2.currentText(), self.config))

    def build_plan(self) -> SweepPlan:
        """The plan the fields describe (ConfigError / ValueError naming what is wrong)."""
        preset = self.preset.currentData()
        if preset:
            return plan_sweep([], preset)
        sets = [parse_set_option(f"{self.key.currentText()}={self.values.text()}")]
        if self.second.isChecked():
            if self.key2.currentText() == self.key.currentText():
                raise ConfigError("the second key must differ from the first")
            sets.append(parse_set_option(f"{self.key2.currentText()}={self.values2.text()}"))
        return plan_sweep(sets)

    def accept(self) -> None:  # noqa: D401 - Qt override
        try:
            self.plan = self.build_plan()
        except (ConfigError, ValueError) as exc:
            self.error.setText(f"<span style='color:#c0392b'>{exc}</span>")
            return
        if not self.out_edit.text().strip():
            self.error.setText("Choose an output folder.")
            return
        self.out = Path(self.out_edit.text().strip()).expanduser()
        super().accept()
