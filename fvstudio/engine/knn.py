"""k-nearest-neighbour classification of Fisher Vectors, on raw or PQ-compressed databases (paper Sec. 5.1).

Distances between a query q and a database item x (``metric``):

    "l2"      d(q, x) = ||q - x||_2 = sqrt(max(0, ||q||^2 + ||x||^2 - 2 q'x))
    "cosine"  d(q, x) = 1 - q'x / (||q|| ||x||)        (0 similarity when either norm is 0)

Asymmetric search (Sec. 5.1): the database may be PQ codes (a :class:`~fvstudio.engine.pq.PQRows`),
queries stay uncompressed; x is then the reconstruction q(x), or with ``PQRows(...,
renormalise=True)`` q(x) with each part (pyramid region / channel) rescaled to unit L2 norm -- the
paper's fix for hub images that otherwise become neighbours of many queries (Fig. 10, see
``hubness.py``).

The k nearest neighbours N_k(q) (ties: lower database index first) vote for their classes:

    s_c(q) = sum_{i in N_k(q)} w_i [y_i = c] / sum_{i in N_k(q)} w_i,
    w_i = 1 ("uniform") or 1 / max(d(q, x_i), 1e-12) ("distance")

``decision_function`` returns s (N, C) float32 (rows sum to 1), ``predict`` the best class (lowest
class index on ties), ``predict_topk`` the k best classes.

Search is exhaustive and blocked: the database is read (decoded) once per call in blocks of <= 32 MB
of float32 rows, and each block meets every query block (<= 32 MB) in one BLAS product q'x; a running
top-k per query is merged after each block, so memory stays O(blocks + n_queries k). ``algorithm =
"tables"`` instead scans the codes with per-query inner-product tables (sum_m T[m, code_m], per
re-normalisation part), which needs a PQ database; ``benchmarks/bench_knn.py`` measured
decode-then-GEMM faster at every size tried (Caltech-101, 64 queries x 3,060 codes, b = 1, G = 8: tables
x3.6 slower at E = 8,192, x4.7 at E = 32,768), hence the default ``"gemm"``.
Constants: weight floor 1e-12; 32 MB blocks; tables built for <= 64 MB of queries at a time.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .estimator import Classifier
from .pq import PQRows
from .rows import ArrayRows, as_row_provider
from .validation import as_numeric_matrix, check_choice, check_labels, check_positive_int

__all__ = ["KNNClassifier", "METRICS", "WEIGHTS", "ALGORITHMS"]

METRICS = ("l2", "cosine")
WEIGHTS = ("uniform", "distance")
ALGORITHMS = ("gemm", "tables")
_WEIGHT_FLOOR = 1e-12
_BLOCK_BYTES = 32 << 20
_TABLE_BYTES = 64 << 20


class KNNClassifier(Classifier):
    """Exhaustive k-NN classifier (see the module docstring); the database is an array, a memmap or any
    row provider, in particular :class:`~fvstudio.engine.pq.PQRows` over PQ codes."""

    def __init__(self, k: int = 10, metric: str = "l2", weights: str = "uniform", *, algorithm: str = "gemm"):
        self.k = k
        self.metric = metric
        self.weights = weights
        self.algorithm = algorithm

    def _check_params(self):
        check_positive_int(self.k, "k")
        check_choice(self.metric, "metric", METRICS)
        check_choice(self.weights, "weights", WEIGHTS)
        check_choice(self.algorithm, "algorithm", ALGORITHMS)

    # -- fit -----------------------------------------------------------------------------------------
    def fit(self, X, y) -> "KNNClassifier":
        """Remember the database ``X`` ((N, E) array / memmap / row provider) and its labels ``y`` (N,)."""
        self._check_params()
        db = as_row_provider(X, name="X")
        n = len(db)
        if n < 1:
            raise ValueError("X has no rows")
        y, _, names = self._label_codes(y)
        lab = check_labels(y, n)
        if self.algorithm == "tables" and not isinstance(db, PQRows):
            raise ValueError("algorithm='tables' needs a PQ database (X = PQRows(quantizer, codes))")
        self.classes_, self.labels_ = np.unique(lab, return_inverse=True)
        if names is not None:  # non-numeric labels (scikit-learn's convention): predict returns them
            self.classes_ = names[self.classes_]
        self._db = db
        self.n_features_in_ = int(db.dim)
        self.n_samples_fit_ = n
        sq = np.empty(n, dtype=np.float64)
        if self.algorithm == "tables":
            self._part_norms = self._pq_part_norms(db)
            scale = np.where(self._part_norms > 0, 1.0 / np.maximum(self._part_norms, 1e-300), 0.0)
            self._part_scale = scale if db.renormalise else np.ones_like(scale)
            sq[:] = (self._part_norms > 0).sum(1) if db.renormalise else (self._part_norms ** 2).sum(1)
        else:
            for s, e, rows in self._db_blocks():
                sq[s:e] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        self._db_sq = sq
        return self

    def _db_blocks(self):
        n, dim = len(self._db), self.n_features_in_
        step = max(1, _BLOCK_BYTES // (4 * dim))
        dense = self._db.dense_float32() if isinstance(self._db, ArrayRows) else None
        for s in range(0, n, step):
            e = min(n, s + step)
            yield s, e, (dense[s:e] if dense is not None else self._db.rows(np.arange(s, e)))

    @staticmethod
    def _pq_part_norms(db: PQRows) -> np.ndarray:
        """(N, P) float64 L2 norms of each part of each decoded (not re-normalised) database row."""
        pq = db.quantizer
        plain = PQRows(pq, db.codes, renormalise=False)
        bounds = pq.part_bounds_
        n = len(db)
        out = np.empty((n, bounds.size - 1))
        step = max(1, _BLOCK_BYTES // (4 * db.dim))
        for s in range(0, n, step):
            e = min(n, s + step)
            rows = plain.rows(np.arange(s, e))
            for p in range(bounds.size - 1):
                part = rows[:, bounds[p]:bounds[p + 1]]
                out[s:e, p] = np.sqrt(np.einsum("ij,ij->i", part, part, dtype=np.float64))
        return out

    def _is_fitted(self) -> bool:
        return hasattr(self, "_db")

    def _check_fitted(self):
        self._require_fitted()

    def _queries(self, Q, name="X") -> np.ndarray:
        return as_numeric_matrix(Q, name, n_features=self.n_features_in_, owner="KNNClassifier")

    # -- search --------------------------------------------------------------------------------------
    def kneighbors(self, X, k: Optional[int] = None, return_distance: bool = True):
        """(distances (nq, k) float32, indices (nq, k) int64) of the k nearest database items of each
        query row of ``X``, nearest first (ties: lower index first); only indices if not
        ``return_distance``."""
        self._check_fitted()
        k = self.k if k is None else check_positive_int(k, "k")
        if k > self.n_samples_fit_:
            raise ValueError(f"k={k} is larger than the database ({self.n_samples_fit_} items)")
        Q = self._queries(X)
        nq, dim = Q.shape
        qstep = max(1, _BLOCK_BYTES // (4 * dim))
        Qs = []
        qsq = np.empty(nq, dtype=np.float64)
        for s in range(0, nq, qstep):
            block = np.ascontiguousarray(Q[s:s + qstep], dtype=np.float32)
            if not np.isfinite(block).all():
                bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0]) + s
                raise ValueError(f"X contains NaN or infinite values (first in row {bad})")
            qsq[s:s + len(block)] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
            Qs.append((s, block))
        best_d = np.full((nq, k), np.inf, dtype=np.float64)
        best_i = np.full((nq, k), -1, dtype=np.int64)
        if self.algorithm == "tables":
            self._search_tables(Qs, qsq, best_d, best_i, k)
        else:
            for s, e, rows in self._db_blocks():
                for q0, block in Qs:
                    ip = block @ rows.T
                    self._merge(self._distances(ip, qsq[q0:q0 + len(block)], self._db_sq[s:e]),
                                s, best_d[q0:q0 + len(block)], best_i[q0:q0 + len(block)], k)
        order = np.lexsort((best_i, best_d), axis=1) if nq else best_i
        best_i = np.take_along_axis(best_i, order, axis=1)
        best_d = np.take_along_axis(best_d, order, axis=1)
        if self.metric == "l2":
            best_d = np.sqrt(np.maximum(best_d, 0.0))
        return (best_d.astype(np.float32), best_i) if return_distance else best_i

    def _distances(self, ip, qsq, xsq) -> np.ndarray:
        """Ranking distances of a (nq, nb) block of inner products: squared L2, or 1 - cosine."""
        ip = ip.astype(np.float64)
        if self.metric == "l2":
            return qsq[:, None] + xsq[None, :] - 2.0 * ip
        qn, xn = np.sqrt(qsq), np.sqrt(xsq)
        den = qn[:, None] * xn[None, :]
        return 1.0 - np.divide(ip, den, out=np.zeros_like(ip), where=den > 0)

    @staticmethod
    def _merge(d, offset, best_d, best_i, k):
        """Merge a (nq, nb) block of distances (database rows offset..) into the running top-k."""
        nb = d.shape[1]
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(offset, offset + nb), d.shape)], axis=1)
        if cand_d.shape[1] > k:
            part = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(cand_d, part, axis=1).max(axis=1)
            # rows where ties straddle the k-th place: order by (distance, index), the lower index wins
            tied = np.flatnonzero((cand_d <= kth[:, None]).sum(axis=1) > k)
            if tied.size:
                part[tied] = np.lexsort((cand_i[tied], cand_d[tied]), axis=1)[:, :k]
            cand_d = np.take_along_axis(cand_d, part, axis=1)
            cand_i = np.take_along_axis(cand_i, part, axis=1)
        best_d[:] = cand_d
        best_i[:] = cand_i

    def _search_tables(self, Qs, qsq, best_d, best_i, k):
        db = self._db
        pq = db.quantizer
        gp = pq.group_parts()
        per_query = pq.n_subquantizers_ * pq.ksub * 4
        tstep = max(1, _TABLE_BYTES // per_query)
        n = len(db)
        dstep = max(1, _BLOCK_BYTES // max(1, 4 * tstep * self._part_norms.shape[1]))
        codes = db.codes
        for q0, block in Qs:
            for t0 in range(0, len(block), tstep):
                sub = block[t0:t0 + tstep]
                tables = pq.inner_product_tables(sub)
                lo = q0 + t0
                hi = lo + len(sub)
                for s in range(0, n, dstep):
                    e = min(n, s + dstep)
                    parts = pq.asymmetric_scores(tables, codes[s:e], group_part=gp)  # (nq, nb, P)
                    ip = np.einsum("qnp,np->qn", parts.astype(np.float64), self._part_scale[s:e])
                    self._merge(self._distances(ip, qsq[lo:hi], self._db_sq[s:e]), s, best_d[lo:hi],
                                best_i[lo:hi], k)

    # -- classification ------------------------------------------------------------------------------
    def _votes(self, dist, idx) -> np.ndarray:
        nq, k = idx.shape
        C = self.classes_.size
        if self.weights == "uniform":
            w = np.ones((nq, k))
        else:
            w = 1.0 / np.maximum(dist.astype(np.float64), _WEIGHT_FLOOR)
        votes = np.zeros((nq, C))
        np.add.at(votes, (np.repeat(np.arange(nq), k), self.labels_[idx].ravel()), w.ravel())
        votes /= votes.sum(axis=1, keepdims=True)
        return votes.astype(np.float32)

    def decision_function(self, X) -> np.ndarray:
        """(nq, C) float32 (weighted) share of each class among the k neighbours (rows sum to 1)."""
        dist, idx = self.kneighbors(X)
        return self._votes(dist, idx)

    def predict(self, X) -> np.ndarray:
        """(nq,) label of the class with the largest vote (lowest class index on ties)."""
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_topk(self, X, k: int = 5) -> np.ndarray:
        """(nq, k) labels of the k best-voted classes, best first (ties: lower class index first)."""
        k = check_positive_int(k, "k")
        scores = self.decision_function(X)
        k = min(k, scores.shape[1])
        return self.classes_[np.argsort(-scores, axis=1, kind="stable")[:, :k]]

    def vote(self, distances, indices) -> np.ndarray:
        """(nq, C) float32 class votes of given neighbour lists (from :meth:`kneighbors`, possibly cut to
        fewer columns): one search serves several k, and the neighbour-frequency diagnostic
        (``hubness.k_occurrence``) reads the same lists."""
        self._check_fitted()
        idx = np.asarray(indices)
        dist = np.asarray(distances)
        if idx.ndim != 2 or dist.shape != idx.shape or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"distances and indices must be matching (nq, k) arrays, got {dist.shape} and "
                             f"{idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples_fit_):
            raise ValueError(f"indices must lie in [0, {self.n_samples_fit_})")
        return self._votes(dist, idx)
