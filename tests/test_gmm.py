"""DiagonalGMM: EM against a float64 reference, initialisations, degenerate input, progress/cancel, I/O."""
import numpy as np
import pytest

from fvstudio.engine.gmm import DiagonalGMM, _Fit
from fvstudio.engine.pca import PCA
from fvstudio.engine.progress import CancelToken, Cancelled


def _blobs(seed=0, N=3000, K=5, D=4, spread=6.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, D)) * spread
    weights = np.linspace(1.0, 2.0, K)
    weights /= weights.sum()
    labels = rng.choice(K, size=N, p=weights)
    stds = rng.uniform(0.5, 1.5, size=(K, D))
    X = centres[labels] + rng.normal(size=(N, D)) * stds[labels]
    return X.astype(np.float32), centres, weights, stds ** 2


def _log_density(X, w, mu, var):
    X = X.astype(np.float64)
    lp = (np.log(w) - 0.5 * (X.shape[1] * np.log(2 * np.pi) + np.log(var).sum(1))
          - 0.5 * (((X[:, None, :] - mu) ** 2) / var).sum(2))
    return lp, np.logaddexp.reduce(lp, axis=1)


@pytest.fixture(scope="module")
def blobs():
    return _blobs()


@pytest.mark.parametrize("init", ["kmeans++", "split", "random"])
def test_recovers_separated_clusters(blobs, init):
    X, centres, weights, var = blobs
    gmm = DiagonalGMM(5, var_floor=0.01, init=init, seed=0, n_init=2 if init == "random" else 1).fit(X)
    assert gmm.converged_ and gmm.n_iter_ == len(gmm.log_likelihood_)
    order = [int(np.argmin(((gmm.means_ - c) ** 2).sum(1))) for c in centres]
    assert sorted(order) == list(range(5))
    np.testing.assert_allclose(gmm.means_[order], centres, atol=0.15)
    np.testing.assert_allclose(gmm.weights_[order], weights, atol=0.03)
    np.testing.assert_allclose(gmm.variances_[order], var, rtol=0.2)
    assert gmm.weights_.dtype == np.float32 and gmm.weights_.sum() == pytest.approx(1.0, abs=1e-6)


def test_em_step_matches_float64_reference(blobs):
    X, *_ = blobs
    rng = np.random.default_rng(1)
    w = rng.random(5) + 0.5
    w /= w.sum()
    mu = X[rng.choice(len(X), 5, replace=False)].astype(np.float64)
    var = rng.uniform(2.0, 4.0, size=(5, 4))
    gmm = DiagonalGMM(5, posterior_threshold=0.0, var_floor=0.0)
    fit = _Fit(gmm, X, np.full(4, 1e-12), None, None)
    st = fit.e_step(w, mu, var)
    w1, mu1, var1 = fit.m_step(st, mu, var)
    lp, ll = _log_density(X, w, mu, var)
    g = np.exp(lp - ll[:, None])
    Nk = g.sum(0)
    ref_mu = (g.T @ X.astype(np.float64)) / Nk[:, None]
    ref_var = (g.T @ X.astype(np.float64) ** 2) / Nk[:, None] - ref_mu ** 2
    np.testing.assert_allclose(st.log_likelihood, ll, atol=1e-4)
    np.testing.assert_allclose(w1, Nk / len(X), rtol=1e-5)
    np.testing.assert_allclose(mu1, ref_mu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var1, ref_var, rtol=1e-4, atol=1e-4)


def test_likelihood_increases_and_scores_agree(blobs):
    X, *_ = blobs
    gmm = DiagonalGMM(7, var_floor=0.01, posterior_threshold=0.0, tol=0.0, max_iter=15, init="random", seed=2).fit(X)
    ll = np.array(gmm.log_likelihood_)
    assert len(ll) == 15 and np.all(np.diff(ll) >= -1e-6)
    _, ref = _log_density(X, gmm.weights_.astype(np.float64), gmm.means_.astype(np.float64),
                          gmm.variances_.astype(np.float64))
    np.testing.assert_allclose(gmm.score_samples(X), ref, atol=1e-3)
    assert gmm.score(X) == pytest.approx(ref.mean(), abs=1e-4)
    assert gmm.score(X) >= ll[-1] - 1e-6
    p = gmm.predict_proba(X[:100])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(gmm.predict(X[:100]), p.argmax(1))
    pt = gmm.predict_proba(X[:100], threshold=0.1)
    assert np.all((pt == 0) | (pt >= 0.1 - 1e-6))


def test_variance_floor_is_relative_to_global_variance(blobs):
    X, *_ = blobs
    gmm = DiagonalGMM(40, var_floor=0.05, max_iter=20, seed=0).fit(X)
    floor = 0.05 * X.astype(np.float64).var(0)
    assert np.all(gmm.variances_ >= floor * (1 - 1e-5))
    assert np.isclose(gmm.variances_, floor, rtol=1e-4).any()  # the floor is active somewhere


def test_split_init_with_k_not_power_of_two(blobs):
    X, *_ = blobs
    seen = []
    gmm = DiagonalGMM(6, var_floor=0.01, init="split", max_iter=10)
    gmm.fit(X, progress=seen.append)
    assert gmm.means_.shape == (6, 4) and np.isfinite(gmm.means_).all()
    sizes = [p.values["n_components"] for p in seen if p.values.get("stage") == "init"]
    assert sizes[0] == 2 and 4 in sizes and max(sizes) == 4  # 1 -> 2 -> 4 -> (6 in the main loop)
    assert [p.values["iteration"] for p in seen if p.values.get("stage") == "em"] == list(range(1, gmm.n_iter_ + 1))


def test_n_init_keeps_best(blobs):
    X, *_ = blobs
    gmm = DiagonalGMM(9, var_floor=0.01, init="random", n_init=3, max_iter=10, seed=5).fit(X)
    assert len(gmm.restart_log_likelihoods_) == 3
    assert gmm.log_likelihood_[-1] == pytest.approx(max(gmm.restart_log_likelihoods_))


def test_reseeds_empty_component_by_splitting_heaviest():
    gmm = DiagonalGMM(3, var_floor=0.01)
    X = np.zeros((10, 2), np.float32)
    fit = _Fit(gmm, X, np.full(2, 1e-6), None, None)
    w = np.array([0.7, 0.3, 0.0])
    mu = np.array([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
    var = np.array([[4.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    w2, mu2, var2 = fit.reseed_empty(w, mu.copy(), var.copy(), 3)
    np.testing.assert_allclose(w2, [0.35, 0.3, 0.35])
    np.testing.assert_allclose(mu2[0], [-0.4, -0.2])
    np.testing.assert_allclose(mu2[2], [0.4, 0.2])
    np.testing.assert_allclose(var2[2], var[0])
    assert fit.reseeded == 1


@pytest.mark.parametrize("case", ["duplicates", "constant_dim", "k_equals_n", "k_near_n", "identical"])
def test_degenerate_inputs_stay_finite(case):
    rng = np.random.default_rng(4)
    K = 8
    if case == "duplicates":
        X = np.repeat(rng.normal(size=(5, 3)), 40, axis=0)  # 5 distinct points, K = 8 > 5
    elif case == "constant_dim":
        X = rng.normal(size=(400, 3))
        X[:, 1] = 7.0
    elif case == "k_equals_n":
        X = rng.normal(size=(K, 3))
    elif case == "k_near_n":
        X = rng.normal(size=(K + 2, 3))
    else:
        X = np.full((50, 3), 2.5)
    for init in ("kmeans++", "split", "random"):
        gmm = DiagonalGMM(K, var_floor=0.01, init=init, max_iter=20, seed=0).fit(X.astype(np.float32))
        for a in (gmm.weights_, gmm.means_, gmm.variances_, np.array(gmm.log_likelihood_)):
            assert np.isfinite(a).all(), (case, init)
        assert (gmm.variances_ > 0).all() and gmm.weights_.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.isfinite(gmm.score_samples(X)).all()
        if case == "constant_dim":
            assert gmm.variances_[:, 1].max() < 1e-3


def test_bad_input():
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="n_components"):
        DiagonalGMM(21, var_floor=0.01).fit(X)
    bad = X.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        DiagonalGMM(2, var_floor=0.01).fit(bad)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DiagonalGMM(2, var_floor=0.01).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        DiagonalGMM(2, var_floor=0.01).fit(X[0])
    with pytest.raises(ValueError, match="numeric"):
        DiagonalGMM(2, var_floor=0.01).fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="init"):
        DiagonalGMM(2, var_floor=0.01, init="kmeans").fit(X)
    with pytest.raises(ValueError, match="var_floor"):
        DiagonalGMM(2, var_floor=-1).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        DiagonalGMM(0, var_floor=0.01).fit(X)
    gmm = DiagonalGMM(2, var_floor=0.01, max_iter=3).fit(X)
    with pytest.raises(ValueError, match="features"):
        gmm.score(X[:, :2])
    with pytest.raises(ValueError, match="not fitted"):
        DiagonalGMM(2, var_floor=0.01).predict_proba(X)
    with pytest.raises(ValueError, match="sum to 1"):
        DiagonalGMM.from_params([0.2, 0.2], X[:2], np.ones((2, 3)))
    with pytest.raises(ValueError, match="variances"):
        DiagonalGMM.from_params([0.5, 0.5], X[:2], np.zeros((2, 3)))


def test_progress_and_cancel(blobs, tmp_path):
    X, *_ = blobs
    seen = []
    gmm = DiagonalGMM(4, var_floor=0.01, max_iter=6, tol=0.0).fit(X, progress=seen.append)
    em = [p for p in seen if p.values.get("stage") == "em"]
    assert len(em) == 6 and [p.done for p in em] == list(range(1, 7)) and em[-1].total == 6
    np.testing.assert_allclose([p.values["log_likelihood"] for p in em], gmm.log_likelihood_)

    token = CancelToken()

    def stop_after_two(p):
        if p.values.get("iteration") == 2:
            token.cancel()

    fresh = DiagonalGMM(4, var_floor=0.01, max_iter=50, tol=0.0)
    with pytest.raises(Cancelled):
        fresh.fit(X, progress=stop_after_two, cancel=token)
    assert not fresh.is_fitted


def test_save_load_and_from_params(blobs, tmp_path):
    X, *_ = blobs
    gmm = DiagonalGMM(4, var_floor=0.01, max_iter=5, init="split").fit(X)
    path = gmm.save(tmp_path / "gmm.npz")
    back = DiagonalGMM.load(path)
    np.testing.assert_array_equal(back.means_, gmm.means_)
    np.testing.assert_array_equal(back.variances_, gmm.variances_)
    assert back.init == "split" and back.n_iter_ == gmm.n_iter_ and back.log_likelihood_ == gmm.log_likelihood_
    np.testing.assert_allclose(back.score_samples(X[:20]), gmm.score_samples(X[:20]))
    with np.load(path, allow_pickle=False) as f:
        assert {"weights", "means", "variances"} <= set(f.files)
    built = DiagonalGMM.from_params(gmm.weights_, gmm.means_, gmm.variances_)
    np.testing.assert_allclose(built.predict_proba(X[:20]), gmm.predict_proba(X[:20]), atol=1e-6)
    assert built.terms is built.terms  # cached
    PCA(2).fit(X).save(tmp_path / "pca.npz")
    with pytest.raises(ValueError, match="pca"):
        DiagonalGMM.load(tmp_path / "pca.npz")


def test_two_threads_match_one(blobs):
    X = np.tile(blobs[0], (4, 1))  # 12,000 rows: enough to be split
    a = DiagonalGMM(5, var_floor=0.01, max_iter=4, tol=0.0, seed=1).fit(X)
    b = DiagonalGMM(5, var_floor=0.01, max_iter=4, tol=0.0, seed=1, n_jobs=2).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.log_likelihood_, b.log_likelihood_, rtol=1e-6)


def test_warm_start_from_params(blobs):
    X, *_ = blobs
    first = DiagonalGMM(5, var_floor=0.01, max_iter=3, tol=0.0, seed=0).fit(X)
    cont = DiagonalGMM(5, var_floor=0.01, max_iter=4, tol=0.0).fit(
        X, init_params=(first.weights_, first.means_, first.variances_))
    full = DiagonalGMM(5, var_floor=0.01, max_iter=7, tol=0.0, seed=0).fit(X)
    np.testing.assert_allclose(cont.means_, full.means_, atol=1e-3)
    with pytest.raises(ValueError, match="init_params"):
        DiagonalGMM(4, var_floor=0.01).fit(X, init_params=(first.weights_, first.means_, first.variances_))


def test_stop_reason_tells_tolerance_from_iteration_cap(blobs, tmp_path):
    from fvstudio.pipeline.diagnostics import em_stop_text

    X = blobs[0]
    loose = DiagonalGMM(5, max_iter=200, tol=1e-2, seed=0).fit(X)
    assert loose.converged_ and loose.stop_reason_ == "tol" and loose.n_iter_ < 200
    assert em_stop_text(loose) == f"converged (tol 0.01) after {loose.n_iter_} iterations"
    capped = DiagonalGMM(5, max_iter=3, tol=0.0, seed=0).fit(X)
    assert not capped.converged_ and capped.stop_reason_ == "max_iter" and capped.n_iter_ == 3
    assert em_stop_text(capped) == "stopped at the iteration cap 3 (tol 0 not reached)"
    assert DiagonalGMM.load(capped.save(tmp_path / "capped.npz")).stop_reason_ == "max_iter"
    assert DiagonalGMM.load(loose.save(tmp_path / "loose.npz")).stop_reason_ == "tol"
    assert DiagonalGMM(5, max_iter=0, seed=0).fit(X).stop_reason_ == "none"


# ---------------------------------------------------------------------------------------------------
# EM one step at a time (initialise / e_step / m_step): the same code as fit's loop


@pytest.mark.parametrize("init", ["kmeans++", "split", "random"])
def test_stepping_reproduces_fit(blobs, init):
    X, *_ = blobs
    params = dict(var_floor=0.01, init=init, seed=3, tol=0.0)
    fitted = DiagonalGMM(5, max_iter=6, **params).fit(X)
    g = DiagonalGMM(5, **params).initialise(X)
    lls = []
    for _ in range(6):
        est = g.e_step(X)
        lls.append(est.log_likelihood)
        g.m_step(X, est)
    np.testing.assert_allclose(lls, fitted.log_likelihood_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g.means_, fitted.means_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(g.variances_, fitted.variances_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(g.weights_, fitted.weights_, atol=1e-4)


def test_initialise_is_fits_starting_point(blobs):
    X, *_ = blobs
    a = DiagonalGMM(5, init="kmeans++", seed=7, max_iter=0).fit(X)
    b = DiagonalGMM(5, init="kmeans++", seed=7).initialise(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.variances_, b.variances_)
    assert b.log_likelihood_ == [] and b.n_iter_ == 0


def test_e_step_posteriors_and_log_likelihood(blobs):
    X, *_ = blobs
    g = DiagonalGMM(5, seed=0, max_iter=3).fit(X)
    est = g.e_step(X)
    np.testing.assert_allclose(est.responsibilities, g.predict_proba(X, threshold=g.posterior_threshold))
    np.testing.assert_allclose(est.responsibilities.sum(1), 1.0, atol=1e-5)
    assert est.log_likelihood == pytest.approx(g.score(X), rel=1e-5)
    np.testing.assert_allclose(est.statistics.A[0], est.responsibilities.sum(0), rtol=1e-4)


def test_m_step_needs_a_matching_e_step(blobs):
    X, *_ = blobs
    g = DiagonalGMM(5, seed=0).initialise(X)
    other = DiagonalGMM(3, seed=0).initialise(X)
    with pytest.raises(ValueError, match="another number of Gaussians"):
        g.m_step(X, other.e_step(X))
    with pytest.raises(ValueError, match="not fitted"):
        DiagonalGMM(5).e_step(X)
