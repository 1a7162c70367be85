"""Plot building blocks of the explorer (pyqtgraph, no OpenGL): one figure class, themed from the palette.

Every figure states the question it answers in its title and has labelled axes with units. Figures are
created once and updated in place (``setData`` / ``setOpts`` / ``setImage``), never rebuilt, so live
updates (the GMM log-likelihood per EM iteration) do not flicker. Colours come from the application
palette (``Base``/``Text``/``Highlight`` roles) so light and dark desktop themes both read well; extra
series use evenly spaced hues (:mod:`fvstudio.gui.export` writes any figure as PNG or SVG). Nothing here
computes a number shown on screen: the values arrive from the pipeline and the engine's diagnostics.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True, useOpenGL=False)


def palette_color(role: QPalette.ColorRole) -> QColor:
    app = QApplication.instance()
    pal = app.palette() if app is not None else QPalette()
    return pal.color(role)


def apply_theme() -> None:
    """Plot background/foreground follow the palette's Base/Text roles (light and dark themes)."""
    pg.setConfigOptions(background=palette_color(QPalette.ColorRole.Base),
                        foreground=palette_color(QPalette.ColorRole.Text))


def series_colors(n: int) -> List[QColor]:
    """``n`` distinguishable colours; the first is the palette's highlight colour."""
    first = palette_color(QPalette.ColorRole.Highlight)
    dark = palette_color(QPalette.ColorRole.Base).lightness() < 128
    out = [first]
    for i in range(1, n):
        c = QColor.fromHsvF(((first.hsvHueF() if first.hsvHueF() >= 0 else 0.6) + i * 0.618034) % 1.0,
                            0.65, 0.95 if dark else 0.75)
        out.append(c)
    return out[:n]


class Figure(pg.PlotWidget):
    """A titled plot with labelled axes and units; ``name`` is used for exported file names."""

    # Until __init__ has set them (Qt may deliver a palette change during the base class's __init__).
    _labels: Dict[str, Tuple[str, Optional[str]]] = {}

    def __init__(self, name: str, question: str, xlabel: str, xunits: Optional[str], ylabel: str,
                 yunits: Optional[str], parent=None) -> None:
        super().__init__(parent=parent)
        self.name = name
        self.question = question
        item = self.getPlotItem()
        self._placeholder = pg.TextItem("", color=palette_color(QPalette.ColorRole.PlaceholderText),
                                        anchor=(0.5, 0.5))
        item.addItem(self._placeholder, ignoreBounds=True)
        self._labels = {"bottom": (xlabel, xunits), "left": (ylabel, yunits)}
        for ax in ("bottom", "left"):
            item.getAxis(ax).enableAutoSIPrefix(False)
        self.apply_palette()
        item.showGrid(x=True, y=True, alpha=0.15)
        self.setMinimumSize(240, 180)
        self.set_placeholder("no data yet")

    def apply_palette(self) -> None:
        """Background, title, axes and labels from the current palette (called again on theme change)."""
        self.setBackground(palette_color(QPalette.ColorRole.Base))
        fg = palette_color(QPalette.ColorRole.Text)
        item = self.getPlotItem()
        note = getattr(self, "_note", "")
        item.setTitle(self.question + (f"<br><span style='font-size:9pt'>{note}</span>" if note else ""),
                      color=fg, size="10pt")
        for ax, (label, units) in self._labels.items():
            item.setLabel(ax, label, units=units, color=fg)
            axis = item.getAxis(ax)
            axis.setPen(fg)
            axis.setTextPen(fg)
        self._placeholder.setColor(palette_color(QPalette.ColorRole.PlaceholderText))
        if item.legend is not None:
            item.legend.setLabelTextColor(fg)
            for _sample, label in item.legend.items:
                label.setText(label.text, color=fg)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        from PySide6.QtCore import QEvent

        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange) and self._labels:
            self.apply_palette()
        super().changeEvent(event)

    def set_placeholder(self, text: str) -> None:
        """A centred grey note while the figure has nothing to show ('' hides it: the figure has data)."""
        self._empty = bool(text)
        self._placeholder.setText(text)
        self._placeholder.setVisible(bool(text))
        if text:
            vb = self.getPlotItem().getViewBox()
            (x0, x1), (y0, y1) = vb.viewRange()
            self._placeholder.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    def set_note(self, text: str) -> None:
        """A second title line under the question (e.g. how EM stopped); '' removes it."""
        self._note = text
        self.apply_palette()

    def note(self) -> str:
        return getattr(self, "_note", "")

    def set_question(self, question: str, xlabel: Optional[str] = None) -> None:
        """Retitle the figure (and, given, its x-axis label) when one figure shows different plots."""
        if question == self.question and (xlabel is None or self._labels["bottom"][0] == xlabel):
            return
        self.question = question
        if xlabel is not None:
            self._labels["bottom"] = (xlabel, self._labels["bottom"][1])
        self.apply_palette()

    def has_data(self) -> bool:
        """False while the figure shows its "no data" note instead of values (exports skip it then)."""
        return not getattr(self, "_empty", True)

    def curve(self, color: Optional[QColor] = None, width: float = 2.0, name: Optional[str] = None,
              symbol: Optional[str] = None, style=Qt.PenStyle.SolidLine) -> pg.PlotDataItem:
        pen = pg.mkPen(color or series_colors(1)[0], width=width, style=style)
        kw = {}
        if symbol:
            kw = dict(symbol=symbol, symbolSize=5, symbolBrush=pen.color(), symbolPen=None)
        return self.getPlotItem().plot([], [], pen=pen, name=name, **kw)

    def draw_per_iteration(self, curve: pg.PlotDataItem, values: Sequence[float], empty_text: str) -> None:
        """``values[i]`` at x = i + 1 (e.g. one point per EM iteration); ``empty_text`` while there is none."""
        y = np.asarray(values, dtype=float)
        curve.setData(np.arange(1, len(y) + 1), y)
        self.set_placeholder("" if len(y) else empty_text)

    def legend(self) -> pg.LegendItem:
        item = self.getPlotItem()
        if item.legend is None:
            item.addLegend(offset=(-10, 10), labelTextColor=palette_color(QPalette.ColorRole.Text))
        return item.legend


def set_category_ticks(axis: pg.AxisItem, names: Sequence[str], max_chars: int = 14, max_labels: int = 30) -> None:
    """Label integer positions 0..n-1 of ``axis`` with category names (shortened if long); beyond
    ``max_labels`` categories only every k-th is labelled (the others keep a tick), so labels never pile up."""
    every = max(1, -(-len(names) // max_labels))
    short = [(i, n if len(n) <= max_chars else n[: max_chars - 1] + "…") for i, n in enumerate(names) if i % every == 0]
    minor = [(i, "") for i in range(len(names)) if i % every] if every > 1 else []
    axis.setTicks([short, minor])


def _plain_number(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def set_log_ticks(axis: pg.AxisItem, lo: float, hi: float) -> None:
    """Ticks of a log-mode axis over data values [lo, hi]: 1, 2, 5 x 10^e (only 10^e beyond three decades),
    labelled as plain numbers (200, 5k) instead of pyqtgraph's crowded minor-tick exponents."""
    lo, hi = max(float(lo), 1e-12), max(float(hi), float(lo) * 1.0001)
    e0, e1 = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    mantissas = (1, 2, 5) if e1 - e0 <= 3 else (1,)
    vals = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mantissas if lo <= m * 10.0 ** e <= hi]
    if len(vals) < 2:
        vals = sorted({lo, hi})
    axis.setTicks([[(float(np.log10(v)), _plain_number(v)) for v in vals], []])


class HeatMap(Figure):
    """A matrix as an image with category ticks on both axes and the value written in each cell;
    ``cell_clicked(row, column)`` when a cell is clicked."""

    cell_clicked = Signal(int, int)

    def __init__(self, name, question, xlabel, ylabel, parent=None) -> None:
        super().__init__(name, question, xlabel, None, ylabel, None, parent)
        item = self.getPlotItem()
        item.showGrid(x=False, y=False)
        item.invertY(True)
        item.setAspectLocked(False)
        self.image = pg.ImageItem()
        self.image.setColorMap(pg.colormap.get("viridis"))
        item.addItem(self.image)
        self._texts: List[pg.TextItem] = []
        self._font = QFont()
        self._font.setPointSizeF(7.5)
        self._shape = (0, 0)
        self._mark = pg.QtWidgets.QGraphicsRectItem(0, 0, 1, 1)
        self._mark.setZValue(5)
        self._mark.setVisible(False)
        item.addItem(self._mark, ignoreBounds=True)
        self._marked: Optional[Tuple[int, int]] = None
        self.getPlotItem().scene().sigMouseClicked.connect(self._on_click)

    def mark(self, cell: Optional[Tuple[int, int]]) -> None:
        """Frame cell (row, column) in the highlight colour (None: no frame)."""
        self._marked = None if cell is None else (int(cell[0]), int(cell[1]))
        if cell is not None:
            self._mark.setPen(pg.mkPen(palette_color(QPalette.ColorRole.Highlight), width=4))
            self._mark.setRect(cell[1] - 0.5, cell[0] - 0.5, 1, 1)
        self._mark.setVisible(cell is not None)

    def marked(self) -> Optional[Tuple[int, int]]:
        return self._marked

    def cell_at(self, x: float, y: float) -> Optional[Tuple[int, int]]:
        """(row, column) of the cell at view coordinates (x, y), or None outside the matrix."""
        r, c = int(round(y)), int(round(x))
        if 0 <= r < self._shape[0] and 0 <= c < self._shape[1]:
            return r, c
        return None

    def _on_click(self, event) -> None:
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        p = vb.mapSceneToView(event.scenePos())
        cell = self.cell_at(p.x(), p.y())
        if cell is not None:
            self.cell_clicked.emit(*cell)

    def set_matrix(self, values: np.ndarray, names: Sequence[str], fmt: str = "{:.0f}",
                   levels=None, col_names: Optional[Sequence[str]] = None,
                   texts: Optional[Sequence[Sequence[str]]] = None) -> None:
        """``values`` (rows x columns; NaN cells left blank) with ``names`` on the rows (and the columns
        unless ``col_names``); each cell shows ``fmt`` of its value, or ``texts[r][c]`` when given."""
        values = np.asarray(values, dtype=float)
        n_rows, n_cols = values.shape
        self._shape = (n_rows, n_cols)
        self.mark(None)
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 1.0
        self.image.setImage(values, levels=levels or (0.0, max(1e-12, top)))
        self.image.setRect(-0.5, -0.5, n_cols, n_rows)
        item = self.getPlotItem()
        set_category_ticks(item.getAxis("bottom"), names if col_names is None else col_names)
        set_category_ticks(item.getAxis("left"), names)
        item.getAxis("bottom").setStyle(tickTextOffset=2)
        for t in self._texts:
            item.removeItem(t)
        self._texts = []
        if n_rows * n_cols <= 400:
            lo, hi = levels or (0.0, top)
            for r in range(n_rows):
                for c in range(n_cols):
                    v = values[r, c]
                    text = texts[r][c] if texts is not None else ("" if not np.isfinite(v) else fmt.format(v))
                    if not text:
                        continue
                    bright = np.isfinite(v) and hi > lo and (v - lo) > 0.6 * (hi - lo)
                    color = QColor("black") if bright else (QColor("white") if np.isfinite(v) else
                                                             palette_color(QPalette.ColorRole.Text))
                    t = pg.TextItem(text, color=color, anchor=(0.5, 0.5))
                    t.setFont(self._font)
                    t.setPos(c, r)
                    item.addItem(t)
                    self._texts.append(t)
        item.setRange(xRange=(-0.5, n_cols - 0.5), yRange=(-0.5, n_rows - 0.5), padding=0)
        self.set_placeholder("")

    def clear_matrix(self, placeholder: str = "no data yet") -> None:
        """Back to the empty state: no cells, no category ticks, a centred note."""
        item = self.getPlotItem()
        self._shape = (0, 0)
        self.mark(None)
        self.image.clear()
        for t in self._texts:
            item.removeItem(t)
        self._texts = []
        for side in ("bottom", "left"):
            item.getAxis(side).setTicks([[], []])
        item.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self.set_placeholder(placeholder)


class Bars(Figure):
    """Grouped bars over categories (one group per series, e.g. run A and run B)."""

    def __init__(self, name, question, xlabel, ylabel, yunits, parent=None) -> None:
        super().__init__(name, question, xlabel, None, ylabel, yunits, parent)
        self._bars: List[pg.BarGraphItem] = []

    def set_series(self, names: Sequence[str], series: Sequence[np.ndarray],
                   labels: Sequence[str] = ()) -> None:
        item = self.getPlotItem()
        colors = series_colors(max(1, len(series)))
        while len(self._bars) < len(series):
            b = pg.BarGraphItem(x=[0], height=[0], width=0.1)
            item.addItem(b)
            self._bars.append(b)
        width = 0.8 / max(1, len(series))
        legend = self.legend() if labels or item.legend is not None else None
        if legend is not None:  # always rebuilt: it names the series drawn now, never earlier ones
            legend.clear()
        for i, b in enumerate(self._bars):
            if i < len(series):
                h = np.nan_to_num(np.asarray(series[i], dtype=float))
                x = np.arange(len(h)) - 0.4 + width * (i + 0.5)
                b.setOpts(x=x, height=h, width=width * 0.95, brush=colors[i], pen=pg.mkPen(None))
                b.setVisible(True)
                if legend is not None and i < len(labels):
                    legend.addItem(b, labels[i])
            else:
                b.setVisible(False)
        set_category_ticks(item.getAxis("bottom"), names)
        item.setXRange(-0.6, len(names) - 0.4, padding=0)
        self.set_placeholder("" if names else "no data yet")
