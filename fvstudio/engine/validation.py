"""Input checks done once at the door of every engine call, with messages naming the argument."""
from __future__ import annotations

from typing import Optional

import numpy as np


def as_float32_matrix(X, name: str = "X", *, n_features: Optional[int] = None,
                      min_rows: int = 0, allow_empty: bool = True) -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 (N, D) array, or raise a ValueError naming ``name``.

    Rejects non-numeric dtypes, wrong rank, a feature count other than ``n_features``, fewer than
    ``min_rows`` rows, and NaN or infinite values (reporting how many and the first row holding one).
    """
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features per row, expected {n_features}")
    if arr.shape[0] < min_rows or (not allow_empty and arr.shape[0] == 0):
        raise ValueError(f"{name} has {arr.shape[0]} rows, at least {max(min_rows, 1)} needed")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        bad = ~np.isfinite(arr)
        rows = np.flatnonzero(bad.any(axis=1))
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} infinite values "
                         f"(first in row {rows[0]}); clean or drop those rows first")
    return arr


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
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value
