"""The patch inspector's Qt-free data (fvstudio.pipeline.inspector) on a tiny pipeline over the sample data:
SIFT glyph order against the engine's descriptors, LCS cell colours, posteriors against the engine, FV
energy shares that add up, visual words, and the classifier's per-Gaussian evidence adding up to the score."""
from pathlib import Path

import numpy as np
import pytest

from fvstudio.engine.descriptors import dense_sift, local_color_statistics
from fvstudio.pipeline import Pipeline, PipelineConfig
from fvstudio.pipeline import inspector as I
from fvstudio.engine.spatial import append_xy
from fvstudio.pipeline.steps.pca import PcaStep

ROOT = Path(__file__).resolve().parents[1] / "sample_data" / "textures"
TINY = {"dataset.n_train": 4, "dataset.n_test": 3, "dataset.max_pixels": 20_000, "descriptors.scales": 2,
        "descriptors.step": 8, "pca.n_components": 16, "pca.sample": 2_000, "gmm.n_components": 8,
        "gmm.max_iter": 10, "gmm.sample": 2_000, "classifier.select_lambda": False, "classifier.epochs": 5,
        "encoder.pyramid": "1x1", "descriptors.channels": ["sift"]}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    if not ROOT.is_dir():
        pytest.skip("sample_data/ is not present")
    cfg = PipelineConfig()
    cfg.update({"dataset.root": str(ROOT), **TINY})
    p = Pipeline(cfg, tmp_path_factory.mktemp("inspector-ws"))
    p.run_all()
    return p


def test_sift_glyph_follows_the_engine_bin_order():
    # intensity rising along +x: gradients point at t = 0; rising along +y (down): t = 2 (clockwise on screen)
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32) / 40
    for img, t in ((xx, 0), (yy, 2), (1 - xx, 4), (1 - yy, 6)):
        d = dense_sift(img, patch=16, step=8, scales=1).descriptors[0]
        g = I.sift_glyph(d)
        assert g.shape == (4, 4, 8)
        assert (g.argmax(2) == t).all()
        np.testing.assert_allclose(np.sort(g.ravel()), np.sort(d))  # a permutation of the 128 values
    seg = I.glyph_segments(g)
    assert seg.shape == (128, 2, 2)
    np.testing.assert_allclose(seg[6, 0], [0.5, 0.5])  # cell (0, 0) centre; bin 6 points up (-y)
    assert seg[6, 1, 1] < seg[6, 0, 1] or g[0, 0, 6] == 0


def test_lcs_cell_colours():
    img = np.zeros((40, 40, 3), np.float32)
    img[:, 20:] = [1.0, 0.0, 0.0]  # right half red
    d = local_color_statistics(img, patch=16, step=4, scales=1)
    t = I.nearest_patch(d.positions, d.scales, 20, 20)
    c = I.lcs_cell_colours(d.descriptors[t])
    assert c.shape == (4, 4, 3)
    assert c[:, 0, 0].max() < 0.05 and c[:, 3, 0].min() > 0.95  # left column black, right column red


def test_heat_map_means():
    m = I.heat_map(np.array([[5.0, 5.0], [9.0, 5.0]]), np.array([4.0, 4.0]), np.array([1.0, 3.0]), (12, 14))
    assert m[5, 4] == 1.0 and m[5, 10] == 3.0
    assert np.isnan(m[0, 0])


def test_inspect_patch_matches_the_engine(pipe):
    i = int(pipe.splits[0].test[0])
    ins = I.inspect_patch(pipe, i, 60.0, 50.0, scale=0, claimed=4, claimed_images=12)
    store, pca, gmm = pipe.artifact("descriptors"), pipe.artifact("pca"), pipe.artifact("gmm")
    d = store.get(i)
    assert ins.patch == I.nearest_patch(d.positions, d.scales, 60.0, 50.0, float(d.scales.min()))
    # the glyph is the stored descriptor, re-arranged
    np.testing.assert_allclose(np.sort(ins.sift.ravel()), np.sort(d.descriptors[ins.patch]))
    assert ins.sift.shape == (4, 4, 8) and ins.cell_colours.shape == (4, 4, 3)
    # posteriors = the engine's posteriors of that projected descriptor
    # the GMM models the projected descriptor with its patch position appended (gmm.position_scale)
    x = append_xy(PcaStep.project(pca, d.descriptors[ins.patch:ins.patch + 1]), d.positions[ins.patch:ins.patch + 1],
                  d.image_shape, pipe.config.get("gmm.position_scale"))
    ref = gmm.predict_proba(x, threshold=pipe.config.get("encoder.posterior_threshold"))[0]
    np.testing.assert_allclose(ins.posteriors, ref, atol=1e-6)
    assert ins.posteriors.sum() == pytest.approx(1.0, abs=1e-5)
    assert ins.n_nonzero == int((ref > 0).sum()) and list(ins.top) == list(np.argsort(-ref, kind="stable")[:len(ins.top)])
    assert ins.word == int(np.argmax(ref)) and ins.same_word[ins.patch]
    # energy shares: Gaussians' shares sum to <= 1; summed over all patches the block shares are 1
    assert 0 < ins.gaussian_energy.sum() <= 1 + 1e-9
    X = append_xy(PcaStep.project(pca, d.descriptors), d.positions, d.image_shape, pipe.config.get("gmm.position_scale"))
    total = np.zeros(len(ins.touched))
    for t in range(len(X)):
        tmp = I.PatchInspection(i, "", "sift", t, (0, 0), 0, (1, 1), d.positions, d.scales, touched=ins.touched)
        I._energy(tmp, X, t, gmm, pipe.artifact("encode").encoder)
        total += tmp.block_share
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # claimed patches: other images, the same word, strongest first
    assert 1 <= len(ins.claimed) <= 4 and all(c.image_index != i for c in ins.claimed)
    assert all(c.crop.shape == (I.CROP, I.CROP, 3) for c in ins.claimed)
    assert [c.posterior for c in ins.claimed] == sorted((c.posterior for c in ins.claimed), reverse=True)


def test_class_evidence_adds_up_to_the_score(pipe):
    i = int(pipe.splits[0].test[1])
    ins = I.inspect_patch(pipe, i, 30.0, 30.0, claimed=0)
    ev = ins.evidence
    assert ev is not None
    model = pipe.artifact("classifier").load_model(0, "sift")
    enc = pipe.artifact("encode")
    z = enc.fvs[int(np.flatnonzero(enc.indices == i)[0])]
    scores = model.coef_ @ z + model.intercept_
    assert ev.score == pytest.approx(float(scores.max()), rel=1e-4, abs=1e-5)
    assert ev.per_gaussian.sum() + ev.intercept == pytest.approx(ev.score, rel=1e-4, abs=1e-5)
    assert ev.class_name in pipe.dataset.class_names
    # each Gaussian's push is shared among the patches: they add up to the Gaussians that have patches
    assert ev.patch_heat.shape == (len(ins.positions),)
    assert ev.heat_map.shape == ins.image_shape and np.isfinite(ev.heat_map).any()


def test_without_a_gmm_only_the_descriptor(tmp_path):
    cfg = PipelineConfig()
    cfg.update({"dataset.root": str(ROOT), **TINY})
    p = Pipeline(cfg, tmp_path)
    ins = I.inspect_patch(p, 0, 40.0, 40.0)
    assert ins.sift is not None and ins.cell_colours is not None and ins.posteriors is None
    assert any("GMM" in n for n in ins.notes)


def test_image_share_is_the_product(pipe):
    ins = I.inspect_patch(pipe, int(pipe.splits[0].test[2]), 50.0, 50.0, claimed=0)
    np.testing.assert_allclose(ins.image_share, ins.block_share * ins.gaussian_energy, rtol=1e-9, atol=1e-15)
