"""Widgets bound to the pipeline config, built from ``PipelineConfig.schema()`` (the GUI never lists keys itself).

Each schema entry (a dotted key such as ``gmm.n_components`` with its type, default, range or choices,
unit and help text citing the paper) becomes one editor:

==================  ===================================================================
bool                check box
choices             combo box (multi-valued lists of choices: one check box per choice)
int, small range    superqt labelled slider, the unit as suffix
int / float         spin box with the unit as suffix; a log-scaled float shows %g notation
optional (None)     an "on" check box in front of the editor (e.g. power normalisation off)
path / str / list   line edit (paths get a "…" browse button; lists are comma-separated)
==================  ===================================================================

The help text becomes the tooltip. :class:`ConfigForm` emits ``edited(key, value)`` when the user changes
an editor and ``set_values(config)`` updates every editor without emitting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QSpinBox, QToolButton, QWidget)
from superqt import QLabeledSlider

_TYPE_ALIASES = {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "enum": "choice",
                 "bool": "bool", "int": "int", "float": "float", "str": "str", "path": "path",
                 "choice": "choice", "list": "list", "array": "list"}


@dataclass
class SchemaEntry:
    key: str
    type: str
    default: Any = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[List[Any]] = None
    help: str = ""
    unit: str = ""
    label: str = ""
    nullable: bool = False
    log: bool = False
    item_type: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[-1]


def _first(d: dict, *names, default=None):
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def _py_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple)):
        return "list"
    return "str"


def normalise_schema(schema: Any) -> List[SchemaEntry]:
    """Read the pipeline's schema (a dict keyed by dotted key, a nested dict, or a list of entries)."""
    items: List[tuple] = []
    if isinstance(schema, dict):
        for k, v in schema.items():
            if isinstance(v, dict) and not any(x in v for x in ("type", "default", "help", "choices")):
                items.extend((e.key, e) for e in normalise_schema({f"{k}.{kk}": vv for kk, vv in v.items()}))
                continue
            items.append((k, v))
    else:
        for v in schema:
            d = v if isinstance(v, dict) else vars(v)
            items.append((_first(d, "key", "name", "path"), d))
    out: List[SchemaEntry] = []
    for key, d in items:
        if isinstance(d, SchemaEntry):
            out.append(d)
            continue
        if not isinstance(d, dict):
            d = {k: getattr(d, k) for k in dir(d) if not k.startswith("_")}
        default = d.get("default")
        rng = _first(d, "range", "bounds")
        lo = _first(d, "min", "minimum", "low")
        hi = _first(d, "max", "maximum", "high")
        if rng is not None and len(rng) == 2:
            lo, hi = (rng[0] if lo is None else lo), (rng[1] if hi is None else hi)
        typ = d.get("type")
        if isinstance(typ, type):
            typ = typ.__name__
        typ = str(typ).lower() if typ is not None else _py_type_name(default)
        nullable = bool(d.get("nullable") or d.get("optional"))
        if typ.startswith("optional[") or typ.endswith("| none") or typ.endswith("|none"):
            nullable = True
            typ = typ.replace("optional[", "").rstrip("]").split("|")[0].strip()
        item_type = ""
        if typ.startswith("list"):
            item_type = typ[5:-1] if "[" in typ else ""
            typ = "list"
        typ = _TYPE_ALIASES.get(typ, typ)
        choices = _first(d, "choices", "options", "enum")
        if choices is not None:
            choices = list(choices)
            if typ not in ("list",):
                typ = "choice"
        out.append(SchemaEntry(
            key=str(key), type=typ, default=default, minimum=lo, maximum=hi, choices=choices,
            help=str(_first(d, "help", "doc", "description", default="")),
            unit=str(_first(d, "unit", "units", default="")),
            label=str(_first(d, "label", "title", default="")),
            nullable=nullable or default is None and typ in ("int", "float"),
            log=bool(_first(d, "log", "log_scale", default=False)),
            item_type=item_type,
            extra={k: v for k, v in d.items()}))
    return out


def pretty_label(entry: SchemaEntry) -> str:
    text = entry.label or entry.name.replace("_", " ").replace(".", " ")
    text = text[:1].upper() + text[1:]
    return f"{text} ({entry.unit})" if entry.unit and entry.unit not in text else text


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


def _list_to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = []
        for v in value:
            if isinstance(v, (list, tuple)) and len(v) == 2:
                parts.append(f"{v[0]}x{v[1]}")
            else:
                parts.append(str(v))
        return ", ".join(parts)
    return str(value)


def _text_to_list(text: str, like: Any) -> Any:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    out: List[Any] = []
    for p in parts:
        if "x" in p and all(s.strip().isdigit() for s in p.split("x")):
            out.append([int(s) for s in p.split("x")])
            continue
        try:
            out.append(int(p))
            continue
        except ValueError:
            pass
        try:
            out.append(float(p))
            continue
        except ValueError:
            out.append(p)
    return out


class Editor:
    """One bound editor: ``widget``, ``get()``, ``set(value)`` (silent) and ``changed`` callbacks."""

    def __init__(self, entry: SchemaEntry, on_change: Callable[[str, Any], None]) -> None:
        self.entry = entry
        self._on_change = on_change
        self._silent = False
        self.widget, self._get, self._set = self._build(entry)
        tip = entry.help or entry.key
        self.widget.setToolTip(f"<b>{entry.key}</b><br>{tip}")
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

    # ------------------------------------------------------------------ builders
    def _build(self, e: SchemaEntry):
        if e.type == "bool":
            w = QCheckBox()
            w.toggled.connect(self._emit)
            return w, w.isChecked, lambda v: w.setChecked(bool(v))
        if e.type == "choice":
            w = QComboBox()
            for c in e.choices or []:
                w.addItem(str(c), c)
            w.currentIndexChanged.connect(self._emit)

            def set_choice(v):
                i = w.findData(v)
                w.setCurrentIndex(i if i >= 0 else max(0, w.findText(str(v))))
            return self._maybe_nullable(e, w, lambda: w.currentData(), set_choice)
        if e.type == "list" and e.choices:
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

            def set_multi(v):
                vals = set(v or [])
                for c, cb in checks:
                    cb.setChecked(c in vals)
            return box, lambda: [c for c, cb in checks if cb.isChecked()], set_multi
        if e.type == "int":
            lo = int(e.minimum) if e.minimum is not None else -(2 ** 31 - 1)
            hi = int(e.maximum) if e.maximum is not None else 2 ** 31 - 1
            zero_text = e.extra.get("zero_means")
            if e.minimum is not None and e.maximum is not None and hi - lo <= 256 and not e.log \
                    and not zero_text:
                w = QLabeledSlider(Qt.Orientation.Horizontal)
                w.setRange(lo, hi)
                if e.unit:
                    w._label.setSuffix(f" {e.unit}")  # superqt keeps the label editor private
                w.valueChanged.connect(self._emit)
                getter, setter = w.value, lambda v: w.setValue(int(v))
                step = e.extra.get("multiple_of")
                if step:  # e.g. the patch side: only multiples of 4 are valid
                    w.setSingleStep(int(step))
                    w.setPageStep(int(step))
                    getter = lambda w=w, m=int(step): max(m, int(round(w.value() / m)) * m)  # noqa: E731
            else:
                w = QSpinBox()
                w.setRange(lo, hi)
                w.setKeyboardTracking(False)
                w.setGroupSeparatorShown(True)
                if e.unit:
                    w.setSuffix(f" {e.unit}")
                if zero_text and lo == 0:
                    w.setSpecialValueText(str(zero_text))
                w.valueChanged.connect(self._emit)
                getter, setter = w.value, lambda v: w.setValue(int(v))
            return self._maybe_nullable(e, w, getter, setter)
        if e.type == "float":
            lo = float(e.minimum) if e.minimum is not None else -1e12
            hi = float(e.maximum) if e.maximum is not None else 1e12
            span = [abs(x) for x in (e.default, e.minimum, e.maximum) if isinstance(x, (int, float)) and x]
            tiny = min(span) if span else 1.0
            if e.log or tiny < 1e-3 or (span and max(span) / max(tiny, 1e-300) > 1e4):
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
            zero_text = e.extra.get("zero_means")
            if zero_text and lo == 0:
                w.setSpecialValueText(str(zero_text))
            w.valueChanged.connect(self._emit)
            return self._maybe_nullable(e, w, w.value, lambda v: w.setValue(float(v)))
        # path / str / list without choices
        line = QLineEdit()
        line.editingFinished.connect(self._emit)
        if e.type == "list":
            getter = lambda: _text_to_list(line.text(), e.default)  # noqa: E731
            setter = lambda v: line.setText(_list_to_text(v))  # noqa: E731
            line.setPlaceholderText("comma-separated, e.g. 1x1, 3x1")
        else:
            getter = lambda: (line.text().strip() or None) if e.nullable else line.text().strip()  # noqa: E731
            setter = lambda v: line.setText("" if v is None else str(v))  # noqa: E731
        if e.type == "path" or any(s in e.name for s in ("root", "_list", "path", "file")):
            box = QWidget()
            lay = QHBoxLayout(box)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.addWidget(line, 1)
            browse = QToolButton()
            browse.setText("…")
            browse.setToolTip("Browse")
            is_dir = "root" in e.name or "dir" in e.name

            def pick():
                if is_dir:
                    p = QFileDialog.getExistingDirectory(box, f"Choose {e.name}", line.text())
                else:
                    p, _ = QFileDialog.getOpenFileName(box, f"Choose {e.name}", line.text())
                if p:
                    line.setText(p)
                    self._emit()
            browse.clicked.connect(pick)
            lay.addWidget(browse)
            return box, getter, setter
        return line, getter, setter

    def _maybe_nullable(self, e: SchemaEntry, w: QWidget, getter, setter):
        if not e.nullable:
            return w, getter, setter
        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        on = QCheckBox("on")
        on.setToolTip("Unticked = off (None in the config)")
        lay.addWidget(on)
        lay.addWidget(w, 1)
        on.toggled.connect(w.setEnabled)
        on.toggled.connect(self._emit)

        def get():
            return getter() if on.isChecked() else None

        def set_(v):
            on.setChecked(v is not None)
            w.setEnabled(v is not None)
            if v is not None:
                setter(v)
            elif e.default is not None:
                setter(e.default)
        return box, get, set_


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
            layout.addRow(pretty_label(e), ed.widget)
            label = layout.labelForField(ed.widget)
            if label is not None:
                label.setToolTip(ed.widget.toolTip())

    def set_values(self, config) -> None:
        for key, ed in self.editors.items():
            try:
                ed.set(config.get(key))
            except (KeyError, AttributeError, TypeError, ValueError):
                ed.set(ed.entry.default)
