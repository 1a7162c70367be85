"""One-vs-rest linear SVMs solved in the dual on one Gram matrix (for fewer images than dimensions).

The same problem as :class:`fvstudio.engine.svm.OneVsRestSGD` with the hinge loss (paper Sec. 3.1): for
each class c,

    min_w  lambda/2 ||w||^2 + 1/n sum_i a_i max(0, 1 - y_i w'x_i)                              (P)

(a_i = 1, or n / (2 n_pos) for positives and n / (2 n_neg) for negatives with ``balance="weight"``; a
target 0 removes sample i from class c). With C_i = a_i / (lambda n) its dual is the box-constrained QP

    max_alpha  sum_i alpha_i - 1/2 sum_ij alpha_i alpha_j y_i y_j K_ij,   0 <= alpha_i <= C_i,    (D)

    w = sum_i alpha_i y_i x_i,   K = X X' (+ B^2 for the bias, see below).

Why: when the training images are fewer than the dimensions (Caltech-101: n = 3,060 FVs of D = 131,072),
everything the learner needs is the n x n Gram matrix. It is computed once by BLAS (n^2 D / 2 multiply-adds,
one SYRK) and then serves every class, every lambda of the grid and every cross-validation fold: a fold's
problem is a sub-matrix, its validation scores are K[val, train] (alpha y). SGD instead reads all n D
values per epoch, per lambda and per fold.

Solver: dual coordinate descent (Hsieh, Chang, Lin, Keerthi & Sundararajan, ICML 2008, the solver of
liblinear). For i in a random order, with f = K (alpha o y) kept up to date,

    G = y_i f_i - 1,   alpha_i <- min(max(alpha_i - G / K_ii, 0), C_i),   f += (alpha_i' - alpha_i) y_i K[:, i]

until the largest projected gradient |PG| (G clipped at the active bounds) is below ``tol`` for every
class, or ``max_epochs`` passes. All classes share one pass over K's rows (row i of K is read once for
every class whose alpha_i changes); ``n_jobs`` threads each take a block of classes (the kernel releases
the GIL). The bias is the weight of a constant feature B = 1 appended to every x (liblinear's convention):
it is regularised like w, which at these lambdas changes the scores by less than the tolerance.

Lambda by cross-validation (``lam="cv"``): the folds (:func:`fvstudio.engine.model_selection.make_folds`) and the score
(mean per-class accuracy, or VOC07 mAP for targets) are those of :func:`fvstudio.engine.model_selection.select_lambda`,
so the result is a :class:`~fvstudio.engine.model_selection.LambdaSearch` the same lambda rules apply to. The grid is
solved from the largest lambda down, each solution warm-starting the next (a feasible point: the box only
grows).

Layouts as :class:`~fvstudio.engine.svm.OneVsRestSGD`: ``coef_`` (C, D) float32, ``intercept_`` (C,),
``classes_``, ``decision_function`` -> (N, C) float32; ``dual_coef_`` (C, n) float32 = alpha o y.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from . import defaults as D
from .progress import CancelLike, check_cancel, report
from .serialization import atomic_save_npz, load_npz
from .jit import kernel
from .model_selection import LambdaSearch, _cv_metric, make_folds
from .rows import as_row_provider, iter_chunks, memory_budget
from .estimator import Classifier
from .validation import check_positive_int, check_targets, feature_count_error, rng_from_seed

__all__ = ["OneVsRestDualSVM", "gram_matrix", "select_lambda_gram", "cross_val_decision_gram"]

BIAS_FEATURE = 1.0  # B: the constant feature whose weight is the intercept
_CHUNK_BYTES = 64 << 20


def _gram_block_bytes() -> int:
    """Bytes of rows one Gram block may hold: a quarter of the memory available now (page cache included),
    at most 4 GB, at least 64 MB."""
    return memory_budget()


def gram_matrix(X, *, cancel: CancelLike = None, block_bytes: Optional[int] = None) -> np.ndarray:
    """K = X X' (n, n) float32 from rows ``X`` (array, memmap or row provider), by BLAS in row blocks.

    Blocks of at most ``block_bytes`` of rows (default :func:`_gram_block_bytes`: all the rows at once
    whenever they fit, one GEMM at full speed): block i is multiplied against every block j <= i (read again),
    and the lower triangle is mirrored, so memory is K plus two blocks. Small blocks are slow twice over:
    thin products run far below BLAS's peak, and every block is read again per block (from a chunked
    store that is decoding, not a page-cache copy)."""
    provider = as_row_provider(X)
    n, dim = len(provider), int(provider.dim)
    K = np.empty((n, n), np.float32)
    budget = _gram_block_bytes() if block_bytes is None else int(block_bytes)
    step = max(1, min(n, budget // 2 // max(1, 4 * dim)))
    starts = list(range(0, n, step))
    for a in starts:
        check_cancel(cancel, "Gram matrix")
        rows_a = provider.rows(np.arange(a, min(n, a + step)))
        for b in starts[: starts.index(a) + 1]:
            rows_b = rows_a if b == a else provider.rows(np.arange(b, min(n, b + step)))
            K[a:a + len(rows_a), b:b + len(rows_b)] = rows_a @ rows_b.T
    for a in starts:
        for b in starts[: starts.index(a)]:
            K[b:b + step, a:a + step] = K[a:a + step, b:b + step].T
    return K


@kernel
def _dual_cd(K, Y, U, alpha, f, orders, tol, max_epochs):  # pragma: no cover - numba
    """Dual coordinate descent for C classes at once (module docstring).

    K (n, n) float32 (bias included), Y (C, n) int8 in {+1, -1, 0}, U (C, n) float64 upper bounds,
    alpha (C, n) float64 (updated in place), f (C, n) float64 = (K (alpha o Y)')' (updated in place),
    orders (max_epochs, n) int64 visiting orders. Returns the number of epochs run."""
    C, n = Y.shape
    delta = np.zeros(C)
    for epoch in range(max_epochs):
        viol = 0.0
        for t in range(n):
            i = orders[epoch, t]
            kii = max(float(K[i, i]), 1e-12)
            any_change = False
            for c in range(C):
                y = Y[c, i]
                delta[c] = 0.0
                if y == 0:
                    continue
                g = y * f[c, i] - 1.0
                a = alpha[c, i]
                u = U[c, i]
                if a <= 0.0:
                    pg = min(g, 0.0)
                elif a >= u:
                    pg = max(g, 0.0)
                else:
                    pg = g
                if abs(pg) > viol:
                    viol = abs(pg)
                if pg != 0.0:
                    new = min(max(a - g / kii, 0.0), u)
                    if new != a:
                        alpha[c, i] = new
                        delta[c] = (new - a) * y
                        any_change = True
            if any_change:
                for c in range(C):
                    d = delta[c]
                    if d != 0.0:
                        for j in range(n):
                            f[c, j] += d * K[i, j]
        if viol < tol:
            return epoch + 1
    return max_epochs


def _bounds(Y: np.ndarray, lam: float, balance: Optional[str]) -> np.ndarray:
    """Upper bounds C_i = a_i / (lambda n) per class (C, n); 0 where the target is 0 (ignored)."""
    n = Y.shape[1]
    a = np.ones(Y.shape, np.float64)
    if balance == "weight":
        pos = (Y > 0).sum(axis=1, keepdims=True).astype(np.float64)
        neg = (Y < 0).sum(axis=1, keepdims=True).astype(np.float64)
        tot = pos + neg
        a = np.where(Y > 0, tot / (2.0 * np.maximum(pos, 1.0)), tot / (2.0 * np.maximum(neg, 1.0)))
    return np.where(Y != 0, a / (lam * n), 0.0)


def _solve(K, Y, lam, balance, tol, max_epochs, seed, n_jobs, alpha=None):
    """alpha (C, n) of problem (D) for every class; ``alpha`` warm-starts it (clipped to the new box)."""
    C, n = Y.shape
    U = _bounds(Y, lam, balance)
    alpha = np.zeros((C, n)) if alpha is None else np.minimum(alpha, U)
    Kb = K
    f = np.ascontiguousarray(((alpha * Y) @ Kb.astype(np.float64, copy=False).T) if alpha.any() else np.zeros((C, n)))
    orders = np.stack([rng.permutation(n) for rng in rng_from_seed(seed).spawn(max_epochs)]).astype(np.int64)
    Y8 = np.ascontiguousarray(Y, np.int8)
    groups = [g for g in np.array_split(np.arange(C), max(1, min(n_jobs, C))) if g.size]
    if len(groups) == 1:
        epochs = _dual_cd(Kb, Y8, U, alpha, f, orders, float(tol), int(max_epochs))
        return alpha, int(epochs)
    parts = [(np.ascontiguousarray(alpha[g]), np.ascontiguousarray(f[g])) for g in groups]
    with ThreadPoolExecutor(len(groups)) as pool:
        jobs = [pool.submit(_dual_cd, Kb, np.ascontiguousarray(Y8[g]), np.ascontiguousarray(U[g]), a, fg, orders,
                            float(tol), int(max_epochs)) for g, (a, fg) in zip(groups, parts)]
        epochs = max(j.result() for j in jobs)
    for g, (a, _) in zip(groups, parts):
        alpha[g] = a
    return alpha, int(epochs)


def _with_bias(K: np.ndarray, bias: bool) -> np.ndarray:
    return K + np.float32(BIAS_FEATURE ** 2) if bias else K


def select_lambda_gram(K, y, grid: Sequence[float] = D.LAMBDA_GRID, folds: int = D.CV_FOLDS, seed=0, *,
                       classes=None, balance=D.BALANCE, bias: bool = D.BIAS, tol: float = 0.1,
                       max_epochs: int = 200, n_jobs: int = 1, progress=None, cancel: CancelLike = None
                       ) -> LambdaSearch:
    """k-fold cross-validation of lambda on a precomputed Gram matrix ``K`` (n, n) (module docstring)."""
    grid = np.asarray([float(v) for v in grid], dtype=np.float64)
    if grid.size == 0 or not (grid > 0).all():
        raise ValueError(f"grid must hold lambdas > 0, got {grid.tolist()}")
    n = K.shape[0]
    targets = check_targets(y, n, classes)
    Y, multilabel = targets.Y, targets.multilabel
    fold = make_folds(targets.y, folds, seed)
    Kb = _with_bias(np.asarray(K, np.float32), bias)
    scores = np.full((grid.size, folds), np.nan)
    order = np.argsort(-grid, kind="stable")  # largest lambda first: each warm-starts the next
    done = 0
    for f in range(folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        Ktr = np.ascontiguousarray(Kb[np.ix_(tr, tr)])
        Kte = Kb[np.ix_(te, tr)]
        Ytr = np.ascontiguousarray(Y[tr].T)
        alpha = None
        for g in order:
            check_cancel(cancel, "lambda cross-validation")
            alpha, _ = _solve(Ktr, Ytr, grid[g], balance, tol, max_epochs, seed, n_jobs, alpha)
            s = (Kte @ (alpha * Ytr).T.astype(np.float32)).astype(np.float32)
            scores[g, f] = _cv_metric(s, targets.subset(te))
            done += 1
            report(progress, done, folds * grid.size, f"fold {f + 1}, lambda {grid[g]:g}", lam=float(grid[g]),
                   score=float(scores[g, f]))
    mean = np.nan_to_num(np.nanmean(scores, axis=1), nan=-np.inf)
    best = max(range(grid.size), key=lambda i: (round(mean[i], 12), grid[i]))
    return LambdaSearch(best_lam=float(grid[best]), grid=grid, scores=scores,
                        metric="map" if multilabel else "mean_per_class_accuracy")


def cross_val_decision_gram(K, y, lam: float, folds: int = D.CV_FOLDS, seed=0, *, classes=None,
                            balance=D.BALANCE, bias: bool = D.BIAS, tol: float = 0.1, max_epochs: int = 200,
                            n_jobs: int = 1, cancel: CancelLike = None) -> np.ndarray:
    """Out-of-fold decision values (n, C) at ``lam`` from a Gram matrix: each sample scored by a model
    not trained on it (same folds as :func:`fvstudio.engine.model_selection.cross_val_decision`)."""
    n = K.shape[0]
    targets = check_targets(y, n, classes)
    Y = targets.Y
    fold = make_folds(targets.y, folds, seed)
    Kb = _with_bias(np.asarray(K, np.float32), bias)
    out = np.zeros((n, targets.classes.size), np.float32)
    for f in range(folds):
        check_cancel(cancel, "out-of-fold scores")
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        Ytr = np.ascontiguousarray(Y[tr].T)
        alpha, _ = _solve(np.ascontiguousarray(Kb[np.ix_(tr, tr)]), Ytr, float(lam), balance, tol, max_epochs,
                          seed, n_jobs)
        out[te] = Kb[np.ix_(te, tr)] @ (alpha * Ytr).T.astype(np.float32)
    return out


class OneVsRestDualSVM(Classifier):
    """One-vs-rest linear SVMs (hinge loss) by dual coordinate descent on one Gram matrix.

    ``lam`` is a float or ``"cv"`` (chosen by :func:`select_lambda_gram` over ``lam_grid``). ``tol`` is the
    stopping threshold on the largest projected gradient (liblinear's 0.1); ``max_epochs`` caps the passes.
    ``fit(X, y, gram=K)`` re-uses a Gram matrix already computed for these rows.
    """

    def __init__(self, lam=D.LAM, *, lam_grid: Sequence[float] = D.LAMBDA_GRID, cv_folds: int = D.CV_FOLDS,
                 balance: Optional[str] = D.BALANCE, bias: bool = D.BIAS, tol: float = 0.1,
                 max_epochs: int = 200, n_jobs: int = 1, seed=0):
        self.lam = lam
        self.lam_grid = lam_grid
        self.cv_folds = cv_folds
        self.balance = balance
        self.bias = bias
        self.tol = tol
        self.max_epochs = max_epochs
        self.n_jobs = n_jobs
        self.seed = seed

    def _check_params(self) -> None:
        if self.balance not in (None, "weight"):
            raise ValueError(f"balance must be None or 'weight' for the dual solver, got {self.balance!r}")
        if not (isinstance(self.lam, str) and self.lam == "cv") and not float(self.lam) > 0:
            raise ValueError(f"lam must be > 0 or 'cv', got {self.lam!r}")
        if not float(self.tol) > 0:
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        check_positive_int(self.max_epochs, "max_epochs")
        check_positive_int(self.n_jobs, "n_jobs")

    def fit(self, X, y, progress=None, cancel: CancelLike = None, *, classes=None, gram=None,
            lam: Optional[float] = None) -> "OneVsRestDualSVM":
        """Learn ``coef_`` / ``intercept_`` from rows ``X`` and ``y`` (labels or targets, as OneVsRestSGD).

        ``gram``: K = X X' if already computed; ``lam`` overrides ``self.lam`` (e.g. a lambda chosen
        outside by another rule)."""
        self._check_params()
        provider = as_row_provider(X)
        n, dim = len(provider), int(provider.dim)
        if n < 1 or dim < 1:
            raise ValueError(f"X must have rows and columns, got shape ({n}, {dim})")
        y, classes, names = self._label_codes(y, classes)
        targets = check_targets(y, n, classes)
        Y, cls, multilabel = targets.Y, targets.classes, targets.multilabel
        K = gram_matrix(provider, cancel=cancel) if gram is None else np.asarray(gram, np.float32)
        if K.shape != (n, n):
            raise ValueError(f"gram has shape {K.shape}, expected ({n}, {n}) for X's {n} rows")
        if not np.isfinite(K).all():
            raise ValueError("X holds non-finite values (its Gram matrix is not finite)")
        lam = self.lam if lam is None else lam
        if isinstance(lam, str):
            self.cv_search_ = select_lambda_gram(
                K, y, self.lam_grid, self.cv_folds, self.seed, classes=classes, balance=self.balance,
                bias=self.bias, tol=self.tol, max_epochs=self.max_epochs, n_jobs=self.n_jobs, progress=progress,
                cancel=cancel)
            lam = self.cv_search_.best_lam
        Yt = np.ascontiguousarray(Y.T)
        alpha, epochs = _solve(_with_bias(K, self.bias), Yt, float(lam), self.balance, self.tol, self.max_epochs,
                               self.seed, self.n_jobs)
        dual = (alpha * Yt).astype(np.float32)
        coef = np.zeros((cls.size, dim), np.float32)
        for s, stop, rows in iter_chunks(provider, n, dim):
            check_cancel(cancel, "SVM weights")
            coef += dual[:, s:stop] @ rows
        self.coef_ = coef
        self.intercept_ = (dual.sum(axis=1) * BIAS_FEATURE if self.bias else np.zeros(cls.size)).astype(np.float32)
        self.dual_coef_ = dual
        self.classes_ = cls if names is None else names[cls]  # non-numeric labels: predict returns them
        self.multilabel_ = bool(multilabel)
        self.lam_ = float(lam)
        self.n_iter_ = epochs
        self.n_features_in_ = dim
        return self

    def _is_fitted(self) -> bool:
        return vars(self).get("coef_") is not None

    def _check_fitted(self) -> None:
        self._require_fitted()

    def decision_function(self, X) -> np.ndarray:
        """(N, C) float32 scores w_c' x + b_c, chunk by chunk with BLAS."""
        self._check_fitted()
        provider = as_row_provider(X)
        if provider.dim != self.n_features_in_:
            raise feature_count_error("X", provider.dim, self.n_features_in_, "OneVsRestDualSVM")
        out = np.empty((len(provider), self.coef_.shape[0]), np.float32)
        for s, stop, rows in iter_chunks(provider, len(provider), provider.dim):
            np.matmul(rows, self.coef_.T, out=out[s:stop])
        return out + self.intercept_

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if self.multilabel_:
            return np.where(scores > 0, 1, -1).astype(np.int8)
        return self.classes_[np.argmax(scores, axis=1)]

    def save(self, path):
        self._check_fitted()
        meta = {"kind": "OneVsRestDualSVM", "params": self._json_params(), "multilabel": self.multilabel_,
                "lam_": self.lam_, "n_iter_": self.n_iter_}
        return atomic_save_npz(path, {"coef": self.coef_, "intercept": self.intercept_, "classes": self.classes_,
                                      "dual_coef": self.dual_coef_}, meta)

    @classmethod
    def load(cls, path) -> "OneVsRestDualSVM":
        arrays, meta = load_npz(path, kind="OneVsRestDualSVM")
        model = cls(**cls._params_from_json(meta["params"]))
        model.coef_ = arrays["coef"].astype(np.float32)
        model.intercept_ = arrays["intercept"].astype(np.float32)
        model.classes_ = arrays["classes"]  # int64 labels, or the strings fit was given
        model.dual_coef_ = arrays["dual_coef"].astype(np.float32)
        model.multilabel_ = bool(meta["multilabel"])
        model.lam_ = float(meta["lam_"])
        model.n_iter_ = int(meta["n_iter_"])
        model.n_features_in_ = model.coef_.shape[1]
        return model

