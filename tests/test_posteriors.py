"""The shared E-step against a direct float64 evaluation of eqs. 15 and 79."""
import numpy as np
import pytest

from fvstudio.engine.posteriors import GaussianTerms, accumulate_statistics, posteriors


def _reference(X, w, mu, var):
    Xd = X.astype(np.float64)
    lp = np.log(w) - 0.5 * (X.shape[1] * np.log(2 * np.pi) + np.log(var).sum(1)) \
        - 0.5 * (((Xd[:, None, :] - mu) ** 2) / var).sum(2)
    ll = np.logaddexp.reduce(lp, axis=1)
    return lp, ll, np.exp(lp - ll[:, None])


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    N, D, K = 500, 6, 9
    X = (rng.normal(size=(N, D)) * 2 + 40).astype(np.float32)  # far from 0: tests the centring
    w = rng.random(K) + 0.1
    w /= w.sum()
    mu = rng.normal(size=(K, D)) * 2 + 40
    var = rng.random((K, D)) + 0.5
    return X, w, mu, var


def test_statistics_match_float64(problem):
    X, w, mu, var = problem
    _, ll, g = _reference(X, w, mu, var)
    st = accumulate_statistics(X, GaussianTerms(w, mu, var), threshold=0.0, block=128)
    z = (X.astype(np.float64)[:, None, :] - mu) / np.sqrt(var)
    np.testing.assert_allclose(st.log_likelihood, ll, rtol=0, atol=2e-4)
    np.testing.assert_allclose(st.A[0], g.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(st.B[0], (g[:, :, None] * z).sum(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(st.C[0], (g[:, :, None] * z * z).sum(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(st.max_posterior, g.max(1), atol=1e-4)


def test_threshold_renormalises(problem):
    X, w, mu, var = problem
    terms = GaussianTerms(w, mu, var)
    g = posteriors(X, terms, threshold=0.05)
    assert np.all((g == 0) | (g >= 0.05 - 1e-6))
    np.testing.assert_allclose(g.sum(1), 1.0, atol=1e-5)
    st = accumulate_statistics(X, terms, threshold=0.05)
    np.testing.assert_allclose(st.A[0], g.sum(0), rtol=1e-4)
    assert st.A.sum() == pytest.approx(len(X), rel=1e-6)


def test_regions_route_statistics(problem):
    X, w, mu, var = problem
    terms = GaussianTerms(w, mu, var)
    regions = np.stack([np.zeros(len(X)), 1 + (np.arange(len(X)) % 2)], 1).astype(np.int32)
    st = accumulate_statistics(X, terms, regions=regions, n_regions=3, threshold=1e-4)
    np.testing.assert_allclose(st.A[0], st.A[1] + st.A[2], rtol=1e-10)
    np.testing.assert_allclose(st.B[0], st.B[1] + st.B[2], rtol=1e-9, atol=1e-9)


def test_largest_posterior_always_kept(problem):
    X, w, mu, var = problem
    terms = GaussianTerms(w, mu, var)
    st = accumulate_statistics(X, terms, threshold=0.5)  # > 1/K: a flat row would otherwise lose all
    assert (st.n_active >= 1).all()
    assert st.A.sum() == pytest.approx(len(X), rel=1e-6)
    g = posteriors(X, terms, threshold=0.5)
    np.testing.assert_allclose(g.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal((g > 0).sum(1), st.n_active)


def test_partial_blocks_and_empty_input(problem):
    X, w, mu, var = problem
    terms = GaussianTerms(w, mu, var)
    full = accumulate_statistics(X, terms, block=len(X))
    odd = accumulate_statistics(X, terms, block=37)
    np.testing.assert_allclose(odd.A, full.A, rtol=1e-5)
    np.testing.assert_allclose(odd.C, full.C, rtol=1e-4, atol=1e-4)
    # float32 log-likelihoods near -20: one ulp is 1.9e-6, and a different GEMM blocking reorders the
    # sums, so compare to a few ulps of float32 (relative), not to a fixed absolute 1e-6.
    np.testing.assert_allclose(odd.log_likelihood, full.log_likelihood, rtol=8 * np.finfo(np.float32).eps)
    empty = accumulate_statistics(X[:0], terms)
    assert empty.A.shape == (1, len(w)) and empty.A.sum() == 0 and empty.log_likelihood.shape == (0,)
    for blk in (37, 64, 200):  # encoders' path: blocks shorter than, equal to, not a multiple of 64
        fast = accumulate_statistics(X, terms, block=blk, threshold=0.0, log_likelihood=False)
        exact = accumulate_statistics(X, terms, block=blk, threshold=0.0)
        np.testing.assert_allclose(fast.A, exact.A, rtol=1e-6)
        np.testing.assert_allclose(fast.C, exact.C, rtol=1e-5, atol=1e-5)


def test_dense_fallback_matches_sparse(problem):
    X, w, mu, var = problem
    terms = GaussianTerms(w, mu * 0 + mu.mean(0), var * 4)  # overlapping: most posteriors survive
    sparse = accumulate_statistics(X, terms, threshold=1e-4)
    dense = accumulate_statistics(X, terms, threshold=1e-4, allow_dense=True)
    assert sparse.n_active.mean() > 0.3 * len(w)
    np.testing.assert_allclose(dense.A, sparse.A, rtol=1e-5)
    np.testing.assert_allclose(dense.B, sparse.B, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dense.C, sparse.C, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(dense.n_active, sparse.n_active)


@pytest.mark.parametrize("threshold", [0.0, 1e-4, 0.02])
def test_encoder_path_matches_exact_path(threshold):
    """log_likelihood=False (candidates only, 16-wide scan + a scalar tail) against the exact kernel."""
    rng = np.random.default_rng(5)
    N, D, K = 1000, 8, 40
    mu = rng.normal(size=(K, D)) * 1.5
    var = rng.random((K, D)) * 0.3 + 0.2
    w = rng.random(K) + 0.2
    w /= w.sum()
    comp = rng.integers(0, K, N)
    X = (mu[comp] + rng.normal(size=(N, D)) * np.sqrt(var[comp])).astype(np.float32)
    terms = GaussianTerms(w, mu, var)
    regions = np.stack([np.zeros(N), 1 + (np.arange(N) % 2)], 1).astype(np.int32)
    for reg, R in ((None, 1), (regions, 3)):
        exact = accumulate_statistics(X, terms, threshold=threshold, block=100, regions=reg, n_regions=R)
        fast = accumulate_statistics(X, terms, threshold=threshold, block=100, regions=reg, n_regions=R,
                                     log_likelihood=False)
        assert fast.log_likelihood is None
        if threshold > 0:
            assert exact.n_active.mean() < 0.05 * K  # the candidate kernel ran (no switch to exact)
        # the normaliser of the survival test ignores entries < theta: only borderline entries may differ
        assert np.mean(fast.n_active == exact.n_active) > 0.99
        np.testing.assert_allclose(fast.A, exact.A, rtol=0, atol=2e-2 * max(threshold, 1e-6) * N + 1e-4)
        tol = 1e-3 if threshold == 0 else 0.05
        np.testing.assert_allclose(fast.B, exact.B, rtol=0, atol=tol)
        np.testing.assert_allclose(fast.C, exact.C, rtol=0, atol=tol)
        np.testing.assert_allclose(fast.max_posterior, exact.max_posterior, atol=2 * threshold + 1e-6)
