"""k-NN classification inside the pipeline (``classifier.kind = "knn"``, paper Sec. 5.1) and its hubness figures.

The database is a split's training FVs (a row provider: float32 FVs, or PQ codes decoded a block at a time,
optionally re-normalised); the queries are the test FVs, always uncompressed, as in the paper's asymmetric
setting. Scores are :class:`~fvstudio.engine.knn.KNNClassifier` votes (the share of the k neighbours of each
class). Queries are searched in blocks of :data:`QUERY_BLOCK` rows so memory stays bounded.

Hubness (Fig. 10): the k-occurrence N_k of every training item among the test queries' neighbour lists, and
its summary (:func:`fvstudio.engine.hubness.hubness_summary`: largest N_k, skewness, Robin Hood index, share
never chosen). With compression on, :func:`hubness_report` measures it for the uncompressed FVs, the PQ
codes and the re-normalised PQ codes, the three curves of the paper's figure.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from ..engine.hubness import hubness_summary
from ..engine.knn import KNNClassifier
from ..engine.model_selection import make_folds
from ..engine.progress import check_cancel, report
from ..engine.rows import SubsetRows

__all__ = ["knn_params", "knn_search", "knn_out_of_fold", "hubness_report", "QUERY_BLOCK"]

QUERY_BLOCK = 512  # test FVs searched at a time


def knn_params(config) -> Dict[str, Any]:
    c = config
    return {"k": c.get("classifier.knn_k"), "metric": c.get("classifier.knn_metric"),
            "weights": c.get("classifier.knn_weights")}


def knn_search(db, y_db: np.ndarray, queries, params: Dict[str, Any], n_classes: int, *, progress=None,
               cancel=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (nq, C) float32, neighbours (nq, k) int64 rows of ``db``, distances (nq, k) float32).

    ``db`` and ``queries`` are row providers; ``y_db`` the database labels in 0..C-1. Scores are the votes
    per class index (a class absent from the database scores 0)."""
    k = min(int(params["k"]), len(db))
    model = KNNClassifier(k=k, metric=params["metric"], weights=params["weights"]).fit(db, y_db)
    nq = len(queries)
    scores = np.zeros((nq, n_classes), np.float32)
    nbrs = np.empty((nq, k), np.int64)
    dists = np.empty((nq, k), np.float32)
    for s in range(0, nq, QUERY_BLOCK):
        check_cancel(cancel, "classifier")
        e = min(nq, s + QUERY_BLOCK)
        Q = np.ascontiguousarray(queries.rows(np.arange(s, e)), dtype=np.float32)
        d, i = model.kneighbors(Q)
        dists[s:e], nbrs[s:e] = d, i
        scores[s:e][:, model.classes_] = model.vote(d, i)
        report(progress, e, nq, f"k-NN: {e}/{nq} test images")
    return scores, nbrs, dists


def knn_out_of_fold(db, y: np.ndarray, params: Dict[str, Any], n_classes: int, folds: int, seed, *,
                    cancel=None) -> np.ndarray:
    """(N, C) scores of every training row by a k-NN on the other folds (for the late-fusion weight)."""
    fold = make_folds(y, folds, seed)
    out = np.zeros((len(db), n_classes), np.float32)
    for f in range(int(fold.max()) + 1):
        inside, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        scores, _, _ = knn_search(SubsetRows(db, inside), y[inside], SubsetRows(db, held), params, n_classes,
                                  cancel=cancel)
        out[held] = scores
    return out


def hubness_report(databases: Dict[str, Any], queries, k: int, params: Dict[str, Any], *, cancel=None,
                   neighbours: Dict[str, np.ndarray] = None) -> Dict[str, Dict[str, Any]]:
    """{name: hubness summary + sorted k-occurrence} of the test queries' k-NN lists in each database.

    ``neighbours`` holds lists already searched (name -> (nq, k) rows), so no database is searched twice."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, db in databases.items():
        nb = (neighbours or {}).get(name)
        if nb is None:
            dummy = np.zeros(len(db), np.int64)
            _, nb, _ = knn_search(db, dummy, queries, {**params, "k": k}, 1, cancel=cancel)
        summary = hubness_summary(nb, len(db)).as_dict()
        summary["sorted_k_occurrence"] = np.sort(np.bincount(nb.ravel(), minlength=len(db)))[::-1].tolist()
        out[name] = summary
    return out
