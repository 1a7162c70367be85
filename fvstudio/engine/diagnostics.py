"""The paper's diagnostic figures as arrays (arrays in, arrays out; the GUI only plots them).

- :func:`posterior_sharpness` (Fig. 2): for every descriptor the largest posterior
  gamma*_t = max_k gamma_t(k) (eq. 15, after thresholding at theta and renormalising, Appendix B),
  sorted ascending, with its empirical CDF F(v) = #{t : gamma*_t <= v} / N, the fraction of
  descriptors with gamma*_t >= 0.5 (the paper reports > 70% on VOC07 SIFT with K = 256) and the mean
  number of Gaussians with a non-zero posterior (5-10 of 256 in the paper). Posteriors come from the
  shared E-step (``posteriors.accumulate_statistics``).
- :func:`fv_energy_per_gaussian`: for encoded vectors z (one row per image), the share of the squared
  norm carried by each Gaussian, E_k = sum_{i in dims of Gaussian k} z_i^2 / sum_i z_i^2, summed over
  the blocks (w, m, s) and pyramid regions of the encoder's layout, averaged over images. Shares sum
  to 1; images with an all-zero vector are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .defaults import POSTERIOR_THRESHOLD
from .gmm import check_fitted_gmm
from .posteriors import _accumulate_statistics
from .validation import _check_posterior_threshold, as_float32_matrix

__all__ = ["PosteriorSharpness", "posterior_sharpness", "fv_energy_per_gaussian"]


@dataclass
class PosteriorSharpness:
    """Fig. 2 data: ``max_posterior`` (N,) float32 sorted ascending, ``cdf`` (N,) float64 with
    cdf[i] = fraction of descriptors whose max posterior is <= max_posterior[i],
    ``fraction_above_half`` = fraction with max posterior >= 0.5, ``mean_active`` = mean number of
    Gaussians with a non-zero posterior per descriptor."""

    max_posterior: np.ndarray
    cdf: np.ndarray
    fraction_above_half: float
    mean_active: float


def posterior_sharpness(descriptors, gmm, threshold: float = POSTERIOR_THRESHOLD) -> PosteriorSharpness:
    """Sorted max posteriors of ``descriptors`` ((N, D) array or a list of them) under ``gmm``."""
    if isinstance(descriptors, (list, tuple)):
        if not descriptors:
            raise ValueError("descriptors is an empty list")
        descriptors = np.concatenate([np.asarray(d) for d in descriptors], axis=0)
    terms = check_fitted_gmm(gmm).terms
    X = as_float32_matrix(descriptors, "descriptors", n_features=terms.n_features, allow_empty=False)
    threshold = _check_posterior_threshold(threshold, "threshold")
    st = _accumulate_statistics(X, terms, threshold, moments=False)
    gmax = np.sort(st.max_posterior)
    N = len(gmax)
    # F(v) counts ties: the last index holding each value gives the fraction <= v
    cdf = np.searchsorted(gmax, gmax, side="right") / N
    return PosteriorSharpness(gmax, cdf.astype(np.float64), float((gmax >= 0.5).mean()),
                              float(st.n_active.mean()))


def fv_energy_per_gaussian(fvs, encoder) -> np.ndarray:
    """(K,) share of the squared norm of ``fvs`` ((N, dim) or (dim,)) per Gaussian, averaged over images."""
    Z = np.asarray(fvs, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[None]
    if Z.ndim != 2 or Z.shape[1] != encoder.dim:
        raise ValueError(f"fvs must have shape (N, {encoder.dim}) for this encoder, got {np.shape(fvs)}")
    if not np.isfinite(Z).all():
        raise ValueError("fvs contains NaN or infinite values")
    K = encoder.n_components
    E = np.zeros((Z.shape[0], K))
    sq = Z * Z
    for block in encoder.block_layout():
        part = sq[:, block.offset:block.stop].reshape(Z.shape[0], K, block.per_component)
        E += part.sum(2)
    tot = E.sum(1)
    keep = tot > 0
    if not keep.any():
        return np.zeros(K)
    return (E[keep] / tot[keep, None]).mean(0)
