"""Combining descriptor channels (SIFT, LCS, ...): late fusion of scores, early fusion of vectors.

Late fusion (paper Sec. 3.2, VOC07: 0.6 x SIFT + 0.4 x LCS). Each channel m has its own classifiers
with scores S_m (N, C); the fused score is the convex combination

    S = sum_m a_m S_m,   a_m >= 0,  sum_m a_m = 1        (two channels: a S_1 + (1 - a) S_2)

The paper cross-validated the weight on VOC07's "val" set; here it is chosen by grid search on
held-out scores of training data (a validation split's, or out-of-fold ones): every point of the
simplex whose coordinates are multiples of ``step`` (two channels, step 0.1: a in {0, 0.1, ..., 1}),
scored by mAP (VOC07 11-point) for (N, C) targets in {+1, -1, 0} or by mean per-class accuracy for
(N,) labels (column indices). The scores must not come from classifiers trained on the same samples
(they would be over-confident): pass out-of-fold scores, e.g. from
:func:`fvstudio.engine.model_selection.cross_val_decision`. Ties between weight vectors go to the one closest to
uniform, then to the first in grid order.

Early fusion (the paper's large-scale experiments, Sec. 5): concatenate the channels' vectors,
each block first L2-normalised and scaled by sqrt(beta_m) (beta_m >= 0, sum beta_m = 1; default
1/M), so a fused row has unit L2 norm and a linear kernel on it is the beta-weighted sum of the
channels' linear kernels:
<[x_1..x_M], [z_1..z_M]> = sum_m beta_m <x_m/|x_m|, z_m/|z_m|>. :class:`fvstudio.engine.rows.ConcatRows`
does the same lazily over row providers (no concatenated copy in RAM).
"""
from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np

from . import metrics
from .rows import _block_weights, _normalise_block


def _as_channel_scores(channel_scores, name="channel_scores"):
    mats = [np.asarray(s, dtype=np.float64) for s in channel_scores]
    if len(mats) < 1:
        raise ValueError(f"{name} must hold at least one (N, C) score matrix")
    shape = mats[0].shape
    for m, s in enumerate(mats):
        if s.ndim != 2 or s.shape != shape:
            raise ValueError(f"{name}[{m}] has shape {s.shape}, expected (N, C) = {shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"{name}[{m}] contains NaN or infinite values")
    return mats


def simplex_grid(n_channels: int, step: float = 0.1) -> np.ndarray:
    """(G, M) weight vectors on the simplex with coordinates in multiples of ``step``."""
    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels}")
    k = int(round(1.0 / step))
    if k < 1 or abs(k * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 (e.g. 0.1, 0.05, 0.25), got {step}")
    pts = [c for c in itertools.product(range(k + 1), repeat=n_channels - 1) if sum(c) <= k]
    grid = np.array([list(c) + [k - sum(c)] for c in pts], dtype=np.float64) / k
    return grid


def fuse_scores(channel_scores, weights) -> np.ndarray:
    """sum_m weights[m] * channel_scores[m], as float32 (N, C)."""
    mats = _as_channel_scores(channel_scores)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(mats),):
        raise ValueError(f"weights must have one entry per channel ({len(mats)}), got shape {w.shape}")
    out = np.zeros_like(mats[0])
    for wm, s in zip(w, mats):
        out += wm * s
    return out.astype(np.float32)


def _score(fused, y, multilabel):
    if multilabel:
        return metrics.mean_average_precision(fused, y, mode="voc07")
    pred = np.argmax(fused, axis=1)
    return metrics.mean_per_class_accuracy(y, pred, n_classes=fused.shape[1])


class LateFusion:
    """Convex combination of per-channel scores with weights chosen by grid search on training scores.

    ``fit(channel_scores, y)`` sets ``weights_`` (M,), ``grid_`` (G, M) and ``grid_scores_`` (G,);
    ``fuse(channel_scores)`` applies them. With two channels ``weights_[0]`` is the paper's a.
    """

    #: (M,) learned by fit (or set directly to fixed weights); None until then
    weights_: Optional[np.ndarray] = None

    def __init__(self, step: float = 0.1):
        self.step = step

    def fit(self, channel_scores, y) -> "LateFusion":
        mats = _as_channel_scores(channel_scores)
        arr = np.asarray(y)
        multilabel = arr.ndim == 2
        if arr.shape[0] != mats[0].shape[0] or (multilabel and arr.shape != mats[0].shape):
            raise ValueError(f"y has shape {arr.shape}, scores are {mats[0].shape}")
        grid = simplex_grid(len(mats), self.step)
        scores = np.array([_score(fuse_scores(mats, w), arr, multilabel) for w in grid])
        uniform = np.full(len(mats), 1.0 / len(mats))
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        best_val = finite.max()
        cands = np.flatnonzero(np.isclose(finite, best_val, rtol=0, atol=1e-12))
        dist = np.linalg.norm(grid[cands] - uniform, axis=1)
        best = cands[np.argmin(dist)]
        self.weights_ = grid[best]
        self.grid_ = grid
        self.grid_scores_ = scores
        self.metric_ = "map" if multilabel else "mean_per_class_accuracy"
        return self

    def fuse(self, channel_scores) -> np.ndarray:
        if self.weights_ is None:
            raise ValueError("this LateFusion is not fitted yet; call fit first")
        return fuse_scores(channel_scores, self.weights_)


def early_fusion(channel_vectors: Sequence, weights=None, normalize: Optional[str] = "l2") -> np.ndarray:
    """Concatenate per-channel vectors (N, D_m) -> (N, sum D_m) float32 (see module docstring).

    ``normalize="l2"`` L2-normalises each block first (a zero block stays zero); ``None`` only
    applies the sqrt(weights) scaling.
    """
    if normalize not in ("l2", None):
        raise ValueError(f"normalize must be 'l2' or None, got {normalize!r}")
    blocks = [np.asarray(v, dtype=np.float32) for v in channel_vectors]
    if not blocks:
        raise ValueError("channel_vectors must hold at least one (N, D) array")
    n = blocks[0].shape[0]
    for m, blk in enumerate(blocks):
        if blk.ndim != 2 or blk.shape[0] != n:
            raise ValueError(f"channel_vectors[{m}] has shape {blk.shape}, expected ({n}, D)")
        if not np.isfinite(blk).all():
            raise ValueError(f"channel_vectors[{m}] contains NaN or infinite values")
    w = _block_weights(len(blocks), weights)
    return np.ascontiguousarray(np.concatenate(
        [_normalise_block(b, wm, normalize) for b, wm in zip(blocks, w)], axis=1), dtype=np.float32)
