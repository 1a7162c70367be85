"""Spatial coordinate augmentation (gmm.position_scale): the engine function, the store's sample, and the pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from fvstudio.engine.spatial import append_xy, normalised_xy
from fvstudio.pipeline import STEPS, Pipeline
from fvstudio.pipeline.inspector import inspect_patch

from test_pipeline import folder_dataset, tiny_config  # noqa: F401  (the module's fixture)


def test_append_xy_by_hand():
    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    pos = np.array([[0, 0], [50, 25], [99, 49]], np.float32)  # (x, y) in a 50 x 100 (H x W) image
    out = append_xy(X, pos, (50, 100), 0.5)
    assert out.shape == (3, 4) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out[:, :2], X)
    assert np.allclose(out[:, 2:], 0.5 * np.array([[-0.5, -0.5], [0.0, 0.0], [0.49, 0.48]]), atol=1e-6)
    assert np.allclose(normalised_xy(pos, (50, 100, 3)), out[:, 2:] / 0.5)


@pytest.mark.parametrize("kwargs, needle", [
    ({"scale": 0.0}, "scale must be a positive"),
    ({"scale": float("nan")}, "scale must be a positive"),
    ({"image_shape": (0, 10)}, "positive (H, W)"),
    ({"image_shape": None}, "image_shape must be (H, W)"),
    ({"positions": np.zeros((2, 2), np.float32)}, "positions has 2 rows but X has 3"),
])
def test_append_xy_rejects_bad_input(kwargs, needle):
    args = {"X": np.zeros((3, 4), np.float32), "positions": np.zeros((3, 2), np.float32),
            "image_shape": (10, 10), "scale": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        append_xy(**args)


def test_pipeline_with_xy_models_positions(folder_dataset, tmp_path):  # noqa: F811
    cfg = tiny_config(folder_dataset, **{"dataset.train_list": str(folder_dataset.parent / "train.txt"),
                                         "dataset.test_list": str(folder_dataset.parent / "test.txt"),
                                         "gmm.position_scale": 0.5})
    pipe = Pipeline(cfg, tmp_path / "ws")
    res = pipe.run_all()
    assert 0.25 < res.metrics["mean_per_class_accuracy"] <= 1.0
    gmm = pipe.artifact("gmm")
    assert gmm.means_.shape == (4, 18)  # 16 PCA dims + (x, y)
    # the sample the GMM learned from carries positions: the two extra means lie inside +-0.5 * scale
    assert np.all(np.abs(gmm.means_[:, 16:]) <= 0.25 + 1e-6)
    enc = pipe.artifact("encode")
    assert enc.fvs.shape == (32, 2 * 18 * 4 * 4) and np.isfinite(np.asarray(enc.fvs)).all()
    # an FV row is the encoder's output on the projected + augmented descriptors of that image
    store, pca = pipe.store("sift"), pipe.artifact("pca")
    d = store.get(int(enc.indices[0]))
    X = append_xy(pca.transform(d.descriptors), d.positions, d.image_shape, 0.5)
    assert np.allclose(enc.encoder.encode(X, d.positions, d.image_shape), enc.fvs[0], atol=1e-5)
    # the store's sample gives each sampled row the position it was taken at
    i = int(enc.indices[0])
    S, xy = store.sample(10 ** 9, indices=[i], rows_per_image=pipe.config.get("descriptors.vocab_rows"), with_xy=True)
    assert len(S) == len(xy) > 0
    where = [int(np.flatnonzero((d.descriptors == row).all(axis=1))[0]) for row in S]
    assert np.array_equal(xy, normalised_xy(d.positions[where], d.image_shape))
    # the inspector and the diagnostics read the augmented descriptors too
    insp = inspect_patch(pipe, int(enc.indices[0]), 20.0, 20.0)
    assert insp.posteriors.shape == (4,) and insp.posteriors.sum() == pytest.approx(1.0, abs=1e-5)
    from fvstudio.pipeline.diagnostics import compute_diagnostics
    diag = compute_diagnostics(pipe)
    assert diag.posterior_sharpness is not None
    # turning it off re-fits the GMM and re-encodes, but keeps the descriptors and the PCA
    before = dict(pipe.computed)
    pipe.config.set("gmm.position_scale", 0.0)
    assert [pipe.status(s) for s in STEPS][:3] == ["cached", "cached", "stale"]
    pipe.run_all()
    assert {s: pipe.computed[s] - before.get(s, 0) for s in ("descriptors", "pca", "gmm", "encode")} == \
        {"descriptors": 0, "pca": 0, "gmm": 1, "encode": 1}
    assert pipe.artifact("gmm").means_.shape == (4, 16)
