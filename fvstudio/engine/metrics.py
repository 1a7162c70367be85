"""Evaluation measures of the paper's experiments (Sec. 3): AP / mAP, accuracies, confusion matrix.

Average precision of one class, from scores s_i and targets t_i in {+1 positive, -1 negative,
0 ignored (VOC "difficult")}; bool targets mean True = +1, False = -1. Items are ranked by decreasing
score; items with EQUAL scores form one threshold (they enter the ranking together), so AP does not
depend on the input order of tied items (the VOC devkit instead keeps input order among ties). At
each threshold j: recall R_j = TP_j / P, precision P_j = TP_j / (TP_j + FP_j).

    mode="voc07"  11-point interpolated AP (VOC 2007, the paper's measure):
                  AP = 1/11 sum_{r in {0, 0.1, ..., 1}} max_{j: R_j >= r} P_j      (0 if no such j)
    mode="area"   area under the interpolated PR curve (VOC 2010 and later): precision made
                  monotone, Pi_j = max_{k >= j} P_k, then AP = sum_j (R_j - R_{j-1}) Pi_j, R_0 = 0.

A class without positives has no AP: :func:`average_precision` returns NaN and warns
(``RuntimeWarning``), and :func:`mean_average_precision` EXCLUDES such classes from the mean (it
warns too). Accuracy measures follow the same rule: :func:`per_class_accuracy` is NaN for a class
absent from ``y_true`` and :func:`mean_per_class_accuracy` excludes it.

Ranking ties for top-k: classes are ordered by decreasing score, lower class index first on ties
(``np.argsort(-s, kind="stable")``), so top-1 equals ``argmax``.

Layouts: scores (N, C) float, labels (N,) int in [0, C), targets (N, C) int in {+1, -1, 0}.
:func:`confusion_matrix` rows = true class, columns = predicted class.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np

AP_MODES = ("voc07", "area")


def _as_targets(targets, name="targets") -> np.ndarray:
    t = np.asarray(targets)
    if t.dtype == np.bool_:
        return np.where(t, 1, -1).astype(np.int8)
    if not np.issubdtype(t.dtype, np.number) or not np.isin(t, (-1, 0, 1)).all():
        raise ValueError(f"{name} must hold only +1 (positive), -1 (negative), 0 (ignored) or bools")
    return t.astype(np.int8)


def precision_recall(scores, targets) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at each distinct score, best score first; ignored items dropped."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = _as_targets(targets).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores has {s.size} items, targets has {t.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contains NaN or infinite values")
    keep = t != 0
    s, t = s[keep], t[keep]
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], (t[order] > 0)
    tp = np.cumsum(pos)
    fp = np.cumsum(~pos)
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, dtype=np.int64)
    tp, fp = tp[last], fp[last]
    n_pos = int(pos.sum())
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
    return precision, recall, s[last]


def average_precision(scores, targets, mode: str = "voc07") -> float:
    """AP of one class (see module docstring); NaN with a RuntimeWarning when there is no positive."""
    if mode not in AP_MODES:
        raise ValueError(f"mode must be one of {AP_MODES}, got {mode!r}")
    precision, recall, _ = precision_recall(scores, targets)
    if recall.size == 0 or not np.isfinite(recall).all():
        warnings.warn("average_precision: no positive targets, AP is undefined (NaN)", RuntimeWarning,
                      stacklevel=2)
        return float("nan")
    if mode == "voc07":
        total = 0.0
        for r in np.linspace(0.0, 1.0, 11):
            ok = recall >= r - 1e-12
            total += precision[ok].max() if ok.any() else 0.0
        return float(total / 11.0)
    mono = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * mono))


def average_precision_per_class(scores, targets, mode: str = "voc07") -> np.ndarray:
    """(C,) AP of each column; NaN (one warning in all) for columns without positives."""
    s = np.asarray(scores)
    t = _as_targets(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be (N, C)")
    out = np.empty(s.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for c in range(s.shape[1]):
            out[c] = average_precision(s[:, c], t[:, c], mode)
    missing = np.flatnonzero(np.isnan(out))
    if missing.size:
        warnings.warn(f"classes {missing.tolist()} have no positive targets: AP is NaN and they are "
                      "left out of the mean", RuntimeWarning, stacklevel=2)
    return out


def mean_average_precision(scores, targets, mode: str = "voc07") -> float:
    """Mean AP over the classes that have positives (NaN if none has)."""
    ap = average_precision_per_class(scores, targets, mode)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def _labels(y, name) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or
                           (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))):
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {a.shape}, "
                         f"dtype {a.dtype}")
    return a.astype(np.int64)


def overall_accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true one."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred has {p.size}")
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(y_true, y_pred, n_classes: Optional[int] = None,
                     normalize: Optional[str] = None) -> np.ndarray:
    """(C, C) counts M[i, j] = #samples of true class i predicted as j; ``normalize="true"`` divides
    each row by its total (rows of absent classes stay 0)."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred has {p.size}")
    if n_classes is None:
        n_classes = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    m = np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    if normalize is None:
        return m
    if normalize != "true":
        raise ValueError(f"normalize must be None or 'true', got {normalize!r}")
    rows = m.sum(axis=1, keepdims=True)
    return np.where(rows > 0, m / np.maximum(rows, 1), 0.0)


def per_class_accuracy(y_true, y_pred, n_classes: Optional[int] = None) -> np.ndarray:
    """(C,) recall of each class (diagonal of the row-normalised confusion); NaN for absent classes."""
    m = confusion_matrix(y_true, y_pred, n_classes)
    rows = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(m) / np.maximum(rows, 1), np.nan)


def mean_per_class_accuracy(y_true, y_pred, n_classes: Optional[int] = None) -> float:
    """Mean over the classes present in ``y_true`` of their top-1 accuracy (the paper's measure on
    scene and object datasets)."""
    acc = per_class_accuracy(y_true, y_pred, n_classes)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def top_k_accuracy(scores, y_true, k: int = 5) -> float:
    """Fraction of samples whose true label (a column index) is among the k best-scoring columns."""
    s = np.asarray(scores, dtype=np.float64)
    t = _labels(y_true, "y_true")
    if s.ndim != 2 or s.shape[0] != t.size:
        raise ValueError(f"scores must be (N, C) with N = len(y_true) = {t.size}, got {s.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if t.size and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"y_true labels must lie in [0, {s.shape[1]})")
    if t.size == 0:
        return float("nan")
    # rank of the true class under the stable ordering: higher scores, plus equal scores at lower index
    own = s[np.arange(t.size), t][:, None]
    cols = np.arange(s.shape[1])[None, :]
    rank = np.sum((s > own) | ((s == own) & (cols < t[:, None])), axis=1)
    return float(np.mean(rank < k))


def mean_std(values, axis: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1; 0 for a single repeat) over repeats on ``axis``,
    ignoring NaN entries. Returns floats for 1-D input."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("values is empty")
    count = np.sum(np.isfinite(v), axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=axis)
        std = np.where(count > 1, np.nanstd(v, axis=axis, ddof=1) if v.shape[axis] > 1 else 0.0, 0.0)
    if np.ndim(mean) == 0:
        return float(mean), float(std)
    return mean, std
