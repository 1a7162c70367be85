"""Diagnostics panel: the paper's look-inside figures for the current vocabulary and encodings.

Four figures, each answering one question; their arrays come from
:func:`fvstudio.pipeline.diagnostics.compute_diagnostics` (see there what each one is), nothing is computed
here:

- *How peaky are the soft assignments?* CDF of each descriptor's largest posterior gamma_t(k) (Fig. 2);
- *Which Gaussians carry the Fisher Vector's energy?* share of the squared FV norm per Gaussian, sorted;
- *Has EM converged?* mean log-likelihood per EM iteration (drawn live from the progress values while the
  GMM step runs), its second title line saying whether EM stopped on the tolerance or at the iteration cap;
- *How much variance does PCA keep?* explained-variance ratio per component and cumulative (Sec. 3.2, Fig. 1).

The panel owns its background task (:class:`~fvstudio.gui.workers.BackgroundTask`): :meth:`refresh` reads
the figures from a pipeline built in the worker thread; a new refresh cancels the previous one, and
``updated(Diagnostics)`` tells when new figures are drawn.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from fvstudio.pipeline.diagnostics import Diagnostics, compute_diagnostics

from .plots import Figure, series_colors
from .workers import BackgroundTask


def _diagnostics_job(make_pipeline: Callable, progress=None, cancel=None) -> Diagnostics:
    return compute_diagnostics(make_pipeline(), progress=progress, cancel=cancel)


class DiagnosticsPanel(QWidget):
    updated = Signal(object)  # the Diagnostics just drawn

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:diagnostics")
        self.task = BackgroundTask(self)
        self.task.succeeded.connect(lambda _label, data: self.set_diagnostics(data))
        self.sharpness = Figure("posterior_sharpness",
                                "How peaky are the soft assignments? CDF of the largest posterior (Fig. 2)",
                                "largest posterior max_k γ_t(k)", None, "fraction of descriptors", "%")
        self.sharp_curve = self.sharpness.curve()
        self.energy = Figure("fv_energy", "Which Gaussians carry the FV's energy? Share per Gaussian, sorted",
                             "Gaussian (rank by share)", None, "share of squared FV norm", "%")
        self.energy_curve = self.energy.curve(series_colors(2)[1], symbol=None)
        self.energy_curve.setFillLevel(0)
        fill = series_colors(2)[1]
        fill.setAlpha(70)
        self.energy_curve.setBrush(fill)
        self.loglik = Figure("gmm_log_likelihood", "Has EM converged? GMM log-likelihood per iteration",
                             "EM iteration", None, "mean log-likelihood", "nats/descriptor")
        self.ll_curve = self.loglik.curve(symbol="o")
        self.pca = Figure("pca_explained_variance", "How much variance does PCA keep? Per component and cumulative",
                          "principal component", None, "explained variance", "%")
        self.pca_cum = self.pca.curve(series_colors(1)[0], name="cumulative")
        self.pca_each = self.pca.curve(series_colors(2)[1], name="per component", symbol="o", width=1)
        leg = self.pca.legend()
        leg.addItem(self.pca_cum, "cumulative")
        leg.addItem(self.pca_each, "per component")
        self.note = QLabel("Diagnostics appear after a run (they read the cached PCA, GMM and encodings).")
        self.note.setWordWrap(True)
        grid = QGridLayout()
        grid.addWidget(self.sharpness, 0, 0)
        grid.addWidget(self.energy, 0, 1)
        grid.addWidget(self.loglik, 1, 0)
        grid.addWidget(self.pca, 1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addWidget(self.note)
        self.note.setAlignment(Qt.AlignmentFlag.AlignLeft)

    def figures(self) -> List[Figure]:
        return [self.sharpness, self.energy, self.loglik, self.pca]

    # ---------------------------------------------------------------- background task
    def refresh(self, make_pipeline: Callable) -> None:
        """Recompute the figures from ``make_pipeline()``'s cached artifacts (cancels a refresh under way)."""
        self.task.start("diagnostics", _diagnostics_job, make_pipeline)

    def cancel(self) -> None:
        self.task.cancel()

    # ---------------------------------------------------------------- live
    def show_log_likelihood(self, values: Sequence[float], stop: str = "") -> None:
        """The EM curve; ``stop`` says how the fit ended ('' while it runs or when not known)."""
        self.loglik.draw_per_iteration(self.ll_curve, values, "no GMM fitted yet")
        self.loglik.set_note(stop)

    # ---------------------------------------------------------------- results
    def clear(self) -> None:
        for c in (self.sharp_curve, self.energy_curve, self.pca_cum, self.pca_each):
            c.setData([], [])
        for f in (self.sharpness, self.energy, self.pca):
            f.set_placeholder("no data yet")
        self.show_log_likelihood([])

    def set_diagnostics(self, d: Diagnostics) -> None:
        if d.posterior_sharpness is not None:
            self.sharp_curve.setData(d.posterior_sharpness.max_posterior, 100 * d.posterior_sharpness.cdf)
            self.sharpness.getPlotItem().setRange(xRange=(0, 1), yRange=(0, 100), padding=0.02)
            self.sharpness.set_placeholder("")
        if d.fv_energy is not None:
            e = np.sort(d.fv_energy)[::-1]
            total = e.sum()
            share = 100 * e / total if total > 0 else e
            self.energy_curve.setData(np.arange(1, len(e) + 1), share)
            self.energy.set_placeholder("")
        if d.log_likelihood is not None and len(d.log_likelihood):
            self.show_log_likelihood(d.log_likelihood, d.em_stop or "")
        if d.pca_explained_variance_ratio is not None:
            r = d.pca_explained_variance_ratio
            k = np.arange(1, len(r) + 1)
            self.pca_cum.setData(k, 100 * np.cumsum(r))
            self.pca_each.setData(k, 100 * r)
            self.pca.getPlotItem().setYRange(0, 100, padding=0.02)
            self.pca.set_placeholder("")
        self.note.setText(" ".join(["From the cached artifacts of the current config."] + d.notes))
        self.updated.emit(d)
