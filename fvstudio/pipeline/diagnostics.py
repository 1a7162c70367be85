"""The data of every figure the explorer draws beyond the results: computed from a :class:`Pipeline`, no Qt.

The explorer only plots what these functions return, so each figure's numbers are also one call away
from a script:

- :func:`compute_diagnostics` -> :class:`Diagnostics`, the four figures of the Diagnostics panel, from the
  cached artifacts of the pipeline's current config, for its first split (each split learns its own
  vocabulary):

  * *How peaky are the soft assignments?* (the paper's Fig. 2): ``posterior_sharpness``, the sorted largest
    posterior max_k gamma_t(k) of :data:`POSTERIOR_SAMPLE` descriptors drawn (seed 0) from the split's
    training images, PCA-projected, under the fitted GMM with ``encoder.posterior_threshold``
    (:func:`fvstudio.engine.diagnostics.posterior_sharpness`), and its CDF;
  * *Which Gaussians carry the FV's energy?*: ``fv_energy``, the share of the squared FV norm per Gaussian
    averaged over the first :data:`ENERGY_IMAGES` encoded images
    (:func:`fvstudio.engine.diagnostics.fv_energy_per_gaussian`);
  * *Has EM converged?*: ``log_likelihood``, the GMM's mean log-likelihood per EM iteration
    (``DiagonalGMM.log_likelihood_``, nats per descriptor), and ``em_stop``, why EM stopped
    (:func:`em_stop_text`: on the tolerance or at the iteration cap);
  * *How much variance does PCA keep?*: ``pca_explained_variance_ratio`` (``PCA.explained_variance_ratio_``,
    Sec. 3.2 / Fig. 1).

  A figure whose artifact is not computed for the current config is None.
- :func:`unreadable_images` -> (unreadable, total) images among those the descriptors step extracts
  (``Pipeline.needed_indices()``), from the descriptor store.
- :func:`patch_grid` -> :class:`PatchGrid`, the dense grid's frame centres and patch sides on an image of a
  given size for the config's ``descriptors.*`` grid (no descriptor is computed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..engine.diagnostics import PosteriorSharpness, fv_energy_per_gaussian, posterior_sharpness
from ..engine.progress import check_cancel, report

__all__ = ["Diagnostics", "compute_diagnostics", "em_stop_text", "unreadable_images", "PatchGrid", "patch_grid",
           "POSTERIOR_SAMPLE", "ENERGY_IMAGES"]

#: Descriptors sampled (seed 0) from the first split's training images for the posterior-sharpness figure.
POSTERIOR_SAMPLE = 20_000
#: Encoded images (the first ones of the first split) averaged in the FV-energy figure.
ENERGY_IMAGES = 500


@dataclass
class Diagnostics:
    """Arrays of the four diagnostics figures (None: that step is not computed for the current config)."""

    pca_explained_variance_ratio: Optional[np.ndarray] = None  # (k,) float64, fraction per component
    log_likelihood: Optional[np.ndarray] = None  # (n_iter,) float64, mean log-likelihood per EM iteration
    posterior_sharpness: Optional[PosteriorSharpness] = None  # sorted max posteriors and their CDF
    fv_energy: Optional[np.ndarray] = None  # (K,) float64, share of the squared FV norm per Gaussian
    em_stop: Optional[str] = None  # why EM stopped, e.g. "converged (tol 0.0001) after 23 iterations"
    notes: List[str] = field(default_factory=list)  # sentences for the reader (split shown, Fig. 2 summary)


def em_stop_text(gmm) -> str:
    """Why the fit of ``gmm`` (a fitted ``DiagonalGMM``) stopped, in words: "converged (tol T) after N
    iterations" or "stopped at the iteration cap N (tol T not reached)" (``DiagonalGMM.stop_reason_``)."""
    reason, n, tol = gmm.stop_reason_, int(gmm.n_iter_), float(gmm.tol)
    if reason == "tol":
        return f"converged (tol {tol:g}) after {n} iteration{'s' if n != 1 else ''}"
    if reason == "max_iter":
        return f"stopped at the iteration cap {n} (tol {tol:g} not reached)"
    return "no EM iteration ran (max_iter = 0)"


def _sharpness(pipeline, store, pca, gmm, cancel) -> PosteriorSharpness:
    # the descriptors the vocabulary learned from (all a streaming store keeps of the training images)
    vocab = pipeline.context().vocab_indices(0)
    xy = pipeline.config.get("gmm.position_scale")
    X = store.sample(POSTERIOR_SAMPLE, seed=0, indices=vocab,
                     rows_per_image=pipeline.config.get("descriptors.vocab_rows"), with_xy=bool(xy))
    coords = None
    if xy:
        X, coords = X
    if pca is not None:
        X = pca.transform(X)
    if coords is not None:  # the GMM models descriptor + position (gmm.position_scale)
        X = np.concatenate([X, coords * np.float32(xy)], axis=1)
    check_cancel(cancel, "diagnostics")
    threshold = float(pipeline.config.get("encoder.posterior_threshold"))
    return posterior_sharpness(np.ascontiguousarray(X, dtype=np.float32), gmm, threshold)


def _sharpness_note(sharp: PosteriorSharpness, n_components: int) -> str:
    return (f"{100 * sharp.fraction_above_half:.0f}% of {len(sharp.max_posterior):,} sampled descriptors have a "
            f"largest posterior >= 0.5; {sharp.mean_active:.1f} of {n_components} Gaussians active per descriptor "
            f"on average (paper, VOC07: > 70%, 5-10 of 256)")


def compute_diagnostics(pipeline, progress=None, cancel=None) -> Diagnostics:
    """The four diagnostics figures' arrays from ``pipeline``'s cached artifacts (first split, first channel)."""
    out = Diagnostics()
    n_splits = len(pipeline.splits)
    if n_splits > 1:
        out.notes.append(f"Split 1 of {n_splits}: each split learns its own PCA and GMM from its training "
                         f"images; these figures are the first split's.")
    report(progress, 0, 4, "diagnostics: PCA", step="diagnostics")
    pca = pipeline.artifact("pca")
    if pca is not None:
        out.pca_explained_variance_ratio = np.asarray(pca.explained_variance_ratio_, dtype=float)
    check_cancel(cancel, "diagnostics")
    gmm = pipeline.artifact("gmm")
    if gmm is not None:
        out.log_likelihood = np.asarray(gmm.log_likelihood_, dtype=float)
        out.em_stop = em_stop_text(gmm)
    report(progress, 1, 4, "diagnostics: posterior sharpness", step="diagnostics")
    store = pipeline.artifact("descriptors")
    if gmm is not None and store is not None:
        out.posterior_sharpness = _sharpness(pipeline, store, pca, gmm, cancel)
        out.notes.append(_sharpness_note(out.posterior_sharpness, len(gmm.weights_)))
    check_cancel(cancel, "diagnostics")
    report(progress, 2, 4, "diagnostics: FV energy", step="diagnostics")
    enc = pipeline.artifact("encode")
    if enc is not None:
        fvs = np.asarray(enc.fvs[:ENERGY_IMAGES], dtype=np.float32)
        out.fv_energy = np.asarray(fv_energy_per_gaussian(fvs, enc.encoder), dtype=float)
    report(progress, 4, 4, "diagnostics: done", step="diagnostics")
    return out


def unreadable_images(pipeline) -> Tuple[List[Dict[str, Any]], int]:
    """(rows, total): the images left out of training and testing because they give no descriptor (each
    row: id, reason, role "train"/"test"), among the ``total`` images the descriptors step extracts.
    Images not extracted yet are not listed (the store cannot tell yet)."""
    ctx = pipeline.context()
    return ctx.left_out_report(), len(ctx.needed_indices())


@dataclass
class PatchGrid:
    """The dense grid on one image: frame centres (x, y) and patch sides, in input pixels (T frames)."""

    positions: np.ndarray  # (T, 2) float32
    sizes: np.ndarray  # (T,) float32, one value per scale (ascending with the scale)

    @property
    def scale_sides(self) -> np.ndarray:
        """The patch side of each scale present on this image, finest first."""
        return np.unique(self.sizes)

    def at_scale(self, scale: int) -> Tuple[np.ndarray, float]:
        """(positions (n, 2), patch side) of the frames of ``scale`` (0 = finest; clipped to the last)."""
        sides = self.scale_sides
        side = sides[min(int(scale), len(sides) - 1)]
        return self.positions[self.sizes == side], float(side)


def patch_grid(config, image_shape) -> PatchGrid:
    """The frames the descriptors step takes on an image of ``image_shape`` (H, W) at the config's grid
    (``descriptors.patch``, ``step``, ``scales``, ``scale_factor``); the image is already at descriptor
    resolution (``dataset.max_pixels``)."""
    from ..engine.descriptors import dense_frames

    positions, sizes = dense_frames(image_shape, patch=config.get("descriptors.patch"),
                                    step=config.get("descriptors.step"), scales=config.get("descriptors.scales"),
                                    scale_factor=config.get("descriptors.scale_factor"))
    return PatchGrid(positions, sizes)
