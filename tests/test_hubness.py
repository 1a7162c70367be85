"""Neighbour frequency / hubness figures by hand; PQ distortion sweep against (b, G)."""
import numpy as np
import pytest

from fvstudio.engine.hubness import distortion_sweep, hubness_summary, k_occurrence, neighbour_frequency
from fvstudio.engine.fisher import Block
from fvstudio.engine.pq import ProductQuantizer


def zero_block_vectors(n=400, K=4, D=8, regions=2, seed=1):
    """Random vectors in the FV 'ms' layout with whole (region, Gaussian) blocks zeroed, + that layout."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, regions, 2, K, D)) * (rng.random((n, regions, 1, K, 1)) > 0.4)
    layout = [Block(name, r, (2 * r + j) * K * D, K, D) for r in range(regions) for j, name in enumerate("ms")]
    return (Z.reshape(n, -1) / np.sqrt(2 * K * D)).astype(np.float32), layout


def test_hubness_figures_by_hand():
    nbrs = np.array([[0, 1], [0, 1], [0, 2]])
    np.testing.assert_array_equal(k_occurrence(nbrs, 5), [3, 2, 1, 0, 0])
    np.testing.assert_array_equal(neighbour_frequency(nbrs, 5), [3, 2, 1, 0, 0])
    h = hubness_summary(nbrs, 5)
    # mean 6/5 = 1.2; deviations 1.8, 0.8, -0.2, -1.2, -1.2
    # m2 = 6.8/5 = 1.36, m3 = 2.88/5 = 0.576, skewness = 0.576 / 1.36^1.5
    assert (h.n_queries, h.k, h.n_database, h.largest) == (3, 2, 5, 3)
    assert h.mean == pytest.approx(1.2)
    assert h.skewness == pytest.approx(0.576 / 1.36 ** 1.5)
    assert h.robin_hood == pytest.approx(0.5 * 5.2 / 6)
    assert h.never_chosen == pytest.approx(2 / 5)
    uniform = hubness_summary(np.array([[0, 1], [2, 3]]), 4)
    assert (uniform.skewness, uniform.robin_hood, uniform.never_chosen, uniform.largest) == (0.0, 0.0, 0.0, 1)
    one_hub = hubness_summary(np.zeros((10, 1), np.int64), 10)
    assert one_hub.robin_hood == pytest.approx(0.9) and one_hub.largest == 10


def test_hubness_bad_input():
    with pytest.raises(ValueError, match="neighbors must hold database indices in \\[0, 3\\)"):
        k_occurrence([[0, 3]], 3)
    with pytest.raises(ValueError, match="neighbors must be a 2-D integer array"):
        hubness_summary([0, 1], 3)
    with pytest.raises(ValueError, match="n_database must be an integer >= 1"):
        k_occurrence([[0]], 0)


def test_distortion_sweep_per_setting_and_per_gaussian_block():
    X, layout = zero_block_vectors()
    pts = distortion_sweep(X[:300], X[300:], settings=[(0.5, 8), (1, 8), (1, 4)], layout=layout, n_iter=8)
    assert [(p.n_bits, p.bytes_per_vector) for p in pts] == [(4, 8), (8, 16), (4, 16)]
    # more bits per dimension -> less distortion; every number is the quantiser's own distortion
    assert pts[1].mse < pts[0].mse
    ref = ProductQuantizer(1, 8, layout=layout, n_iter=8).fit(X[:300]).distortion(X[300:])
    assert pts[1].mse == pytest.approx(ref)
    for p in pts:
        assert p.per_unit.shape == (8,) and p.per_unit.sum() + p.other == pytest.approx(p.mse)
        assert 0 < p.relative_mse < 1
    with pytest.raises(ValueError, match="settings must hold"):
        distortion_sweep(X, settings=[])
