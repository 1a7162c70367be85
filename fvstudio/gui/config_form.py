"""Widgets bound to the pipeline config, built from ``PipelineConfig.schema()`` (the GUI never lists keys itself).

Each schema entry (``Param.describe()``: a dotted ``key`` such as ``gmm.n_components`` with its ``type``,
``default``, ``min`` / ``max`` or ``choices``, ``zero_means``, ``multiple_of``, ``unit`` and a ``help`` line
citing the paper) becomes one editor:

==================  ===================================================================
bool                check box
choices             combo box (a list with choices: one check box per choice)
int, range <= 256   superqt labelled slider (``multiple_of`` sets its step)
int / float         spin box with the unit as suffix (``zero_means`` names the 0 value);
                    a float whose values span many decades shows %g notation
path                line edit with a "…" browse button (a folder for ``dataset.root``)
str / list          line edit (lists are comma-separated)
==================  ===================================================================

The help text becomes the tooltip, the unit goes into the row label. :class:`ConfigForm` emits
``edited(key, value)`` when the user changes an editor and ``set_values(config)`` updates every editor
without emitting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QSpinBox, QToolButton, QWidget)
from superqt import QLabeledSlider

#: Path keys that name a folder (the other path keys name files).
FOLDER_KEYS = ("dataset.root",)
_SLIDER_MAX_SPAN = 256


@dataclass
class SchemaEntry:
    """One config key as the form needs it; ``type`` is bool / choice / int / float / str / path / list."""

    key: str
    type: str
    default: Any
    help: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[List[Any]] = None
    zero_means: Optional[str] = None
    multiple_of: Optional[int] = None
    unit: str = ""
    item_type: str = ""  # of a list: "str" or "float"

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[-1]


def entry_from_description(d: Mapping[str, Any]) -> SchemaEntry:
    """A :class:`SchemaEntry` from one ``Param.describe()`` dict."""
    typ, item_type = d["type"], ""
    if typ.startswith("list["):
        typ, item_type = "list", typ[len("list["):-1]
    elif "choices" in d:
        typ = "choice"
    return SchemaEntry(key=d["key"], type=typ, default=d["default"], help=d["help"], minimum=d.get("min"),
                       maximum=d.get("max"), choices=d.get("choices"), zero_means=d.get("zero_means"),
                       multiple_of=d.get("multiple_of"), unit=d.get("unit", ""), item_type=item_type)


def entries_from_schema(schema: Mapping[str, Mapping[str, Any]]) -> List[SchemaEntry]:
    """Every key of ``PipelineConfig.schema()`` (key -> ``Param.describe()``), in schema order."""
    return [entry_from_description(d) for d in schema.values()]


def row_label(entry: SchemaEntry) -> str:
    """The form's row label: the key's name in words, with its unit (``Patch (px)``)."""
    text = entry.name.replace("_", " ")
    text = text[:1].upper() + text[1:]
    return f"{text} ({entry.unit})" if entry.unit else text


class _SciSpinBox(QDoubleSpinBox):
    """A double spin box showing %g notation and stepping by factors of 10 (for e.g. lambda)."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text.replace(self.suffix(), "").strip())
        except ValueError:
            return self.value()

    def validate(self, text, pos):  # noqa: D102
        from PySide6.QtGui import QValidator
        try:
            float(text.replace(self.suffix(), "").strip())
            return QValidator.State.Acceptable, text, pos
        except ValueError:
            return QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802
        v = self.value()
        self.setValue(v * (10.0 ** steps) if v > 0 else self.minimum())


def _list_to_text(value: Sequence[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


def _text_to_list(text: str, item_type: str) -> List[Any]:
    """Comma-separated items; for ``item_type="float"`` the numbers (an item that is not a number is kept
    as text, so the config's validation names the key)."""
    out: List[Any] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            out.append(float(part) if item_type == "float" else part)
        except ValueError:
            out.append(part)
    return out


class Editor:
    """One bound editor: ``widget``, ``get()``, ``set(value)`` (silent) and the ``on_change`` callback."""

    def __init__(self, entry: SchemaEntry, on_change: Callable[[str, Any], None]) -> None:
        self.entry = entry
        self._on_change = on_change
        self._silent = False
        build = {"bool": self._check_box, "choice": self._combo_box, "int": self._int_editor,
                 "float": self._float_editor, "path": self._path_editor}.get(entry.type, self._line_editor)
        if entry.type == "list" and entry.choices:
            build = self._check_boxes
        self.widget, self._get, self._set = build(entry)
        self.widget.setToolTip(f"<b>{entry.key}</b><br>{entry.help}")
        self.widget.setObjectName(f"cfg:{entry.key}")

    def _emit(self, *_: Any) -> None:
        if not self._silent:
            self._on_change(self.entry.key, self.get())

    def get(self) -> Any:
        return self._get()

    def set(self, value: Any) -> None:
        self._silent = True
        try:
            self._set(value)
        finally:
            self._silent = False

    # ------------------------------------------------------------------ one builder per kind of key
    def _check_box(self, e: SchemaEntry):
        w = QCheckBox()
        w.toggled.connect(self._emit)
        return w, w.isChecked, lambda v: w.setChecked(bool(v))

    def _combo_box(self, e: SchemaEntry):
        w = QComboBox()
        for c in e.choices:
            w.addItem(str(c), c)
        w.currentIndexChanged.connect(self._emit)
        return w, w.currentData, lambda v: w.setCurrentIndex(max(0, w.findData(v)))

    def _check_boxes(self, e: SchemaEntry):
        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        checks = []
        for c in e.choices:
            cb = QCheckBox(str(c))
            cb.toggled.connect(self._emit)
            lay.addWidget(cb)
            checks.append((c, cb))
        lay.addStretch(1)

        def set_checked(v):
            for c, cb in checks:
                cb.setChecked(c in v)
        return box, lambda: [c for c, cb in checks if cb.isChecked()], set_checked

    def _int_editor(self, e: SchemaEntry):
        lo, hi = int(e.minimum), int(e.maximum)
        if hi - lo <= _SLIDER_MAX_SPAN and not e.zero_means:
            w = QLabeledSlider(Qt.Orientation.Horizontal)
            w.setRange(lo, hi)
            w.valueChanged.connect(self._emit)
            getter = w.value
            if e.multiple_of:  # e.g. the patch side: only multiples of 4 are valid
                m = int(e.multiple_of)
                w.setSingleStep(m)
                w.setPageStep(m)
                getter = lambda: max(m, int(round(w.value() / m)) * m)  # noqa: E731
            return w, getter, lambda v: w.setValue(int(v))
        w = QSpinBox()
        w.setRange(lo, hi)
        w.setKeyboardTracking(False)
        w.setGroupSeparatorShown(True)
        if e.unit:
            w.setSuffix(f" {e.unit}")
        if e.zero_means and lo == 0:
            w.setSpecialValueText(e.zero_means)
        w.valueChanged.connect(self._emit)
        return w, w.value, lambda v: w.setValue(int(v))

    def _float_editor(self, e: SchemaEntry):
        lo, hi = float(e.minimum), float(e.maximum)
        span = [abs(x) for x in (e.default, e.minimum, e.maximum) if x]
        tiny = min(span) if span else 1.0
        if tiny < 1e-3 or (span and max(span) / tiny > 1e4):  # many decades, e.g. lambda: %g notation
            w = _SciSpinBox()
            w.setDecimals(12)
            w.setMinimumWidth(110)
        else:
            w = QDoubleSpinBox()
            w.setDecimals(max(4, min(6, 2 - int(math.floor(math.log10(tiny))))))
            w.setSingleStep(10 ** math.floor(math.log10(max(tiny, 1e-6))) / (10 if tiny <= 1 else 1))
        w.setRange(lo, hi)
        w.setKeyboardTracking(False)
        if e.unit:
            w.setSuffix(f" {e.unit}")
        if e.zero_means and lo == 0:
            w.setSpecialValueText(e.zero_means)
        w.valueChanged.connect(self._emit)
        return w, w.value, lambda v: w.setValue(float(v))

    def _line_editor(self, e: SchemaEntry):
        line = QLineEdit()
        line.editingFinished.connect(self._emit)
        if e.type == "list":
            line.setPlaceholderText("comma-separated, e.g. 1e-5, 1e-4")
            return (line, lambda: _text_to_list(line.text(), e.item_type),
                    lambda v: line.setText(_list_to_text(v)))
        return line, lambda: line.text().strip(), lambda v: line.setText(str(v))

    def _path_editor(self, e: SchemaEntry):
        line, getter, setter = self._line_editor(e)
        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(line, 1)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Browse")

        def pick():
            if e.key in FOLDER_KEYS:
                p = QFileDialog.getExistingDirectory(box, f"Choose {e.name}", line.text())
            else:
                p, _ = QFileDialog.getOpenFileName(box, f"Choose {e.name}", line.text())
            if p:
                line.setText(p)
                self._emit()
        browse.clicked.connect(pick)
        lay.addWidget(browse)
        return box, getter, setter


class ConfigForm(QWidget):
    """A form of editors for some schema entries; ``edited(key, value)`` on user changes."""

    edited = Signal(str, object)

    def __init__(self, entries: Sequence[SchemaEntry], parent=None) -> None:
        super().__init__(parent)
        self.editors: Dict[str, Editor] = {}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        layout.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        for e in entries:
            ed = Editor(e, self.edited.emit)
            self.editors[e.key] = ed
            layout.addRow(row_label(e), ed.widget)
            label = layout.labelForField(ed.widget)
            if label is not None:
                label.setToolTip(ed.widget.toolTip())

    def set_values(self, config) -> None:
        for key, ed in self.editors.items():
            ed.set(config.get(key))
