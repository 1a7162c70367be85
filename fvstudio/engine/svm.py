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
a memmap or any :class:`~.rows.RowProvider`), its C scores are computed while it sits in cache, then the
classes are updated. Weights are held as a scale times a vector, w = V / d (Bottou's "divisor"), so the
O(D) shrink by (1 - eta lambda) is an O(1) update, and averaging costs one extra axpy per step; the
numba ``nogil`` kernel and that bookkeeping are in :mod:`~.sgd_kernels`. Per-sample steps in one fused
kernel were measured faster than mini-batches through BLAS at equal accuracy here
(``benchmarks/bench_svm.py``). Row providers are in :mod:`~.rows`, cross-validation (``lam="cv"``, folds,
out-of-fold scores, the lambda rules) in :mod:`~.model_selection`.

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
from typing import List, Optional, Sequence

import numpy as np

from .defaults import AVERAGING, BALANCE, BIAS, CV_FOLDS, EPOCHS, LAM, LAMBDA_GRID, LOSS
from .progress import CancelLike, check_cancel, report, scaled
from .rows import RowProvider, as_row_provider, chunk_rows, dense_source, iter_chunks
from .serialization import atomic_save_npz, load_npz
from .sgd_kernels import sgd_pass
from .estimator import Classifier
from .validation import Targets, check_choice, feature_count_error, check_number, check_positive_int, check_targets, rng_from_seed

LOSSES = ("hinge", "log", "squared")
SCHEDULES = ("optimal", "asgd", "constant")
BALANCES = (None, "sample", "weight")
_LOSS_ID = {"hinge": 0, "log": 1, "squared": 2}
_SCHEDULE_ID = {"optimal": 0, "asgd": 1, "constant": 2}
#: a divisor above this is folded back into its vector (keeps float32 V in range).
_RENORM = 1e5
#: rows sampled to bound |x|^2 for the squared loss's eta0
_PROBE_ROWS = 512
#: largest squared row norm |x|^2 accepted: the kernel's float32 dot products V'x start near
#: eta0 |x|^2 (eta0 <= 1 / (2 lambda)) times a divisor of up to _RENORM and must stay below 3.4e38
MAX_SQ_NORM = 1e30


def _check_rows(X, name: str = "X") -> RowProvider:
    """``X`` as a :class:`~.rows.RowProvider` of >= 1 row and >= 1 feature whose rows all have a finite
    squared norm <= MAX_SQ_NORM (one pass over the rows, in chunks); else a ValueError naming ``name``."""
    provider = as_row_provider(X, name)
    n, dim = len(provider), int(provider.dim)
    if n < 1:
        raise ValueError(f"{name} has no rows")
    if dim < 1:
        raise ValueError(f"{name} has shape ({n}, {dim}): no feature column, at least 1 needed")
    dense = dense_source(provider)
    for s in range(0, n, chunk_rows(dim)):
        stop = min(n, s + chunk_rows(dim))
        if dense is None:
            rows = provider.rows(np.arange(s, stop))
        else:
            rows = dense[0][s:stop] if dense[1] is None else dense[0][dense[1][s:stop]]
        sq = np.einsum("ij,ij->i", rows, rows)  # float32: inf beyond 3.4e38
        i = int(np.argmax(np.where(np.isnan(sq), np.inf, sq)))
        if not sq[i] <= MAX_SQ_NORM:
            if not np.isfinite(rows[i]).all():
                raise ValueError(f"{name} row {s + i} holds NaN or infinite values; clean or drop it first")
            raise ValueError(f"{name} row {s + i} has a squared L2 norm of {float(sq[i]):.3g} (> {MAX_SQ_NORM:g}): the "
                             "SGD's float32 dot products w'x would overflow; rescale the features (e.g. "
                             "L2-normalise each row, as the Fisher Vector pipeline does)")
        del rows  # before the next chunk is read: a decoding provider (PQRows) then reuses one buffer
    return provider


def _eta0_for(loss: str, lam: float) -> float:
    """Bottou's eta0 = r / max(1, |l'(-r)|), r = lambda^(-1/4) (module docstring)."""
    r = lam ** -0.25
    if loss == "hinge":
        dl = 1.0
    elif loss == "log":
        dl = 1.0 / (1.0 + math.exp(-r))
    else:
        dl = 1.0 + r
    return r / max(1.0, dl)


@dataclass
class _SGDState:
    """Every class's SGD state in :mod:`~.sgd_kernels`' layout: w = V / wdiv, a = (U + wfrac V) / adiv."""

    V: np.ndarray          # (C, D) float32
    U: np.ndarray          # (C, D) float32, (C, 1) without averaging
    b: np.ndarray          # (C,) bias
    ab: np.ndarray         # (C,) averaged bias
    wdiv: np.ndarray
    adiv: np.ndarray
    wfrac: np.ndarray
    t: np.ndarray          # steps taken per class
    avg_start: np.ndarray  # step at which averaging starts (inf: not yet)

    @classmethod
    def zeros(cls, C: int, dim: int, averaging: bool) -> "_SGDState":
        return cls(V=np.zeros((C, dim), dtype=np.float32),
                   U=np.zeros((C, dim), dtype=np.float32) if averaging else np.zeros((C, 1), np.float32),
                   b=np.zeros(C), ab=np.zeros(C), wdiv=np.ones(C), adiv=np.ones(C), wfrac=np.zeros(C),
                   t=np.zeros(C), avg_start=np.full(C, np.inf))

    def kernel_args(self, g=slice(None)) -> tuple:
        """The state of classes ``g`` (views), in :func:`~.sgd_kernels.sgd_pass`'s argument order."""
        return (self.avg_start[g], self.V[g], self.U[g], self.b[g], self.ab[g], self.wdiv[g], self.adiv[g],
                self.wfrac[g], self.t[g])

    def model(self, averaging: bool):
        """(coef (C, D), intercept (C,)): the average when averaging started for every class, else w."""
        if averaging and np.isfinite(self.avg_start).all():
            # class by class: the same float64 arithmetic as on whole (C, D) arrays, without (C, D) float64
            # temporaries (three of them, twice the model each, were the peak of a fit on PQ codes)
            # (1-element slices keep numpy's array promotion: float64 arithmetic, then float32)
            coef = np.empty(self.V.shape, dtype=np.float32)
            for c in range(coef.shape[0]):
                coef[c] = (self.U[c] + self.wfrac[c:c + 1] * self.V[c]) / self.adiv[c:c + 1]
            return coef, self.ab
        coef = np.empty(self.V.shape, dtype=np.float32)
        for c in range(coef.shape[0]):
            coef[c] = self.V[c] / self.wdiv[c:c + 1]
        return coef, self.b


@dataclass
class _Plan:
    """What one fit needs besides the state: kernel constants, class weights, negative sampling."""

    consts: tuple          # (loss_id, lam, t0, eta0, schedule_id, fit_bias, renorm) for sgd_pass
    Ypos: np.ndarray       # (N, C) bool
    Yneg: np.ndarray       # (N, C) bool
    wpos: np.ndarray       # (C,) weight of a positive ("weight" balance) else 1
    wneg: np.ndarray
    keep_neg: np.ndarray   # (C,) probability a negative is used in an epoch ("sample" balance)
    dense: Optional[tuple]  # (float32 array, index map) when rows are read in place


class OneVsRestSGD(Classifier):
    """One-vs-rest linear classifiers (hinge / log / squared loss) trained jointly by SGD.

    ``lam`` is a float or ``"cv"`` (chosen by :func:`~.model_selection.select_lambda` over ``lam_grid``
    with ``cv_folds`` folds on the training set). ``epochs`` passes over the data; ``seed`` fixes the
    sample order and the negative subsampling. ``n_jobs`` threads each train a contiguous block of
    classes over the same row order (the kernel releases the GIL); the result does not depend on it.
    Defaults: :mod:`~.defaults` (Sec. 3.1; 30 epochs, positives weighted, averaging, bias).
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
    def _check_params(self):
        check_choice(self.loss, "loss", LOSSES)
        check_choice(self.learning_rate, "learning_rate", SCHEDULES)
        check_choice(self.balance, "balance", BALANCES)
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.cv_folds, "cv_folds", minimum=2)
        check_positive_int(self.n_jobs, "n_jobs")
        check_number(self.neg_ratio, "neg_ratio", low=0.0, low_open=True)
        if not (isinstance(self.lam, str) and self.lam == "cv"):
            if isinstance(self.lam, str):
                raise ValueError(f"lam must be a number > 0 or 'cv', got {self.lam!r}")
            check_number(self.lam, "lam", low=0.0, low_open=True)
        if self.eta0 is not None:
            check_number(self.eta0, "eta0", low=0.0, low_open=True)
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
        provider = _check_rows(X)
        y, classes, names = self._label_codes(y, classes)
        self._fit(provider, check_targets(y, len(provider), classes), progress, cancel)
        if names is not None:  # non-numeric labels (scikit-learn's convention): predict returns them
            self.classes_ = names[self.classes_]
        return self

    def _fit(self, provider: RowProvider, targets: Targets, progress, cancel: CancelLike) -> "OneVsRestSGD":
        """:meth:`fit` on checked input (parameters, rows and targets); model_selection's entry too."""
        lam = self.lam
        if isinstance(lam, str):  # "cv"; model_selection trains OneVsRestSGDs, hence the late import
            from .model_selection import _check_grid, _search_lambda

            cv = {k: v for k, v in self.get_params().items() if k not in ("lam", "lam_grid", "cv_folds", "seed")}
            self.cv_search_ = _search_lambda(provider, targets, _check_grid(self.lam_grid), self.cv_folds, self.seed,
                                             cv, scaled(progress, 0.0, 0.5, "lambda CV: "), cancel)
            lam = self.cv_search_.best_lam
            progress = scaled(progress, 0.5, 1.0, "")
        lam = float(lam)
        eta0 = self._initial_rate(provider, lam)
        plan = self._plan(provider, targets, lam, eta0)
        state = _SGDState.zeros(targets.classes.size, provider.dim, bool(self.averaging))
        history = self._run_epochs(provider, plan, state, progress, cancel)
        coef, intercept = state.model(bool(self.averaging))
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.asarray(intercept, dtype=np.float32)
        self.classes_ = targets.classes
        self.multilabel_ = bool(targets.multilabel)
        self.lam_ = lam
        self.eta0_ = eta0
        self.n_features_in_ = int(provider.dim)
        self.n_iter_ = self.epochs
        self.n_steps_ = state.t.astype(np.int64)
        self.loss_history_ = history
        if not (np.isfinite(self.coef_).all() and np.isfinite(self.intercept_).all() and np.isfinite(history).all()):
            raise ValueError(f"SGD diverged (non-finite weights or loss) with lam={lam:g}, eta0={eta0:g}; "
                             "use a larger lam or a smaller eta0")
        return self

    def _initial_rate(self, provider: RowProvider, lam: float) -> float:
        """eta0: given, or Bottou's estimate capped as in the module docstring."""
        eta0 = float(self.eta0) if self.eta0 is not None else _eta0_for(self.loss, lam)
        if self.eta0 is None and self.loss == "squared":
            # the squared loss has an unbounded gradient: SGD is stable only for eta |x|^2 < 2
            n = len(provider)
            probe = provider.rows(np.unique(rng_from_seed(self.seed).integers(0, n, min(n, _PROBE_ROWS))))
            sq = float(np.max(np.einsum("ij,ij->i", probe, probe))) + (1.0 if self.bias else 0.0)
            eta0 = min(eta0, 1.0 / max(sq, 1e-12))
        if self.eta0 is None:
            eta0 = min(eta0, 0.5 / lam)  # eta lambda <= 1/2: the shrink factor stays in [1/2, 1)
        if self.learning_rate == "constant" and eta0 * lam >= 1.0:
            raise ValueError(f"eta0 * lam must be < 1 for a constant rate, got {eta0 * lam:g}")
        return eta0

    def _plan(self, provider: RowProvider, targets: Targets, lam: float, eta0: float) -> _Plan:
        """Kernel constants and the class balancing of the module docstring."""
        Y = targets.Y
        C = targets.classes.size
        pos = (Y > 0).sum(axis=0).astype(np.float64)
        neg = (Y < 0).sum(axis=0).astype(np.float64)
        if self.balance == "weight":
            tot = pos + neg
            wpos = np.where(pos > 0, tot / (2.0 * np.maximum(pos, 1.0)), 1.0)
            wneg = np.where(neg > 0, tot / (2.0 * np.maximum(neg, 1.0)), 1.0)
        else:
            wpos = np.ones(C)
            wneg = np.ones(C)
        consts = (_LOSS_ID[self.loss], lam, 1.0 / (lam * eta0), eta0, _SCHEDULE_ID[self.learning_rate],
                  bool(self.bias), float(_RENORM))
        return _Plan(consts=consts, Ypos=Y > 0, Yneg=Y < 0, wpos=wpos, wneg=wneg,
                     keep_neg=np.minimum(1.0, self.neg_ratio * pos / np.maximum(neg, 1.0)),
                     dense=dense_source(provider))

    def _run_epochs(self, provider: RowProvider, plan: _Plan, state: _SGDState, progress,
                    cancel: CancelLike) -> List[float]:
        """``epochs`` passes in a fresh random order each; returns the mean training loss per epoch."""
        C = state.V.shape[0]
        rng = rng_from_seed(self.seed)
        n_threads = min(self.n_jobs, C)
        groups = [slice(int(g[0]), int(g[-1]) + 1) for g in np.array_split(np.arange(C), n_threads)]
        pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        avg_epoch = 1 if self.epochs > 1 else 0
        history: List[float] = []
        last_report = time.perf_counter()
        try:
            for epoch in range(self.epochs):
                if self.averaging and epoch == avg_epoch:
                    state.avg_start[:] = state.t
                stats = np.zeros((C, 2))
                last_report = self._epoch(provider, plan, state, stats, rng, epoch, pool, groups, progress,
                                          cancel, last_report)
                history.append(float(np.mean(stats[:, 0] / np.maximum(stats[:, 1], 1e-300))))
                report(progress, epoch + 1, self.epochs, f"epoch {epoch + 1}/{self.epochs}",
                       epoch=epoch + 1, loss=history[-1])
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return history

    def _epoch(self, provider, plan: _Plan, state: _SGDState, stats, rng, epoch: int, pool, groups, progress,
               cancel: CancelLike, last_report: float) -> float:
        """One pass: a random order, cut into chunks of <= 32 MB of rows, each chunk one kernel call (or one
        per thread's block of classes). Returns the time of the last progress report."""
        n = len(provider)
        C = state.V.shape[0]
        chunk = chunk_rows(provider.dim)
        order = rng.permutation(n)
        for s in range(0, n, chunk):
            check_cancel(cancel, "SVM training")
            if progress is not None and time.perf_counter() - last_report > 0.5:
                last_report = time.perf_counter()
                report(progress, epoch + s / n, self.epochs, f"epoch {epoch + 1}/{self.epochs}")
            idx = order[s:s + chunk]
            use = plan.Ypos[idx] | plan.Yneg[idx]
            if self.balance == "sample":
                use = plan.Ypos[idx] | (plan.Yneg[idx] & (rng.random((idx.size, C)) < plan.keep_neg))
            Yw = np.where(plan.Ypos[idx], plan.wpos, -plan.wneg) * use
            needed = use.any(axis=1)
            if not needed.all():
                idx, Yw = idx[needed], Yw[needed]
            if idx.size == 0:
                continue
            Xc, rows = self._chunk_rows(provider, plan, idx)
            Yw = np.ascontiguousarray(Yw, dtype=np.float64)
            if pool is None:
                sgd_pass(Xc, rows, Yw, *plan.consts, *state.kernel_args(), stats)
            else:
                jobs = [pool.submit(sgd_pass, Xc, rows, np.ascontiguousarray(Yw[:, g]), *plan.consts,
                                    *state.kernel_args(g), stats[g]) for g in groups]
                for job in jobs:
                    job.result()
            # let go of the rows before the next chunk is read: a provider that decodes into a reused
            # buffer (PQRows) then needs one chunk of memory, not two
            del Xc
        return last_report

    @staticmethod
    def _chunk_rows(provider: RowProvider, plan: _Plan, idx: np.ndarray):
        """(array, int64 row index per step) for the steps ``idx``: in place when the rows are a dense
        float32 array, else the rows read in storage order and stepped through in the random order."""
        if plan.dense is not None:
            arr, imap = plan.dense
            rows = idx if imap is None else imap[idx]
            return arr, rows.astype(np.int64)
        srt = np.argsort(idx, kind="stable")
        Xc = provider.rows(idx[srt])
        rows = np.empty(idx.size, np.int64)
        rows[srt] = np.arange(idx.size)
        return Xc, rows

    # -- prediction --------------------------------------------------------------------------------
    def _is_fitted(self) -> bool:
        return self.coef_ is not None

    def _check_fitted(self):
        self._require_fitted()

    def decision_function(self, X) -> np.ndarray:
        """(N, C) float32 scores w_c' x + b_c, computed chunk by chunk with BLAS; a ValueError if rows of ``X``
        are so large that a score overflows float32."""
        self._check_fitted()
        provider = as_row_provider(X)
        if provider.dim != self.n_features_in_:
            raise feature_count_error("X", provider.dim, self.n_features_in_, "OneVsRestSGD")
        scores = self._decision(provider)
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            big = float(np.abs(provider.rows([r])).max())
            raise ValueError(f"X row {r} gives non-finite scores: its values (up to {big:.3g}) are too large for "
                             "float32 products with the weights, or not finite; rescale X as the training rows were")
        return scores

    def _decision(self, provider: RowProvider) -> np.ndarray:
        """:meth:`decision_function` on a checked provider of ``n_features_in_`` columns."""
        n = len(provider)
        out = np.empty((n, self.coef_.shape[0]), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # decision_function reports non-finite scores
            for s, stop, rows in iter_chunks(provider, n, provider.dim):
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
        meta = {"kind": "OneVsRestSGD", "params": self._json_params(), "multilabel": self.multilabel_,
                "lam_": self.lam_, "eta0_": self.eta0_, "loss_history": self.loss_history_}
        return atomic_save_npz(path, {"coef": self.coef_, "intercept": self.intercept_,
                                      "classes": self.classes_, "n_steps": self.n_steps_}, meta)

    @classmethod
    def load(cls, path) -> "OneVsRestSGD":
        arrays, meta = load_npz(path, kind="OneVsRestSGD")
        model = cls(**cls._params_from_json(meta["params"]))
        model.coef_ = arrays["coef"].astype(np.float32)
        model.intercept_ = arrays["intercept"].astype(np.float32)
        model.classes_ = arrays["classes"]  # int64 labels, or the strings fit was given
        model.n_steps_ = arrays["n_steps"]
        model.multilabel_ = bool(meta["multilabel"])
        model.lam_ = float(meta["lam_"])
        model.eta0_ = float(meta["eta0_"])
        model.loss_history_ = list(meta["loss_history"])
        model.n_features_in_ = model.coef_.shape[1]
        model.n_iter_ = len(model.loss_history_)
        return model
