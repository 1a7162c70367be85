"""Fisher Vector, soft-BoV and VLAD encoders: VLFeat goldens, a float64 reference, layout, pyramid,
converters (VLFeat, scikit-image), batching, degenerate and bad input."""
import threading
import types
import warnings

import numpy as np
import pytest

from fvstudio.engine.fisher import (
    EmptyRegionWarning,
    FisherEncoder,
    SoftBoWEncoder,
    VLADEncoder,
    from_skimage,
    from_vlfeat,
    make_encoder,
    to_skimage,
    to_vlfeat,
)
from fvstudio.engine.gmm import DiagonalGMM
from fvstudio.engine.posteriors import GaussianTerms, accumulate_statistics
from fvstudio.engine.progress import Cancelled, CancelToken

make_gmm = DiagonalGMM.from_params


def random_problem(K=6, D=5, T=300, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(K) * 3)
    mu = rng.standard_normal((K, D)) * spread
    var = rng.uniform(0.3, 1.5, (K, D))
    comp = rng.choice(K, T, p=w)
    X = (mu[comp] + rng.standard_normal((T, D)) * np.sqrt(var[comp])).astype(np.float32)
    return make_gmm(w, mu, var), X, (w, mu, var)


def reference_fv(X, w, mu, var, theta=0.0, fim="closed"):
    """Straight float64 transcription of eqs. 12-19 (dense posteriors, thresholded + renormalised)."""
    X = X.astype(np.float64)
    T = len(X)
    logj = (np.log(w)[None] - 0.5 * (np.log(2 * np.pi * var).sum(1)[None]
                                     + (((X[:, None, :] - mu[None]) ** 2) / var[None]).sum(2)))
    g = np.exp(logj - logj.max(1, keepdims=True))
    g /= g.sum(1, keepdims=True)
    if theta > 0:
        g[g < theta] = 0
        g /= g.sum(1, keepdims=True)
    sig = np.sqrt(var)
    z = (X[:, None, :] - mu[None]) / sig[None]                      # (T, K, D)
    gw = (g - w[None]).sum(0) / T
    gm = (g[:, :, None] * z).sum(0) / T
    gs = (g[:, :, None] * (z ** 2 - 1)).sum(0) / T
    if fim == "closed":
        gw, gm, gs = gw / np.sqrt(w), gm / np.sqrt(w)[:, None], gs / np.sqrt(2 * w)[:, None]
    else:  # identity: raw gradients eqs. 12-14
        gm, gs = gm / sig, gs / sig
    return np.concatenate([gw, gm.ravel(), gs.ravel()])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------------------------- goldens
NORMS = {"plain": (None, None), "sqrt": (0.5, None), "l2": (None, 2.0), "improved": (0.5, 2.0)}


@pytest.mark.parametrize("size", ["small", "medium"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_vlfeat_golden_threshold_off(vlfeat_golden, size, norm):
    g = vlfeat_golden
    gmm = make_gmm(g[f"{size}_weights"], g[f"{size}_means"], g[f"{size}_variances"])
    power, lp = NORMS[norm]
    enc = FisherEncoder(gmm, power=power, lp=lp, posterior_threshold=0.0)
    ours = enc.encode(g[f"{size}_X"])
    ref = g[f"{size}_fv_{norm}"]
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert cosine(ours.astype(np.float64), ref.astype(np.float64)) >= 0.999999
    assert np.abs(ours - ref).max() <= 1e-4
    np.testing.assert_array_equal(from_vlfeat(ref, enc), ref)
    assert to_vlfeat(ours, enc).shape == ref.shape


@pytest.mark.parametrize("size", ["small", "medium"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_vlfeat_golden_default_threshold(vlfeat_golden, size, norm):
    g = vlfeat_golden
    gmm = make_gmm(g[f"{size}_weights"], g[f"{size}_means"], g[f"{size}_variances"])
    power, lp = NORMS[norm]
    ours = FisherEncoder(gmm, power=power, lp=lp).encode(g[f"{size}_X"])
    assert cosine(ours.astype(np.float64), g[f"{size}_fv_{norm}"].astype(np.float64)) >= 0.9999


# --------------------------------------------------------------------------- float64 reference
@pytest.mark.parametrize("theta", [0.0, 1e-4, 1e-2])
@pytest.mark.parametrize("fim", ["closed", "identity"])
def test_matches_float64_reference(theta, fim):
    gmm, X, (w, mu, var) = random_problem(K=7, D=6, T=500, seed=1)
    ours = FisherEncoder(gmm, gradients="wms", fim=fim, power=None, lp=None,
                         posterior_threshold=theta).encode(X)
    ref = reference_fv(X, w, mu, var, theta, fim)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-6)


def test_normalisations_order_and_lp():
    gmm, X, _ = random_problem(seed=3)
    raw = FisherEncoder(gmm, power=None, lp=None).encode(X).astype(np.float64)
    imp = FisherEncoder(gmm).encode(X).astype(np.float64)
    s = np.sign(raw) * np.sqrt(np.abs(raw))
    np.testing.assert_allclose(imp, s / np.linalg.norm(s), rtol=1e-5, atol=1e-7)
    l1 = FisherEncoder(gmm, power=0.3, lp=1.0).encode(X).astype(np.float64)
    p = np.sign(raw) * np.abs(raw) ** 0.3
    np.testing.assert_allclose(l1, p / np.abs(p).sum(), rtol=1e-5, atol=1e-7)
    assert abs(np.abs(l1).sum() - 1) < 1e-5


# ---------------------------------------------------------------------------------- layout
def test_gradient_subsets_and_layout():
    gmm, X, _ = random_problem(K=5, D=4, seed=4)
    K, D = 5, 4
    full = FisherEncoder(gmm, gradients="swm", power=None, lp=None)
    assert full.gradients == "wms" and full.dim == K + 2 * K * D
    f = full.encode(X)
    parts = {"w": f[:K], "m": f[K:K + K * D], "s": f[K + K * D:]}
    for grads in ["w", "m", "s", "ms", "ws", "wm"]:
        enc = FisherEncoder(gmm, gradients=grads, power=None, lp=None)
        np.testing.assert_allclose(enc.encode(X), np.concatenate([parts[g] for g in grads]), rtol=1e-5, atol=1e-6)
        layout = enc.block_layout()
        assert [b.name for b in layout] == list(grads)
        assert layout[-1].stop == enc.dim
    gi = full.gaussian_index()
    assert gi.shape == (full.dim,) and list(gi[:K]) == list(range(K))
    assert (gi[K:K + D] == 0).all() and (gi[K + D:K + 2 * D] == 1).all()
    # the weight gradients of one image sum to zero (sum_k gamma = 1 = sum_k w) before the 1/sqrt(w)
    w = np.asarray(gmm.weights_, dtype=np.float64)
    assert abs((parts["w"] * np.sqrt(w)).sum()) < 1e-5


def test_pyramid_regions_are_independent_encodings():
    gmm, X, _ = random_problem(K=4, D=3, T=600, seed=5)
    rng = np.random.default_rng(5)
    H, W = 90, 120
    pos = np.column_stack([rng.uniform(0, W, len(X)), rng.uniform(0, H, len(X))]).astype(np.float32)
    enc = FisherEncoder(gmm, pyramid=[(1, 1), (3, 1), (1, 2)])
    assert enc.n_regions == 6 and enc.dim == 6 * 2 * 4 * 3
    fv = enc.encode(X, pos, (H, W)).reshape(6, -1)
    single = FisherEncoder(gmm)
    np.testing.assert_allclose(fv[0], single.encode(X), rtol=1e-4, atol=1e-5)
    for i in range(3):  # stripes, top first
        sel = (pos[:, 1] >= i * H / 3) & (pos[:, 1] < (i + 1) * H / 3)
        np.testing.assert_allclose(fv[1 + i], single.encode(X[sel]), rtol=1e-4, atol=1e-5)
    for j in range(2):  # columns, left first
        sel = (pos[:, 0] >= j * W / 2) & (pos[:, 0] < (j + 1) * W / 2)
        np.testing.assert_allclose(fv[4 + j], single.encode(X[sel]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fv, axis=1), 1.0, rtol=1e-5)
    layout = enc.block_layout()
    assert [b.region for b in layout] == [r for r in range(6) for _ in range(2)]


def test_empty_input_and_empty_region_give_zeros_with_warning():
    gmm, X, _ = random_problem(K=4, D=3, seed=6)
    for enc in (FisherEncoder(gmm, gradients="wms"), SoftBoWEncoder(gmm), VLADEncoder(gmm),
                FisherEncoder(gmm, power=None, lp=None)):
        with pytest.warns(EmptyRegionWarning):
            v = enc.encode(np.zeros((0, 3), np.float32))
        assert v.shape == (enc.dim,) and not v.any()
    pos = np.column_stack([np.full(len(X), 10.0), np.full(len(X), 5.0)])  # all in the top stripe
    enc = FisherEncoder(gmm, gradients="wms", pyramid=[(1, 1), (3, 1)])
    with pytest.warns(EmptyRegionWarning, match=r"\[2, 3\]"):
        fv = enc.encode(X, pos, (30, 40)).reshape(4, -1)
    assert np.isfinite(fv).all() and fv[0].any() and fv[1].any()
    assert not fv[2].any() and not fv[3].any()


def test_degenerate_gmm_and_data_stay_finite():
    rng = np.random.default_rng(7)
    w = np.array([0.5, 0.5, 0.0])  # a dead component
    mu = rng.standard_normal((3, 4))
    var = np.array([[1e-6] * 4, [1.0] * 4, [1.0] * 4])  # a collapsed one
    X = np.repeat(rng.standard_normal((1, 4)).astype(np.float32) * 50, 20, axis=0)  # far, duplicated
    gmm = make_gmm(w, mu, var)
    for enc in (FisherEncoder(gmm, gradients="wms"), SoftBoWEncoder(gmm), VLADEncoder(gmm)):
        v = enc.encode(X)
        assert np.isfinite(v).all() and np.linalg.norm(v) > 0.99


# ------------------------------------------------------------------------------ bad input
def test_bad_input_raises_value_error_naming_the_argument():
    gmm, X, _ = random_problem(K=4, D=3, seed=8)
    enc = FisherEncoder(gmm, pyramid=[(1, 1), (3, 1)])
    pos = np.zeros((len(X), 2))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="descriptors.*NaN"):
        enc.encode(bad, pos, (10, 10))
    with pytest.raises(ValueError, match="descriptors has 4 features"):
        enc.encode(np.zeros((5, 4), np.float32), np.zeros((5, 2)), (10, 10))
    with pytest.raises(ValueError, match="positions must have shape"):
        enc.encode(X, np.zeros((len(X), 3)), (10, 10))
    with pytest.raises(ValueError, match="positions must have shape"):
        enc.encode(X, np.zeros((len(X) - 1, 2)), (10, 10))
    with pytest.raises(ValueError, match="positions .* required"):
        enc.encode(X)
    with pytest.raises(ValueError, match="image_shape"):
        enc.encode(X, pos, None)
    with pytest.raises(ValueError, match="positions.*NaN"):
        enc.encode(X, np.full((len(X), 2), np.nan), (10, 10))
    with pytest.raises(ValueError, match="descriptors must be a 2-D"):
        FisherEncoder(gmm).encode(X[0])
    for kwargs, word in [({"gradients": ""}, "gradients"), ({"gradients": "mx"}, "gradients"),
                         ({"fim": "exact"}, "fim"), ({"power": 2.0}, "power"), ({"power": 0}, "power"),
                         ({"lp": -1}, "lp"), ({"pyramid": [(0, 1)]}, "pyramid"), ({"pyramid": []}, "pyramid"),
                         ({"posterior_threshold": 1.0}, "posterior_threshold")]:
        with pytest.raises(ValueError, match=word):
            FisherEncoder(gmm, **kwargs)
    with pytest.raises(ValueError, match="gmm"):
        FisherEncoder(object())
    with pytest.raises(ValueError, match="kind"):
        make_encoder("bow", gmm)
    with pytest.raises(ValueError, match="image 1"):
        FisherEncoder(gmm).encode_batch([X, X[:, :2]])


# ---------------------------------------------------------------------------------- converters
def _sklearn_gmm(w, mu, var):
    from sklearn.mixture import GaussianMixture
    gm = GaussianMixture(n_components=len(w), covariance_type="diag")
    gm.weights_, gm.means_, gm.covariances_ = w, mu, var
    gm.precisions_cholesky_ = 1.0 / np.sqrt(var)
    return gm


def test_skimage_convention_and_converters():
    pytest.importorskip("sklearn")
    skf = pytest.importorskip("skimage.feature")
    gmm, X, (w, mu, var) = random_problem(K=5, D=4, T=400, seed=9)
    sk_gmm = _sklearn_gmm(w, mu, var)
    X64 = X.astype(np.float64)
    enc = FisherEncoder(gmm, gradients="wms", power=None, lp=None, posterior_threshold=0.0)
    ours = enc.encode(X)
    theirs = skf.fisher_vector(X64, sk_gmm)
    np.testing.assert_allclose(from_skimage(theirs, enc), ours, rtol=1e-4, atol=1e-6)
    # the sigma block really is negated, the w and mean blocks are not
    K, D = 5, 4
    np.testing.assert_allclose(theirs[:K + K * D], ours[:K + K * D], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(theirs[K + K * D:], -ours[K + K * D:], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(to_skimage(ours, enc), theirs, rtol=1e-4, atol=1e-6)
    imp = FisherEncoder(gmm, gradients="wms", posterior_threshold=0.0)
    np.testing.assert_allclose(to_skimage(imp.encode(X), imp), skf.fisher_vector(X64, sk_gmm, improved=True),
                               rtol=1e-4, atol=1e-6)
    batch = np.stack([ours, 2 * ours])
    np.testing.assert_array_equal(from_skimage(to_skimage(batch, enc), enc), batch)
    with pytest.raises(ValueError, match="wms"):
        to_skimage(ours[:2 * K * D], FisherEncoder(gmm))
    with pytest.raises(ValueError, match="length"):
        from_skimage(ours[:-1], enc)


def test_vlfeat_converter_drops_weight_block_per_region():
    gmm, X, _ = random_problem(K=3, D=2, T=200, seed=10)
    pos = np.random.default_rng(0).uniform(0, 50, (len(X), 2))
    wms = FisherEncoder(gmm, gradients="wms", power=None, lp=None, pyramid=[(1, 1), (3, 1)])
    ms = FisherEncoder(gmm, gradients="ms", power=None, lp=None, pyramid=[(1, 1), (3, 1)])
    a, b = wms.encode(X, pos, (50, 50)), ms.encode(X, pos, (50, 50))
    np.testing.assert_allclose(to_vlfeat(a, wms), b, rtol=1e-6)
    with pytest.raises(ValueError, match="'ms'"):
        from_vlfeat(b, wms)


# ---------------------------------------------------------------------------------- batching
@pytest.mark.filterwarnings("ignore::fvstudio.engine.fisher.EmptyRegionWarning")
def test_encode_batch_matches_encode_progress_and_cancel():
    gmm, X, _ = random_problem(K=8, D=4, T=2000, seed=11)
    rng = np.random.default_rng(11)
    sets = [X[rng.choice(len(X), n)] for n in (50, 300, 0, 700, 120, 5)]
    pos = [rng.uniform(0, 64, (len(s), 2)) for s in sets]
    shapes = [(64, 64)] * len(sets)
    enc = FisherEncoder(gmm, pyramid=[(1, 1), (2, 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyRegionWarning)
        single = np.stack([enc.encode(s, p, sh) for s, p, sh in zip(sets, pos, shapes)])
        seen = []
        lock = threading.Lock()

        def progress(p):
            with lock:
                seen.append((p.done, p.total, p.values["image"]))

        for n_jobs in (1, 2):
            seen.clear()
            out = enc.encode_batch(sets, pos, shapes, n_jobs=n_jobs, progress=progress)
            np.testing.assert_array_equal(out, single)
            assert [d for d, _, _ in seen] == list(range(1, 7)) and sorted(i for _, _, i in seen) == list(range(6))
    assert enc.encode_batch([], n_jobs=2).shape == (0, enc.dim)
    token = CancelToken()

    def cancel_after_two(p):
        if p.done >= 2:
            token.cancel()

    for n_jobs in (1, 2):
        token.reset()
        with pytest.raises(Cancelled):
            enc.encode_batch(sets * 5, pos * 5, shapes * 5, n_jobs=n_jobs, progress=cancel_after_two,
                             cancel=token)
    with pytest.raises(ValueError, match="positions has 2 entries"):
        enc.encode_batch(sets, pos[:2], shapes)


# ------------------------------------------------------------------------ other encodings, FIM
def test_soft_bow_is_mean_posterior():
    gmm, X, (w, mu, var) = random_problem(K=6, D=4, T=800, seed=12)
    terms = GaussianTerms(w, mu, var)
    raw = SoftBoWEncoder(gmm, power=None, lp=None, posterior_threshold=1e-4).encode(X)
    st = accumulate_statistics(X, terms, threshold=1e-4, moments=False)
    np.testing.assert_allclose(raw, st.A[0] / len(X), rtol=1e-5, atol=1e-7)
    assert abs(raw.sum() - 1) < 1e-5
    h = SoftBoWEncoder(gmm).encode(X)
    np.testing.assert_allclose(h, np.sqrt(raw) / np.linalg.norm(np.sqrt(raw)), rtol=1e-5)
    sp = SoftBoWEncoder(gmm, pyramid=[(1, 1), (3, 1)])
    assert sp.dim == 4 * 6 and [b.name for b in sp.block_layout()] == ["h"] * 4


def test_vlad_against_numpy():
    gmm, X, (w, mu, var) = random_problem(K=6, D=4, T=800, seed=13)
    v = VLADEncoder(gmm).encode(X)
    nearest = ((X[:, None, :].astype(np.float64) - mu[None]) ** 2).sum(2).argmin(1)
    ref = np.zeros((6, 4))
    for k in range(6):
        ref[k] = (X[nearest == k] - mu[k]).sum(0)
    ref = np.sign(ref) * np.sqrt(np.abs(ref))
    ref = ref.ravel() / np.linalg.norm(ref)
    np.testing.assert_allclose(v, ref, rtol=1e-4, atol=1e-6)
    assert VLADEncoder(gmm).dim == 24


def test_empirical_fim():
    gmm, X, _ = random_problem(K=4, D=3, T=3000, seed=14)
    rng = np.random.default_rng(14)
    sets = [X[rng.choice(len(X), 200)] for _ in range(12)]
    enc = FisherEncoder(gmm, fim="empirical", power=None, lp=None)
    with pytest.raises(ValueError, match="fit_fim"):
        enc.encode(sets[0])
    with pytest.raises(ValueError, match="at least 2"):
        enc.fit_fim(sets[:1])
    assert enc.fit_fim(sets) is enc
    raw = FisherEncoder(gmm, fim="identity", power=None, lp=None)
    G = np.stack([raw.encode(s) for s in sets]).astype(np.float64)
    np.testing.assert_allclose(enc.fim_scale_, G.std(0), rtol=1e-5)
    np.testing.assert_allclose(enc.encode(sets[0]), G[0] / G.std(0), rtol=1e-4)
    Z = enc.encode_batch(sets)
    np.testing.assert_allclose(Z.std(0), 1.0, rtol=1e-3)


@pytest.mark.filterwarnings("ignore::fvstudio.engine.fisher.EmptyRegionWarning")
def test_make_encoder_and_params_roundtrip():
    gmm, X, _ = random_problem(seed=15)
    for kind, cls in [("fisher", FisherEncoder), ("soft_bow", SoftBoWEncoder), ("vlad", VLADEncoder)]:
        enc = make_encoder(kind, gmm, pyramid=[(1, 1), (3, 1)], power=0.5)
        assert isinstance(enc, cls) and enc.kind == kind
        params = enc.get_params()
        import json
        again = make_encoder(enc.kind, gmm, **json.loads(json.dumps(params)))
        assert again.get_params() == params and again.dim == enc.dim
        pos = np.zeros((len(X), 2))
        assert enc.fit_fim([X, X], [pos, pos], [(8, 8), (8, 8)]) is enc
    assert "gradients='ms'" in repr(FisherEncoder(gmm))
