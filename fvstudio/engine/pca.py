"""PCA of local descriptors: the dimensionality reduction before the GMM (Sec. 2.3, "PCA is key").

Fit on a descriptor sample X (N, D):

    mean = 1/N sum_t x_t,   Cov = 1/(N-1) sum_t (x_t - mean)(x_t - mean)^T
    Cov = U diag(lambda) U^T   (eigenvalues in decreasing order)

and keep the k leading eigenvectors as ``components_`` (k, D) (rows, unit norm, sign fixed so the
largest-magnitude coordinate of each is positive). ``transform(x) = (x - mean) U_k`` and, with
whitening, each coordinate is further divided by sqrt(lambda_j + eps * lambda_1), eps = ``whiten_eps``
(the regulariser keeps near-zero directions from being blown up). ``inverse_transform`` undoes both.

``method``: ``"eig"`` eigendecomposes the D x D covariance accumulated in float64 (exact; for D up to
~512), ``"randomized"`` runs a randomized range finder (Halko, Martinsson & Tropp 2011; k + 10 probe
vectors, 4 power iterations with QR re-orthonormalisation) on the covariance, applied as
X_c^T (X_c Q) over row chunks so no centred copy of X is made, ``"auto"`` picks
``"eig"`` when D <= 512 and ``"randomized"`` otherwise.

``explained_variance_`` (k,) are the kept eigenvalues; ``explained_variance_ratio_`` (k,) their share of
the total variance; ``all_explained_variance_ratio_`` is the ratio of every computed direction and
``cumulative_variance_ratio()`` its running sum: the curve the GUI plots to choose k.
Saved as ``.npz`` of kind ``"pca"`` (arrays mean, components, explained_variance, ...).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .defaults import PCA_COMPONENTS
from .estimator import ArrayOutput, Estimator
from .serialization import atomic_save_npz, load_npz
from .validation import (_check_n_components, as_float32_matrix, check_choice, check_float32_scale, check_number,
                         check_positive_int, column_spread, rng_from_seed)

KIND = "pca"
METHODS = ("auto", "eig", "randomized")
_EIG_MAX_DIM = 512
_OVERSAMPLE = 10
_POWER_ITERS = 4
_ROWS_PER_CHUNK = 65536


class PCA(ArrayOutput, Estimator):
    """Principal component analysis with optional regularised whitening (see module docstring)."""

    _estimator_kind = "transformer"

    # learned state (None until fit / load)
    mean_: Optional[np.ndarray] = None
    components_: Optional[np.ndarray] = None

    def __init__(self, n_components: int = PCA_COMPONENTS, *, whiten: bool = False, whiten_eps: float = 1e-5,
                 method: str = "auto", seed=0):
        self.n_components = n_components
        self.whiten = whiten
        self.whiten_eps = whiten_eps
        self.method = method
        self.seed = seed

    # ------------------------------------------------------------------------------------------
    def fit(self, X, y=None) -> "PCA":
        """Learn the projection from X (N, D); ``y`` is ignored (scikit-learn's transformer signature)."""
        k = check_positive_int(self.n_components, "n_components")
        check_choice(self.method, "method", METHODS)
        check_number(self.whiten_eps, "whiten_eps", low=0.0)
        X = as_float32_matrix(X, "X", min_rows=2)
        N, D = X.shape
        if k > D:
            raise ValueError(f"n_components={k} exceeds the number of features of X ({D})")
        _check_n_components(k, N)
        mean, sq, max_dev = column_spread(X, _ROWS_PER_CHUNK)
        check_float32_scale(max_dev, float(sq.sum()) / (N * D))  # explained_variance_ is float32
        total = float(np.sum(sq)) / (N - 1)
        method = self.method
        if method == "auto":
            method = "eig" if D <= _EIG_MAX_DIM else "randomized"
        if method == "eig":
            cov = _covariance(X, mean)
            lam, U = np.linalg.eigh(cov)
            order = np.argsort(lam)[::-1]
            lam = np.maximum(lam[order], 0.0)
            U = U[:, order]
        else:
            lam, U = _randomized(X, mean, k, rng_from_seed(self.seed))
        comps = U[:, :k].T.copy()
        # deterministic signs: the largest-magnitude coordinate of each component is positive
        idx = np.argmax(np.abs(comps), axis=1)
        comps *= np.sign(comps[np.arange(k), idx])[:, None]
        self.method_ = method
        self.mean_ = mean.astype(np.float32)
        self.components_ = comps.astype(np.float32)
        self.explained_variance_ = lam[:k].astype(np.float32)
        self.total_variance_ = total
        denom = total if total > 0 else 1.0
        self.explained_variance_ratio_ = (lam[:k] / denom).astype(np.float32)
        self.all_explained_variance_ratio_ = (lam / denom).astype(np.float32)
        self.n_features_in_ = D
        self.n_samples_seen_ = N
        self._set_scale()
        return self

    def _set_scale(self) -> None:
        if self.whiten:
            lam = self.explained_variance_.astype(np.float64)
            reg = float(self.whiten_eps) * (float(lam[0]) if lam.size and lam[0] > 0 else 1.0)
            scale = 1.0 / np.sqrt(lam + max(reg, 1e-30))
        else:
            scale = np.ones(len(self.explained_variance_))
        self.scale_ = scale.astype(np.float32)
        W = (self.components_.T * self.scale_[None, :]).astype(np.float32)  # (D, k)
        # the float32 projection and offset, held in float64 for transform's products
        self._W, self._offset = W.astype(np.float64), (self.mean_ @ W).astype(np.float32).astype(np.float64)

    def cumulative_variance_ratio(self) -> np.ndarray:
        """Running sum of ``all_explained_variance_ratio_``: fraction of variance kept by 1..n dims."""
        self._require_fitted()
        return np.cumsum(self.all_explained_variance_ratio_.astype(np.float64)).astype(np.float32)

    def _is_fitted(self) -> bool:
        return self.components_ is not None

    def transform(self, X) -> np.ndarray:
        """(N, D) -> (N, k) float32."""
        self._require_fitted()
        X = as_float32_matrix(X, "X", n_features=self.n_features_in_, owner="PCA")
        # float64 products rounded once to float32: a row's projection does not depend on which other rows
        # the BLAS kernel blocks it with (float32 GEMM differs by an ulp with the row order)
        out = np.empty((len(X), self._W.shape[1]), dtype=np.float32)
        for s in range(0, len(X), _ROWS_PER_CHUNK):
            out[s:s + _ROWS_PER_CHUNK] = X[s:s + _ROWS_PER_CHUNK].astype(np.float64) @ self._W - self._offset
        return self._wrap_output(out)

    def _feature_names(self):
        return [f"pca{i}" for i in range(len(self.components_))]

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, Y) -> np.ndarray:
        """(N, k) -> (N, D) float32: the reconstruction mean + Y / scale U_k^T."""
        self._require_fitted()
        Y = as_float32_matrix(Y, "Y", n_features=len(self.components_), owner="PCA.inverse_transform")
        return (Y / self.scale_) @ self.components_ + self.mean_

    # ------------------------------------------------------------------------------------------
    def save(self, path):
        self._require_fitted()
        arrays = {"mean": self.mean_, "components": self.components_,
                  "explained_variance": self.explained_variance_,
                  "explained_variance_ratio": self.explained_variance_ratio_,
                  "all_explained_variance_ratio": self.all_explained_variance_ratio_}
        meta = {"kind": KIND, "version": 1, "params": self._json_params(), "method_": self.method_,
                "total_variance": self.total_variance_, "n_samples_seen": int(self.n_samples_seen_)}
        return atomic_save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path) -> "PCA":
        arrays, meta = load_npz(path, kind=KIND)
        try:
            pca = cls(**meta["params"])
            pca.mean_ = arrays["mean"].astype(np.float32)
            pca.components_ = arrays["components"].astype(np.float32)
            pca.explained_variance_ = arrays["explained_variance"].astype(np.float32)
            pca.explained_variance_ratio_ = arrays["explained_variance_ratio"].astype(np.float32)
            pca.all_explained_variance_ratio_ = arrays["all_explained_variance_ratio"].astype(np.float32)
            k, D = pca.components_.shape
            if pca.mean_.shape != (D,) or pca.explained_variance_.shape != (k,):
                raise ValueError("array shapes disagree")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a valid PCA file: {exc}") from exc
        pca.method_ = meta.get("method_", pca.method)
        pca.total_variance_ = float(meta.get("total_variance", 0.0))
        pca.n_samples_seen_ = int(meta.get("n_samples_seen", 0))
        pca.n_features_in_ = D
        pca._set_scale()
        return pca


def _covariance(X, mean) -> np.ndarray:
    """Covariance accumulated in float64 over row chunks (bounded memory)."""
    D = X.shape[1]
    cov = np.zeros((D, D))
    for s in range(0, len(X), _ROWS_PER_CHUNK):
        Xc = X[s:s + _ROWS_PER_CHUNK].astype(np.float64) - mean
        cov += Xc.T @ Xc
    cov /= len(X) - 1
    return (cov + cov.T) * 0.5


def _cov_times(X, mean, Q) -> np.ndarray:
    """Cov @ Q for Q (D, p), accumulated in float64 over row chunks (never a centred copy of X)."""
    out = np.zeros((X.shape[1], Q.shape[1]))
    for s in range(0, len(X), _ROWS_PER_CHUNK):
        Xc = X[s:s + _ROWS_PER_CHUNK].astype(np.float64) - mean
        out += Xc.T @ (Xc @ Q)
    return out / (len(X) - 1)


def _randomized(X, mean, k, rng):
    """Leading eigenpairs of the covariance by a randomized range finder with power iterations."""
    D = X.shape[1]
    p = min(D, k + _OVERSAMPLE)
    Q, _ = np.linalg.qr(_cov_times(X, mean, rng.standard_normal((D, p))))
    for _ in range(_POWER_ITERS):
        Q, _ = np.linalg.qr(_cov_times(X, mean, Q))
    small = Q.T @ _cov_times(X, mean, Q)           # Q^T Cov Q (p, p)
    lam, V = np.linalg.eigh((small + small.T) * 0.5)
    order = np.argsort(lam)[::-1]
    return np.maximum(lam[order], 0.0), Q @ V[:, order]
