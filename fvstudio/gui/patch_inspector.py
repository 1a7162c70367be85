"""The patch inspector pane of the Dataset panel (issue #12, section 3): one clicked patch, looked at through
the pipeline's cached artifacts.

Everything shown comes from :func:`fvstudio.pipeline.inspector.inspect_patch` (see there what each number
is); it runs in the pane's own :class:`~fvstudio.gui.workers.BackgroundTask` (scanning the split's images
for the patches a Gaussian claims most strongly takes seconds on a K = 256 vocabulary), a new click
supersedes the previous one. The pane draws:

- the patch's SIFT descriptor as the usual glyph (4 x 4 cells, 8 orientation bins each) beside its LCS
  cells' mean colours (:class:`GlyphView`);
- its ten largest posteriors as bars, with how many survive the threshold;
- per Gaussian it touches, that Gaussian's share of the image's FV energy and the patch's share of it;
- the patches of other images its visual word claims most strongly (a grid of crops);
- the classifier's evidence (predicted class, score, the Gaussians pushing it most).

The overlays on the image (same visual word, class evidence heat map) are drawn by the Dataset panel's
image view from ``inspection`` (``overlay`` tells which one is chosen).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from PySide6.QtCore import QLineF, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from fvstudio.pipeline.inspector import PatchInspection, glyph_segments, inspect_patch

from .plots import Bars
from .workers import BackgroundTask

OVERLAYS = ("same visual word", "class evidence", "none")


def _inspect_job(make_pipeline: Callable, index: int, x: float, y: float, scale: int, progress=None, cancel=None):
    return inspect_patch(make_pipeline(), index, x, y, scale, progress=progress, cancel=cancel)


class GlyphView(QWidget):
    """The patch's LCS cells (mean colours) and its SIFT glyph, side by side, each 4 x 4 cells."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.sift: Optional[np.ndarray] = None
        self.colours: Optional[np.ndarray] = None
        self.setMinimumSize(250, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(300, 150)

    def set_data(self, sift: Optional[np.ndarray], colours: Optional[np.ndarray]) -> None:
        self.sift, self.colours = sift, colours
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        box = min(self.height() - 18, (self.width() - 30) / 2)
        cell = box / 4
        top = 16
        p.setPen(text)
        p.drawText(QRectF(0, 0, box, 14), Qt.AlignmentFlag.AlignCenter, "LCS cell colours")
        p.drawText(QRectF(box + 20, 0, box, 14), Qt.AlignmentFlag.AlignCenter, "SIFT 4×4 × 8 bins")
        grid = QPen(pal.color(QPalette.ColorRole.Mid), 1)
        if self.colours is not None:
            for by in range(4):
                for bx in range(4):
                    r, g, b = (int(round(255 * v)) for v in self.colours[by, bx])
                    p.fillRect(QRectF(bx * cell, top + by * cell, cell, cell), QColor(r, g, b))
        p.setPen(grid)
        for k in range(5):
            for x0 in (0.0, box + 20):
                p.drawLine(QLineF(x0 + k * cell, top, x0 + k * cell, top + box))
                p.drawLine(QLineF(x0, top + k * cell, x0 + box, top + k * cell))
        if self.sift is not None:
            p.setPen(QPen(pal.color(QPalette.ColorRole.Highlight), max(1.5, cell / 18)))
            for (x0, y0), (x1, y1) in glyph_segments(self.sift, cell):
                p.drawLine(QLineF(QPointF(box + 20 + x0, top + y0), QPointF(box + 20 + x1, top + y1)))
        p.end()


class PatchInspector(QWidget):
    """The inspector pane; ``inspected(PatchInspection)`` when a patch's data are in."""

    inspected = Signal(object)
    overlay_changed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("patch_inspector")
        self.task = BackgroundTask(self)
        self.task.succeeded.connect(lambda _label, ins: self.show_inspection(ins))
        self.task.failed.connect(lambda _label, message, _tb: self.header.setText(f"Inspection failed: {message}"))
        self.task.progressed.connect(lambda _label, p: self.header.setText(p.message))
        self.inspection: Optional[PatchInspection] = None
        self.header = QLabel("Turn on Patch grid and click a patch of the image to inspect it.")
        self.header.setWordWrap(True)
        self.glyph = GlyphView()
        self.posterior_bars = Bars("patch_posteriors", "Which Gaussians take it? Top posteriors",
                                   "Gaussian", "posterior γ_t(k)", None)
        self.energy_bars = Bars("patch_fv_energy", "Its share of the image's FV energy, per Gaussian",
                                "Gaussian (its own share of the image's FV energy)", "share", "%")
        for f in (self.posterior_bars, self.energy_bars):
            f.setMinimumHeight(120)
        self.overlay = QComboBox()
        self.overlay.addItems(list(OVERLAYS))
        self.overlay.setToolTip("What the image shows over its patches: the patches of the same visual word, or "
                                "the classifier's evidence (red pushes the predicted class, blue against)")
        self.overlay.currentTextChanged.connect(self.overlay_changed)
        self.claimed_title = QLabel("")
        self.claimed_grid = QGridLayout()
        self.claimed_grid.setSpacing(3)
        self.claimed_labels = []
        for k in range(12):
            lab = QLabel()
            lab.setFixedSize(50, 50)
            self.claimed_labels.append(lab)
            self.claimed_grid.addWidget(lab, k // 6, k % 6)
        self.evidence = QLabel("")
        self.evidence.setWordWrap(True)
        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Overlay:"))
        row.addWidget(self.overlay, 1)
        v = QVBoxLayout(self)
        v.setContentsMargins(0, 0, 0, 0)
        v.addWidget(self.header)
        v.addWidget(self.glyph)
        v.addWidget(self.posterior_bars, 1)
        v.addWidget(self.energy_bars, 1)
        v.addLayout(row)
        v.addWidget(self.claimed_title)
        v.addLayout(self.claimed_grid)
        v.addWidget(self.evidence)
        v.addWidget(self.notes)

    def overlay_mode(self) -> str:
        return self.overlay.currentText()

    # ---------------------------------------------------------------- background task
    def inspect(self, make_pipeline: Callable, index: int, x: float, y: float, scale: int) -> None:
        """Inspect the patch of ``scale`` nearest to (x, y) of image ``index`` (cancels an inspection under way)."""
        self.header.setText(f"Inspecting the patch at ({x:.0f}, {y:.0f})…")
        self.task.start("patch inspector", _inspect_job, make_pipeline, int(index), float(x), float(y), int(scale))

    def idle(self) -> bool:
        return not self.task.is_busy()

    # ---------------------------------------------------------------- drawing
    def show_inspection(self, ins: PatchInspection) -> None:
        self.inspection = ins
        x, y = ins.position
        head = f"<b>{ins.image_id}</b>: patch {ins.patch} at ({x:.0f}, {y:.0f}), {ins.side:.0f} px ({ins.channel})"
        if ins.posteriors is not None:
            head += (f"<br>visual word <b>G{ins.word + 1}</b>; {ins.n_nonzero} of {len(ins.posteriors)} posteriors "
                     f"non-zero after thresholding at θ = {ins.threshold:g}; "
                     f"{int(ins.same_word.sum())} of {len(ins.same_word)} patches (all scales) share the word "
                     f"(yellow: those of this scale)")
        self.header.setText(head)
        self.glyph.set_data(ins.sift, ins.cell_colours)
        if ins.posteriors is not None:
            self.posterior_bars.set_series([f"G{k + 1}" for k in ins.top], [ins.posteriors[ins.top]])
            self.posterior_bars.getPlotItem().setYRange(0, 1, padding=0.02)
            order = np.argsort(-ins.gaussian_energy)[:10] if ins.gaussian_energy is not None else []
            if len(order):
                self.energy_bars.set_series([f"G{ins.touched[k] + 1} ({100 * ins.gaussian_energy[k]:.0f}%)"
                                             for k in order], [100 * ins.image_share[order]])
        else:
            for f in (self.posterior_bars, self.energy_bars):
                f.set_series([], [])
                f.set_placeholder("needs the GMM (run the pipeline)")
        for k, lab in enumerate(self.claimed_labels):
            if k < len(ins.claimed):
                c = ins.claimed[k]
                from .dataset_panel import rgb_to_qimage

                lab.setPixmap(QPixmap.fromImage(rgb_to_qimage(c.crop)).scaled(
                    48, 48, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
                lab.setToolTip(f"{c.image_id}\nat ({c.position[0]:.0f}, {c.position[1]:.0f}), {c.side:.0f} px\n"
                               f"posterior {c.posterior:.3f}")
            else:
                lab.clear()
                lab.setToolTip("")
        self.claimed_title.setText(f"Patches of other images that G{ins.word + 1} claims most strongly:"
                                   if ins.claimed else "")
        ev = ins.evidence
        if ev is not None:
            top = np.argsort(-ev.per_gaussian)[:3]
            low = np.argsort(ev.per_gaussian)[:2]
            self.evidence.setText(
                f"Classifier: predicted <b>{ev.class_name}</b>, score {ev.score:+.3f} (bias {ev.intercept:+.3f}). "
                f"Pushing most: {', '.join(f'G{k + 1} ({ev.per_gaussian[k]:+.3f})' for k in top)}; against: "
                f"{', '.join(f'G{k + 1} ({ev.per_gaussian[k]:+.3f})' for k in low)}. Heat map (Overlay: class "
                f"evidence): red pushes {ev.class_name}, blue against.")
        else:
            self.evidence.setText("")
        self.notes.setText("<br>".join(ins.notes))
        self.inspected.emit(ins)
