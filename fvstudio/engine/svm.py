"""One-vs-rest linear classifiers learned by stochastic gradient descent (paper Sec. 3.1, 4.3, 5).

For each class c a linear scorer f_c(x) = w_c' x + b_c minimises the regularised empirical risk

    E(w_c, b_c) = lambda/2 ||w_c||^2 + 1/n_c sum_i a_ic l(y_ic f_c(x_i))           (Sec. 3.1)

with y_ic in {+1, -1}, a per-sample weight a_ic (1 unless classes are balanced by weighting) and the
loss l(z) of ``loss`` (the three losses of the paper's Sec. 4.4 / Fig. 9):

    hinge    l(z) = max(0, 1 - z)            l'(z) = -1 if z < 1 else 0       (linear SVM)
    log      l(z) = log(1 + exp(-z))         l'(z) = -1 / (1 + exp(z))        (logistic regression)
    squared  l(z) = (1 - z)^2 / 2            l'(z) = z - 1                    (quadratic loss)

SGD takes one step per sample read (Bottou's SGD for SVMs): with g = a l'(z) y,

    w <- (1 - eta_t lambda) w - eta_t g x,      b <- b - eta_t g          (the bias is not regularised)

Learning rate ``learning_rate``:
    "optimal"   eta_t = 1 / (lambda (t + t0)),  t0 = 1 / (lambda eta0),  eta0 = r / max(1, |l'(-r)|),
                r = lambda^(-1/4) (Bottou's estimate of a typical weight norm; eta0 may be given
                instead); for the squared loss eta0 is also capped at 1 / max |x|^2 (over <= 512
                sampled rows, +1 for the bias), below which its SGD cannot diverge; and always
                eta0 <= 1 / (2 lambda), so the shrink factor 1 - eta lambda stays >= 1/2
    "asgd"      eta_t = eta0 / (1 + lambda eta0 t)^0.75   (Xu 2011 / Bottou's ASGD schedule)
    "constant"  eta_t = eta0
with t counted per class (the number of steps that class has taken).

Averaging (``averaging=True``, ASGD): from the start of the second epoch on, every class also keeps the
running mean a_c of its iterates, a <- (1 - mu_t) a + mu_t w with mu_t = 1 / (steps since the start);
the final model is the average.

Implementation. ONE pass over the samples updates EVERY class: each row x is read once (from an array,
a memmap or any :class:`RowProvider`), its C scores are computed while it sits in cache, then the
classes are updated. Weights are held as a scale times a vector, w = V / d (Bottou's "divisor"), so the
O(D) shrink by (1 - eta lambda) is the O(1) update d <- d / (1 - eta lambda); the average is held as
a = (U + f V) / d_a, so averaging too costs one extra sparse-in-time axpy per step (Bottou's sgd-2.1
bookkeeping). Both are folded back into the vectors when a divisor exceeds 1e5. The inner loop is a
numba ``nogil`` kernel; per-sample steps in one fused kernel were measured faster than mini-batches
through BLAS at equal accuracy here (``benchmarks/bench_svm.py``).

Targets. ``y`` is either (N,) integer labels (classes = the sorted distinct labels >= 0; a sample
labelled < 0 is a negative for every class) or (N, C) targets in {+1, -1, 0}, where 0 (VOC
"difficult") means the sample is ignored for that class (bool targets: True = +1, False = -1).
Class balancing:
    None      every sample is used by every class (besides 0 targets);
    "sample"  per epoch, each class uses all its positives and a fresh random subset of
              ``neg_ratio`` x n_pos of its negatives (the paper's large-scale practice, Sec. 5);
              a row no class needs in that epoch is not even read;
    "weight"  every sample is used, positives weighted n / (2 n_pos) and negatives n / (2 n_neg).

Layouts: ``coef_`` (C, D) float32, ``intercept_`` (C,) float32, ``classes_`` (C,) int64 labels
(or 0..C-1 for targets), ``decision_function`` -> (N, C) float32.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from numba import njit

from .defaults import AVERAGING, BALANCE, BIAS, CV_FOLDS, EPOCHS, LAM, LAMBDA_GRID, LOSS
from .progress import CancelLike, check_cancel, report, scaled
from .serialization import atomic_save_npz, load_npz
from .validation import check_choice, check_positive_int, rng_from_seed

LOSSES = ("hinge", "log", "squared")
SCHEDULES = ("optimal", "asgd", "constant")
BALANCES = (None, "sample", "weight")
_LOSS_ID = {"hinge": 0, "log": 1, "squared": 2}
_SCHEDULE_ID = {"optimal": 0, "asgd": 1, "constant": 2}
#: a divisor above this is folded back into its vector (keeps float32 V in range).
_RENORM = 1e5
_CHUNK_BYTES = 32 << 20


# --------------------------------------------------------------------------------------------------
# Row providers: how samples reach the learner without one dense (N, D) array in RAM
# --------------------------------------------------------------------------------------------------
@runtime_checkable
class RowProvider(Protocol):
    """What the learner needs from a sample store: its length, row width, and rows by index."""

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def rows(self, indices) -> np.ndarray:
        """float32 C-contiguous (len(indices), dim) array of the requested rows, in that order."""
        ...


class ArrayRows:
    """A :class:`RowProvider` over an in-memory ndarray or an ``np.memmap`` (read lazily, by rows).

    Finite values are checked once, chunk by chunk, at construction (``check=False`` skips it).
    """

    def __init__(self, array, *, name: str = "X", check: bool = True):
        arr = array if isinstance(array, np.ndarray) else np.asarray(array)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}")
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
        self.array = arr
        self.name = name
        if check:
            step = max(1, _CHUNK_BYTES // max(1, arr.shape[1] * arr.itemsize))
            for s in range(0, arr.shape[0], step):
                block = arr[s:s + step]
                if not np.isfinite(np.sum(block, dtype=np.float64)) and not np.isfinite(block).all():
                    bad = np.flatnonzero(~np.isfinite(block).all(axis=1))[0] + s
                    raise ValueError(f"{name} contains NaN or infinite values (first in row {bad}); "
                                     "clean or drop those rows first")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def rows(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return np.ascontiguousarray(self.array[idx], dtype=np.float32)

    def dense_float32(self) -> Optional[np.ndarray]:
        """The underlying float32 C-contiguous array (no copy), or None if rows need converting."""
        a = self.array
        if a.dtype == np.float32 and a.flags.c_contiguous:
            return np.asarray(a)  # plain ndarray view of a memmap: same pages, no copy
        return None


class SubsetRows:
    """The rows ``indices`` of another provider, as a provider (cross-validation folds, splits)."""

    def __init__(self, base: RowProvider, indices):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1:
            raise ValueError("indices must be 1-D")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise ValueError(f"indices must lie in [0, {len(base)})")

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def dim(self) -> int:
        return int(self.base.dim)

    def rows(self, indices) -> np.ndarray:
        return self.base.rows(self.indices[np.asarray(indices, dtype=np.int64)])


def as_row_provider(X, name: str = "X") -> RowProvider:
    """``X`` itself if it already provides rows, else :class:`ArrayRows` over it."""
    if isinstance(X, RowProvider):
        return X
    return ArrayRows(X, name=name)


def _dense_source(provider):
    """(float32 array, index map or None) when rows can be read in place by the kernel, else None."""
    if isinstance(provider, ArrayRows):
        arr = provider.dense_float32()
        return None if arr is None else (arr, None)
    if isinstance(provider, SubsetRows):
        inner = _dense_source(provider.base)
        if inner is None:
            return None
        arr, imap = inner
        return arr, (provider.indices if imap is None else imap[provider.indices])
    return None


def _iter_chunks(provider: RowProvider, n_rows: int, dim: int):
    step = max(1, _CHUNK_BYTES // max(1, 4 * dim))
    for s in range(0, n_rows, step):
        stop = min(n_rows, s + step)
        yield s, stop, provider.rows(np.arange(s, stop))


# --------------------------------------------------------------------------------------------------
# The SGD kernel
# --------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, fastmath=True)
def _dots(V, act, n_act, x, out):
    """out[j] = V[act[j]] . x for j < n_act; four rows per sweep so x is loaded once per four."""
    D = x.shape[0]
    j = 0
    while j + 4 <= n_act:
        v0, v1, v2, v3 = V[act[j]], V[act[j + 1]], V[act[j + 2]], V[act[j + 3]]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for d in range(D):
            xd = x[d]
            a0 += v0[d] * xd
            a1 += v1[d] * xd
            a2 += v2[d] * xd
            a3 += v3[d] * xd
        out[j], out[j + 1], out[j + 2], out[j + 3] = a0, a1, a2, a3
        j += 4
    while j + 2 <= n_act:
        v0, v1 = V[act[j]], V[act[j + 1]]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        for d in range(D):
            xd = x[d]
            a0 += v0[d] * xd
            a1 += v1[d] * xd
        out[j], out[j + 1] = a0, a1
        j += 2
    if j < n_act:
        v0 = V[act[j]]
        a0 = np.float32(0.0)
        for d in range(D):
            a0 += v0[d] * x[d]
        out[j] = a0


@njit(cache=True, nogil=True, fastmath=True)
def _axpys(V, rows, coef, n, x):
    """V[rows[j]] += coef[j] * x for j < n, two rows per sweep."""
    D = x.shape[0]
    j = 0
    while j + 2 <= n:
        v0, v1 = V[rows[j]], V[rows[j + 1]]
        c0, c1 = coef[j], coef[j + 1]
        for d in range(D):
            xd = x[d]
            v0[d] += c0 * xd
            v1[d] += c1 * xd
        j += 2
    if j < n:
        v0 = V[rows[j]]
        c0 = coef[j]
        for d in range(D):
            v0[d] += c0 * x[d]


@njit(cache=True, nogil=True, fastmath=True)
def _axpys_pair(V, U, rows, cv, cu, n, x):
    """V[rows[j]] += cv[j] * x and U[rows[j]] += cu[j] * x for j < n, in one sweep over x."""
    D = x.shape[0]
    j = 0
    while j + 2 <= n:
        v0, v1, u0, u1 = V[rows[j]], V[rows[j + 1]], U[rows[j]], U[rows[j + 1]]
        a0, a1, b0, b1 = cv[j], cv[j + 1], cu[j], cu[j + 1]
        for d in range(D):
            xd = x[d]
            v0[d] += a0 * xd
            u0[d] += b0 * xd
            v1[d] += a1 * xd
            u1[d] += b1 * xd
        j += 2
    if j < n:
        v0, u0 = V[rows[j]], U[rows[j]]
        a0, b0 = cv[j], cu[j]
        for d in range(D):
            xd = x[d]
            v0[d] += a0 * xd
            u0[d] += b0 * xd


@njit(cache=True, nogil=True, fastmath=True)
def _sgd_pass(X, rows, Yw, loss_id, lam, t0, eta0, schedule_id, fit_bias, renorm, avg_start,
              V, U, b, ab, wdiv, adiv, wfrac, t, stats):
    """One SGD pass over ``rows`` of ``X``; every class with Yw[i, c] != 0 takes a step per row.

    Yw[i, c] = y * a (signed sample weight, 0 = class c skips row i). Per class c: w = V[c]/wdiv[c],
    a = (U[c] + wfrac[c] V[c]) / adiv[c] once t[c] >= avg_start[c]. stats[c] += (loss, count).
    """
    n = rows.shape[0]
    C = V.shape[0]
    D = V.shape[1]
    act = np.empty(C, np.int64)
    dots = np.empty(C, np.float32)
    upd = np.empty(C, np.int64)
    dv = np.empty(C, np.float32)
    upd_u = np.empty(C, np.int64)
    du = np.empty(C, np.float32)
    for i in range(n):
        x = X[rows[i]]
        n_act = 0
        for c in range(C):
            if Yw[i, c] != 0.0:
                act[n_act] = c
                n_act += 1
        _dots(V, act, n_act, x, dots)
        n_upd = 0
        n_upd_u = 0
        for j in range(n_act):
            c = act[j]
            yw = Yw[i, c]
            y = 1.0 if yw > 0.0 else -1.0
            weight = abs(yw)
            z = y * (dots[j] / wdiv[c] + b[c])
            if loss_id == 0:
                lz = 1.0 - z if z < 1.0 else 0.0
                dl = -1.0 if z < 1.0 else 0.0
            elif loss_id == 1:
                if z > 0.0:
                    e = math.exp(-z)
                    lz = math.log1p(e)
                    dl = -e / (1.0 + e)
                else:
                    e = math.exp(z)
                    lz = -z + math.log1p(e)
                    dl = -1.0 / (1.0 + e)
            else:
                lz = 0.5 * (1.0 - z) * (1.0 - z)
                dl = z - 1.0
            stats[c, 0] += weight * lz
            stats[c, 1] += weight
            tc = t[c]
            if schedule_id == 0:
                eta = 1.0 / (lam * (tc + t0))
            elif schedule_id == 1:
                eta = eta0 / (1.0 + lam * eta0 * tc) ** 0.75
            else:
                eta = eta0
            wdiv[c] = wdiv[c] / (1.0 - eta * lam)
            g = weight * dl * y
            if g != 0.0:
                delta = -eta * g * wdiv[c]
                dv[n_upd] = delta
                upd[n_upd] = c
                n_upd += 1
                if tc > avg_start[c]:  # averaging under way: keep a unchanged by this step
                    du[n_upd_u] = -wfrac[c] * delta
                    upd_u[n_upd_u] = c
                    n_upd_u += 1
                if fit_bias:
                    b[c] -= eta * g
        if n_upd_u == n_upd and n_upd > 0:  # every updated class is averaging (epochs >= 2)
            _axpys_pair(V, U, upd, dv, du, n_upd, x)
        else:
            _axpys(V, upd, dv, n_upd, x)
            _axpys(U, upd_u, du, n_upd_u, x)
        for j in range(n_act):
            c = act[j]
            tc = t[c]
            averaging = tc >= avg_start[c]
            if averaging:
                if tc == avg_start[c]:  # first averaged step: a = w
                    U[c, :] = 0.0
                    adiv[c] = wdiv[c]
                    wfrac[c] = 1.0
                    ab[c] = b[c]
                else:
                    mu = 1.0 / (tc - avg_start[c] + 1.0)
                    adiv[c] = adiv[c] / (1.0 - mu)
                    wfrac[c] += mu * adiv[c] / wdiv[c]
                    ab[c] += mu * (b[c] - ab[c])
            t[c] = tc + 1.0
            if wdiv[c] > renorm or (averaging and adiv[c] > renorm):
                if averaging:  # fold f V into U, then a = U with divisor 1
                    f = np.float32(wfrac[c])
                    inv_a = np.float32(1.0 / adiv[c])
                    for d in range(D):
                        U[c, d] = (U[c, d] + f * V[c, d]) * inv_a
                    adiv[c] = 1.0
                    wfrac[c] = 0.0
                inv_w = np.float32(1.0 / wdiv[c])
                for d in range(D):
                    V[c, d] *= inv_w
                wdiv[c] = 1.0


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------
def _targets_matrix(y, n: int, classes=None):
    """(Y (n, C) int8 in {+1,-1,0}, classes (C,) int64, multilabel flag) from labels or targets."""
    arr = np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"y must be integer labels or {{+1,-1,0}} targets, got dtype {arr.dtype}")
    if arr.shape[:1] != (n,):
        raise ValueError(f"y has {arr.shape[0] if arr.ndim else 0} rows, X has {n}")
    if arr.ndim == 1:
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("y labels must be integers")
        lab = arr.astype(np.int64)
        cls = np.unique(lab[lab >= 0]) if classes is None else np.asarray(classes, dtype=np.int64)
        if cls.size < 2:
            raise ValueError(f"y must hold at least 2 classes, got {cls.tolist()}")
        Y = np.where(lab[:, None] == cls[None, :], 1, -1).astype(np.int8)
        return Y, cls, False
    if arr.ndim == 2:
        if arr.dtype == np.bool_:  # True = positive, False = negative (not "ignored")
            arr = np.where(arr, 1, -1)
        if not np.isin(arr, (-1, 0, 1)).all():
            raise ValueError("y targets (N, C) must hold only +1 (positive), -1 (negative), 0 (ignore)")
        cls = np.arange(arr.shape[1], dtype=np.int64)
        if classes is not None and len(classes) != arr.shape[1]:
            raise ValueError(f"classes has {len(classes)} entries, y has {arr.shape[1]} columns")
        return arr.astype(np.int8), cls, True
    raise ValueError(f"y must be (N,) labels or (N, C) targets, got shape {arr.shape}")


def _eta0_for(loss: str, lam: float) -> float:
    r = lam ** -0.25
    if loss == "hinge":
        dl = 1.0
    elif loss == "log":
        dl = 1.0 / (1.0 + math.exp(-r))
    else:
        dl = 1.0 + r
    return r / max(1.0, dl)


@dataclass
class LambdaSearch:
    """Result of :func:`select_lambda`: the best lambda and the cross-validated score of each."""

    best_lam: float
    grid: np.ndarray
    scores: np.ndarray  # (G, folds)
    metric: str

    @property
    def mean_scores(self) -> np.ndarray:
        return np.nanmean(self.scores, axis=1)


# --------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------
class OneVsRestSGD:
    """One-vs-rest linear classifiers (hinge / log / squared loss) trained jointly by SGD.

    ``lam`` is a float or ``"cv"`` (chosen by :func:`select_lambda` over ``lam_grid`` with
    ``cv_folds`` folds on the training set). ``epochs`` passes over the data; ``seed`` fixes the
    sample order and the negative subsampling. ``n_jobs`` threads each train a contiguous block of
    classes over the same row order (the kernel releases the GIL); the result does not depend on it.
    """

    # learned state (None until fit / load)
    coef_: Optional[np.ndarray] = None
    intercept_: Optional[np.ndarray] = None

    def __init__(self, loss: str = LOSS, lam=LAM, epochs: int = EPOCHS, bias: bool = BIAS,
                 averaging: bool = AVERAGING, balance: Optional[str] = BALANCE, neg_ratio: float = 5.0,
                 learning_rate: str = "optimal", eta0: Optional[float] = None,
                 lam_grid: Sequence[float] = LAMBDA_GRID, cv_folds: int = CV_FOLDS, n_jobs: int = 1,
                 seed=0):
        self.loss = loss
        self.lam = lam
        self.epochs = epochs
        self.bias = bias
        self.averaging = averaging
        self.balance = balance
        self.neg_ratio = neg_ratio
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.lam_grid = lam_grid
        self.cv_folds = cv_folds
        self.n_jobs = n_jobs
        self.seed = seed

    # -- parameters --------------------------------------------------------------------------------
    def get_params(self) -> dict:
        return {"loss": self.loss, "lam": self.lam, "epochs": self.epochs, "bias": self.bias,
                "averaging": self.averaging, "balance": self.balance, "neg_ratio": self.neg_ratio,
                "learning_rate": self.learning_rate, "eta0": self.eta0,
                "lam_grid": [float(v) for v in self.lam_grid], "cv_folds": self.cv_folds,
                "n_jobs": self.n_jobs,
                "seed": self.seed if isinstance(self.seed, (int, np.integer, type(None))) else None}

    def _check_params(self):
        check_choice(self.loss, "loss", LOSSES)
        check_choice(self.learning_rate, "learning_rate", SCHEDULES)
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be None, 'sample' or 'weight', got {self.balance!r}")
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.cv_folds, "cv_folds", minimum=2)
        check_positive_int(self.n_jobs, "n_jobs")
        if not (isinstance(self.neg_ratio, (int, float)) and self.neg_ratio > 0):
            raise ValueError(f"neg_ratio must be a number > 0, got {self.neg_ratio!r}")
        if not (isinstance(self.lam, str) and self.lam == "cv"):
            if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam > 0:
                raise ValueError(f"lam must be a number > 0 or 'cv', got {self.lam!r}")
        if self.eta0 is not None and not (isinstance(self.eta0, (int, float)) and self.eta0 > 0):
            raise ValueError(f"eta0 must be None or a number > 0, got {self.eta0!r}")
        if self.learning_rate == "constant" and self.eta0 is None:
            raise ValueError("learning_rate='constant' needs eta0")

    # -- training ----------------------------------------------------------------------------------
    def fit(self, X, y, progress=None, cancel: CancelLike = None, *, classes=None) -> "OneVsRestSGD":
        """Learn ``coef_``/``intercept_`` from rows ``X`` (array, memmap or RowProvider) and ``y``.

        ``classes`` fixes the label set (and column order) when ``y`` may miss some classes.
        Progress: an update per epoch with values ``epoch`` and ``loss`` (mean over classes of the
        training loss seen in that epoch, each taken before its step), and value-less updates at most
        every 0.5 s within an epoch. Cancel is checked between row chunks (<= 32 MB of rows).
        """
        self._check_params()
        provider = as_row_provider(X)
        n, dim = len(provider), int(provider.dim)
        if n < 1:
            raise ValueError("X has no rows")
        Y, cls, multilabel = _targets_matrix(y, n, classes)
        lam = self.lam
        if isinstance(lam, str):
            search = select_lambda(provider, y, self.lam_grid, folds=self.cv_folds, seed=self.seed,
                                   classes=classes, progress=scaled(progress, 0.0, 0.5, "lambda CV: "),
                                   cancel=cancel, **{k: v for k, v in self.get_params().items()
                                                     if k not in ("lam", "lam_grid", "cv_folds", "seed")})
            lam = search.best_lam
            self.cv_search_ = search
            progress = scaled(progress, 0.5, 1.0, "")
        lam = float(lam)
        eta0 = float(self.eta0) if self.eta0 is not None else _eta0_for(self.loss, lam)
        if self.eta0 is None and self.loss == "squared":
            # the squared loss has an unbounded gradient: SGD is stable only for eta |x|^2 < 2
            probe = provider.rows(np.unique(rng_from_seed(self.seed).integers(0, n, min(n, 512))))
            sq = float(np.max(np.einsum("ij,ij->i", probe, probe))) + (1.0 if self.bias else 0.0)
            eta0 = min(eta0, 1.0 / max(sq, 1e-12))
        if self.eta0 is None:
            eta0 = min(eta0, 0.5 / lam)  # eta lambda <= 1/2: the shrink factor stays in [1/2, 1)
        if self.learning_rate == "constant" and eta0 * lam >= 1.0:
            raise ValueError(f"eta0 * lam must be < 1 for a constant rate, got {eta0 * lam:g}")
        t0 = 1.0 / (lam * eta0)
        C = cls.size
        rng = rng_from_seed(self.seed)

        pos = (Y > 0).sum(axis=0).astype(np.float64)
        neg = (Y < 0).sum(axis=0).astype(np.float64)
        if self.balance == "weight":
            tot = pos + neg
            wpos = np.where(pos > 0, tot / (2.0 * np.maximum(pos, 1.0)), 1.0)
            wneg = np.where(neg > 0, tot / (2.0 * np.maximum(neg, 1.0)), 1.0)
        else:
            wpos = np.ones(C)
            wneg = np.ones(C)
        keep_neg = np.minimum(1.0, self.neg_ratio * pos / np.maximum(neg, 1.0))

        V = np.zeros((C, dim), dtype=np.float32)
        U = np.zeros((C, dim), dtype=np.float32) if self.averaging else np.zeros((C, 1), np.float32)
        b = np.zeros(C)
        ab = np.zeros(C)
        wdiv = np.ones(C)
        adiv = np.ones(C)
        wfrac = np.zeros(C)
        t = np.zeros(C)
        avg_start = np.full(C, np.inf)
        avg_epoch = 1 if self.epochs > 1 else 0

        dense = _dense_source(provider)
        consts = (_LOSS_ID[self.loss], lam, t0, eta0, _SCHEDULE_ID[self.learning_rate], bool(self.bias),
                  float(_RENORM))
        n_threads = min(self.n_jobs, C)
        groups = [slice(int(g[0]), int(g[-1]) + 1) for g in np.array_split(np.arange(C), n_threads)]
        pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        chunk = max(1, _CHUNK_BYTES // (4 * dim))
        Ypos = (Y > 0)
        Yneg = (Y < 0)
        history = []
        last_report = time.perf_counter()
        try:
            for epoch in range(self.epochs):
                if self.averaging and epoch == avg_epoch:
                    avg_start[:] = t
                stats = np.zeros((C, 2))
                order = rng.permutation(n)
                for s in range(0, n, chunk):
                    check_cancel(cancel, "SVM training")
                    if progress is not None and time.perf_counter() - last_report > 0.5:
                        last_report = time.perf_counter()
                        report(progress, epoch + s / n, self.epochs, f"epoch {epoch + 1}/{self.epochs}")
                    idx = order[s:s + chunk]
                    use = Ypos[idx] | Yneg[idx]
                    if self.balance == "sample":
                        use = Ypos[idx] | (Yneg[idx] & (rng.random((idx.size, C)) < keep_neg))
                    Yw = np.where(Ypos[idx], wpos, -wneg) * use
                    needed = use.any(axis=1)
                    if not needed.all():
                        idx, Yw = idx[needed], Yw[needed]
                    if idx.size == 0:
                        continue
                    Yw = np.ascontiguousarray(Yw, dtype=np.float64)
                    if dense is not None:
                        arr, imap = dense
                        rows = idx if imap is None else imap[idx]
                        Xc = arr
                    else:
                        # read in storage order, step in the random order
                        srt = np.argsort(idx, kind="stable")
                        Xc = provider.rows(idx[srt])
                        rows = np.empty(idx.size, np.int64)
                        rows[srt] = np.arange(idx.size)
                    rows = rows.astype(np.int64)
                    if pool is None:
                        _sgd_pass(Xc, rows, Yw, *consts, avg_start, V, U, b, ab, wdiv, adiv, wfrac, t,
                                  stats)
                    else:
                        jobs = [pool.submit(_sgd_pass, Xc, rows, np.ascontiguousarray(Yw[:, g]), *consts,
                                            avg_start[g], V[g], U[g], b[g], ab[g], wdiv[g], adiv[g],
                                            wfrac[g], t[g], stats[g]) for g in groups]
                        for job in jobs:
                            job.result()
                epoch_loss = stats[:, 0] / np.maximum(stats[:, 1], 1e-300)
                history.append(float(np.mean(epoch_loss)))
                report(progress, epoch + 1, self.epochs, f"epoch {epoch + 1}/{self.epochs}",
                       epoch=epoch + 1, loss=history[-1])
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

        averaged = self.averaging and np.isfinite(avg_start).all()
        if averaged:
            coef = (U + wfrac[:, None] * V) / adiv[:, None]
            intercept = ab
        else:
            coef = V / wdiv[:, None]
            intercept = b
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.asarray(intercept, dtype=np.float32)
        self.classes_ = cls
        self.multilabel_ = bool(multilabel)
        self.lam_ = lam
        self.eta0_ = eta0
        self.n_features_in_ = dim
        self.n_iter_ = self.epochs
        self.n_steps_ = t.astype(np.int64)
        self.loss_history_ = history
        if not np.isfinite(self.coef_).all() or not np.isfinite(self.intercept_).all():
            raise ValueError(f"SGD diverged (non-finite weights) with lam={lam:g}, eta0={eta0:g}; "
                             "use a larger lam or a smaller eta0")
        return self

    # -- prediction --------------------------------------------------------------------------------
    def _check_fitted(self):
        if self.coef_ is None:
            raise ValueError("this OneVsRestSGD is not fitted yet; call fit first")

    def decision_function(self, X) -> np.ndarray:
        """(N, C) float32 scores w_c' x + b_c, computed chunk by chunk with BLAS."""
        self._check_fitted()
        provider = as_row_provider(X)
        if provider.dim != self.n_features_in_:
            raise ValueError(f"X has {provider.dim} features per row, the model expects "
                             f"{self.n_features_in_}")
        n = len(provider)
        out = np.empty((n, self.coef_.shape[0]), dtype=np.float32)
        for s, stop, rows in _iter_chunks(provider, n, provider.dim):
            np.matmul(rows, self.coef_.T, out=out[s:stop])
        out += self.intercept_
        return out

    def predict(self, X) -> np.ndarray:
        """Labels (N,) of the best-scoring class (lowest index on ties); for multi-label models,
        (N, C) int8 targets +1 where the score is > 0 and -1 elsewhere."""
        scores = self.decision_function(X)
        if self.multilabel_:
            return np.where(scores > 0, 1, -1).astype(np.int8)
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_topk(self, X, k: int = 5) -> np.ndarray:
        """(N, k) labels of the k best-scoring classes, best first (ties: lower class index first)."""
        k = check_positive_int(k, "k")
        scores = self.decision_function(X)
        k = min(k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return self.classes_[order]

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path):
        self._check_fitted()
        meta = {"kind": "OneVsRestSGD", "params": self.get_params(), "multilabel": self.multilabel_,
                "lam_": self.lam_, "eta0_": self.eta0_, "loss_history": self.loss_history_}
        return atomic_save_npz(path, {"coef": self.coef_, "intercept": self.intercept_,
                                      "classes": self.classes_, "n_steps": self.n_steps_}, meta)

    @classmethod
    def load(cls, path) -> "OneVsRestSGD":
        arrays, meta = load_npz(path, kind="OneVsRestSGD")
        model = cls(**meta["params"])
        model.coef_ = arrays["coef"].astype(np.float32)
        model.intercept_ = arrays["intercept"].astype(np.float32)
        model.classes_ = arrays["classes"].astype(np.int64)
        model.n_steps_ = arrays["n_steps"]
        model.multilabel_ = bool(meta["multilabel"])
        model.lam_ = float(meta["lam_"])
        model.eta0_ = float(meta["eta0_"])
        model.loss_history_ = list(meta["loss_history"])
        model.n_features_in_ = model.coef_.shape[1]
        model.n_iter_ = len(model.loss_history_)
        return model


# --------------------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------------------
def make_folds(y, folds: int = CV_FOLDS, seed=0) -> np.ndarray:
    """Fold id (N,) per sample: stratified by label for (N,) labels (each class dealt round-robin
    after a shuffle), by the first positive class for (N, C) targets."""
    folds = check_positive_int(folds, "folds", minimum=2)
    arr = np.asarray(y)
    n = arr.shape[0]
    if n < folds:
        raise ValueError(f"need at least folds={folds} samples, got {n}")
    rng = rng_from_seed(seed)
    if arr.ndim == 2:
        key = np.where((arr > 0).any(axis=1), np.argmax(arr > 0, axis=1), -1)
    else:
        key = arr.astype(np.int64)
    fold = np.empty(n, dtype=np.int64)
    offset = 0
    for k in np.unique(key):
        members = np.flatnonzero(key == k)
        members = members[rng.permutation(members.size)]
        fold[members] = (np.arange(members.size) + offset) % folds
        offset += members.size
    return fold


def cross_val_decision(X, y, folds: int = CV_FOLDS, seed=0, *, classes=None, progress=None,
                       cancel: CancelLike = None, **params) -> np.ndarray:
    """Out-of-fold decision values (N, C): each sample scored by a model not trained on it."""
    provider = as_row_provider(X)
    n = len(provider)
    Y, cls, multilabel = _targets_matrix(y, n, classes)
    fold = make_folds(y, folds, seed)
    out = np.zeros((n, cls.size), dtype=np.float32)
    for f in range(folds):
        check_cancel(cancel, "cross-validation")
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        ytr = np.asarray(y)[tr]
        model = OneVsRestSGD(**params).fit(SubsetRows(provider, tr), ytr, cancel=cancel,
                                           classes=None if multilabel else cls)
        out[te] = model.decision_function(SubsetRows(provider, te))
        report(progress, f + 1, folds, f"fold {f + 1}/{folds}")
    return out


def _cv_metric(scores, y, multilabel, cls):
    from . import metrics
    if multilabel:
        return metrics.mean_average_precision(scores, np.asarray(y), mode="voc07")
    lab = np.asarray(y).astype(np.int64)
    col = np.searchsorted(cls, lab)
    ok = (col < cls.size) & (cls[np.minimum(col, cls.size - 1)] == lab)
    pred = np.argmax(scores[ok], axis=1)
    return metrics.mean_per_class_accuracy(col[ok], pred, n_classes=cls.size)


def select_lambda(X, y, grid: Sequence[float] = LAMBDA_GRID, folds: int = CV_FOLDS, seed=0, *,
                  classes=None, progress=None, cancel: CancelLike = None, **params) -> LambdaSearch:
    """k-fold cross-validation of lambda on the training set.

    Score: mean per-class accuracy for labels, mAP (VOC07 11-point) for multi-label targets. Ties between
    lambdas go to the larger (more regularised) one. ``params`` are passed to :class:`OneVsRestSGD`.
    """
    grid = np.asarray([float(v) for v in grid], dtype=np.float64)
    if grid.size == 0 or not (grid > 0).all():
        raise ValueError(f"grid must hold lambdas > 0, got {grid.tolist()}")
    provider = as_row_provider(X)
    n = len(provider)
    Y, cls, multilabel = _targets_matrix(y, n, classes)
    fold = make_folds(y, folds, seed)
    params = {k: v for k, v in params.items() if k != "lam"}
    scores = np.full((grid.size, folds), np.nan)
    total = folds * grid.size
    for f in range(folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        ytr, yte = np.asarray(y)[tr], np.asarray(y)[te]
        for g, lam in enumerate(grid):
            check_cancel(cancel, "lambda cross-validation")
            model = OneVsRestSGD(lam=float(lam), seed=seed, **params).fit(
                SubsetRows(provider, tr), ytr, cancel=cancel, classes=None if multilabel else cls)
            s = model.decision_function(SubsetRows(provider, te))
            scores[g, f] = _cv_metric(s, yte, multilabel, cls)
            report(progress, f * grid.size + g + 1, total, f"fold {f + 1}, lambda {lam:g}",
                   lam=float(lam), score=float(scores[g, f]))
    mean = np.nanmean(scores, axis=1) if np.isfinite(scores).any() else np.zeros(grid.size)
    mean = np.nan_to_num(mean, nan=-np.inf)
    best = max(range(grid.size), key=lambda i: (round(mean[i], 12), grid[i]))
    return LambdaSearch(best_lam=float(grid[best]), grid=grid, scores=scores,
                        metric="map" if multilabel else "mean_per_class_accuracy")
