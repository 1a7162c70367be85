"""Teaching panel: a 2-D toy for a lecture on GMMs and Fisher vectors (issue #12, section 4).

Every number drawn comes from :mod:`fvstudio.pipeline.teaching` (the state machine over the engine's
``DiagonalGMM.initialise / e_step / m_step``, the ellipses, the FV glyphs, the same-histogram pair); this
module only lays out controls and plots. Three pages:

1. **EM**: the points (coloured by their posteriors, grey before the first E-step), each Gaussian's 1 and
   2 sigma ellipses (solid, dashed) and mean, beside the log-likelihood curve (one point per E-step).
   Buttons: E-step, M-step (enabled right after an E-step), Back (the history), Play / Pause (E, M, E, ...
   at the speed chosen, stops when EM has converged), Reset. Clicking the plot adds a point (and
   re-initialises: a state is a function of the points, K, init, floor, seed and steps).
2. **Fisher vector**: an "image" (a second point set, its own seed) on the current GMM: mean gradients as
   arrows, sigma gradients as circles (red: the image is more spread than the Gaussian, blue: less), and the
   FV itself as bars, redrawn when power or L2 normalisation is toggled.
3. **Same histogram**: two images with the same soft-BoV histogram (bars equal) and different FVs
   (Sec. 2.5): the bag of words counts points per Gaussian, the FV also sees where they sit.

The toy's steps take well under 10 ms (hundreds of 2-D points, K <= 10), so they run on the GUI thread: no
background task is needed, and Play is a ``QTimer``.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QPushButton, QScrollArea, QSlider, QSpinBox, QTabWidget, QVBoxLayout,
                               QWidget)

from fvstudio.pipeline import teaching as T

from .plots import Bars, Figure

_GREY = QColor(120, 120, 120)


def _qcolor(rgb, alpha: int = 255) -> QColor:
    r, g, b = (int(round(255 * float(v))) for v in rgb[:3])
    return QColor(r, g, b, alpha)


class _GaussianItems:
    """The persistent items of one Gaussian in a :class:`ToyPlot` (updated in place, never rebuilt)."""

    def __init__(self, item) -> None:
        self.e1 = pg.PlotDataItem([], [])
        self.e2 = pg.PlotDataItem([], [])
        self.mean = pg.ScatterPlotItem([], [], symbol="+", size=14)
        self.label = pg.TextItem("", anchor=(-0.3, 1.1))
        self.outline = pg.PlotDataItem([], [], pen=pg.mkPen("k", width=5))
        self.arrow = pg.PlotDataItem([], [])
        self.head = pg.PlotDataItem([], [])
        self.circle = pg.PlotDataItem([], [])
        for it in self.all():
            item.addItem(it)

    def all(self):
        return (self.e1, self.e2, self.mean, self.label, self.outline, self.arrow, self.head, self.circle)

    def hide(self) -> None:
        for it in self.all():
            it.setVisible(False)


class ToyPlot(Figure):
    """A 2-D scene: points, Gaussians (1 and 2 sigma ellipses, means) and optional FV glyphs."""

    clicked = Signal(float, float)  # a left click inside the plot, in data coordinates

    def __init__(self, name: str, question: str, parent=None, max_gaussians: int = 10) -> None:
        super().__init__(name, question, "x", None, "y", None, parent)
        item = self.getPlotItem()
        item.setAspectLocked(True)
        item.setRange(xRange=(-T.BOX, T.BOX), yRange=(-T.BOX, T.BOX), padding=0.05)
        item.getViewBox().setMouseEnabled(False, False)
        self.points = pg.ScatterPlotItem(size=7, pen=pg.mkPen(None))
        self.image = pg.ScatterPlotItem(size=10, symbol="t", pen=pg.mkPen("k", width=0.8))
        item.addItem(self.points)
        self.gaussians = [_GaussianItems(item) for _ in range(max_gaussians)]
        item.addItem(self.image)
        self.image.setZValue(5)
        for g in self.gaussians:
            for it in (g.outline, g.arrow, g.head, g.circle):
                it.setZValue(6)
        self.scene().sigMouseClicked.connect(self._on_click)
        self.clear_shapes()
        self.set_placeholder("")

    def _on_click(self, ev) -> None:
        vb = self.getPlotItem().getViewBox()
        if ev.button() != Qt.MouseButton.LeftButton or ev.double() or not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = vb.mapSceneToView(ev.scenePos())
        self.clicked.emit(float(p.x()), float(p.y()))

    def clear_shapes(self) -> None:
        for g in self.gaussians:
            g.hide()

    def draw_points(self, xy: np.ndarray, colours: np.ndarray, alpha: int = 230) -> None:
        # colours rounded to 1/20 steps: one cached symbol per distinct colour (pyqtgraph), not one per point
        q = np.round(np.asarray(colours, float) * 20) / 20
        cache = {}
        brushes = [cache.setdefault(tuple(c), pg.mkBrush(_qcolor(c, alpha))) for c in q]
        self.points.setData(pos=np.asarray(xy, float), brush=brushes)

    def draw_image(self, xy: Optional[np.ndarray]) -> None:
        if xy is None:
            self.image.setData([], [])
        else:
            self.image.setData(pos=np.asarray(xy, float), brush=pg.mkBrush(255, 215, 0, 240))

    def draw_gaussians(self, state: T.ToyState, colours: np.ndarray, faint: bool = False) -> None:
        for k, (e1, e2) in enumerate(T.gaussian_ellipses(state)[:len(self.gaussians)]):
            g = self.gaussians[k]
            c = _qcolor(colours[k], 130 if faint else 255)
            g.e1.setData(e1[:, 0], e1[:, 1], pen=pg.mkPen(c, width=1.5 if faint else 2.5))
            g.e2.setData(e2[:, 0], e2[:, 1], pen=pg.mkPen(c, width=1.2, style=Qt.PenStyle.DashLine))
            m = state.means[k]
            g.mean.setData([m[0]], [m[1]], pen=pg.mkPen(c, width=2.5))
            g.label.setText(f"{k + 1}", color=c)
            g.label.setPos(float(m[0]), float(m[1]))
            for it in (g.e1, g.e2, g.mean, g.label):
                it.setVisible(True)

    def draw_glyphs(self, enc: T.ImageEncoding, colours: np.ndarray) -> None:
        heads = T.arrow_heads(enc.arrows, size=0.3)
        for k in range(min(len(enc.arrows), len(self.gaussians))):
            g = self.gaussians[k]
            c = _qcolor(colours[k])
            a = enc.arrows[k]
            g.outline.setData(a[:, 0], a[:, 1])
            g.arrow.setData(a[:, 0], a[:, 1], pen=pg.mkPen(c, width=3))
            ok = bool(np.isfinite(heads[k]).all())
            if ok:
                g.head.setData(heads[k][:, 0], heads[k][:, 1], pen=pg.mkPen(c, width=3))
            r = float(enc.circle_radius[k])
            if r > 0:
                circ = T.ellipse(a[0], [r * r, r * r], 1.0)
                colour = QColor(214, 39, 40) if enc.circle_sign[k] > 0 else QColor(31, 119, 180)
                style = Qt.PenStyle.SolidLine if enc.circle_sign[k] > 0 else Qt.PenStyle.DotLine
                g.circle.setData(circ[:, 0], circ[:, 1], pen=pg.mkPen(colour, width=2.5, style=style))
            for it, on in ((g.outline, True), (g.arrow, True), (g.head, ok), (g.circle, r > 0)):
                it.setVisible(on)


def fv_ticks(axis, K: int) -> None:
    """One tick per Gaussian and part under its (x, y) pair of bars: μ1 .. μK, σ1 .. σK."""
    major = [(2 * k + 0.5, f"μ{k + 1}") for k in range(K)] + [(2 * K + 2 * k + 0.5, f"σ{k + 1}") for k in range(K)]
    axis.setTicks([major, []])


class FVBars(Figure):
    """A Fisher vector as bars, one colour per Gaussian (mean dimensions, then sigma dimensions)."""

    def __init__(self, name: str, question: str, parent=None) -> None:
        super().__init__(name, question, "FV dimension (x, y per Gaussian)", None, "value", None, parent)
        self.bars = pg.BarGraphItem(x=[0], height=[0], width=0.8)
        self.getPlotItem().addItem(self.bars)
        self.getPlotItem().addLine(y=0, pen=pg.mkPen(_GREY, width=1))

    def set_fv(self, enc: T.ImageEncoding, colours: np.ndarray) -> None:
        K = len(enc.mean_gradients)
        owner = np.r_[np.repeat(np.arange(K), 2), np.repeat(np.arange(K), 2)]
        x = np.arange(len(enc.fv))
        self.bars.setOpts(x=x, height=np.asarray(enc.fv, float), width=0.8,
                          brushes=[_qcolor(colours[k]) for k in owner], pens=[pg.mkPen(None)] * len(x))
        fv_ticks(self.getPlotItem().getAxis("bottom"), K)
        self.getPlotItem().setXRange(-0.6, len(x) - 0.4, padding=0)
        norm = "power + L2" if enc.power and enc.l2 else "power" if enc.power else "L2" if enc.l2 else "none"
        self.set_note(f"normalisation: {norm}; ‖FV‖₂ = {np.linalg.norm(enc.fv):.3f}")
        self.set_placeholder("")



def _form_group(title: str, *rows) -> QGroupBox:
    """A titled box of form rows: ``(label, widget)`` pairs, or a widget spanning the row."""
    box = QGroupBox(title)
    form = QFormLayout(box)
    for row in rows:
        form.addRow(*row) if isinstance(row, tuple) else form.addRow(row)
    return box

class TeachingPanel(QWidget):
    """The teaching room (see the module docstring)."""

    state_changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:teaching")
        self.toy: Optional[T.EMToy] = None
        self.encoding: Optional[T.ImageEncoding] = None
        self.pair: Optional[T.HistogramPair] = None
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        controls = self._build_controls()
        self.pages = QTabWidget()
        self.pages.addTab(self._build_em_page(), "1. EM on a GMM")
        self.pages.addTab(self._build_fv_page(), "2. Fisher vector of an image")
        self.pages.addTab(self._build_pair_page(), "3. Same histogram, different FVs")
        for f in (self.em_plot, self.ll_plot, self.fv_plot, self.fv_bars, *self.pair_plots, self.bow_bars,
                  self.pair_fv_bars):
            f.setMinimumSize(180, 150)  # the window keeps its small minimum size (the other panels')
        self.pages.currentChanged.connect(self._redraw_encodings)
        self._pair_key = (None, None)
        layout = QHBoxLayout(self)
        layout.addWidget(controls)
        layout.addWidget(self.pages, 1)
        self.new_points()

    # ------------------------------------------------------------------ building
    def _build_controls(self) -> QWidget:
        self.preset = QComboBox()
        self.preset.addItems(list(T.PRESETS))
        self.n_points = QSpinBox()
        self.n_points.setRange(20, 2000)
        self.n_points.setValue(300)
        self.seed = QSpinBox()
        self.seed.setRange(0, 9999)
        self.new_button = QPushButton("New points")
        self.new_button.setToolTip("Draw the preset's points again (same seed: same points); click the plot to add one")
        pts = _form_group("Points (click the plot to add one)", ("preset", self.preset), ("points", self.n_points),
                          ("seed", self.seed), self.new_button)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 10)
        self.k_spin.setValue(4)
        self.init_combo = QComboBox()
        self.init_combo.addItems(list(T.INITS))
        self.init_combo.setCurrentText("random")
        self.floor_spin = QDoubleSpinBox()
        self.floor_spin.setDecimals(3)
        self.floor_spin.setRange(0.0, 0.9)
        self.floor_spin.setSingleStep(0.005)
        self.floor_spin.setValue(0.01)
        self.floor_spin.setToolTip("σ² ≥ floor × the data's variance, per dimension (Appendix B)")
        model = _form_group("Model", ("Gaussians K", self.k_spin), ("init", self.init_combo),
                            ("variance floor", self.floor_spin))
        self.e_button = QPushButton("E-step")
        self.e_button.setToolTip("Posteriors γ_t(k) of every point under the current Gaussians (the colours)")
        self.m_button = QPushButton("M-step")
        self.m_button.setToolTip("w, μ, σ² re-estimated from the posteriors of the last E-step (the ellipses)")
        self.back_button = QPushButton("◀ Back")
        self.play_button = QPushButton("▶ Play")
        self.play_button.setCheckable(True)
        self.reset_button = QPushButton("Reset")
        self.speed = QSlider(Qt.Orientation.Horizontal)
        self.speed.setRange(1, 20)
        self.speed.setValue(4)
        self.speed_label = QLabel("")
        em = QGroupBox("EM")
        g = QGridLayout(em)
        g.addWidget(self.e_button, 0, 0)
        g.addWidget(self.m_button, 0, 1)
        g.addWidget(self.back_button, 1, 0)
        g.addWidget(self.reset_button, 1, 1)
        g.addWidget(self.play_button, 2, 0, 1, 2)
        g.addWidget(self.speed_label, 3, 0)
        g.addWidget(self.speed, 3, 1)
        self.power_box = QCheckBox("power normalisation (ρ = 0.5)")
        self.power_box.setChecked(True)
        self.l2_box = QCheckBox("L2 normalisation")
        self.l2_box.setChecked(True)
        self.image_seed = QSpinBox()
        self.image_seed.setRange(0, 9999)
        enc = _form_group("Encoding (pages 2, 3)", self.power_box, self.l2_box, ("image seed", self.image_seed))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        font = self.status.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.status.setFont(font)
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        for w in (pts, model, em, enc):
            v.addWidget(w)
        v.addWidget(self.status)
        v.addStretch(1)
        scroll = QScrollArea()  # the controls scroll on a small window rather than raise its minimum height
        scroll.setWidget(box)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFixedWidth(275)
        self.new_button.clicked.connect(self.new_points)
        for w in (self.preset, self.n_points, self.seed):
            (w.currentIndexChanged if isinstance(w, QComboBox) else w.valueChanged).connect(self.new_points)
        self.k_spin.valueChanged.connect(self.reset)
        self.init_combo.currentIndexChanged.connect(self.reset)
        self.floor_spin.valueChanged.connect(self.reset)
        self.e_button.clicked.connect(lambda: self._do(self.toy.e_step))
        self.m_button.clicked.connect(lambda: self._do(self.toy.m_step))
        self.back_button.clicked.connect(lambda: self._do(self.toy.back))
        self.reset_button.clicked.connect(self.reset)
        self.play_button.toggled.connect(self.set_playing)
        self.speed.valueChanged.connect(self._speed_changed)
        self.power_box.toggled.connect(self._redraw_encodings)
        self.l2_box.toggled.connect(self._redraw_encodings)
        self.image_seed.valueChanged.connect(self._redraw_encodings)
        self._speed_changed()
        return scroll

    def _build_em_page(self) -> QWidget:
        self.em_plot = ToyPlot("teaching_em", "Where are the Gaussians? 1σ and 2σ ellipses; points coloured by posteriors")
        self.em_plot.clicked.connect(self.add_point)
        self.ll_plot = Figure("teaching_loglik", "Does EM climb? Log-likelihood after each E-step", "E-step", None,
                              "mean log-likelihood", "nats/point")
        self.ll_curve = self.ll_plot.curve(symbol="o")
        page = QWidget()
        h = QHBoxLayout(page)
        h.addWidget(self.em_plot, 3)
        h.addWidget(self.ll_plot, 2)
        return page

    def _build_fv_page(self) -> QWidget:
        self.fv_plot = ToyPlot("teaching_fv", "An image against the model: mean gradients (arrows), σ gradients "
                                              "(circles)")
        self.fv_bars = FVBars("teaching_fv_bars", "The image's Fisher vector (means, then sigmas)")
        self.fv_legend = QLabel("Yellow triangles: the image's points. Arrow at Gaussian k: G_μ,k (in σ units, drawn "
                                f"×{T.ARROW_SCALE:g}σ). Circle: |mean G_σ,k|, red solid = more spread than the Gaussian, blue dotted "
                                "= less.")
        self.fv_legend.setWordWrap(True)
        page = QWidget()
        g = QGridLayout(page)
        g.addWidget(self.fv_plot, 0, 0)
        g.addWidget(self.fv_bars, 0, 1)
        g.addWidget(self.fv_legend, 1, 0, 1, 2)
        g.setColumnStretch(0, 3)
        g.setColumnStretch(1, 2)
        return page

    def _build_pair_page(self) -> QWidget:
        self.pair_plots = [ToyPlot("teaching_pair_a", "Image A: tight, off-centre"),
                           ToyPlot("teaching_pair_b", "Image B: a ring round each mean")]
        self.bow_bars = Bars("teaching_pair_bow", "Bag of words: points per Gaussian (soft-BoV, eq. 34)",
                             "Gaussian", "share of the image's points", None)
        self.pair_fv_bars = Bars("teaching_pair_fv", "Fisher vectors: what the histogram cannot see",
                                 "FV dimension (x, y per Gaussian)", "value", None)
        self.pair_info = QLabel("")
        self.pair_info.setWordWrap(True)
        page = QWidget()
        g = QGridLayout(page)
        g.addWidget(self.pair_plots[0], 0, 0)
        g.addWidget(self.pair_plots[1], 0, 1)
        g.addWidget(self.bow_bars, 1, 0)
        g.addWidget(self.pair_fv_bars, 1, 1)
        g.addWidget(self.pair_info, 2, 0, 1, 2)
        g.setRowStretch(0, 3)
        g.setRowStretch(1, 2)
        return page

    # ------------------------------------------------------------------ transitions
    def new_points(self, *_) -> None:
        pts = T.preset_points(self.preset.currentText(), self.n_points.value(), self.seed.value())
        self._make_toy(pts)

    def reset(self, *_) -> None:
        """Back to the initialisation on the current points (with the current K, init, floor, seed)."""
        self._make_toy(self.toy.points if self.toy is not None else None)

    def _make_toy(self, pts) -> None:
        if pts is None:
            return self.new_points()
        self.set_playing(False)
        try:
            self.toy = T.EMToy(pts, self.k_spin.value(), self.init_combo.currentText(), self.floor_spin.value(),
                               self.seed.value())
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        self.refresh()

    def add_point(self, x: float, y: float) -> None:
        self.set_playing(False)
        self.toy.add_point(x, y)
        self.refresh()

    def _do(self, action) -> None:
        try:
            action()
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        self.refresh()

    def set_playing(self, on: bool) -> None:
        if self.play_button.isChecked() != on:
            self.play_button.setChecked(on)  # re-enters through toggled
            return
        self.play_button.setText("❚❚ Pause" if on else "▶ Play")
        if on:
            self.timer.start()
        else:
            self.timer.stop()

    def _speed_changed(self, *_) -> None:
        self.timer.setInterval(int(1000 / self.speed.value()))
        self.speed_label.setText(f"{self.speed.value()} steps/s")

    def _tick(self) -> None:
        if self.toy.converged and not self.toy.can_m_step or self.toy.state.n_iter >= 500:
            self.set_playing(False)
            return
        self.toy.advance()
        self.refresh()

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        toy = self.toy
        s = toy.state
        K = len(s.weights)
        self.colours = T.colours_for(K)
        self.em_plot.clear_shapes()
        self.em_plot.draw_points(toy.points, T.posterior_colours(s.responsibilities, self.colours, len(toy.points)))
        self.em_plot.draw_gaussians(s, self.colours)
        self.ll_plot.draw_per_iteration(self.ll_curve, s.log_likelihood, "no E-step yet")
        self.m_button.setEnabled(toy.can_m_step)
        self.back_button.setEnabled(toy.can_back)
        self.status.setText(self._status_text())
        self._redraw_encodings()
        self.state_changed.emit()

    def _status_text(self) -> str:
        toy, s = self.toy, self.toy.state
        what = {"init": f"Initialised ({toy.init}, seed {toy.seed}).",
                "e": "E-step done: colours = posteriors γ_t(k) under these Gaussians.",
                "m": "M-step done: w, μ, σ² from the last posteriors (colours are from before)."}[s.phase]
        ll = s.log_likelihood
        curve = ""
        if ll:
            curve = f" Log-likelihood {ll[-1]:.4f} nats/point"
            if len(ll) > 1:
                curve += f" ({ll[-1] - ll[-2]:+.4f})"
            curve += "."
        done = " EM has converged." if toy.converged else ""
        return (f"<b>{len(toy.points)} points, K = {len(s.weights)}, iteration {s.n_iter}.</b> {what}{curve}{done}"
                f" Next: {toy.next_step}-step.")

    def _redraw_encodings(self, *_) -> None:
        """Redraw the encoding page in view (pages 2 and 3 cost more than the EM page: only when shown)."""
        if self.toy is None:
            return
        if self.pages.currentIndex() == 1:
            self._draw_fv_page()
        elif self.pages.currentIndex() == 2:
            self._draw_pair_page()

    def _draw_fv_page(self) -> None:
        toy = self.toy
        img = T.image_points(toy.points, 60, seed=self.image_seed.value())
        self.encoding = T.encode_image(toy.gmm(), img, power=self.power_box.isChecked(), l2=self.l2_box.isChecked())
        faint = T.posterior_colours(None, self.colours, len(toy.points))
        self.fv_plot.clear_shapes()
        self.fv_plot.draw_points(toy.points, faint, alpha=70)
        self.fv_plot.draw_gaussians(toy.state, self.colours, faint=True)
        self.fv_plot.draw_image(img)
        self.fv_plot.draw_glyphs(self.encoding, self.colours)
        self.fv_bars.set_fv(self.encoding, self.colours)

    def _draw_pair_page(self) -> None:
        toy = self.toy
        gmm = toy.gmm()
        power, l2 = self.power_box.isChecked(), self.l2_box.isChecked()
        key = (toy.state, self.image_seed.value())
        try:
            if self.pair is None or self._pair_key[0] is not key[0] or self._pair_key[1] != key[1]:
                self.pair = T.same_histogram_pair(gmm, 80, seed=key[1], power=power, l2=l2)
                self._pair_key = key
            else:  # same points, other normalisation
                self.pair = T.reencode_pair(gmm, self.pair, power=power, l2=l2)
        except ValueError as exc:
            self.pair = None
            self.pair_info.setText(str(exc))
            for p in self.pair_plots:
                p.clear_shapes()
                p.draw_image(None)
            return
        faint = T.posterior_colours(None, self.colours, len(toy.points))
        for p, enc in zip(self.pair_plots, (self.pair.a, self.pair.b)):
            p.clear_shapes()
            p.draw_points(toy.points, faint, alpha=50)
            p.draw_gaussians(toy.state, self.colours, faint=True)
            p.draw_image(enc.points)
            p.draw_glyphs(enc, self.colours)
        names = [f"G{k + 1}" for k in range(len(toy.state.weights))]
        self.bow_bars.set_series(names, [self.pair.a.soft_bow, self.pair.b.soft_bow], ["image A", "image B"])
        self.pair_fv_bars.set_series(self.pair.a.labels, [self.pair.a.fv, self.pair.b.fv], ["image A", "image B"])
        fv_ticks(self.pair_fv_bars.getPlotItem().getAxis("bottom"), len(names))
        self.bow_bars.getPlotItem().setYRange(0, 1.3 * max(1e-9, float(self.pair.a.soft_bow.max())), padding=0)
        top = float(max(np.abs(self.pair.a.fv).max(), np.abs(self.pair.b.fv).max()))
        self.pair_fv_bars.getPlotItem().setYRange(-1.1 * top, 1.5 * top, padding=0)
        d_bow, d_fv = T.fv_distance(self.pair)
        self.pair_info.setText(f"Both images put {', '.join(map(str, self.pair.counts))} points on Gaussians "
                               f"{', '.join(str(k + 1) for k in self.pair.gaussians)}, each taken whole (posterior 1 "
                               f"after thresholding at θ = {T.PAIR_THRESHOLD:g}): ‖BoV_A − BoV_B‖ = {d_bow:.3g}, ‖FV_A − FV_B‖ = {d_fv:.3f}. "
                               f"A linear classifier on histograms sees one image; on FVs, two (Sec. 2.5).")
