"""Cross-validation of the classifiers (the role of scikit-learn's ``model_selection``): stratified
folds, out-of-fold scores, the choice of lambda (paper Sec. 3.1: "regularisation cross-validated").

Folds (:func:`make_folds`). Each sample gets a fold id in 0..F-1: for (N,) labels, the members of every
distinct label are shuffled and dealt round-robin, continuing the deal from one label to the next, so each
fold holds N_c / F (+-1) samples of every class c; (N, C) targets are stratified by their first positive
class (-1 if none). Shuffles come from ``seed``.

Out-of-fold scores (:func:`cross_val_decision`): S[i] = f^{(-fold(i))}(x_i), each sample scored by the
one-vs-rest model trained on the other F - 1 folds (for late-fusion weights, :mod:`~.fusion`).

Lambda search (:func:`select_lambda`). For every lambda_g of the grid and fold f, a model trained on the
other folds scores fold f: s_gf = mean per-class accuracy for labels (classes absent from the fold
excluded), mAP (VOC07 11-point) for (N, C) targets. Then (:func:`choose_lambda`), with
m_g = mean_f s_gf (NaN folds ignored):

    "best"    lambda* = argmax_g m_g, ties to the larger (more regularised) lambda   (LambdaSearch.best_lam)
    "one_se"  b = argmax_g m_g,  SE = std_f(s_bf, ddof=1) / sqrt(F_b)   (F_b finite folds of b; SE = 0 if F_b < 2)
              lambda* = max { lambda_g : m_g >= m_b - SE - 1e-12 }

The one-standard-error rule prefers the most regularised lambda statistically indistinguishable from the
best: on small training sets the CV curve is flat and noisy. (README, "Choices the paper leaves open":
on held-out random splits of the sample data, best-score rule 80.8%, one-SE rule 81.3%.)

Every public function checks its input once (rows through ``svm._check_rows``, targets through
:func:`~.validation.check_targets`) and then trains the folds' models on the checked data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import metrics
from .defaults import CV_FOLDS, LAMBDA_GRID
from .progress import CancelLike, check_cancel, report
from .rows import RowProvider, SubsetRows
from .svm import OneVsRestSGD, _check_rows
from .validation import Targets, check_choice, check_positive_int, check_targets, rng_from_seed

#: the lambda rules of :func:`choose_lambda`
LAMBDA_RULES = ("best", "one_se")


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
    """Out-of-fold decision values (N, C): each sample scored by a model not trained on it.

    ``params`` are :class:`~.svm.OneVsRestSGD`'s hyper-parameters."""
    provider = _check_rows(X)
    targets = check_targets(y, len(provider), classes)
    template = OneVsRestSGD(**params)
    template._check_params()
    fold = make_folds(targets.y, folds, seed)
    out = np.zeros((len(provider), targets.classes.size), dtype=np.float32)
    for f in range(folds):
        check_cancel(cancel, "cross-validation")
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        model = OneVsRestSGD(**params)._fit(SubsetRows(provider, tr), targets.subset(tr), None, cancel)
        out[te] = model._decision(SubsetRows(provider, te))
        report(progress, f + 1, folds, f"fold {f + 1}/{folds}")
    return out


def _cv_metric(scores, targets: Targets) -> float:
    """Mean per-class accuracy (labels; samples of no class left out) or VOC07 mAP (targets)."""
    if targets.multilabel:
        return metrics.mean_average_precision(scores, targets.y, mode="voc07")
    cls = targets.classes
    lab = targets.y.astype(np.int64)
    col = np.searchsorted(cls, lab)
    ok = (col < cls.size) & (cls[np.minimum(col, cls.size - 1)] == lab)
    pred = np.argmax(scores[ok], axis=1)
    return metrics.mean_per_class_accuracy(col[ok], pred, n_classes=cls.size)


def _check_grid(grid) -> np.ndarray:
    try:
        values = np.asarray([float(v) for v in grid], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be a sequence of lambdas > 0, got {grid!r}") from None
    if values.size == 0 or not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"grid must hold finite lambdas > 0, got {values.tolist()}")
    return values


def select_lambda(X, y, grid: Sequence[float] = LAMBDA_GRID, folds: int = CV_FOLDS, seed=0, *,
                  classes=None, progress=None, cancel: CancelLike = None, **params) -> LambdaSearch:
    """k-fold cross-validation of lambda on the training set (see the module docstring).

    Score: mean per-class accuracy for labels, mAP (VOC07 11-point) for multi-label targets. Ties between
    lambdas go to the larger (more regularised) one. ``params`` are passed to :class:`~.svm.OneVsRestSGD`
    (``lam`` among them is ignored).
    """
    grid = _check_grid(grid)
    provider = _check_rows(X)
    targets = check_targets(y, len(provider), classes)
    params = {k: v for k, v in params.items() if k != "lam"}
    OneVsRestSGD(lam=float(grid[0]), seed=seed, **params)._check_params()
    return _search_lambda(provider, targets, grid, folds, seed, params, progress, cancel)


def _search_lambda(provider: RowProvider, targets: Targets, grid: np.ndarray, folds: int, seed, params: dict,
                   progress, cancel: CancelLike) -> LambdaSearch:
    """:func:`select_lambda` on checked input (also ``OneVsRestSGD(lam="cv")``'s entry)."""
    fold = make_folds(targets.y, folds, seed)
    scores = np.full((grid.size, folds), np.nan)
    total = folds * grid.size
    for f in range(folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        train, test = SubsetRows(provider, tr), SubsetRows(provider, te)
        for g, lam in enumerate(grid):
            check_cancel(cancel, "lambda cross-validation")
            model = OneVsRestSGD(lam=float(lam), seed=seed, **params)._fit(train, targets.subset(tr), None, cancel)
            scores[g, f] = _cv_metric(model._decision(test), targets.subset(te))
            report(progress, f * grid.size + g + 1, total, f"fold {f + 1}, lambda {lam:g}",
                   lam=float(lam), score=float(scores[g, f]))
    mean = np.nanmean(scores, axis=1) if np.isfinite(scores).any() else np.zeros(grid.size)
    mean = np.nan_to_num(mean, nan=-np.inf)
    best = max(range(grid.size), key=lambda i: (round(mean[i], 12), grid[i]))
    return LambdaSearch(best_lam=float(grid[best]), grid=grid, scores=scores,
                        metric="map" if targets.multilabel else "mean_per_class_accuracy")


def choose_lambda(search: LambdaSearch, rule: str) -> float:
    """Lambda from a :class:`LambdaSearch`: its best (``rule="best"``), or by the one-standard-error rule
    (``"one_se"``: the largest lambda whose mean CV score is >= best mean - standard error of the best's
    fold scores; see the module docstring)."""
    check_choice(rule, "rule", LAMBDA_RULES)
    if rule == "best":
        return float(search.best_lam)
    scores = np.asarray(search.scores, np.float64)
    mean = np.nanmean(scores, axis=1)
    b = int(np.nanargmax(mean))
    fold_scores = scores[b][np.isfinite(scores[b])]
    se = float(np.std(fold_scores, ddof=1) / np.sqrt(len(fold_scores))) if len(fold_scores) > 1 else 0.0
    ok = np.flatnonzero(mean >= mean[b] - se - 1e-12)
    grid = np.asarray(search.grid, np.float64)
    return float(grid[ok].max())
