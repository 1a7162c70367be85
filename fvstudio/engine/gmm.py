"""Diagonal-covariance Gaussian mixture learned by EM: the generative model of the Fisher Vector.

The model (eqs. 8-10, 79): u(x) = sum_k w_k u_k(x), u_k = N(mu_k, diag(sigma_k^2)), sum_k w_k = 1.
EM follows Appendix B's good practices:

- E-step in the log domain with posterior thresholding and renormalisation (``posteriors.py``:
  gamma_t(k) < theta -> 0, theta = ``posterior_threshold``), which yields per Gaussian the
  Gaussian-centred statistics A_k = sum_t gamma_t(k), B_k = sum_t gamma_t(k) (x_t - mu_k) / sigma_k,
  C_k = sum_t gamma_t(k) (x_t - mu_k)^2 / sigma_k^2.
- M-step from those statistics, with no raw second moment (so no cancellation):

      w_k = A_k / N,   mu_k <- mu_k + sigma_k B_k / A_k,   sigma_k^2 <- sigma_k^2 (C_k / A_k - (B_k / A_k)^2)

- variance flooring relative to the global variance: sigma_kd^2 >= alpha * var_d(X), alpha = ``var_floor``
  (default 0.1, chosen on held-out splits, see :mod:`~fvstudio.engine.defaults`; HTK uses 0.01); an
  absolute floor of 1e-6 x the mean global variance (1e-6 if X is constant) keeps a constant dimension
  finite;
- a component whose weight falls below 0.01 / K (empty, collapsed) is re-seeded by splitting the
  heaviest component: both halves get half its weight and means mu_h -/+ 0.2 sigma_h. Nothing can
  become NaN or infinite;
- initialisation ``"kmeans++"`` (greedy k-means++ seeding and up to 30 Lloyd iterations on a subsample of at most
  max(10,000, 40 K) descriptors; per-cluster variances and weights), ``"split"`` (Appendix B's
  incremental training: 1 Gaussian in closed form, then every Gaussian split as above, 1 -> 2 -> 4 ...;
  when K is not a power of two the last level splits only the heaviest K - K' components; 5 EM
  iterations per intermediate level) or ``"random"`` (K distinct random descriptors as means, the
  global variance, uniform weights);
- ``n_init`` restarts, keeping the one with the best final mean log-likelihood.

Convergence: stop when the mean log-likelihood per descriptor changes by less than ``tol``
(absolute, in nats) between iterations, else after ``max_iter`` iterations; ``stop_reason_`` says which
(``"tol"``: converged, ``n_iter_`` iterations; ``"max_iter"``: stopped at the cap; ``"none"``: not fitted
by EM, ``max_iter`` = 0 or parameters given). ``log_likelihood_[i]`` is the mean log-likelihood of the
parameters at the start of iteration i (the value the E-step of iteration i computes).

One step at a time (for teaching, :mod:`fvstudio.pipeline.teaching`): ``initialise(X)`` sets the parameters
EM starts from, ``e_step(X)`` returns the posteriors, the mean log-likelihood and the statistics A, B, C
(:class:`EStep`), ``m_step(X, estep)`` updates w, mu, sigma^2 from them. They call the same E-step, M-step,
floor and re-seeding code as ``fit``'s loop (the parameters are stored as float32 between the calls, where
``fit`` keeps float64: the two paths agree to float32 rounding).

Progress: one :func:`~fvstudio.engine.progress.report` per EM iteration with values
``log_likelihood``, ``stage`` ("init" during split/k-means initialisation, "em" after), ``restart``,
``iteration`` and ``n_components``; the cancel token is checked between iterations and raises
:class:`~fvstudio.engine.progress.Cancelled` (the model is left unfitted). Saved as ``.npz`` (arrays
``weights``, ``means``, ``variances``, ``log_likelihood``) + JSON metadata of kind ``"diagonal_gmm"``.
Learned arrays are float32; EM itself runs its parameter updates in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np

from .defaults import GMM_COMPONENTS, GMM_INIT, GMM_MAX_ITER, GMM_N_INIT, GMM_TOL, GMM_VAR_FLOOR, POSTERIOR_THRESHOLD
from .estimator import Estimator
from .posteriors import GaussianTerms, Statistics, _accumulate_statistics, _dense_posteriors
from .progress import CancelLike, ProgressCallback, check_cancel, report
from .serialization import atomic_save_npz, load_npz
from .validation import (_check_n_components, _check_posterior_threshold, as_float32_matrix, check_choice,
                         check_float32_scale, check_number, check_positive_int, column_spread, rng_from_seed)

KIND = "diagonal_gmm"
INITS = ("kmeans++", "split", "random")
#: a component with weight below this / K is empty and gets re-seeded
_EMPTY_WEIGHT = 0.01
#: mean perturbation (in standard deviations) when splitting a Gaussian
_SPLIT_STEP = 0.2
_SPLIT_EM_ITERS = 5
_KMEANS_ITERS = 30
_ABS_VAR_FLOOR = 1e-6


@dataclass
class EStep:
    """What :meth:`DiagonalGMM.e_step` returns: ``responsibilities`` (N, K) float32 posteriors gamma_t(k),
    ``log_likelihood`` the mean log u(x_t) of the parameters the step used (nats per row), and the
    ``statistics`` (A, B, C, :class:`~fvstudio.engine.posteriors.Statistics`) of the M-step."""

    responsibilities: np.ndarray
    log_likelihood: float
    statistics: Statistics


class DiagonalGMM(Estimator):
    """Diagonal GMM fitted by EM (see the module docstring for the equations and practices).

    ``n_jobs`` > 1 splits each E-step over that many threads (BLAS pinned to one thread meanwhile).
    """

    _estimator_kind = "density_estimator"
    _terms: Optional[GaussianTerms] = None  # E-step quantities of the fitted parameters (cached)

    # learned state (None until fit / from_params / load)
    weights_: Optional[np.ndarray] = None
    means_: Optional[np.ndarray] = None
    variances_: Optional[np.ndarray] = None
    #: the floor sigma^2 >= max(var_floor * var_d(X), absolute floor) applied by fit (None: not fitted by fit)
    variance_floor_: Optional[np.ndarray] = None
    global_variance_: Optional[np.ndarray] = None

    def __init__(self, n_components: int = GMM_COMPONENTS, *, max_iter: int = GMM_MAX_ITER, tol: float = GMM_TOL,
                 init: str = GMM_INIT, var_floor: float = GMM_VAR_FLOOR,
                 posterior_threshold: float = POSTERIOR_THRESHOLD, n_init: int = GMM_N_INIT, seed=0,
                 n_jobs: int = 1):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.var_floor = var_floor
        self.posterior_threshold = posterior_threshold
        self.n_init = n_init
        self.seed = seed
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------------------------------
    # parameters

    def _check_params(self) -> None:
        check_positive_int(self.n_components, "n_components")
        check_positive_int(self.max_iter, "max_iter", minimum=0)
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.n_jobs, "n_jobs")
        check_choice(self.init, "init", INITS)
        check_number(self.tol, "tol", low=0.0)
        check_number(self.var_floor, "var_floor", low=0.0, high=1.0, high_open=True)
        _check_posterior_threshold(self.posterior_threshold)

    @property
    def is_fitted(self) -> bool:
        return self.means_ is not None

    def _is_fitted(self) -> bool:
        return self.means_ is not None

    @property
    def terms(self) -> GaussianTerms:
        """The E-step quantities of the fitted parameters (computed once, when the parameters are set)."""
        self._require_fitted()
        return self._terms

    def _set_params(self, w, mu, var) -> None:
        self.weights_ = np.asarray(w, dtype=np.float32)
        self.means_ = np.ascontiguousarray(mu, dtype=np.float32)
        self.variances_ = np.ascontiguousarray(var, dtype=np.float32)
        self.n_features_in_ = int(self.means_.shape[1])
        # computed here, not on first use, so that predicting leaves the estimator's __dict__ unchanged
        self._terms = GaussianTerms(self.weights_, self.means_, self.variances_)

    @classmethod
    def from_params(cls, weights, means, variances, **params) -> "DiagonalGMM":
        """A fitted model from arrays: weights (K,) >= 0 summing to 1, means and variances (K, D)."""
        mu = as_float32_matrix(means, "means", min_rows=1)
        K, D = mu.shape
        var = as_float32_matrix(variances, "variances", n_features=D)
        if var.shape[0] != K:
            raise ValueError(f"variances has {var.shape[0]} rows, means has {K}")
        if (var <= 0).any():
            raise ValueError("variances must all be > 0")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (K,) or not np.isfinite(w).all():
            raise ValueError(f"weights must be a finite ({K},) array, got shape {w.shape}")
        if (w < 0).any() or abs(w.sum() - 1.0) > 1e-3:
            raise ValueError(f"weights must be >= 0 and sum to 1 (sum is {w.sum():.6g})")
        gmm = cls(K, **params)
        gmm._set_params(w / w.sum(), mu, var)
        gmm.log_likelihood_ = []
        gmm.n_iter_ = 0
        gmm.converged_ = False
        gmm.n_reseeded_ = 0
        return gmm

    # ------------------------------------------------------------------------------------------
    # fitting

    def fit(self, X, y=None, *, progress: Optional[ProgressCallback] = None, cancel: CancelLike = None,
            init_params: Optional[Tuple] = None) -> "DiagonalGMM":
        """Learn the mixture from X (N, D) float32 (other real dtypes are converted); ``y`` is ignored
        (scikit-learn's signature), ``progress`` and ``cancel`` are keyword-only.

        ``init_params=(weights, means, variances)`` starts EM from those parameters instead of
        ``init`` (a warm start, e.g. to continue training; a single run whatever ``n_init``).
        """
        X, fit_state = self._fit_state(X, progress, cancel)
        D = X.shape[1]
        K = int(self.n_components)
        start = None
        if init_params is not None:
            ref = DiagonalGMM.from_params(*init_params)
            if ref.means_.shape != (K, D):
                raise ValueError(f"init_params means have shape {ref.means_.shape}, expected {(K, D)}")
            start = (ref.weights_.astype(np.float64), ref.means_.astype(np.float64),
                     ref.variances_.astype(np.float64))
        fit_state.start = start
        self.global_variance_ = fit_state.global_var.astype(np.float32)
        self.variance_floor_ = fit_state.floor.astype(np.float32)

        base = rng_from_seed(self.seed)
        rngs = base.spawn(1 if start is not None else self.n_init)
        best, best_ll = None, -np.inf
        restart_ll = []
        for r, rng in enumerate(rngs):
            result = fit_state.run(r, rng)
            ll = result[3][-1] if result[3] else -np.inf
            restart_ll.append(ll)
            if best is None or ll > best_ll:
                best, best_ll = result, ll
        w, mu, var, history, n_iter, converged, reseeded = best
        self._set_params(w, mu, var)
        self.log_likelihood_ = [float(v) for v in history]
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.n_reseeded_ = int(reseeded)
        self.restart_log_likelihoods_ = [float(v) for v in restart_ll]
        return self

    def _fit_state(self, X, progress=None, cancel=None) -> Tuple[np.ndarray, "_Fit"]:
        """Checked float32 X and the EM machinery on it: global variance and the variance floor of the
        module docstring (what :meth:`fit`, :meth:`initialise` and :meth:`m_step` share)."""
        self._check_params()
        X = as_float32_matrix(X, "X", min_rows=1)
        N = X.shape[0]
        _check_n_components(int(self.n_components), N)
        global_mean, sq, max_dev = column_spread(X)
        global_var = sq / N
        check_float32_scale(max_dev, float(global_var.mean()))
        scale = float(global_var.mean())
        abs_floor = _ABS_VAR_FLOOR * (scale if scale > 0 else 1.0)
        floor = np.maximum(float(self.var_floor) * global_var, abs_floor)
        return X, _Fit(self, X, floor, progress, cancel, None, global_mean, global_var)

    # ------------------------------------------------------------------------------------------
    # EM one step at a time (the teaching room steps through the same code fit() loops over)

    def initialise(self, X) -> "DiagonalGMM":
        """Set the parameters ``init`` gives on X, before any EM iteration: exactly where :meth:`fit` with
        ``n_init = 1`` and the same ``seed`` starts its EM loop ("split" runs its intermediate levels'
        EM iterations; the last level's EM is left to the caller)."""
        X, fit_state = self._fit_state(X)
        rng = rng_from_seed(self.seed).spawn(1)[0]
        w, mu, var = fit_state.initial(0, rng)
        self._set_params(w, mu, var)
        self.global_variance_ = fit_state.global_var.astype(np.float32)
        self.variance_floor_ = fit_state.floor.astype(np.float32)
        self.log_likelihood_, self.n_iter_, self.converged_, self.n_reseeded_ = [], 0, False, 0
        return self

    def e_step(self, X) -> "EStep":
        """One E-step on X under the current parameters: the posteriors gamma_t(k) (thresholded at
        ``posterior_threshold`` and renormalised), the mean log-likelihood, and the Gaussian-centred
        statistics A, B, C that :meth:`m_step` consumes (the E-step of :meth:`fit`'s loop)."""
        self._require_fitted()
        X, fit_state = self._fit_state(X)
        if X.shape[1] != self.means_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the model {self.means_.shape[1]}")
        st = fit_state.e_step(*self._params64())
        resp = self.predict_proba(X, threshold=float(self.posterior_threshold))
        return EStep(resp, float(st.log_likelihood.mean()), st)

    def m_step(self, X, estep: "EStep") -> "DiagonalGMM":
        """One M-step from ``estep`` (:meth:`e_step` on the same X): w, mu, sigma^2 from A, B, C with the
        variance floor of X and the re-seeding of empty components (the M-step of :meth:`fit`'s loop)."""
        self._require_fitted()
        X, fit_state = self._fit_state(X)
        if estep.statistics.A.shape[1] != self.means_.shape[0]:
            raise ValueError("estep was computed for another number of Gaussians")
        _, mu, var = self._params64()
        w, mu, var = fit_state.m_step(estep.statistics, mu, var)
        self._set_params(w, mu, var)
        self.n_iter_ = int(getattr(self, "n_iter_", 0)) + 1
        self.n_reseeded_ = int(getattr(self, "n_reseeded_", 0)) + fit_state.reseeded
        return self

    def _params64(self):
        return (self.weights_.astype(np.float64), self.means_.astype(np.float64),
                self.variances_.astype(np.float64))

    # ------------------------------------------------------------------------------------------
    # inference

    def _check_X(self, X) -> np.ndarray:
        self._require_fitted()
        return as_float32_matrix(X, "X", n_features=self.means_.shape[1], owner="DiagonalGMM")

    def predict_proba(self, X, threshold: float = 0.0) -> np.ndarray:
        """Posteriors gamma_t(k) (N, K) float32 (eq. 15); ``threshold`` > 0 thresholds + renormalises."""
        X = self._check_X(X)
        return _dense_posteriors(X, self.terms, _check_posterior_threshold(threshold, "threshold"))

    def predict(self, X) -> np.ndarray:
        """Index of the most probable Gaussian of every row."""
        return self.predict_proba(X).argmax(axis=1)

    def score_samples(self, X) -> np.ndarray:
        """log u(x_t) per row, (N,) float64."""
        X = self._check_X(X)
        return _accumulate_statistics(X, self.terms, 0.0, moments=False).log_likelihood

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row."""
        return float(self.score_samples(X).mean())

    # ------------------------------------------------------------------------------------------
    # persistence

    def save(self, path):
        self._require_fitted()
        meta = {"kind": KIND, "version": 1, "params": self._json_params(), "n_iter": int(self.n_iter_),
                "converged": bool(self.converged_), "n_components": int(self.means_.shape[0]),
                "n_features": int(self.means_.shape[1])}
        arrays = {"weights": self.weights_, "means": self.means_, "variances": self.variances_,
                  "log_likelihood": np.asarray(self.log_likelihood_, dtype=np.float64)}
        if self.variance_floor_ is not None:
            arrays["variance_floor"] = self.variance_floor_
            arrays["global_variance"] = self.global_variance_
        return atomic_save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path) -> "DiagonalGMM":
        arrays, meta = load_npz(path, kind=KIND)
        try:
            params = dict(meta.get("params", {}))
            params.pop("n_components", None)
            gmm = cls.from_params(arrays["weights"], arrays["means"], arrays["variances"], **params)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path} is not a valid DiagonalGMM file: {exc}") from exc
        gmm.log_likelihood_ = [float(v) for v in arrays.get("log_likelihood", [])]
        gmm.n_iter_ = int(meta.get("n_iter", 0))
        gmm.converged_ = bool(meta.get("converged", False))
        if "variance_floor" in arrays:
            gmm.variance_floor_ = arrays["variance_floor"]
            gmm.global_variance_ = arrays["global_variance"]
        return gmm

    @property
    def stop_reason_(self) -> str:
        """Why EM stopped: ``"tol"`` (the log-likelihood changed by less than ``tol``: converged after
        ``n_iter_`` iterations), ``"max_iter"`` (``n_iter_`` reached the cap without converging) or
        ``"none"`` (no EM iteration ran)."""
        self._require_fitted()
        if self.converged_:
            return "tol"
        return "max_iter" if self.n_iter_ > 0 else "none"


def check_fitted_gmm(gmm, name: str = "gmm") -> DiagonalGMM:
    """``gmm`` itself if it is a fitted :class:`DiagonalGMM`, else a ValueError naming ``name``."""
    if not isinstance(gmm, DiagonalGMM):
        raise ValueError(f"{name} must be a fitted DiagonalGMM, got {type(gmm).__name__}")
    gmm._require_fitted()
    return gmm


# ----------------------------------------------------------------------------------------------
# the EM machinery (one object per fit call)


class _Fit:
    def __init__(self, gmm: DiagonalGMM, X, floor, progress, cancel, start=None, mean=None, var=None):
        self.start = start
        self.gmm = gmm
        self.X = X
        if mean is None or var is None:
            mean, sq, _ = column_spread(X)
            var = sq / max(len(X), 1)
        self.global_mean = mean
        self.global_var = var
        self.floor = floor
        self.progress = progress
        self.cancel = cancel
        self.K = int(gmm.n_components)
        self.theta = float(gmm.posterior_threshold)
        self.n_jobs = int(gmm.n_jobs)
        self.reseeded = 0

    # E-step ---------------------------------------------------------------------------------
    def e_step(self, w, mu, var) -> Statistics:
        terms = GaussianTerms(w, mu, var)
        X = self.X
        if self.n_jobs <= 1 or len(X) < 2 * 4096:
            return _accumulate_statistics(X, terms, self.theta, cancel=self.cancel, allow_dense=True)
        from threadpoolctl import threadpool_limits

        bounds = np.linspace(0, len(X), self.n_jobs + 1).astype(int)
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(self.n_jobs) as pool:
            parts = list(pool.map(lambda ab: _accumulate_statistics(X[ab[0]:ab[1]], terms, self.theta,
                                                                    cancel=self.cancel, allow_dense=True),
                                  zip(bounds[:-1], bounds[1:])))
        A = sum(p.A for p in parts)
        B = sum(p.B for p in parts)
        C = sum(p.C for p in parts)
        return Statistics(A, B, C, np.concatenate([p.log_likelihood for p in parts]),
                          np.concatenate([p.max_posterior for p in parts]),
                          np.concatenate([p.n_active for p in parts]))

    # M-step ---------------------------------------------------------------------------------
    def m_step(self, st: Statistics, mu, var):
        A = st.A[0]
        Kc = A.shape[0]
        sig = np.sqrt(var)
        ok = A > 0
        Ak = np.where(ok, A, 1.0)[:, None]
        b = st.B[0] / Ak
        mu_new = mu + sig * b
        var_new = var * np.maximum(st.C[0] / Ak - b * b, 0.0)
        var_new = np.maximum(var_new, self.floor)
        w = A / A.sum()
        mu_new = np.where(ok[:, None], mu_new, mu)
        var_new = np.where(ok[:, None] & np.isfinite(var_new), var_new, var)
        return self.reseed_empty(w, mu_new, var_new, Kc)

    def reseed_empty(self, w, mu, var, Kc):
        empty = (w < _EMPTY_WEIGHT / Kc) | ~np.isfinite(mu).all(1)
        if not empty.any() or empty.all():
            return w, mu, var
        w = w.copy()
        for k in np.flatnonzero(empty):
            h = int(np.argmax(np.where(empty, -1.0, w)))
            step = _SPLIT_STEP * np.sqrt(var[h])
            mu[k] = mu[h] + step
            mu[h] = mu[h] - step
            var[k] = var[h]
            w[h] *= 0.5
            w[k] = w[h]
            empty[k] = False
            self.reseeded += 1
        return w / w.sum(), mu, var

    # EM loop --------------------------------------------------------------------------------
    def em(self, w, mu, var, n_iter: int, tol: float, restart: int, stage: str, history: list):
        converged = False
        it = 0
        for it in range(n_iter):
            check_cancel(self.cancel, "GMM fit")
            st = self.e_step(w, mu, var)
            ll = float(st.log_likelihood.mean())
            w, mu, var = self.m_step(st, mu, var)
            history.append(ll)
            K_now = mu.shape[0]
            if stage == "em":
                done, total = restart * self.gmm.max_iter + it + 1, self.gmm.n_init * self.gmm.max_iter
                msg = f"EM iteration {it + 1}/{n_iter}"
            else:
                done, total = restart * self.gmm.max_iter, self.gmm.n_init * max(self.gmm.max_iter, 1)
                msg = f"initialisation: {K_now} Gaussians, EM iteration {it + 1}/{n_iter}"
            if self.gmm.n_init > 1:
                msg = f"restart {restart + 1}/{self.gmm.n_init}: {msg}"
            report(self.progress, done, total, msg, log_likelihood=ll, stage=stage, restart=restart,
                   iteration=it + 1, n_components=K_now)
            if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
                converged = True
                break
        return w, mu, var, it + 1 if n_iter else 0, converged

    def run(self, restart: int, rng: np.random.Generator):
        self.reseeded = 0
        w, mu, var = self.initial(restart, rng)
        history: List[float] = []
        w, mu, var, n_iter, converged = self.em(w, mu, var, int(self.gmm.max_iter), float(self.gmm.tol),
                                                restart, "em", history)
        return w, mu, var, history, n_iter, converged, self.reseeded

    def initial(self, restart: int, rng: np.random.Generator):
        """The parameters EM starts from (warm start, or ``init``), float64."""
        check_cancel(self.cancel, "GMM fit")
        init = self.gmm.init
        if self.start is not None:
            w, mu, var = (a.copy() for a in self.start)
            var = np.maximum(var, self.floor)
        elif init == "random":
            w, mu, var = self.init_random(rng)
        elif init == "kmeans++":
            w, mu, var = self.init_kmeans(rng)
        else:
            w, mu, var = self.init_split(restart)
        return w, mu, var

    # initialisations -----------------------------------------------------------------------
    def init_random(self, rng):
        N, D = self.X.shape
        idx = np.sort(rng.choice(N, self.K, replace=False))
        mu = self.X[idx].astype(np.float64)
        var = np.tile(np.maximum(self.global_var, self.floor), (self.K, 1))
        return np.full(self.K, 1.0 / self.K), mu, var

    def init_split(self, restart: int):
        mu = self.global_mean[None, :].copy()
        var = np.maximum(self.global_var, self.floor)[None, :]
        w = np.ones(1)
        while mu.shape[0] < self.K:
            Kc = mu.shape[0]
            n_split = min(Kc, self.K - Kc)
            heavy = np.argsort(-w, kind="stable")[:n_split]
            step = _SPLIT_STEP * np.sqrt(var[heavy])
            new_mu = mu[heavy] + step
            mu = mu.copy()
            mu[heavy] -= step
            w = w.copy()
            w[heavy] *= 0.5
            mu = np.vstack([mu, new_mu])
            var = np.vstack([var, var[heavy]])
            w = np.concatenate([w, w[heavy]])
            if mu.shape[0] < self.K:  # the last level's EM is the main loop
                w, mu, var, _, _ = self.em(w, mu, var, _SPLIT_EM_ITERS, 0.0, restart, "init", [])
        return w, mu, var

    def init_kmeans(self, rng):
        X = self.X
        N, D = X.shape
        K = self.K
        n_sub = min(N, max(10_000, 40 * K))
        sub = np.sort(rng.choice(N, n_sub, replace=False)) if n_sub < N else np.arange(N)
        centre = X[sub].mean(0)
        Xs = (X[sub] - centre).astype(np.float32)
        xx = np.einsum("ij,ij->i", Xs, Xs, dtype=np.float64)
        C = _kmeans_pp(Xs, xx, K, rng)
        labels = None
        for _ in range(_KMEANS_ITERS):
            check_cancel(self.cancel, "GMM initialisation")
            d2 = _sq_distances(Xs, xx, C)
            new_labels = d2.argmin(1)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            C = _centroids(Xs.astype(np.float64), labels, K, C)
        if labels is None:
            labels = _sq_distances(Xs, xx, C).argmin(1)
        counts = np.bincount(labels, minlength=K).astype(np.float64)
        Xs64 = Xs.astype(np.float64)
        mean = _centroids(Xs64, labels, K, C)
        sq = np.zeros((K, D))
        np.add.at(sq, labels, (Xs64 - mean[labels]) ** 2)
        var = np.where(counts[:, None] >= 2, sq / np.maximum(counts, 1)[:, None], Xs64.var(0))
        var = np.maximum(var, self.floor)
        w = np.maximum(counts, 1.0)
        report(self.progress, 0, max(self.gmm.max_iter, 1) * self.gmm.n_init, "initialisation: k-means++",
               stage="init", n_components=K)
        return w / w.sum(), mean + centre.astype(np.float64), var


def _sq_distances(Xs, xx, C) -> np.ndarray:
    C32 = C.astype(np.float32)
    cc = np.einsum("ij,ij->i", C, C)
    d2 = xx[:, None] - 2.0 * (Xs @ C32.T) + cc[None, :]
    return np.maximum(d2, 0.0)


def _centroids(Xs64, labels, K, old) -> np.ndarray:
    sums = np.zeros((K, Xs64.shape[1]))
    np.add.at(sums, labels, Xs64)
    counts = np.bincount(labels, minlength=K)
    C = old.astype(np.float64).copy()
    nz = counts > 0
    C[nz] = sums[nz] / counts[nz, None]
    return C


def _kmeans_pp(Xs, xx, K, rng) -> np.ndarray:
    """Greedy k-means++ seeding: at each step draw 2 + ln K candidates by D^2 sampling and keep the
    one that lowers the k-means potential most; uniform picks once every point is covered."""
    n = len(Xs)
    trials = 2 + int(math.log(K))
    C = np.empty((K, Xs.shape[1]), dtype=np.float64)
    first = int(rng.integers(n))
    C[0] = Xs[first]
    d2 = np.maximum(xx - 2.0 * (Xs @ Xs[first]) + xx[first], 0.0)
    for k in range(1, K):
        tot = d2.sum()
        if not (tot > 0 and np.isfinite(tot)):
            i = int(rng.integers(n))
            C[k] = Xs[i]
            continue
        cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * tot, side="right")
        cand = np.minimum(cand, n - 1)
        dc = np.maximum(xx[:, None] - 2.0 * (Xs @ Xs[cand].T) + xx[cand][None, :], 0.0)
        new = np.minimum(d2[:, None], dc)
        best = int(np.argmin(new.sum(0)))
        C[k] = Xs[cand[best]]
        d2 = new[:, best]
    return C
