"""Diagnostics: Fig. 2 posterior sharpness and per-Gaussian FV energy."""

import numpy as np
import pytest

from fvstudio.engine.diagnostics import fv_energy_per_gaussian, posterior_sharpness
from fvstudio.engine.fisher import FisherEncoder, SoftBoWEncoder
from fvstudio.engine.gmm import DiagonalGMM
from fvstudio.engine.posteriors import GaussianTerms, posteriors

make_gmm = DiagonalGMM.from_params


def problem(spread, K=8, D=4, T=2000, seed=0):
    rng = np.random.default_rng(seed)
    w = np.full(K, 1.0 / K)
    mu = rng.standard_normal((K, D)) * spread
    var = np.ones((K, D))
    comp = rng.integers(0, K, T)
    X = (mu[comp] + rng.standard_normal((T, D))).astype(np.float32)
    return make_gmm(w, mu, var), X, (w, mu, var)


def test_posterior_sharpness_matches_dense_posteriors():
    gmm, X, (w, mu, var) = problem(2.0)
    ps = posterior_sharpness(X, gmm, threshold=1e-4)
    dense = posteriors(X, GaussianTerms(w, mu, var), threshold=1e-4)
    ref = np.sort(dense.max(1))
    np.testing.assert_allclose(ps.max_posterior, ref, rtol=1e-5)
    assert (np.diff(ps.max_posterior) >= 0).all()
    assert ps.cdf[-1] == 1.0 and (np.diff(ps.cdf) >= 0).all() and ps.cdf[0] > 0
    # the CDF at each value is the fraction of descriptors <= that value
    i = len(ref) // 3
    assert ps.cdf[i] == pytest.approx((ref <= ref[i]).mean())
    assert ps.fraction_above_half == pytest.approx((ref >= 0.5).mean())
    assert ps.mean_active == pytest.approx((dense > 0).sum(1).mean())
    assert (ps.max_posterior >= 1.0 / 8 - 1e-6).all()


def test_sharpness_grows_with_separation_and_accepts_lists():
    sharp = posterior_sharpness(problem(6.0)[1], problem(6.0)[0])
    gmm, X, _ = problem(0.3)
    blurry = posterior_sharpness([X[:500], X[500:]], gmm)
    assert sharp.fraction_above_half > 0.95 and blurry.fraction_above_half < 0.5
    assert sharp.mean_active < blurry.mean_active
    assert len(blurry.max_posterior) == len(X)
    with pytest.raises(ValueError, match="descriptors"):
        posterior_sharpness(np.zeros((3, 5), np.float32), gmm)
    with pytest.raises(ValueError, match="descriptors"):
        posterior_sharpness(np.zeros((0, 4), np.float32), gmm)
    with pytest.raises(ValueError, match="threshold"):
        posterior_sharpness(X, gmm, threshold=1.5)


def test_fv_energy_per_gaussian():
    gmm, X, _ = problem(2.0, K=5, D=3)
    enc = FisherEncoder(gmm, gradients="wms", pyramid=[(1, 1), (2, 1)])
    rng = np.random.default_rng(1)
    sets = [X[rng.choice(len(X), 300)] for _ in range(4)]
    pos = [rng.uniform(0, 10, (300, 2)) for _ in range(4)]
    fvs = enc.encode_batch(sets, pos, [(10, 10)] * 4, n_jobs=1)
    E = fv_energy_per_gaussian(fvs, enc)
    assert E.shape == (5,) and abs(E.sum() - 1) < 1e-9 and (E >= 0).all()
    gi = enc.gaussian_index()
    ref = np.mean([np.bincount(gi, f.astype(np.float64) ** 2, 5) / (f.astype(np.float64) ** 2).sum()
                   for f in fvs], axis=0)
    np.testing.assert_allclose(E, ref, rtol=1e-9)
    # energy sits where we put it; zero rows are ignored
    z = np.zeros((2, enc.dim))
    z[0, gi == 3] = 1.0
    np.testing.assert_allclose(fv_energy_per_gaussian(z, enc), np.eye(5)[3])
    bow = SoftBoWEncoder(gmm)
    np.testing.assert_allclose(fv_energy_per_gaussian(np.eye(5)[2], bow), np.eye(5)[2])
    with pytest.raises(ValueError, match="shape"):
        fv_energy_per_gaussian(np.zeros((2, 7)), enc)
