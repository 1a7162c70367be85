"""One-vs-rest SGD: equivalence with a naive per-class SGD, learning, targets, providers, CV, I/O."""
import math
import threading

import numpy as np
import pytest

from fvstudio.engine import defaults, model_selection, svm
from fvstudio.engine.progress import CancelToken, Cancelled
from fvstudio.engine.rows import ArrayRows, SubsetRows
from fvstudio.engine.svm import OneVsRestSGD


def blobs(n=300, d=20, c=3, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((c, d)) * sep / np.sqrt(d) * 2
    y = rng.integers(0, c, n)
    X = (means[y] + rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    return X, y


def naive_sgd(X, Y, loss, lam, epochs, averaging, seed, eta0):
    """Textbook per-class SGD on explicit weight vectors (no scaling trick), same sample order."""
    n, d = X.shape
    C = Y.shape[1]
    t0 = 1 / (lam * eta0)
    W = np.zeros((C, d))
    b = np.zeros(C)
    A = np.zeros((C, d))
    ab = np.zeros(C)
    t = np.zeros(C)
    start = np.full(C, np.inf)
    rng = np.random.default_rng(seed)
    for ep in range(epochs):
        if averaging and ep == (1 if epochs > 1 else 0):
            start = t.copy()
        for i in rng.permutation(n):
            x = X[i].astype(np.float64)
            for c in range(C):
                y = Y[i, c]
                if y == 0:
                    continue
                z = y * (W[c] @ x + b[c])
                dl = {"hinge": -1.0 if z < 1 else 0.0, "log": -1 / (1 + math.exp(z)),
                      "squared": z - 1}[loss]
                eta = 1 / (lam * (t[c] + t0))
                W[c] = (1 - eta * lam) * W[c] - eta * dl * y * x
                b[c] -= eta * dl * y
                if t[c] >= start[c]:
                    mu = 1 / (t[c] - start[c] + 1)
                    A[c] = (1 - mu) * A[c] + mu * W[c]
                    ab[c] = (1 - mu) * ab[c] + mu * b[c]
                t[c] += 1
    return (A, ab) if averaging else (W, b)


@pytest.mark.parametrize("loss", svm.LOSSES)
@pytest.mark.parametrize("averaging", [False, True])
def test_matches_naive_per_class_sgd(loss, averaging):
    X, y = blobs(n=80, d=12, c=3)
    Y = np.where(y[:, None] == np.arange(3)[None, :], 1, -1)
    Y[::7, 1] = 0  # some ignored entries
    lam = 1e-2
    m = OneVsRestSGD(balance=None, loss=loss, lam=lam, epochs=3, averaging=averaging, seed=3).fit(X, Y)
    r = lam ** -0.25
    dl_typ = {"hinge": 1.0, "log": 1 / (1 + math.exp(-r)), "squared": 1 + r}[loss]
    eta0 = r / max(1.0, dl_typ)
    if loss == "squared":
        eta0 = min(eta0, 1 / (np.max(np.sum(X * X, axis=1)) + 1))
    assert m.eta0_ == pytest.approx(eta0, rel=1e-5)
    W, b = naive_sgd(X, Y, loss, lam, 3, averaging, seed=3, eta0=m.eta0_)
    np.testing.assert_allclose(m.coef_, W, rtol=2e-3, atol=2e-4 * np.abs(W).max())
    np.testing.assert_allclose(m.intercept_, b, rtol=2e-3, atol=2e-4 * max(1, np.abs(b).max()))


def test_renormalisation_keeps_the_same_model(monkeypatch):
    # fold the divisors back into the vectors every few steps: the model must not change
    monkeypatch.setattr(svm, "_RENORM", 1.5)
    X, y = blobs(n=60, d=8, c=2)
    Y = np.where(y[:, None] == np.arange(2)[None, :], 1, -1)
    m = OneVsRestSGD(balance=None, lam=0.05, epochs=10, averaging=True, seed=1).fit(X, Y)
    W, b = naive_sgd(X, Y, "hinge", 0.05, 10, True, seed=1, eta0=m.eta0_)
    np.testing.assert_allclose(m.coef_, W, rtol=2e-3, atol=2e-4 * np.abs(W).max())
    np.testing.assert_allclose(m.intercept_, b, rtol=2e-3, atol=2e-4 * max(1, np.abs(b).max()))


@pytest.mark.parametrize("loss", svm.LOSSES)
def test_learns_separable_classes(loss):
    X, y = blobs(n=600, d=30, c=4, seed=1)
    Xt, yt = blobs(n=300, d=30, c=4, seed=1)  # same means (same seed), fresh noise below
    Xt = Xt + np.random.default_rng(9).standard_normal(Xt.shape).astype(np.float32) * 0.05
    m = OneVsRestSGD(balance=None, loss=loss, lam=1e-4, epochs=5, seed=0).fit(X, y)
    assert (m.predict(Xt) == yt).mean() > 0.9
    assert m.loss_history_[-1] < m.loss_history_[0]
    assert m.coef_.shape == (4, 30) and m.coef_.dtype == np.float32


def test_labels_map_to_classes_and_topk():
    X, y = blobs(n=300, d=10, c=3, seed=2)
    labels = np.array([5, 7, 11])[y]
    m = OneVsRestSGD(balance=None, lam=1e-3, epochs=3).fit(X, labels)
    np.testing.assert_array_equal(m.classes_, [5, 7, 11])
    s = m.decision_function(X)
    assert s.shape == (300, 3) and s.dtype == np.float32
    np.testing.assert_allclose(s, X @ m.coef_.T + m.intercept_, rtol=1e-5, atol=1e-5)
    top = m.predict_topk(X, 2)
    np.testing.assert_array_equal(top[:, 0], m.predict(X))
    np.testing.assert_array_equal(top, m.classes_[np.argsort(-s, axis=1, kind="stable")[:, :2]])
    assert m.predict_topk(X, 10).shape == (300, 3)


def test_rows_with_all_zero_targets_are_never_read():
    X, y = blobs(n=120, d=10, c=3)
    Y = np.where(y[:, None] == np.arange(3)[None, :], 1, -1).astype(np.int8)
    Y[:20] = 0
    a = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=0).fit(X, Y)
    X2 = X.copy()
    X2[:20] = 1e6  # garbage in ignored rows must not matter
    b = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=0).fit(X2, Y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.multilabel_ and a.predict(X).shape == (120, 3)
    full = np.where(y[:, None] == np.arange(3)[None, :], 1, -1)
    c = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=0).fit(X, full > 0)  # bools: False = negative
    d = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=0).fit(X, full)
    np.testing.assert_array_equal(c.coef_, d.coef_)


class ListRows:
    """A provider with no dense array behind it (forces the chunked, gathered path)."""

    def __init__(self, X):
        self.X = X
        self.calls = 0

    def __len__(self):
        return len(self.X)

    @property
    def dim(self):
        return self.X.shape[1]

    def rows(self, indices):
        self.calls += 1
        return np.ascontiguousarray(self.X[np.asarray(indices)], dtype=np.float32)


def test_providers_give_identical_models(tmp_path):
    X, y = blobs(n=200, d=16, c=3)
    ref = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=4).fit(X, y)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    lr = ListRows(X)
    for source in (ro, ArrayRows(ro), lr, ArrayRows(X.astype(np.float64))):
        m = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=4).fit(source, y)
        np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.decision_function(source), ref.decision_function(X), atol=1e-5)
    assert lr.calls > 0
    sub = SubsetRows(ArrayRows(X), np.arange(50, 150))
    m1 = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=4).fit(sub, y[50:150])
    m2 = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=4).fit(X[50:150], y[50:150])
    np.testing.assert_allclose(m1.coef_, m2.coef_, rtol=1e-5, atol=1e-6)


def test_memmap_training_allocates_no_copy_of_the_rows(tmp_path):
    import tracemalloc
    X, y = blobs(n=3000, d=400, c=3)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    OneVsRestSGD(balance=None, epochs=1).fit(mm[:10], y[:10])  # compile outside the measurement
    tracemalloc.start()
    try:
        m = OneVsRestSGD(balance=None, lam=1e-3, epochs=2).fit(mm, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 4, (peak, X.nbytes)
    assert (m.predict(X) == y).mean() > 0.9


def test_balance_sample_uses_all_positives_and_some_negatives():
    X, y = blobs(n=400, d=10, c=4, seed=5)
    m = OneVsRestSGD(lam=1e-3, epochs=3, balance="sample", neg_ratio=1.0, seed=0).fit(X, y)
    pos = np.bincount(y, minlength=4)
    neg = 400 - pos
    expected = 3 * (pos + pos)  # all positives + on average neg_ratio * n_pos negatives per epoch
    assert np.all(np.abs(m.n_steps_ - expected) < 4 * np.sqrt(3 * pos) + 5)
    assert np.all(m.n_steps_ < 3 * (pos + neg))
    mw = OneVsRestSGD(lam=1e-3, epochs=3, balance="weight").fit(X, y)
    np.testing.assert_array_equal(mw.n_steps_, [1200] * 4)
    assert (mw.predict(X) == y).mean() > 0.8


def test_select_lambda_and_cv_fit():
    X, y = blobs(n=240, d=10, c=3, sep=0.5, seed=6)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    res = model_selection.select_lambda(X, y, grid=grid, folds=3, seed=0, epochs=3, balance=None)
    assert res.scores.shape == (4, 3)
    assert res.best_lam in (1e-4, 1e-2)  # lambda = 100 crushes the weights: the bias decides
    assert res.mean_scores[3] < res.mean_scores.max() - 0.1
    m = OneVsRestSGD(balance=None, lam="cv", lam_grid=grid, cv_folds=3, epochs=3).fit(X, y)
    assert m.lam_ == res.best_lam
    oof = model_selection.cross_val_decision(X, y, folds=3, lam=1e-3, epochs=3, balance=None)
    assert oof.shape == (240, 3) and (np.argmax(oof, 1) == y).mean() > 0.8
    folds = model_selection.make_folds(y, 3, seed=0)
    for c in range(3):  # stratified: each fold gets a third of every class (+-1)
        counts = np.bincount(folds[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1


def test_progress_cancel_and_save_load(tmp_path):
    X, y = blobs(n=200, d=8, c=3)
    seen = []
    m = OneVsRestSGD(balance=None, lam=1e-3, epochs=4).fit(X, y, progress=seen.append)
    assert [p.values["epoch"] for p in seen if p.values] == [1, 2, 3, 4]
    assert all(np.isfinite(p.values["loss"]) for p in seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        OneVsRestSGD(balance=None, epochs=2).fit(X, y, cancel=token)
    path = m.save(tmp_path / "svm.npz")
    m2 = OneVsRestSGD.load(path)
    np.testing.assert_array_equal(m2.decision_function(X), m.decision_function(X))
    np.testing.assert_array_equal(m2.classes_, m.classes_)
    assert m2.get_params() == m.get_params()
    with pytest.raises(ValueError, match="GMM|OneVsRestSGD|model"):
        from fvstudio.engine.serialization import atomic_save_npz
        atomic_save_npz(tmp_path / "other.npz", {"a": np.zeros(1)}, {"kind": "PCA"})
        OneVsRestSGD.load(tmp_path / "other.npz")


def test_threads_can_train_concurrently():
    X, y = blobs(n=200, d=8, c=3)
    out = [None, None]

    def work(k):
        out[k] = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=k).fit(X, y).coef_

    th = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    [t.start() for t in th]
    [t.join() for t in th]
    ref = OneVsRestSGD(balance=None, lam=1e-3, epochs=2, seed=1).fit(X, y).coef_
    np.testing.assert_array_equal(out[1], ref)


def test_n_jobs_gives_the_same_model():
    X, y = blobs(n=150, d=9, c=5)
    for kw in ({"balance": None}, {"balance": "sample", "neg_ratio": 1.0}):
        a = OneVsRestSGD(lam=1e-3, epochs=2, n_jobs=1, **kw).fit(X, y)
        b = OneVsRestSGD(lam=1e-3, epochs=2, n_jobs=2, **kw).fit(ListRows(X), y)
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(a.n_steps_, b.n_steps_)


def test_bad_inputs_name_the_argument():
    X, y = blobs(n=50, d=5, c=2)
    with pytest.raises(ValueError, match="loss"):
        OneVsRestSGD(balance=None, loss="huber").fit(X, y)
    with pytest.raises(ValueError, match="lam"):
        OneVsRestSGD(balance=None, lam=-1).fit(X, y)
    with pytest.raises(ValueError, match="y has"):
        OneVsRestSGD(balance=None).fit(X, y[:10])
    with pytest.raises(ValueError, match="NaN"):
        Xb = X.copy()
        Xb[3, 2] = np.nan
        OneVsRestSGD(balance=None).fit(Xb, y)
    with pytest.raises(ValueError, match="targets"):
        OneVsRestSGD(balance=None).fit(X, np.full((50, 2), 2))
    with pytest.raises(ValueError, match="2 classes"):
        OneVsRestSGD(balance=None).fit(X, np.zeros(50, int))
    m = OneVsRestSGD(balance=None, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.decision_function(X[:, :3])
    with pytest.raises(ValueError, match="not fitted"):
        OneVsRestSGD(balance=None).predict(X)


def test_accuracy_on_par_with_sklearn_sgd():
    sk = pytest.importorskip("sklearn.linear_model")
    X, y = blobs(n=1500, d=40, c=4, sep=0.15, seed=11)  # overlapping: ~70% reachable
    Xt, yt = X[1000:], y[1000:]
    X, y = X[:1000], y[:1000]
    ours = (OneVsRestSGD(balance=None, lam=1e-4, epochs=5, seed=0).fit(X, y).predict(Xt) == yt).mean()
    ref = (sk.SGDClassifier(loss="hinge", alpha=1e-4, max_iter=5, tol=None, random_state=0)
           .fit(X, y).predict(Xt) == yt).mean()
    assert ours >= ref - 0.02, (ours, ref)


# --------------------------------------------------------------------------------------------------
# the dual solver on a Gram matrix
# --------------------------------------------------------------------------------------------------
def _blobs(n=240, d=300, C=4, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, d)).astype(np.float32)
    y = rng.integers(0, C, n)
    X = (centers[y] * 0.25 + noise * rng.normal(size=(n, d))).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


def _primal(W, b, X, Y, lam, a):
    S = X.astype(np.float64) @ W.T.astype(np.float64) + b
    return lam / 2 * (W.astype(np.float64) ** 2).sum(1) + (a * np.maximum(0, 1 - Y * S)).mean(0)


@pytest.mark.parametrize("balance", [None, "weight"])
def test_dual_svm_reaches_the_primal_optimum_of_the_same_problem(balance):
    from fvstudio.engine.dual_svm import OneVsRestDualSVM

    X, y = _blobs()
    lam = 1e-3
    m = OneVsRestDualSVM(lam=lam, balance=balance, bias=False, tol=1e-4, max_epochs=2000).fit(X, y)
    Y = np.where(y[:, None] == np.arange(4), 1.0, -1.0)
    n = len(y)
    a = np.ones_like(Y) if balance is None else np.where(Y > 0, n / (2 * (Y > 0).sum(0)), n / (2 * (Y < 0).sum(0)))
    # duality gap: the dual objective bounds the primal from below
    K = X.astype(np.float64) @ X.T.astype(np.float64)
    alpha = m.dual_coef_.T.astype(np.float64) * Y  # alpha >= 0 per class
    dual = alpha.sum(0) - 0.5 * np.einsum("ic,ij,jc->c", alpha * Y, K, alpha * Y)
    primal = _primal(m.coef_, m.intercept_, X, Y, lam, a)
    assert np.all(alpha >= -1e-6)
    gap = primal - dual * lam  # (D) is (P) scaled by 1 / lambda
    assert np.all(gap >= -1e-6) and np.all(gap <= 1e-3 * primal)
    # and SGD on the same problem does not find a lower objective
    sgd = OneVsRestSGD(lam=lam, epochs=30, balance=balance, bias=False).fit(X, y)
    assert np.all(_primal(sgd.coef_, sgd.intercept_, X, Y, lam, a) >= primal - 1e-4)


def test_dual_svm_cv_and_save_load_round_trip(tmp_path):
    from fvstudio.engine.dual_svm import OneVsRestDualSVM, gram_matrix

    X, y = _blobs(noise=3.0)
    K = gram_matrix(X)
    np.testing.assert_allclose(K, X @ X.T, rtol=1e-5, atol=1e-6)
    m = OneVsRestDualSVM(lam="cv", lam_grid=[1e-4, 1e-3, 1e-2], seed=3).fit(X, y, gram=K)
    assert m.cv_search_.scores.shape == (3, defaults.CV_FOLDS) and m.lam_ in (1e-4, 1e-3, 1e-2)
    again = OneVsRestDualSVM(lam="cv", lam_grid=[1e-4, 1e-3, 1e-2], seed=3).fit(X, y)
    np.testing.assert_array_equal(m.coef_, again.coef_)  # the given Gram matrix is the computed one
    m.save(tmp_path / "m.npz")
    back = OneVsRestDualSVM.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.decision_function(X), m.decision_function(X))
    with pytest.raises(ValueError, match="gram has shape"):
        OneVsRestDualSVM(lam=1e-3).fit(X, y, gram=K[:10, :10])
    with pytest.raises(ValueError, match="balance"):
        OneVsRestDualSVM(lam=1e-3, balance="sample").fit(X, y)
