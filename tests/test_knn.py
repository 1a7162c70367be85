"""k-NN: on codes equals brute force on the decoded vectors; votes by hand; blocking; bad input."""
import numpy as np
import pytest

from fvstudio.engine import knn as knn_mod
from fvstudio.engine.knn import KNNClassifier
from fvstudio.engine.pq import PQRows, ProductQuantizer


def brute_force(Q, X, k, metric):
    Q64, X64 = Q.astype(np.float64), X.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(((Q64[:, None, :] - X64[None]) ** 2).sum(-1))
    else:
        qn = np.linalg.norm(Q64, axis=1)[:, None]
        xn = np.linalg.norm(X64, axis=1)[None]
        d = 1 - np.divide(Q64 @ X64.T, qn * xn, out=np.zeros((len(Q), len(X))), where=qn * xn > 0)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


@pytest.fixture(scope="module")
def db():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 64))
    y = rng.integers(0, 4, 360)
    X = centres[y] + rng.standard_normal((360, 64)) * 1.5
    X /= np.linalg.norm(X.reshape(360, 2, 32), axis=2).repeat(32, axis=1)  # two unit-norm parts
    X = X.astype(np.float32)
    pq = ProductQuantizer(1.0, 8, parts=[32, 32], n_iter=10, seed=0).fit(X[:300])
    return X[:300], y[:300], X[300:], y[300:], pq


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("renormalise", [False, True])
def test_knn_on_codes_equals_brute_force_on_decoded(db, metric, renormalise, monkeypatch):
    X, y, Q, _, pq = db
    codes = pq.encode(X)
    dec = pq.decode(codes, renormalise=renormalise)
    ref_d, ref_i = brute_force(Q, dec, 7, metric)
    for block in (32 << 20, 64 * 4 * 37):  # one block, and 37-row database blocks merged one by one
        monkeypatch.setattr(knn_mod, "_BLOCK_BYTES", block)
        model = KNNClassifier(k=7, metric=metric).fit(PQRows(pq, codes, renormalise=renormalise), y)
        d, i = model.kneighbors(Q)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-5)
    tab = KNNClassifier(k=7, metric=metric, algorithm="tables").fit(PQRows(pq, codes, renormalise=renormalise), y)
    d2, i2 = tab.kneighbors(Q)
    assert (i2 == ref_i).mean() > 0.99
    np.testing.assert_allclose(d2, ref_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tab.decision_function(Q), model.decision_function(Q), atol=0.15)


def test_knn_on_raw_vectors_equals_brute_force(db):
    X, y, Q, yq, _ = db
    model = KNNClassifier(k=5).fit(X, y)
    d, i = model.kneighbors(Q)
    ref_d, ref_i = brute_force(Q, X, 5, "l2")
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-5)
    assert (model.predict(Q) == yq).mean() > 0.6
    np.testing.assert_array_equal(model.kneighbors(Q, return_distance=False), i)


def test_ties_keep_the_lower_index_across_blocks(monkeypatch):
    X = np.array([[3], [1], [-1], [1], [0], [-1]], np.float32)
    for block in (32 << 20, 8):  # one block, and 2-row blocks
        monkeypatch.setattr(knn_mod, "_BLOCK_BYTES", block)
        model = KNNClassifier(k=3).fit(X, np.arange(6))
        d, i = model.kneighbors(np.array([[0], [2]], np.float32))
        np.testing.assert_array_equal(i, [[4, 1, 2], [0, 1, 3]])  # 1, 2, 3, 5 tie at 1; 0, 1, 3 tie at 1
        np.testing.assert_allclose(d, [[0, 1, 1], [1, 1, 1]])


def test_votes_by_hand():
    X = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    y = np.array([5, 7, 7, 9])
    q = np.array([[0.5], [2.5]], dtype=np.float32)
    model = KNNClassifier(k=3).fit(X, y)
    np.testing.assert_array_equal(model.classes_, [5, 7, 9])
    d, i = model.kneighbors(q)
    np.testing.assert_array_equal(i, [[0, 1, 2], [2, 1, 0]])  # q=0.5: 0 and 1 tie at 0.5, lower index first
    np.testing.assert_allclose(d, [[0.5, 0.5, 2.5], [0.5, 1.5, 2.5]], rtol=1e-6)
    np.testing.assert_allclose(model.decision_function(q), [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0]], rtol=1e-6)
    np.testing.assert_array_equal(model.predict(q), [7, 7])
    np.testing.assert_allclose(model.vote(d[:, :1], i[:, :1]), [[1, 0, 0], [0, 1, 0]])  # k = 1 from one search
    wd = KNNClassifier(k=3, weights="distance").fit(X, y)
    # q=0.5: w = 2, 2, 0.4 -> class 5: 2/4.4 ; q=2.5: w = 2, 2/3, 0.4 -> class 5: 0.4/3.0667
    np.testing.assert_allclose(wd.decision_function(q)[:, 0], [2 / 4.4, 0.4 / (2 + 2 / 3 + 0.4)], rtol=1e-5)
    np.testing.assert_array_equal(wd.predict_topk(q, k=2), [[7, 5], [7, 5]])
    np.testing.assert_array_equal(model.predict_topk(q, k=5), [[7, 5, 9], [7, 5, 9]])
    ties = KNNClassifier(k=2).fit(np.array([[3], [1], [-1], [1], [0]], np.float32), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ties.kneighbors(np.array([[0]], np.float32))[1], [[4, 1]])  # 1, 2, 3 tie
    cos = KNNClassifier(k=1, metric="cosine").fit(np.array([[1, 0], [0, 1], [0, 0]], np.float32), [0, 1, 2])
    d, i = cos.kneighbors(np.array([[2, 1]], np.float32))
    assert i[0, 0] == 0 and d[0, 0] == pytest.approx(1 - 2 / np.sqrt(5), rel=1e-6)


def test_bad_input_names_the_argument(db):
    X, y, Q, _, pq = db
    with pytest.raises(ValueError, match="metric must be one of"):
        KNNClassifier(metric="l1").fit(X, y)
    with pytest.raises(ValueError, match="weights must be one of"):
        KNNClassifier(weights="rank").fit(X, y)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        KNNClassifier(k=0).fit(X, y)
    with pytest.raises(ValueError, match="algorithm='tables' needs a PQ database"):
        KNNClassifier(algorithm="tables").fit(X, y)
    with pytest.raises(ValueError, match="y must be"):
        KNNClassifier().fit(X, y[:10])
    model = KNNClassifier(k=3).fit(X, y)
    with pytest.raises(ValueError, match="k=301 is larger than the database"):
        model.kneighbors(Q, k=301)
    with pytest.raises(ValueError, match="X has 32 features, but KNNClassifier is expecting 64 features"):
        model.predict(Q[:, :32])
    bad = Q.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinite values \\(first in row 2\\)"):
        model.predict(bad)
    with pytest.raises(ValueError, match="not fitted"):
        KNNClassifier().predict(Q)
    with pytest.raises(ValueError, match="indices must lie in \\[0, 300\\)"):
        model.vote(np.zeros((1, 2)), np.array([[0, 300]]))
    with pytest.raises(ValueError, match="codes have 4 bytes per row"):
        KNNClassifier().fit(PQRows(pq, pq.encode(X)[:, :4]), y)
