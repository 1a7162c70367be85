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


# ------------------------------------------------------------------ the figures' data, without Qt
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from fvstudio.engine.descriptors import dense_frames, dense_sift, local_color_statistics  # noqa: E402

TINY = {"dataset.n_train": 3, "dataset.n_test": 2, "dataset.max_pixels": 20_000, "descriptors.scales": 1,
        "descriptors.step": 8, "pca.n_components": 8, "pca.sample": 2_000, "gmm.n_components": 4,
        "gmm.max_iter": 8, "gmm.sample": 2_000, "classifier.select_lambda": False, "classifier.epochs": 3,
        "encoder.pyramid": "1x1", "descriptors.channels": ["sift"]}


@pytest.mark.parametrize("shape, grid", [
    ((175, 257), {}),
    ((120, 90), {"patch": 16, "step": 3, "scales": 4, "scale_factor": 1.5}),
    ((31, 200), {"patch": 24, "step": 4, "scales": 5}),  # the coarser levels have no frame
    ((12, 12), {}),  # too small for one frame: T = 0
])
def test_dense_frames_are_the_frames_of_the_descriptors(shape, grid):
    rgb = np.random.default_rng(0).random((*shape, 3)).astype(np.float32)
    pos, sizes = dense_frames(shape, **grid)
    for dd in (dense_sift(rgb.mean(axis=2), **grid), local_color_statistics(rgb, **grid)):
        np.testing.assert_array_equal(pos, dd.positions)
        np.testing.assert_array_equal(sizes, dd.scales)
    assert pos.dtype == np.float32 and sizes.dtype == np.float32 and pos.shape == (len(sizes), 2)


def test_patch_grid_follows_the_config():
    from fvstudio.pipeline import PipelineConfig
    from fvstudio.pipeline.diagnostics import patch_grid

    cfg = PipelineConfig({"descriptors.patch": 16, "descriptors.step": 6, "descriptors.scales": 3})
    grid = patch_grid(cfg, (150, 200))
    pos, sizes = dense_frames((150, 200), patch=16, step=6, scales=3, scale_factor=2 ** 0.5)
    np.testing.assert_array_equal(grid.positions, pos)
    assert len(grid.scale_sides) == 3 and grid.scale_sides[0] == 16
    fine, side = grid.at_scale(0)
    assert side == 16 and len(fine) == np.sum(sizes == 16)
    coarse, side = grid.at_scale(99)  # clipped to the coarsest scale
    assert side == grid.scale_sides[-1] and len(coarse) < len(fine)


def test_pipeline_and_its_diagnostics_import_without_qt():
    code = ("import sys\nsys.modules['PySide6'] = None\n"
            "import fvstudio.pipeline, fvstudio.pipeline.diagnostics, fvstudio.pipeline.sweep\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyqtgraph', 'superqt', 'PySide6')"
            " and sys.modules[m] is not None))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory, sample_data_dir):
    from fvstudio.pipeline import Pipeline, PipelineConfig

    root = Path(sample_data_dir) / "textures"
    if not root.is_dir():
        pytest.skip("sample_data/textures is not there")
    cfg = PipelineConfig({"dataset.root": str(root), **TINY})
    pipe = Pipeline(cfg, tmp_path_factory.mktemp("diag-ws"))
    pipe.run_all()
    return pipe


def test_compute_diagnostics_returns_the_figures_arrays(tiny_pipeline):
    """The arrays the panel used to compute itself: the same engine calls on the same cached artifacts."""
    from fvstudio.pipeline import Pipeline
    from fvstudio.pipeline.diagnostics import ENERGY_IMAGES, POSTERIOR_SAMPLE, compute_diagnostics

    pipe = Pipeline(tiny_pipeline.config.copy(), tiny_pipeline.workspace)
    d = compute_diagnostics(pipe)
    pca, gmm, enc = pipe.artifact("pca"), pipe.artifact("gmm"), pipe.artifact("encode")
    np.testing.assert_array_equal(d.pca_explained_variance_ratio, pca.explained_variance_ratio_)
    np.testing.assert_array_equal(d.log_likelihood, gmm.log_likelihood_)
    vocab = pipe.context().vocab_indices(0)  # what the vocabulary learned from
    X, xy = pipe.artifact("descriptors").sample(POSTERIOR_SAMPLE, seed=0, indices=vocab, with_xy=True,
                                                rows_per_image=pipe.config.get("descriptors.vocab_rows"))
    scale = pipe.config.get("gmm.position_scale")
    assert scale > 0  # the default: the GMM models each descriptor with its position
    X = np.hstack([pca.transform(X), np.float32(scale) * xy])
    ref = posterior_sharpness(np.ascontiguousarray(X, dtype=np.float32), gmm,
                              pipe.config.get("encoder.posterior_threshold"))
    np.testing.assert_array_equal(d.posterior_sharpness.max_posterior, ref.max_posterior)
    np.testing.assert_array_equal(d.posterior_sharpness.cdf, ref.cdf)
    np.testing.assert_array_equal(d.fv_energy, fv_energy_per_gaussian(
        np.asarray(enc.fvs[:ENERGY_IMAGES], dtype=np.float32), enc.encoder))
    assert d.fv_energy.shape == (4,) and len(d.notes) == 1 and "Gaussians active" in d.notes[0]


def test_compute_diagnostics_leaves_out_what_is_not_computed(tiny_pipeline, tmp_path):
    from fvstudio.engine.progress import CancelToken, Cancelled
    from fvstudio.pipeline import Pipeline
    from fvstudio.pipeline.diagnostics import compute_diagnostics

    cfg = tiny_pipeline.config.copy().set("dataset.repeats", 2)
    d = compute_diagnostics(Pipeline(cfg, tmp_path))
    assert d.pca_explained_variance_ratio is None and d.log_likelihood is None
    assert d.posterior_sharpness is None and d.fv_energy is None
    assert d.notes and d.notes[0].startswith("Split 1 of 2")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        compute_diagnostics(Pipeline(tiny_pipeline.config.copy(), tiny_pipeline.workspace), cancel=token)


def test_unreadable_images_counts_the_store_entries(tiny_pipeline, tmp_path, sample_data_dir):
    from fvstudio.pipeline import Pipeline
    from fvstudio.pipeline.diagnostics import unreadable_images

    assert unreadable_images(tiny_pipeline) == ([], len(tiny_pipeline.needed_indices()))
    root = tmp_path / "data"
    for cls in ("bricks", "rust"):
        (root / cls).mkdir(parents=True)
        for f in sorted((Path(sample_data_dir) / "textures" / cls).iterdir())[:4]:
            shutil.copy(f, root / cls / f.name)
    (root / "rust" / "zz_broken.jpg").write_bytes(b"not an image")
    cfg = tiny_pipeline.config.copy().update({"dataset.root": str(root), "dataset.n_train": 2,
                                              "dataset.n_test": 0})
    pipe = Pipeline(cfg, tmp_path / "ws")
    assert unreadable_images(pipe) == ([], 9)  # not extracted yet: nothing known to be unreadable
    pipe.run_step("descriptors")
    rows, total = unreadable_images(Pipeline(cfg, tmp_path / "ws"))
    assert total == 9 and [r["id"] for r in rows] == ["rust/zz_broken.jpg"] and "not an image" in rows[0]["reason"]
