"""Late fusion weight selection by hand-made cases, early fusion layout and norms."""
import numpy as np
import pytest

from fvstudio.engine import fusion
from fvstudio.engine.rows import ArrayRows, ConcatRows
from fvstudio.engine.svm import OneVsRestSGD


def test_simplex_grid():
    g2 = fusion.simplex_grid(2, 0.1)
    assert g2.shape == (11, 2)
    np.testing.assert_allclose(g2.sum(1), 1)
    np.testing.assert_allclose(sorted(g2[:, 0]), np.linspace(0, 1, 11))
    g3 = fusion.simplex_grid(3, 0.25)
    assert g3.shape == (15, 3) and (g3 >= 0).all()
    with pytest.raises(ValueError, match="step"):
        fusion.simplex_grid(2, 0.3)


def test_fuse_scores_is_the_convex_combination():
    s1 = np.array([[1.0, 0.0], [0.0, 2.0]])
    s2 = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(fusion.fuse_scores([s1, s2], [0.6, 0.4]), 0.6 * s1 + 0.4 * s2)
    with pytest.raises(ValueError, match="weights"):
        fusion.fuse_scores([s1, s2], [1.0])


def test_late_fusion_picks_the_only_working_mix():
    # Two classes, 4 samples. Channel 1 alone mis-classifies samples 2-3, channel 2 alone samples
    # 0-1; a mix a*s1 + (1-a)*s2 gets all four right only for a in (0.545, 0.75), see below.
    y = np.array([0, 0, 1, 1])
    s1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])   # says class 0 always
    s2 = np.array([[0.0, 1.2], [0.0, 1.2], [0.0, 3.0], [0.0, 3.0]])   # says class 1 always
    # sample 0/1: 0 wins iff a > 1.2 (1 - a) -> a > 0.545; sample 2/3: 1 wins iff 3 (1 - a) > a -> a < 0.75
    lf = fusion.LateFusion(step=0.05).fit([s1, s2], y)
    assert 0.545 < lf.weights_[0] < 0.75
    assert lf.grid_scores_.max() == pytest.approx(1.0)
    assert lf.weights_[0] == pytest.approx(0.55)  # of the tied optima, the one closest to uniform
    np.testing.assert_array_equal(np.argmax(lf.fuse([s1, s2]), 1), y)


def test_late_fusion_multilabel_uses_map_and_recovers_weight():
    rng = np.random.default_rng(0)
    n, c = 400, 3
    T = np.where(rng.random((n, c)) < 0.3, 1, -1)
    T[::10, 0] = 0
    signal = T + rng.standard_normal((n, c))
    # both channels carry the same signal with independent, equally strong noise
    s1 = signal + 2.0 * rng.standard_normal((n, c))
    s2 = signal + 2.0 * rng.standard_normal((n, c))
    lf = fusion.LateFusion(step=0.1).fit([s1, s2], T)
    assert lf.metric_ == "map"
    assert 0.3 <= lf.weights_[0] <= 0.7  # symmetric channels: a near 1/2
    assert lf.grid_scores_[np.argmax(lf.grid_scores_)] > max(lf.grid_scores_[0], lf.grid_scores_[-1])


def test_three_channels():
    y = np.array([0, 1, 0, 1])
    good = np.array([[1.0, 0], [0, 1], [1, 0], [0, 1]])
    bad = good[:, ::-1].copy()
    lf = fusion.LateFusion(step=0.5).fit([bad, good, bad], y)
    np.testing.assert_allclose(lf.weights_, [0, 1, 0])


def test_early_fusion_blocks_and_kernel():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal((5, 6)).astype(np.float32) * 10
    f = fusion.early_fusion([a, b])
    assert f.shape == (5, 10) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(f @ f.T, 0.5 * an @ an.T + 0.5 * bn @ bn.T, atol=1e-5)
    fw = fusion.early_fusion([a, b], weights=[0.6, 0.4])
    np.testing.assert_allclose(fw[:, :4], np.sqrt(0.6) * an, rtol=1e-5)
    z = fusion.early_fusion([np.zeros((2, 3)), np.ones((2, 2))])
    assert np.isfinite(z).all() and (z[:, :3] == 0).all()
    with pytest.raises(ValueError, match=r"channel_vectors\[1\]"):
        fusion.early_fusion([a, b[:3]])


def test_concat_rows_provider_matches_early_fusion_and_trains():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    a = (rng.standard_normal((120, 5)) + y[:, None]).astype(np.float32)
    b = rng.standard_normal((120, 7)).astype(np.float32)
    rows = ConcatRows([ArrayRows(a), ArrayRows(b)])
    assert len(rows) == 120 and rows.dim == 12
    np.testing.assert_allclose(rows.rows(np.arange(120)), fusion.early_fusion([a, b]), atol=1e-6)
    m = OneVsRestSGD(balance=None, lam=1e-3, epochs=3).fit(rows, y)
    m2 = OneVsRestSGD(balance=None, lam=1e-3, epochs=3).fit(fusion.early_fusion([a, b]), y)
    np.testing.assert_allclose(m.coef_, m2.coef_, atol=1e-5)
