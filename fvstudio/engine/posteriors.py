"""The E-step shared by the GMM (EM) and the encoders (FV, soft-BoV): posteriors and statistics.

For a diagonal GMM with weights w_k, means mu_k and variances s_k = sigma_k^2 (eq. 79, Appendix B):

    log(w_k u_k(x)) = c_k + sum_d [ x'_d mu'_kd / s_kd - x'_d^2 / (2 s_kd) ]
    c_k = log w_k - 1/2 sum_d [ log(2 pi) + log s_kd + mu'_kd^2 / s_kd ]

where x' = x - o and mu' = mu - o for a reference point o (the weighted mean of the means): shifting
both sides leaves the value unchanged but keeps float32 cancellation small. All K log-joints of a
block of descriptors are therefore ONE matrix product of Z = [x', x'^2] (N, 2D) with the stacked
parameters P = [mu'/s ; -1/(2s)] (2D, K), plus c. A fused numba pass then takes, per descriptor,

    log u(x) = logsumexp_k log(w_k u_k(x))                   (log-domain, Appendix B)
    gamma(k) = exp(log(w_k u_k(x)) - log u(x))               (eq. 15)
    gamma(k) <- 0 if gamma(k) < theta, then renormalise       (posterior thresholding, Appendix B)

and accumulates, for each region slot r the descriptor belongs to, the *Gaussian-centred* statistics

    A[r, k]    = sum_t gamma_t(k)
    B[r, k, :] = sum_t gamma_t(k) (x_t - mu_k) / sigma_k
    C[r, k, :] = sum_t gamma_t(k) (x_t - mu_k)^2 / sigma_k^2

in float64. From these the FV is G_mu = B / sqrt(w) and G_sigma = (C - A) / sqrt(2w) (eqs. 17-18),
the soft-BoV is A (eq. 34), and the EM M-step is w = A/N, mu <- mu + sigma B/A,
sigma^2 <- sigma^2 (C/A - (B/A)^2): no raw second moments, hence no cancellation.
Only descriptors with a posterior above theta touch a Gaussian's statistics, which is where the
speed comes from (5-10 of K = 256 survive, Appendix B).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from numba import njit

from .progress import CancelLike, check_cancel

#: exp(-40) ~ 4e-18: log-joint entries this far below the row maximum are skipped in the logsumexp.
_LOG_NEGLIGIBLE = -40.0
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianTerms:
    """The per-model quantities the E-step needs, computed once per (weights, means, variances)."""

    def __init__(self, weights, means, variances):
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        var = np.asarray(variances, dtype=np.float64)
        K, D = mu.shape
        if w.shape != (K,) or var.shape != (K, D):
            raise ValueError(f"GMM parameter shapes disagree: weights {w.shape}, means {mu.shape}, "
                             f"variances {var.shape}")
        if (var <= 0).any() or not np.isfinite(var).all():
            raise ValueError("GMM variances must be finite and > 0")
        if (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("GMM weights must be finite and >= 0")
        self.n_components, self.n_features = K, D
        self.origin = (w / w.sum()) @ mu
        mu_c = mu - self.origin
        inv = 1.0 / var
        with np.errstate(divide="ignore"):
            logw = np.log(w)
        self.P = np.ascontiguousarray(np.vstack([(mu_c * inv).T, (-0.5 * inv).T]), dtype=np.float32)
        self.c = (logw - 0.5 * (D * _LOG_2PI + np.log(var).sum(1) + (mu_c * mu_c * inv).sum(1))).astype(np.float32)
        self.means = np.ascontiguousarray(mu, dtype=np.float32)
        self.inv_sigma = np.ascontiguousarray(1.0 / np.sqrt(var), dtype=np.float32)
        self.origin32 = self.origin.astype(np.float32)

    def log_joint(self, X: np.ndarray, out: Optional[np.ndarray] = None,
                  work: Optional[np.ndarray] = None) -> np.ndarray:
        """log(w_k u_k(x_t)) for every row of X (N, D) float32 -> (N, K) float32, by one GEMM."""
        N, D = X.shape
        if work is None or work.shape[0] < N:
            work = np.empty((N, 2 * D), dtype=np.float32)
        Z = work[:N]
        np.subtract(X, self.origin32, out=Z[:, :D])
        np.multiply(Z[:, :D], Z[:, :D], out=Z[:, D:])
        if out is None:
            out = np.empty((N, self.n_components), dtype=np.float32)
        np.matmul(Z, self.P, out=out[:N])
        out[:N] += self.c
        return out[:N]


@dataclass
class Statistics:
    """Accumulated statistics (see module docstring) and per-descriptor diagnostics."""

    A: np.ndarray          # (R, K) float64
    B: np.ndarray          # (R, K, D) float64
    C: np.ndarray          # (R, K, D) float64
    log_likelihood: np.ndarray  # (N,) float64, log u(x_t)
    max_posterior: np.ndarray   # (N,) float32, max_k gamma_t(k) after thresholding (Fig. 2)
    n_active: np.ndarray        # (N,) int32, number of Gaussians with a non-zero posterior


@njit(cache=True, nogil=True)
def _accumulate_block(X, means, inv_sigma, logp, threshold, regions, with_moments,
                      A, B, C, loglik, gmax, nact, offset):
    N, D = X.shape
    K = logp.shape[1]
    L = regions.shape[1]
    idx = np.empty(K, dtype=np.int64)
    val = np.empty(K, dtype=np.float64)
    z = np.empty(D, dtype=np.float64)
    for t in range(N):
        row = logp[t]
        m = row[0]
        for k in range(1, K):
            if row[k] > m:
                m = row[k]
        # first pass: exp of every non-negligible entry; candidates are those that may pass theta
        s = 0.0
        n = 0
        for k in range(K):
            a = row[k] - m
            if a > _LOG_NEGLIGIBLE:
                e = math.exp(a)
                s += e
                if e >= threshold and e > 0.0:
                    idx[n] = k
                    val[n] = e
                    n += 1
        loglik[offset + t] = m + math.log(s)
        # posteriors: gamma = e / s; drop those below theta; renormalise the survivors
        keep = 0
        tot = 0.0
        for j in range(n):
            g = val[j] / s
            if g >= threshold:
                idx[keep] = idx[j]
                val[keep] = g
                tot += g
                keep += 1
        best = 0.0
        if threshold > 0.0:
            for j in range(keep):
                val[j] /= tot
                if val[j] > best:
                    best = val[j]
        else:
            for j in range(keep):
                if val[j] > best:
                    best = val[j]
        gmax[offset + t] = best
        nact[offset + t] = keep
        for j in range(keep):
            k = idx[j]
            g = val[j]
            for l in range(L):
                r = regions[t, l]
                if r >= 0:
                    A[r, k] += g
            if not with_moments:
                continue
            for d in range(D):
                z[d] = (X[t, d] - means[k, d]) * inv_sigma[k, d]
            for l in range(L):
                r = regions[t, l]
                if r < 0:
                    continue
                for d in range(D):
                    gz = g * z[d]
                    B[r, k, d] += gz
                    C[r, k, d] += gz * z[d]


_SINGLE_REGION_CACHE: dict = {}


def _single_region(n: int) -> np.ndarray:
    arr = _SINGLE_REGION_CACHE.get(n)
    if arr is None:
        arr = np.zeros((n, 1), dtype=np.int32)
        _SINGLE_REGION_CACHE.clear()
        _SINGLE_REGION_CACHE[n] = arr
    return arr


def accumulate_statistics(X: np.ndarray, terms: GaussianTerms, *, threshold: float = 1e-4,
                          regions: Optional[np.ndarray] = None, n_regions: int = 1,
                          moments: bool = True, block: int = 4096,
                          cancel: CancelLike = None) -> Statistics:
    """Posteriors of X (N, D) float32 under the GMM ``terms`` and their accumulated statistics.

    ``regions`` is None (every descriptor in region 0) or an (N, L) int array of region slots in
    [0, n_regions) each descriptor contributes to (-1 = none), e.g. [whole image, its stripe].
    ``threshold`` is theta (0 disables thresholding). ``moments=False`` skips B and C (soft-BoV).
    Work is done in blocks of ``block`` rows (one GEMM + one numba pass each, GIL released in both);
    ``cancel`` is checked between blocks.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    N, D = X.shape
    K = terms.n_components
    if D != terms.n_features:
        raise ValueError(f"descriptors have {D} dimensions, the GMM expects {terms.n_features}")
    if not (0.0 <= threshold < 1.0):
        raise ValueError(f"posterior threshold must be in [0, 1), got {threshold}")
    if regions is None:
        regions = _single_region(min(N, block) if N else 1)
        per_block_regions = False
    else:
        regions = np.ascontiguousarray(regions, dtype=np.int32)
        if regions.ndim == 1:
            regions = regions[:, None]
        if regions.shape[0] != N:
            raise ValueError(f"regions has {regions.shape[0]} rows for {N} descriptors")
        if regions.size and regions.max() >= n_regions:
            raise ValueError(f"region index {regions.max()} out of range for n_regions={n_regions}")
        per_block_regions = True
    R = n_regions
    A = np.zeros((R, K), dtype=np.float64)
    if moments:
        B = np.zeros((R, K, D), dtype=np.float64)
        C = np.zeros((R, K, D), dtype=np.float64)
    else:
        B = np.zeros((R, K, 0), dtype=np.float64)
        C = np.zeros((R, K, 0), dtype=np.float64)
    loglik = np.empty(N, dtype=np.float64)
    gmax = np.empty(N, dtype=np.float32)
    nact = np.empty(N, dtype=np.int32)
    nb = min(N, block)
    work = np.empty((max(nb, 1), 2 * D), dtype=np.float32)
    logp = np.empty((max(nb, 1), K), dtype=np.float32)
    for start in range(0, N, block):
        check_cancel(cancel, "posterior computation")
        stop = min(N, start + block)
        Xb = X[start:stop]
        lp = terms.log_joint(Xb, out=logp, work=work)
        reg = regions[start:stop] if per_block_regions else regions[: stop - start]
        _accumulate_block(Xb, terms.means, terms.inv_sigma, lp, float(threshold), reg, moments,
                          A, B, C, loglik, gmax, nact, start)
    return Statistics(A, B, C, loglik, gmax, nact)


def posteriors(X: np.ndarray, terms: GaussianTerms, *, threshold: float = 0.0) -> np.ndarray:
    """Dense (N, K) float32 posteriors gamma_t(k) (thresholded and renormalised if theta > 0)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    lp = terms.log_joint(X)
    out = _dense_posteriors(lp, float(threshold))
    return out


@njit(cache=True, nogil=True)
def _dense_posteriors(logp, threshold):
    N, K = logp.shape
    out = np.zeros((N, K), dtype=np.float32)
    for t in range(N):
        row = logp[t]
        m = row[0]
        for k in range(1, K):
            if row[k] > m:
                m = row[k]
        s = 0.0
        for k in range(K):
            s += math.exp(row[k] - m)
        ls = m + math.log(s)
        tot = 0.0
        for k in range(K):
            g = math.exp(row[k] - ls)
            if g >= threshold:
                out[t, k] = g
                tot += g
        if threshold > 0.0:
            for k in range(K):
                out[t, k] /= tot
    return out
