"""PCA against a float64 SVD reference; whitening, the variance curve, save/load, bad input."""
import numpy as np
import pytest

from fvstudio.engine.pca import PCA


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    N, D = 3000, 24
    spectrum = 3.0 * 0.7 ** np.arange(D)
    basis, _ = np.linalg.qr(rng.normal(size=(D, D)))
    X = (rng.normal(size=(N, D)) * np.sqrt(spectrum)) @ basis.T + 5.0
    return X.astype(np.float32)


def _reference(X):
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    return s ** 2 / (len(X) - 1), Vt


def _assert_same_subspace_rows(A, B, atol):
    # rows equal up to sign
    for a, b in zip(A, B):
        assert min(np.abs(a - b).max(), np.abs(a + b).max()) < atol


@pytest.mark.parametrize("method", ["eig", "randomized"])
def test_matches_svd(data, method):
    lam, Vt = _reference(data)
    pca = PCA(8, method=method).fit(data)
    np.testing.assert_allclose(pca.explained_variance_, lam[:8], rtol=1e-4)
    _assert_same_subspace_rows(pca.components_, Vt[:8], atol=1e-3)
    np.testing.assert_allclose(pca.explained_variance_ratio_, lam[:8] / lam.sum(), rtol=1e-4)
    Y = pca.transform(data)
    assert Y.dtype == np.float32 and Y.shape == (len(data), 8)
    np.testing.assert_allclose(Y.var(0, ddof=1), lam[:8], rtol=1e-3)
    np.testing.assert_allclose(Y.mean(0), 0.0, atol=1e-3)


def test_variance_curve_and_reconstruction(data):
    pca = PCA(data.shape[1]).fit(data)
    curve = pca.cumulative_variance_ratio()
    assert curve.shape == (data.shape[1],)
    assert np.all(np.diff(curve) >= -1e-7) and curve[-1] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(data)), data, atol=1e-3)
    small = PCA(4).fit(data)
    assert small.explained_variance_ratio_.sum() == pytest.approx(curve[3], rel=1e-5)
    # truncated reconstruction error equals the discarded variance
    err = ((small.inverse_transform(small.transform(data)) - data) ** 2).sum(1).mean()
    lam, _ = _reference(data)
    assert err == pytest.approx(lam[4:].sum() * (len(data) - 1) / len(data), rel=1e-3)


def test_whitening_is_regularised(data):
    pca = PCA(6, whiten=True, whiten_eps=0.0).fit(data)
    np.testing.assert_allclose(pca.transform(data).var(0, ddof=1), 1.0, rtol=1e-3)
    # a rank-deficient sample: the zero-variance directions stay finite thanks to eps
    rank2 = np.repeat(data[:, :2], 3, axis=1)
    Y = PCA(5, whiten=True, whiten_eps=1e-5).fit(rank2).transform(rank2)
    assert np.isfinite(Y).all() and np.abs(Y[:, 2:]).max() < 1e-1
    back = pca.inverse_transform(pca.transform(data))
    full = PCA(6).fit(data)
    np.testing.assert_allclose(back, full.inverse_transform(full.transform(data)), atol=1e-3)


def test_save_load_roundtrip(tmp_path, data):
    pca = PCA(5, whiten=True, method="randomized", seed=3).fit(data)
    path = pca.save(tmp_path / "pca.npz")
    back = PCA.load(path)
    np.testing.assert_array_equal(back.components_, pca.components_)
    np.testing.assert_array_equal(back.transform(data[:50]), pca.transform(data[:50]))
    assert back.whiten and back.method_ == "randomized"
    np.testing.assert_array_equal(back.cumulative_variance_ratio(), pca.cumulative_variance_ratio())


def test_bad_input(data):
    with pytest.raises(ValueError, match="n_components"):
        PCA(data.shape[1] + 1).fit(data)
    with pytest.raises(ValueError, match="n_components"):
        PCA(5).fit(data[:4])
    bad = data.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PCA(3).fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        PCA(3).fit(data[0])
    with pytest.raises(ValueError, match="method"):
        PCA(3, method="svd").fit(data)
    pca = PCA(3).fit(data)
    with pytest.raises(ValueError, match="features"):
        pca.transform(data[:, :5])
    with pytest.raises(ValueError, match="not fitted"):
        PCA(3).transform(data)
