"""The teaching room's Qt-free toy (fvstudio.pipeline.teaching): presets, EM stepping and history, ellipses,
FV glyphs and the same-histogram pair of Sec. 2.5."""
import numpy as np
import pytest

from fvstudio.engine.fisher import FisherEncoder
from fvstudio.engine.gmm import DiagonalGMM
from fvstudio.pipeline import teaching as T


@pytest.mark.parametrize("preset", T.PRESETS)
def test_presets_are_seeded_and_in_the_box(preset):
    a, b, c = T.preset_points(preset, 200, seed=1), T.preset_points(preset, 200, seed=1), T.preset_points(preset, 200, 2)
    assert a.shape == (200, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= T.BOX
    with pytest.raises(ValueError):
        T.preset_points("spirals")


def test_em_forward_back_and_monotone():
    toy = T.EMToy(T.preset_points("blobs", 300, 0), n_components=4, init="random", seed=0)
    start = toy.state
    assert toy.next_step == "E" and not toy.can_m_step and not toy.can_back
    with pytest.raises(ValueError, match="E-step first"):
        toy.m_step()
    states = [toy.state]
    for _ in range(8):
        states.append(toy.e_step())
        states.append(toy.m_step())
    ll = np.array(toy.state.log_likelihood)
    assert len(ll) == 8 and np.all(np.diff(ll) >= -1e-6)
    assert ll[-1] > ll[0] + 0.05  # EM improved the fit
    # the means moved, the M-step did something
    assert not np.allclose(start.means, toy.state.means)
    # back, step by step, gives every earlier state exactly
    for earlier in reversed(states[:-1]):
        toy.back()
        assert toy.state.equals(earlier)
    assert toy.state.equals(start) and not toy.can_back
    with pytest.raises(ValueError):
        toy.back()
    # forward again: the same states (every state reproducible)
    toy.e_step()
    assert toy.state.equals(states[1])


def test_same_seed_same_state_and_advance():
    pts = T.preset_points("anisotropic", 250, 3)
    a, b = T.EMToy(pts, 5, init="split", seed=4), T.EMToy(pts, 5, init="split", seed=4)
    for _ in range(7):
        a.advance()
        b.advance()
    assert a.state.equals(b.state) and a.state.phase == "e" and a.state.n_iter == 3
    c = T.EMToy(pts, 5, init="random", seed=5)
    assert not np.array_equal(c.state.means, a.history[0].means)


def test_toy_matches_engine_fit():
    pts = T.preset_points("blobs", 300, 0)
    toy = T.EMToy(pts, 4, seed=0, var_floor=0.01)
    for _ in range(5):
        toy.e_step()
        toy.m_step()
    fit = DiagonalGMM(4, seed=0, var_floor=0.01, posterior_threshold=0.0, max_iter=5, tol=0.0).fit(pts)
    np.testing.assert_allclose(toy.state.log_likelihood, fit.log_likelihood_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(toy.state.means, fit.means_, atol=1e-3)


def test_add_point_reinitialises():
    toy = T.EMToy(T.preset_points("uniform", 50, 0), 3, seed=0)
    toy.e_step()
    toy.add_point(4.0, 4.0)
    assert len(toy.points) == 51 and toy.state.phase == "init" and not toy.can_back


def test_ellipse_geometry():
    e1 = T.ellipse([1.0, -2.0], [4.0, 0.25], 1.0)
    e2 = T.ellipse([1.0, -2.0], [4.0, 0.25], 2.0)
    np.testing.assert_allclose(e1[0], e1[-1])  # closed
    np.testing.assert_allclose(e1[:, 0].max(), 3.0, atol=1e-9)  # 1 + 1 * 2
    np.testing.assert_allclose(e1[:, 1].min(), -2.5, atol=1e-3)
    np.testing.assert_allclose(e2[:, 0].max(), 5.0, atol=1e-9)
    # every polygon point is on the ellipse ((x-m)/a)^2 + ((y-m)/b)^2 = 1
    np.testing.assert_allclose(((e1[:, 0] - 1) / 2) ** 2 + ((e1[:, 1] + 2) / 0.5) ** 2, 1.0, atol=1e-9)


def test_posterior_colours_mix():
    R = np.array([[1.0, 0.0], [0.5, 0.5]])
    C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(T.posterior_colours(R, C, 2), [[1, 0, 0], [0.5, 0, 0.5]])
    assert T.posterior_colours(None, C, 3).shape == (3, 3)


@pytest.fixture(scope="module")
def fitted_toy():
    toy = T.EMToy(T.preset_points("blobs", 300, 0), 4, seed=0)
    for _ in range(15):
        toy.e_step()
        toy.m_step()
    return toy


def test_encode_image_glyphs_and_toggles(fitted_toy):
    g = fitted_toy.gmm()
    img = T.image_points(fitted_toy.points, 60, seed=1)
    on = T.encode_image(g, img, power=True, l2=True)
    raw = T.encode_image(g, img, power=False, l2=False)
    ref = FisherEncoder(g, gradients="ms", fim="closed", power=None, lp=None).encode(img)
    np.testing.assert_allclose(raw.fv, ref, rtol=1e-6)
    assert on.fv.shape == (16,) and np.linalg.norm(on.fv) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(np.sign(on.fv), np.sign(raw.fv))  # power + L2 keep signs
    np.testing.assert_allclose(raw.mean_gradients, ref[:8].reshape(4, 2), rtol=1e-6)
    sd = np.sqrt(g.variances_.astype(np.float64))
    np.testing.assert_allclose(raw.arrows[:, 1] - raw.arrows[:, 0], T.ARROW_SCALE * sd * raw.mean_gradients, rtol=1e-6)
    np.testing.assert_allclose(raw.circle_sign, np.sign(raw.sigma_gradients.mean(1)))
    assert raw.soft_bow.sum() == pytest.approx(1.0, abs=1e-5)
    assert len(on.labels) == 16 and on.labels[0] == "μ1 x" and on.labels[8] == "σ1 x"


def test_same_histogram_pair(fitted_toy):
    pair = T.same_histogram_pair(fitted_toy.gmm(), 80, seed=0)
    assert len(pair.gaussians) >= 3
    np.testing.assert_array_equal(pair.a.soft_bow, pair.b.soft_bow)
    d_bow, d_fv = T.fv_distance(pair)
    assert d_bow == 0.0 and d_fv > 0.5
    assert len(pair.a.points) == len(pair.b.points) == sum(pair.counts)
    again = T.same_histogram_pair(fitted_toy.gmm(), 80, seed=0)
    np.testing.assert_array_equal(again.a.points, pair.a.points)
    raw = T.same_histogram_pair(fitted_toy.gmm(), 80, seed=0, power=False, l2=False)
    np.testing.assert_array_equal(raw.a.soft_bow, raw.b.soft_bow)
    assert not np.allclose(raw.a.fv, raw.b.fv)


def test_arrow_heads():
    heads = T.arrow_heads(np.array([[[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]), size=0.5)
    np.testing.assert_allclose(heads[0], [[1.5, 0.25], [2.0, 0.0], [1.5, -0.25]])
    assert np.isnan(heads[1]).all()  # a zero-length arrow has no head
