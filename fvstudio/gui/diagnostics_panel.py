"""Diagnostics panel: the paper's look-inside figures for the current vocabulary and encodings.

Four figures, each answering one question (values from the pipeline's cached artifacts and
:mod:`fvstudio.engine.diagnostics`; nothing is computed here):

- *How peaky are the soft assignments?* CDF of each descriptor's largest posterior gamma_t(k)
  (the paper's Fig. 2, ``diagnostics.posterior_sharpness`` on a descriptor sample of the training images,
  PCA-projected, against the fitted GMM);
- *Which Gaussians carry the Fisher Vector's energy?* share of the squared FV norm per Gaussian, sorted
  (``diagnostics.fv_energy_per_gaussian`` on the encoded images);
- *Has EM converged?* mean log-likelihood per EM iteration (``DiagonalGMM.log_likelihood_``; drawn live
  from the progress values while the GMM step runs);
- *How much variance does PCA keep?* explained-variance ratio per component and cumulative
  (``PCA.explained_variance_ratio_``, Sec. 3.2 / Fig. 1).

:func:`compute_diagnostics` runs in the shared job runner after a run and returns plain arrays.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from fvstudio.engine.progress import check_cancel, report

from .plots import Figure, series_colors

_SAMPLE = 20_000


def _first_array(obj: Any, *names: str) -> Optional[np.ndarray]:
    if obj is None:
        return None
    if isinstance(obj, np.ndarray):
        return obj
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return np.asarray(v)
    return None


def compute_diagnostics(pipeline, progress=None, cancel=None) -> Dict[str, Any]:
    """Arrays for the four figures from the pipeline's cached artifacts (missing ones are left out)."""
    out: Dict[str, Any] = {"notes": []}
    n_splits = len(pipeline.splits)
    if n_splits > 1:
        out["notes"].append(f"Split 1 of {n_splits}: each split learns its own PCA and GMM from its training "
                            f"images; these figures are the first split's.")
    report(progress, 0, 4, "diagnostics: PCA", step="diagnostics")
    pca = pipeline.artifact("pca")
    if pca is not None and getattr(pca, "explained_variance_ratio_", None) is not None:
        out["pca_ratio"] = np.asarray(pca.explained_variance_ratio_, dtype=float)
    check_cancel(cancel, "diagnostics")
    gmm = pipeline.artifact("gmm")
    if gmm is not None:
        out["log_likelihood"] = np.asarray(getattr(gmm, "log_likelihood_", []) or [], dtype=float)
    try:
        from fvstudio.engine import diagnostics
    except ImportError:
        out["notes"].append("fvstudio.engine.diagnostics is not available")
        return out
    report(progress, 1, 4, "diagnostics: posterior sharpness", step="diagnostics")
    store = pipeline.artifact("descriptors")
    if gmm is not None and store is not None and hasattr(diagnostics, "posterior_sharpness"):
        train = np.unique(np.asarray(pipeline.splits[0].train, dtype=np.int64))
        X = store.sample(_SAMPLE, seed=0, indices=train)
        if pca is not None:
            X = pca.transform(X)
        check_cancel(cancel, "diagnostics")
        threshold = float(pipeline.config.get("encoder.posterior_threshold"))
        sharp = diagnostics.posterior_sharpness(np.ascontiguousarray(X, dtype=np.float32), gmm, threshold)
        values = _first_array(sharp, "max_posterior", "sorted_max_posterior", "values", "x")
        cdf = _first_array(sharp, "cdf", "fraction", "y")
        if isinstance(sharp, tuple) and len(sharp) >= 2:
            values, cdf = np.asarray(sharp[0]), np.asarray(sharp[1])
        if values is not None:
            values = np.sort(np.asarray(values, dtype=float).ravel())
            if cdf is None or len(cdf) != len(values):
                cdf = np.arange(1, len(values) + 1) / len(values)
            out["sharpness"] = (values, np.asarray(cdf, dtype=float))
            frac = getattr(sharp, "fraction_above_half", None)
            active = getattr(sharp, "mean_active", None)
            if frac is not None and active is not None:
                out["notes"].append(f"{100 * float(frac):.0f}% of {len(values):,} sampled descriptors have a "
                                    f"largest posterior >= 0.5; {float(active):.1f} of "
                                    f"{len(getattr(gmm, 'weights_', []))} Gaussians active per descriptor "
                                    f"on average (paper, VOC07: > 70%, 5-10 of 256)")
    check_cancel(cancel, "diagnostics")
    report(progress, 2, 4, "diagnostics: FV energy", step="diagnostics")
    enc = pipeline.artifact("encode")
    if enc is not None and hasattr(diagnostics, "fv_energy_per_gaussian"):
        fvs = np.asarray(enc.fvs[: min(len(enc.fvs), 500)], dtype=np.float32)
        energy = diagnostics.fv_energy_per_gaussian(fvs, enc.encoder)
        e = _first_array(energy, "share", "energy", "per_gaussian")
        if e is not None:
            e = np.asarray(e, dtype=float)
            if e.ndim > 1:  # per image -> mean over images
                e = e.reshape(-1, e.shape[-1]).mean(axis=0)
            out["energy"] = e
    report(progress, 4, 4, "diagnostics: done", step="diagnostics")
    return out


class DiagnosticsPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:diagnostics")
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
        self._ll: List[float] = []
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

    # ---------------------------------------------------------------- live
    def reset_log_likelihood(self, values=None) -> None:
        self._ll = [float(v) for v in (values if values is not None else [])]
        self._draw_ll()

    def add_log_likelihood(self, value: float) -> None:
        self._ll.append(float(value))
        self._draw_ll()

    def _draw_ll(self) -> None:
        y = np.asarray(self._ll, dtype=float)
        self.ll_curve.setData(np.arange(1, len(y) + 1), y)
        self.loglik.set_placeholder("" if len(y) else "no GMM fitted yet")

    # ---------------------------------------------------------------- results
    def clear(self) -> None:
        for c in (self.sharp_curve, self.energy_curve, self.pca_cum, self.pca_each):
            c.setData([], [])
        for f in (self.sharpness, self.energy, self.pca):
            f.set_placeholder("no data yet")
        self.reset_log_likelihood()

    def set_diagnostics(self, d: Dict[str, Any]) -> None:
        if "sharpness" in d:
            v, cdf = d["sharpness"]
            self.sharp_curve.setData(v, 100 * cdf)
            self.sharpness.getPlotItem().setRange(xRange=(0, 1), yRange=(0, 100), padding=0.02)
            self.sharpness.set_placeholder("")
        if "energy" in d:
            e = np.sort(np.asarray(d["energy"], dtype=float))[::-1]
            total = e.sum()
            share = 100 * e / total if total > 0 else e
            self.energy_curve.setData(np.arange(1, len(e) + 1), share)
            self.energy.set_placeholder("")
        if "log_likelihood" in d and len(d["log_likelihood"]):
            self.reset_log_likelihood(d["log_likelihood"])
        if "pca_ratio" in d:
            r = np.asarray(d["pca_ratio"], dtype=float)
            k = np.arange(1, len(r) + 1)
            self.pca_cum.setData(k, 100 * np.cumsum(r))
            self.pca_each.setData(k, 100 * r)
            self.pca.getPlotItem().setYRange(0, 100, padding=0.02)
            self.pca.set_placeholder("")
        notes = ["From the cached artifacts of the current config."] + list(d.get("notes", []))
        self.note.setText(" ".join(notes))
