"""Input checks done once at the door of every public engine call, with messages naming the argument.

Each public entry point (an estimator's ``fit`` / ``transform`` / ``encode``, a public function) checks
its arguments with these helpers and then calls unchecked internals: no check runs twice on one call,
and nothing inside the engine probes an object for attributes. Conventions:

- matrices are C-contiguous float32 (N, D) with N >= ``min_rows`` and D >= 1, every value finite and
  representable in float32 (a float64 1e200 is "too large for float32", not "infinite");
- :func:`check_float32_scale` bounds the spread of the data where an algorithm squares deviations
  in float32 (the E-step's (x - o)^2, PCA's variances): |x - mean| <= 1e18 and, unless X is constant,
  a mean variance >= 1e-24, so squares stay between float32's smallest normal (1.2e-38) and largest
  (3.4e38) value with room to spare;
- numbers are finite reals (bools rejected) inside the interval the algorithm needs;
- the posterior threshold theta of Appendix B is in [0, 1); a mixture / projection needs at most as
  many components as samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

#: largest float32
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: |x - mean| above this: float32 squares of deviations (E-step, variances) could overflow
MAX_DEVIATION = 1e18
#: a mean variance below this (but > 0): float32 squares of deviations would underflow
MIN_VARIANCE = 1e-24


def as_float32_matrix(X, name: str = "X", *, n_features: Optional[int] = None,
                      min_rows: int = 0, allow_empty: bool = True, owner: str = "the model") -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 (N, D) array, or raise a ValueError naming ``name``.

    Rejects sparse matrices, non-numeric dtypes (an object array of numbers is converted), wrong rank,
    no feature column, a feature count other than ``n_features`` (the message names ``owner``, the
    estimator expecting them), fewer than ``min_rows`` rows, NaN or infinite values (reporting how many
    and the first row holding one) and finite values beyond float32's range. The messages carry the
    phrases scikit-learn's estimator checks look for ("Reshape your data", "1 sample(s)", ...).
    """
    arr = as_numeric_matrix(X, name, n_features=n_features, owner=owner)
    if arr.shape[0] < min_rows or (not allow_empty and arr.shape[0] == 0):
        raise ValueError(f"{name} has {arr.shape[0]} sample(s) (rows), at least {max(min_rows, 1)} needed")
    _check_finite(arr, name)
    with np.errstate(over="ignore"):  # reported below, naming the argument
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if out is not arr and out.size and not np.isfinite(out).all():
        big = float(np.max(np.abs(arr)))
        raise ValueError(f"{name} has values up to {big:.3g}, beyond float32's range ({FLOAT32_MAX:.3g}); "
                         "rescale it")
    return out


def as_numeric_matrix(X, name: str = "X", *, n_features: Optional[int] = None,
                      owner: str = "the model") -> np.ndarray:
    """``X`` as a real numeric 2-D array with >= 1 column (``n_features`` if given), WITHOUT copying or
    converting it (a memmap stays a view on its file); the checks and messages of :func:`as_float32_matrix`
    except the row count and the values."""
    check_not_sparse(X, name)
    arr = _numeric_array(X, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}; Reshape your "
                         f"data: {name}.reshape(-1, 1) if it holds one feature, {name}.reshape(1, -1) if one sample")
    if n_features is not None and arr.shape[1] != n_features:
        raise feature_count_error(name, arr.shape[1], n_features, owner)
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has shape {arr.shape}: no feature column (0 feature(s) (shape={arr.shape}) while "
                         "a minimum of 1 is required)")
    return arr


def _numeric_array(X, name: str) -> np.ndarray:
    """``X`` as a real numeric (or bool) array; an object array is converted to float64 if it can be."""
    arr = X if isinstance(X, np.ndarray) else np.asarray(X)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except TypeError as exc:  # e.g. a dict inside: numpy's "float() argument must be a string or a real number"
            raise TypeError(f"{name} must hold numbers: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{name} must hold numbers: {exc}") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued (Complex data not supported), got dtype {arr.dtype}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def feature_count_error(name: str, got: int, expected: int, owner: str) -> ValueError:
    """The error for rows of the wrong width, worded as scikit-learn words it (its checks match it)."""
    return ValueError(f"{name} has {got} features, but {owner} is expecting {expected} features as input "
                      "(one per column)")


def check_not_sparse(X, name: str = "X") -> None:
    """A ValueError naming ``name`` if ``X`` is a scipy sparse matrix or array (the engine is dense)."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise ValueError(f"{name} is a scipy sparse {type(X).__name__}: sparse input is not supported, "
                         f"pass a dense array ({name}.toarray())")


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not arr.size or np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return
    if np.isfinite(arr).all():
        return
    bad = ~np.isfinite(arr)
    rows = np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(bad.sum()) - n_nan
    raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} infinite values "
                     f"(first in row {rows[0]}); clean or drop those rows first")


def check_float32_scale(max_deviation: float, mean_variance: float, name: str = "X") -> None:
    """Raise unless squared deviations of the data fit float32 (see the module docstring).

    ``max_deviation`` = max |x_td - mean_d|, ``mean_variance`` = mean over d of var_d (0 for constant data).
    """
    if not max_deviation <= MAX_DEVIATION:
        raise ValueError(f"{name} deviates from its mean by up to {max_deviation:.3g}: its squares would "
                         f"overflow float32; rescale {name} (|x - mean| <= {MAX_DEVIATION:g}, e.g. standardise it)")
    if 0.0 < mean_variance < MIN_VARIANCE:
        raise ValueError(f"{name} has a mean variance of {mean_variance:.3g}: its squared deviations would "
                         f"underflow float32; rescale {name} (mean variance >= {MIN_VARIANCE:g}, e.g. "
                         "standardise it)")


def check_image_shape(image_shape, purpose: str = "") -> tuple:
    """(H, W) as floats from an image shape (H, W, ...), or a ValueError; ``purpose`` ends the first message
    (e.g. " when a pyramid is used")."""
    if image_shape is None or len(image_shape) < 2:
        raise ValueError(f"image_shape must be (H, W){purpose}, got {image_shape!r}")
    H, W = float(image_shape[0]), float(image_shape[1])
    if not (H > 0 and W > 0 and math.isfinite(H) and math.isfinite(W)):
        raise ValueError(f"image_shape must hold positive (H, W), got {tuple(image_shape)!r}")
    return H, W


def rng_from_seed(seed) -> np.random.Generator:
    """A numpy Generator from an int seed, None (fresh entropy) or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices, key=str)}, got {value!r}")
    return value


def check_number(value, name: str, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float if it is a finite real number in the interval, else a ValueError naming ``name``."""
    interval = (f"{'(' if low_open or low == -math.inf else '['}{low:g}, "
                f"{high:g}{')' if high_open or high == math.inf else ']'}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def _check_posterior_threshold(value, name: str = "posterior_threshold") -> float:
    """theta of the posterior thresholding (Appendix B): gamma < theta -> 0, a number in [0, 1)."""
    return check_number(value, name, low=0.0, high=1.0, high_open=True)


def _check_n_components(n_components: int, n_samples: int, name: str = "X") -> None:
    """A mixture or a projection learned from ``n_samples`` rows has at most that many components."""
    if n_components > n_samples:
        raise ValueError(f"n_components={n_components} exceeds the number of samples in {name} ({n_samples})")


def column_spread(X: np.ndarray, chunk: int = 65536):
    """(mean (D,), sum of squared deviations (D,), max |x - mean|) of X (N, D), in float64 over row chunks.

    The moments GMM and PCA start from, and the spread :func:`check_float32_scale` bounds.
    """
    mean = X.mean(axis=0, dtype=np.float64)
    ss = np.zeros(X.shape[1])
    max_dev = 0.0
    for s in range(0, X.shape[0], chunk):
        Xc = X[s:s + chunk].astype(np.float64) - mean
        ss += np.einsum("ij,ij->j", Xc, Xc)
        max_dev = max(max_dev, float(np.abs(Xc).max(initial=0.0)))
    return mean, ss, max_dev


def check_labels(y, n: int) -> np.ndarray:
    """``y`` as (n,) int64 class labels, or a ValueError naming what is wrong. A column (n, 1) is
    flattened with a ``DataConversionWarning``-like warning (scikit-learn's convention)."""
    if y is None:
        raise ValueError("this classifier requires y to be passed, but the target y is None")
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        import warnings

        from .estimator import data_conversion_warning

        warnings.warn("A column-vector y was passed when a 1d array was expected: flattened to (n,) "
                      "labels (pass y.ravel())",
                      data_conversion_warning(), stacklevel=3)
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"y must be (N,) = ({n},) integer labels, got shape {arr.shape}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"y must be integer labels, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("y contains NaN or infinite values; every sample needs a class label")
    if np.any(arr != np.round(arr)):
        raise ValueError("Unknown label type: y labels must be integers (class labels), got continuous values")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class Targets:
    """Checked classifier targets (see :func:`check_targets`): the array as given (``y``), its
    (N, C) int8 matrix ``Y`` in {+1, -1, 0}, the class labels (C,) int64 and whether ``y`` was (N, C)."""

    y: np.ndarray
    Y: np.ndarray
    classes: np.ndarray
    multilabel: bool

    def subset(self, indices) -> "Targets":
        """The targets of rows ``indices`` (same classes, same columns)."""
        return Targets(self.y[indices], self.Y[indices], self.classes, self.multilabel)


def check_targets(y, n: int, classes=None) -> Targets:
    """``y`` for ``n`` samples: (N,) integer labels (classes = the sorted distinct labels >= 0, or
    ``classes``; a label < 0 is a negative for every class) or (N, C) targets in {+1, -1, 0} (bools:
    True = +1, False = -1). Raises a ValueError naming ``y`` (or ``classes``) otherwise."""
    if y is None:
        raise ValueError("this classifier requires y to be passed, but the target y is None")
    arr = np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"y must be integer labels or {{+1,-1,0}} targets, got dtype {arr.dtype}")
    if arr.shape[:1] != (n,):
        raise ValueError(f"y has {arr.shape[0] if arr.ndim else 0} rows, X has {n}")
    if arr.ndim == 1:
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("Unknown label type: y labels must be integers (class labels), got continuous values")
        lab = arr.astype(np.int64)
        cls = np.unique(lab[lab >= 0]) if classes is None else np.asarray(classes, dtype=np.int64)
        if classes is None and cls.size == 0:
            raise ValueError(f"y has no class label: all {n} labels are < 0 (negatives for every class); "
                             "a classifier needs samples of at least 2 classes (labels >= 0)")
        if cls.size < 2:
            what = "classes" if classes is not None else "y"
            raise ValueError(f"{what} must hold at least 2 classes, got {cls.size} class ({cls.tolist()})")
        Y = np.where(lab[:, None] == cls[None, :], 1, -1).astype(np.int8)
        return Targets(arr, Y, cls, False)
    if arr.ndim == 2:
        if arr.dtype == np.bool_:  # True = positive, False = negative (not "ignored")
            arr = np.where(arr, 1, -1)
        if not np.isin(arr, (-1, 0, 1)).all():
            raise ValueError("y targets (N, C) must hold only +1 (positive), -1 (negative), 0 (ignore)")
        if arr.shape[1] == 0:
            raise ValueError(f"y targets have shape {arr.shape}: no class column")
        cls = np.arange(arr.shape[1], dtype=np.int64)
        if classes is not None and len(classes) != arr.shape[1]:
            raise ValueError(f"classes has {len(classes)} entries, y has {arr.shape[1]} columns")
        return Targets(arr, arr.astype(np.int8), cls, True)
    raise ValueError(f"y must be (N,) labels or (N, C) targets, got shape {arr.shape}")
