"""Diagnostics of compressed FVs: neighbour frequency / hubness (paper Fig. 10) and PQ distortion vs (b, G).

Neighbour frequency (Sec. 5.1, Fig. 10). For n_q queries and their k nearest database items
(``KNNClassifier.kneighbors``), the k-occurrence of database item i is

    N_k(i) = #{ queries q : i in N_k(q) },      sum_i N_k(i) = n_q k,   mean = n_q k / n_db.

Fig. 10 plots N_k sorted decreasingly on log-log axes (``neighbour_frequency``). Summary figures
(:class:`HubnessSummary`):

    largest N_k                 max_i N_k(i)   (the paper: > 4500 of 5K queries without re-normalisation)
    skewness                    m3 / m2^(3/2), m_r = mean_i (N_k(i) - mean)^r (population moments; 0 if m2 = 0)
    Robin Hood index            1/2 sum_i |N_k(i) - mean| / sum_i N_k(i)   (share of occurrences to move
                                so that every item is chosen equally often; 0 = uniform, -> 1 = one hub)
    never chosen                #{i : N_k(i) = 0} / n_db

PQ distortion sweep (Sec. 4.1, Fig. 8's axes): for each (b, G) setting a :class:`ProductQuantizer` is
fitted on the training vectors and its MSE (eq. 42) measured on held-out vectors, overall, relative to
the mean squared norm, and per Gaussian block (unit = region K + Gaussian, from the layout), so the
GUI can show which Gaussians PQ hurts most.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import numpy as np

from .pq import ProductQuantizer, _check_matrix
from .progress import CancelLike, ProgressCallback, check_cancel, report
from .validation import check_positive_int

__all__ = ["k_occurrence", "neighbour_frequency", "HubnessSummary", "hubness_summary", "DistortionPoint",
           "distortion_sweep"]


def _check_neighbors(neighbors, n_database) -> np.ndarray:
    n_database = check_positive_int(n_database, "n_database")
    idx = np.asarray(neighbors)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"neighbors must be a 2-D integer array (n_queries, k) of database indices, got "
                         f"shape {idx.shape} dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_database):
        raise ValueError(f"neighbors must hold database indices in [0, {n_database}), got values in "
                         f"[{idx.min()}, {idx.max()}]")
    return idx


def k_occurrence(neighbors, n_database: int) -> np.ndarray:
    """(n_database,) int64 N_k(i): how many queries have database item i among their neighbours."""
    idx = _check_neighbors(neighbors, n_database)
    return np.bincount(idx.ravel(), minlength=int(n_database)).astype(np.int64)


def neighbour_frequency(neighbors, n_database: int) -> np.ndarray:
    """N_k sorted decreasingly (Fig. 10's curve: x = rank 1.., y = N_k, both log scale)."""
    return np.sort(k_occurrence(neighbors, n_database))[::-1]


@dataclass(frozen=True)
class HubnessSummary:
    """Summary figures of a k-occurrence distribution (see the module docstring)."""

    n_queries: int
    k: int
    n_database: int
    mean: float
    largest: int
    skewness: float
    robin_hood: float
    never_chosen: float  # share of database items

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def hubness_summary(neighbors, n_database: int) -> HubnessSummary:
    """Largest N_k, skewness, Robin Hood index and never-chosen share of a neighbour list (n_q, k)."""
    idx = _check_neighbors(neighbors, n_database)
    counts = np.bincount(idx.ravel(), minlength=int(n_database)).astype(np.float64)
    total = counts.sum()
    mean = total / counts.size
    dev = counts - mean
    m2 = float(np.mean(dev ** 2))
    m3 = float(np.mean(dev ** 3))
    return HubnessSummary(n_queries=int(idx.shape[0]), k=int(idx.shape[1]), n_database=int(counts.size),
                          mean=float(mean), largest=int(counts.max()),
                          skewness=m3 / m2 ** 1.5 if m2 > 0 else 0.0,
                          robin_hood=0.5 * float(np.abs(dev).sum()) / total if total > 0 else 0.0,
                          never_chosen=float(np.mean(counts == 0)))


@dataclass(frozen=True)
class DistortionPoint:
    """PQ distortion of one (b, G) setting on held-out vectors."""

    bits_per_dim: float
    group: int
    n_bits: int
    bytes_per_vector: int
    mse: float  # mean ||q(x) - x||^2 (eq. 42)
    relative_mse: float  # mse / mean ||x||^2
    per_unit: np.ndarray  # (U,) MSE share of each (region, Gaussian) block (unit = region K + k)
    other: float  # MSE share of groups outside any unit (weight gradients)
    train_seconds: float


def distortion_sweep(X_train, X_test=None, settings: Iterable[Tuple[float, int]] = ((1.0, 8),), *, layout=None,
                     n_iter: Optional[int] = None, train_sample: Optional[int] = None, seed=0,
                     progress: Optional[ProgressCallback] = None, cancel: CancelLike = None
                     ) -> List[DistortionPoint]:
    """Fit a PQ per (b, G) in ``settings`` on ``X_train`` and measure it on ``X_test`` (default X_train)."""
    X_train = _check_matrix(X_train, "X_train")
    X_test = X_train if X_test is None else _check_matrix(X_test, "X_test")
    settings = [(float(b), int(g)) for b, g in settings]
    if not settings:
        raise ValueError("settings must hold at least one (bits_per_dim, group) pair")
    sq = 0.0
    for s in range(0, len(X_test), 4096):
        block = np.asarray(X_test[s:s + 4096], dtype=np.float64)
        sq += float(np.einsum("ij,ij->", block, block))
    mean_sq = sq / max(len(X_test), 1)
    out = []
    kw = {} if n_iter is None else {"n_iter": n_iter}
    for j, (b, g) in enumerate(settings):
        check_cancel(cancel, "distortion sweep")
        t = time.perf_counter()
        pq = ProductQuantizer(b, g, layout=layout, train_sample=train_sample, seed=seed, **kw).fit(X_train,
                                                                                                  cancel=cancel)
        secs = time.perf_counter() - t
        per_group = pq.distortion(X_test, per_group=True)
        unit = pq.group_unit_
        per_unit = np.bincount(unit[unit >= 0], weights=per_group[unit >= 0], minlength=pq.n_units_)
        mse = float(per_group.sum())
        out.append(DistortionPoint(bits_per_dim=b, group=g, n_bits=pq.n_bits, bytes_per_vector=pq.code_size_,
                                   mse=mse, relative_mse=mse / mean_sq if mean_sq > 0 else 0.0,
                                   per_unit=per_unit, other=float(per_group[unit < 0].sum()), train_seconds=secs))
        report(progress, j + 1, len(settings), f"b={b:g}, G={g}: MSE {mse:.4g}", bits_per_dim=b, group=g, mse=mse)
    return out
