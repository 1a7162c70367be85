"""Product quantiser: codes against a float64 reference, bit packing, sparsity bit, learning on codes, I/O."""
import threading

import numpy as np
import pytest

from fvstudio.engine.fisher import Block
from fvstudio.engine.pq import PQRows, ProductQuantizer, SparseCodes, sparsity_storage
from fvstudio.engine.progress import CancelToken, Cancelled
from fvstudio.engine.svm import OneVsRestSGD


def fv_like(n=400, K=4, D=8, regions=1, zero_share=0.4, seed=0):
    """Power + L2 normalised 'FVs' in the FV layout ('ms': K means then K sigmas of D dims per region),
    with whole (region, Gaussian) blocks set to zero at random, as posterior thresholding does."""
    rng = np.random.default_rng(seed)
    R = regions
    Z = rng.standard_normal((n, R, 2, K, D)) * rng.uniform(0.3, 2.0, (1, 1, 1, K, 1))
    Z += rng.standard_normal((1, 1, 2, K, D))  # class-free offset: correlated dims inside a group
    dead = rng.random((n, R, 1, K, 1)) < zero_share
    Z = np.where(dead, 0.0, Z)
    Z = np.sign(Z) * np.sqrt(np.abs(Z))
    Z /= np.maximum(np.linalg.norm(Z.reshape(n, R, -1), axis=2), 1e-12)[:, :, None, None, None]
    layout, off = [], 0
    for r in range(R):
        for name in "ms":
            layout.append(Block(name, r, off, K, D))
            off += K * D
    return Z.reshape(n, -1).astype(np.float32), layout


def reference_codes(pq, X):
    """Nearest centroid per group in float64 (the definition of q_m)."""
    X64 = X.astype(np.float64).reshape(len(X), pq.n_subquantizers_, -1)
    cb = pq.codebooks_.astype(np.float64)
    d = ((X64[:, :, None, :] - cb[None]) ** 2).sum(-1)  # (n, M, k)
    return d.argmin(-1), d.min(-1)


def unpack(codes, M, nbits):
    """Little-endian bitstring decoding, written independently of the kernels."""
    out = np.empty((len(codes), M), dtype=np.int64)
    for i, row in enumerate(codes):
        v = int.from_bytes(row.tobytes(), "little")
        for m in range(M):
            out[i, m] = (v >> (m * nbits)) & ((1 << nbits) - 1)
    return out


@pytest.fixture(scope="module")
def data():
    X, layout = fv_like(n=500, K=4, D=8, regions=2)
    return X[:400], X[400:], layout


@pytest.fixture(scope="module")
def fitted(data):
    Xtr, _, layout = data
    return ProductQuantizer(1.0, 8, layout=layout, seed=0).fit(Xtr)


# -- codes, MSE ------------------------------------------------------------------------------------
def test_round_trip_and_mse_match_float64_reference(fitted, data):
    _, Xte, _ = data
    pq = fitted
    assert pq.codebooks_.shape == (Xte.shape[1] // 8, 256, 8) and pq.codebooks_.dtype == np.float32
    codes = pq.encode(Xte)
    assert codes.shape == (len(Xte), pq.n_subquantizers_) and codes.dtype == np.uint8
    ref_idx, ref_d = reference_codes(pq, Xte)
    # float32 direct distances pick the float64 nearest centroid, except within float32 rounding of a tie
    got_d = ((Xte.astype(np.float64).reshape(len(Xte), pq.n_subquantizers_, -1)
              - pq.codebooks_.astype(np.float64)[np.arange(pq.n_subquantizers_), codes]) ** 2).sum(-1)
    np.testing.assert_allclose(got_d, ref_d, rtol=1e-5, atol=1e-7)
    assert (codes == ref_idx).mean() > 0.999
    dec = pq.decode(codes)
    np.testing.assert_array_equal(dec.reshape(len(Xte), pq.n_subquantizers_, -1),
                                  pq.codebooks_[np.arange(pq.n_subquantizers_), codes])
    mse_ref = ref_d.sum(1).mean()
    assert pq.distortion(Xte) == pytest.approx(mse_ref, rel=1e-5)
    per = pq.distortion(Xte, per_group=True)
    assert per.shape == (pq.n_subquantizers_,) and per.sum() == pytest.approx(mse_ref, rel=1e-5)
    # PQ with 256 centroids per 8 dims is far better than the zero vector, and k-means converged
    assert pq.distortion(Xte) < 0.5 * (Xte.astype(np.float64) ** 2).sum(1).mean()
    assert np.isfinite(pq.codebooks_).all() and pq.n_train_ == 400


@pytest.mark.parametrize("b, G, nbits", [(0.5, 8, 4), (1.0, 8, 8), (1.5, 8, 12), (2.0, 8, 16), (0.5, 16, 8),
                                         (0.25, 16, 4)])
def test_bit_packing_and_fractional_bits(b, G, nbits):
    rng = np.random.default_rng(1)
    E = 48 if G == 8 else 32
    if nbits == 16:
        E = 16  # 65536 centroids: keep the sub-quantisers few
    X = rng.standard_normal((300, E)).astype(np.float32)
    pq = ProductQuantizer(b, G, n_iter=3, seed=0).fit(X)
    M = E // G
    assert pq.n_bits == nbits and pq.ksub == 2 ** nbits and pq.codebooks_.shape == (M, 2 ** nbits, G)
    assert pq.code_size_ == (M * nbits + 7) // 8
    codes = pq.encode(X[:40])
    idx, _ = reference_codes(pq, X[:40]) if nbits < 16 else (None, None)
    got = unpack(codes, M, nbits)
    if idx is not None:
        assert (got == idx).mean() > 0.99
    dec = pq.decode(codes)
    np.testing.assert_array_equal(dec.reshape(40, M, G), pq.codebooks_[np.arange(M), got])
    if nbits >= 12:  # more centroids than training points: each training point is its own centroid
        np.testing.assert_array_equal(dec, X[:40])


def test_empty_centroids_are_reseeded_never_nan():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((12, 16)).astype(np.float32)
    X = base[rng.integers(0, 12, 600)]  # 12 distinct points, 256 centroids per group
    X[:300] += rng.standard_normal((300, 16)).astype(np.float32) * 1e-3
    pq = ProductQuantizer(1.0, 8, seed=0).fit(X)
    assert np.isfinite(pq.codebooks_).all()
    assert pq.distortion(X) < 1e-4
    # heavy duplication with spread data: the empty-centroid branch runs and fills every centroid
    Y = np.repeat(rng.standard_normal((100, 8)).astype(np.float32), 3, axis=0)
    Y = np.vstack([Y, rng.standard_normal((200, 8)).astype(np.float32) * 4])
    pq2 = ProductQuantizer(1.0, 8, seed=3, n_iter=10).fit(Y)
    assert np.isfinite(pq2.codebooks_).all() and pq2.n_reseeded_ >= 0


def test_seed_fixes_codebooks_and_threads_do_not_change_them(data):
    Xtr, _, _ = data
    a = ProductQuantizer(1.0, 8, seed=5, train_sample=300).fit(Xtr)
    b = ProductQuantizer(1.0, 8, seed=5, train_sample=300, n_jobs=2).fit(Xtr)
    c = ProductQuantizer(1.0, 8, seed=6, train_sample=300).fit(Xtr)
    np.testing.assert_array_equal(a.codebooks_, b.codebooks_)
    assert a.fingerprint_ == b.fingerprint_ != c.fingerprint_
    assert a.n_train_ == 300
    np.testing.assert_array_equal(a.encode(Xtr), ProductQuantizer(1.0, 8, seed=5, train_sample=300, n_jobs=2)
                                  .fit(Xtr).encode(Xtr))


# -- layout, sparsity, renormalisation -------------------------------------------------------------
def test_layout_cuts_groups_per_gaussian_and_numbers_units(data):
    Xtr, _, layout = data  # 2 regions x (m, s) x K=4 x D=8
    pq = ProductQuantizer(1.0, 8, layout=layout, n_iter=2).fit(Xtr)
    # region 0: m_0..m_3, s_0..s_3 -> units 0..3, 0..3 ; region 1 -> 4..7
    np.testing.assert_array_equal(pq.group_unit_, [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7])
    np.testing.assert_array_equal(pq.part_bounds_, [0, 64, 128])
    # G = 16 > D = 8: every group crosses two Gaussians, so no group has a sparsity unit
    wide = ProductQuantizer(0.5, 16, layout=layout, n_iter=2).fit(Xtr)
    assert (wide.group_unit_ == -1).all()
    # weight gradients (1 per Gaussian) are cut across Gaussians and never sparse-coded
    w_layout = [Block("w", 0, 0, 8, 1), Block("m", 0, 8, 8, 4)]
    X = np.random.default_rng(0).standard_normal((300, 40)).astype(np.float32)
    pq = ProductQuantizer(1.0, 4, layout=w_layout, n_iter=2).fit(X)
    np.testing.assert_array_equal(pq.group_unit_, [-1, -1] + list(range(8)))
    with pytest.raises(ValueError, match="group=8 would straddle"):
        ProductQuantizer(1.0, 8, layout=[Block("w", 0, 0, 4, 1), Block("m", 0, 4, 4, 9)]).fit(
            np.zeros((10, 40), np.float32))
    with pytest.raises(ValueError, match="layout covers 64 dimensions"):
        ProductQuantizer(layout=layout[:2]).fit(Xtr)


def test_sparsity_bit_is_lossless_on_top_of_pq(fitted, data):
    _, Xte, _ = data
    pq = fitted
    sparse = pq.encode_sparse(Xte)
    assert isinstance(sparse, SparseCodes) and len(sparse) == len(Xte)
    units = sparse.unit_mask()
    Xu = Xte.reshape(len(Xte), 2, 2, 4, 8)  # (region, m/s, Gaussian, D)
    np.testing.assert_array_equal(units, (Xu != 0).any(axis=(2, 4)).reshape(len(Xte), 8))
    assert 0.2 < 1 - units.mean() < 0.6
    dense = pq.decode(pq.encode(Xte))
    back = pq.decode_sparse(sparse)
    keep = np.repeat(units[:, pq.group_unit_], 8, axis=1)
    np.testing.assert_array_equal(back[keep], dense[keep])  # stored groups: exactly PQ
    assert (back[~keep] == 0).all() and (Xte[~keep] == 0).all()  # zero blocks: exactly zero
    # bytes: one mask byte (8 units) + one byte per stored group
    expect = 1 + keep.reshape(len(Xte), -1, 8)[:, :, 0].sum(1)
    np.testing.assert_array_equal(sparse.nbytes_per_image, expect)
    rep = sparsity_storage(pq, Xte)
    assert rep.pq_bytes == 16 and rep.float32_bytes == 4 * 128
    assert rep.sparse_bytes_mean == pytest.approx(expect.mean()) and rep.sparse_bytes_max == expect.max()
    assert rep.zero_unit_fraction == pytest.approx(1 - units.mean())
    assert rep.zero_dim_fraction >= rep.zero_unit_fraction and rep.sparse_gain > 1
    # sparse rows, renormalised, through the row provider
    rows = PQRows(pq, sparse, renormalise=True).rows([3, 0, 7])
    np.testing.assert_array_equal(rows, pq.decode_sparse(sparse, renormalise=True)[[3, 0, 7]])


def test_groups_across_two_gaussians_are_always_stored_and_sparsity_stays_lossless():
    # D = 6 with G = 4 (as D = 66 with G = 8 when gmm.position_scale appends two coordinates to 64 dims)
    X, layout = fv_like(n=300, K=4, D=6, regions=1, seed=7)
    pq = ProductQuantizer(1.0, 4, layout=layout, n_iter=5).fit(X)
    # m: Gaussian k holds [6k, 6k + 6): groups [0,4) -> 0, [4,8) crosses 0|1, [8,12) -> 1, [12,16) -> 2,
    # [16,20) crosses 2|3, [20,24) -> 3; the same for s, one block further on
    np.testing.assert_array_equal(pq.group_unit_, [0, -1, 1, 2, -1, 3] * 2)
    sparse = pq.encode_sparse(X)
    units = sparse.unit_mask()
    gu = pq.group_unit_
    inactive = np.zeros((len(X), len(gu)), bool)
    inactive[:, gu >= 0] = ~units[:, gu[gu >= 0]]
    assert inactive.any()  # some Gaussians of some rows are exactly zero
    skip = np.repeat(inactive, 4, axis=1)
    back = pq.decode_sparse(sparse)
    np.testing.assert_array_equal(back[~skip], pq.decode(pq.encode(X))[~skip])
    assert (back[skip] == 0).all() and (X[skip] == 0).all()
    stored = (~inactive).sum(1)
    # 4 units: one mask byte, then 4-bit codes of the stored groups
    np.testing.assert_array_equal(sparse.nbytes_per_image, 1 + (4 * stored + 7) // 8)
    with pytest.raises(ValueError, match="group=16 would straddle two blocks: block 'm' of region 0 has 24"):
        ProductQuantizer(0.5, 16, layout=layout).fit(X)


def test_sparse_codes_bit_packed():
    X, layout = fv_like(n=300, K=4, D=8, regions=1, seed=4)
    pq = ProductQuantizer(0.5, 8, layout=layout, n_iter=5).fit(X)  # 4-bit codes
    sparse = pq.encode_sparse(X)
    units = sparse.unit_mask()
    keep = np.repeat(units[:, pq.group_unit_], 8, axis=1)
    back = pq.decode_sparse(sparse)
    np.testing.assert_array_equal(back[keep], pq.decode(pq.encode(X))[keep])
    assert (back[~keep] == 0).all()


def test_renormalise_gives_unit_norm_per_region(fitted, data):
    _, Xte, _ = data
    dec = fitted.decode(fitted.encode(Xte), renormalise=True)
    norms = np.linalg.norm(dec.reshape(len(Xte), 2, -1).astype(np.float64), axis=2)
    live = np.linalg.norm(Xte.reshape(len(Xte), 2, -1), axis=2) > 0  # an empty region decodes to zero
    assert not live.all()
    np.testing.assert_allclose(norms[live], 1.0, rtol=1e-6)
    assert (norms[~live] == 0).all()
    plain = fitted.decode(fitted.encode(Xte))
    assert not np.allclose(np.linalg.norm(plain.reshape(len(Xte), 2, -1), axis=2), 1.0, rtol=1e-3)
    parts = ProductQuantizer(1.0, 8, parts=[32, 96], n_iter=2).fit(Xte)
    np.testing.assert_array_equal(parts.part_bounds_, [0, 32, 128])


# -- asymmetric distances --------------------------------------------------------------------------
def test_asymmetric_tables_match_decoded_distances(fitted, data):
    Xtr, Xte, _ = data
    pq = fitted
    codes = pq.encode(Xtr[:50])
    dec = pq.decode(codes).astype(np.float64)
    Q = Xte[:7]
    l2 = pq.asymmetric_scores(pq.distance_tables(Q), codes)
    ip = pq.asymmetric_scores(pq.inner_product_tables(Q), codes)
    ref_l2 = ((Q.astype(np.float64)[:, None] - dec[None]) ** 2).sum(-1)
    np.testing.assert_allclose(l2, ref_l2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ip, Q.astype(np.float64) @ dec.T, rtol=1e-5, atol=1e-6)
    per_part = pq.asymmetric_scores(pq.inner_product_tables(Q), codes, group_part=pq.group_parts())
    np.testing.assert_allclose(per_part[:, :, 0], Q[:, :64].astype(np.float64) @ dec[:, :64].T, atol=1e-5)


# -- learning on codes (Sec. 4.3) ------------------------------------------------------------------
def test_pq_rows_decode_into_a_reused_buffer(fitted, data):
    Xtr, _, _ = data
    codes = fitted.encode(Xtr)
    prov = PQRows(fitted, codes)
    assert len(prov) == 400 and prov.dim == 128
    full = fitted.decode(codes)
    a = prov.rows([5, 1, 2])
    np.testing.assert_array_equal(a, full[[5, 1, 2]])
    b = prov.rows([7, 8])  # ``a`` still alive: written elsewhere
    np.testing.assert_array_equal(a, full[[5, 1, 2]])
    np.testing.assert_array_equal(b, full[[7, 8]])
    base_b = b.base
    del a, b
    c = prov.rows(np.arange(3))
    assert c.base is base_b or c.base is not None  # a pooled buffer, no fresh allocation
    assert len(prov._pool) <= 2
    np.testing.assert_array_equal(c, full[:3])
    with pytest.raises(ValueError, match="indices"):
        prov.rows([400])


@pytest.mark.parametrize("renormalise, balance", [(False, "sample"), (True, None)])
def test_sgd_on_codes_equals_sgd_on_decoded(fitted, data, renormalise, balance):
    Xtr, Xte, _ = data
    y = np.random.default_rng(3).integers(0, 3, len(Xtr))
    codes = fitted.encode(Xtr)
    dec = fitted.decode(codes, renormalise=renormalise)
    kw = dict(lam=1e-3, epochs=3, balance=balance, seed=7)
    on_codes = OneVsRestSGD(**kw).fit(PQRows(fitted, codes, renormalise=renormalise), y)
    on_dense = OneVsRestSGD(**kw).fit(dec, y)
    np.testing.assert_array_equal(on_codes.coef_, on_dense.coef_)
    np.testing.assert_array_equal(on_codes.intercept_, on_dense.intercept_)
    test_codes = fitted.encode(Xte)
    s_codes = on_codes.decision_function(PQRows(fitted, test_codes, renormalise=renormalise))
    s_dense = on_dense.decision_function(fitted.decode(test_codes, renormalise=renormalise))
    np.testing.assert_allclose(s_codes, s_dense, rtol=1e-6, atol=1e-6)


# -- persistence, progress, cancel -----------------------------------------------------------------
def test_save_load_round_trip(fitted, data, tmp_path):
    _, Xte, _ = data
    path = fitted.save(tmp_path / "pq.npz")
    back = ProductQuantizer.load(path)
    assert back.fingerprint_ == fitted.fingerprint_ and back.get_params() == fitted.get_params()
    np.testing.assert_array_equal(back.encode(Xte), fitted.encode(Xte))
    np.testing.assert_array_equal(back.group_unit_, fitted.group_unit_)
    codes = fitted.encode(Xte)
    fitted.save_codes(tmp_path / "codes.npz", codes)
    np.testing.assert_array_equal(back.load_codes(tmp_path / "codes.npz"), codes)
    sparse = fitted.encode_sparse(Xte)
    fitted.save_codes(tmp_path / "sparse.npz", sparse)
    np.testing.assert_array_equal(back.decode_sparse(back.load_codes(tmp_path / "sparse.npz")),
                                  fitted.decode_sparse(sparse))
    other = ProductQuantizer(1.0, 8, seed=1, n_iter=2).fit(Xte)
    with pytest.raises(ValueError, match="another quantiser"):
        other.load_codes(tmp_path / "codes.npz")
    with pytest.raises(ValueError, match="another quantiser"):
        other.decode_sparse(sparse)
    with pytest.raises(ValueError, match="not a 'product_quantizer'"):
        ProductQuantizer.load(tmp_path / "codes.npz")


def test_progress_and_cancel(data):
    Xtr, _, _ = data
    seen = []
    ProductQuantizer(1.0, 8, n_iter=2).fit(Xtr, progress=seen.append)
    assert seen and seen[-1].fraction == 1.0 and seen[-1].values["subquantizers"] == 16
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        ProductQuantizer(1.0, 8).fit(Xtr, cancel=token)
    with pytest.raises(Cancelled):
        ProductQuantizer(1.0, 8).fit(Xtr, cancel=threading.Event().is_set and (lambda: True))


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(bits_per_dim=0.3, group=8), "bits_per_dim \\* group must be an integer"),
    (dict(bits_per_dim=2.5, group=8), "bits_per_dim \\* group must be an integer in 1..16"),
    (dict(bits_per_dim=-1, group=8), "bits_per_dim must be a number > 0"),
    (dict(bits_per_dim=1, group=0), "group must be an integer >= 1"),
    (dict(bits_per_dim=1, group=2.5), "group must be an integer"),
    (dict(n_iter=0), "n_iter must be an integer >= 1"),
    (dict(train_sample=0), "train_sample must be an integer >= 1"),
    (dict(tol=1.0), "tol must be a number in \\[0, 1\\)"),
    (dict(group=7), "group=7 must divide the vector dimension E=64"),
    (dict(blocks=[32, 16]), "blocks must be positive sizes summing to E=64"),
    (dict(blocks=[36, 28]), "group=8 would straddle two blocks: block 0"),
    (dict(parts=[10, 10]), "parts must be positive sizes summing to E=64"),
])
def test_bad_parameters_name_the_argument(kwargs, match):
    X = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        ProductQuantizer(**kwargs).fit(X)


def test_bad_inputs_name_the_argument(fitted, data):
    Xtr, Xte, _ = data
    bad = Xtr.copy()
    bad[17, 3] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinite values \\(first in row 17\\)"):
        ProductQuantizer(1.0, 8, n_iter=1).fit(bad)
    bad[17, 3] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or infinite"):
        fitted.encode(bad)
    with pytest.raises(ValueError, match="X has 64 features, but ProductQuantizer is expecting 128 features"):
        fitted.encode(Xte[:, :64])
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        fitted.encode(Xte[0])
    with pytest.raises(ValueError, match="not fitted"):
        ProductQuantizer().encode(Xte)
    codes = fitted.encode(Xte)
    with pytest.raises(ValueError, match="codes have 15 bytes per row, this quantiser makes 16"):
        fitted.decode(codes[:, :15])
    with pytest.raises(ValueError, match="codes must be a 2-D uint8 array"):
        fitted.decode(codes.astype(np.int64))
    four = ProductQuantizer(0.5, 8, n_iter=1).fit(Xte[:, :24])  # 3 groups x 4 bits: 4 padding bits
    c4 = four.encode(Xte[:, :24])
    c4[0, -1] |= 0x80
    with pytest.raises(ValueError, match="padding bits"):
        four.decode(c4)
    with pytest.raises(ValueError, match="sparse codes; use decode_sparse"):
        fitted.decode(fitted.encode_sparse(Xte))
