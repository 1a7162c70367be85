"""The ``compress`` step and k-NN classifier kind in the pipeline (issue: compressed FVs, Sec. 4-5)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fvstudio.engine.knn import KNNClassifier
from fvstudio.engine.pq import PQRows, SparseCodes
from fvstudio.engine.svm import OneVsRestSGD
from fvstudio.pipeline import Pipeline
from fvstudio.pipeline.config import ConfigError
from fvstudio.pipeline.results import write_results
from fvstudio.pipeline.steps.classifier import classifier_params
from fvstudio.pipeline.sweep import grid_variants, parse_set_option, run_sweep

from test_pipeline import folder_dataset, tiny_config  # noqa: F401  (fixture re-used)

# b = 0.5, G = 8: 16 centroids per group, fewer than the 20 training FVs, so codes are lossy even here
PQ = {"compression.bits_per_dim": 0.5, "compression.group": 8, "classifier.select_lambda": False,
      "classifier.lam": 1e-3, "classifier.solver": "sgd"}


def _lists(root):
    return {"dataset.train_list": str(root.parent / "train.txt"), "dataset.test_list": str(root.parent / "test.txt")}


@pytest.fixture(scope="module")
def pq_run(folder_dataset, tmp_path_factory):  # noqa: F811
    ws = tmp_path_factory.mktemp("ws_pq")
    pipe = Pipeline(tiny_config(folder_dataset, **_lists(folder_dataset), **PQ), ws)
    return pipe, pipe.run_all(), ws


def test_compress_step_stores_codes_and_reports_bytes_and_mse(pq_run, tmp_path):
    pipe, result, _ = pq_run
    comp = pipe.artifact("compress")
    enc = pipe.artifact("encode")
    assert isinstance(comp.codes, SparseCodes) and len(comp.codes) == len(enc.indices)
    assert np.array_equal(comp.indices, enc.indices)
    c = result.compression
    assert c["bits_per_dim"] == 0.5 and c["group"] == 8 and c["dim"] == enc.fvs.shape[1]
    assert c["bytes_float32"] == 4 * enc.fvs.shape[1]
    assert c["bytes_pq"] == enc.fvs.shape[1] // 8 * 4 // 8  # 4 bits a group
    assert c["bytes_pq_sparse_max"] <= c["bytes_pq"] + (16 * 4 + 7) // 8  # codes + one bit per Gaussian & region
    # the reported test MSE is the quantiser's distortion on the split's test FVs
    sp = pipe.splits[0]
    X_te = np.asarray(enc.fvs[enc.rows_for(sp.test)])
    dec = comp.quantizer.decode_sparse(comp.codes)[enc.rows_for(sp.test)]
    assert c["mse_test"] == pytest.approx(float(np.mean(np.sum((dec - X_te) ** 2, axis=1))), rel=1e-4)
    assert c["mse_test"] > 0
    paths = write_results(result, tmp_path / "out")
    doc = json.loads(paths["results"].read_text())
    assert doc["compression"]["bytes_per_image"] == pytest.approx(c["bytes_pq_sparse_mean"])
    assert doc["hubness"] is None


def test_sgd_on_codes_equals_sgd_on_the_decoded_matrix(pq_run):
    pipe, result, _ = pq_run
    comp, enc = pipe.artifact("compress"), pipe.artifact("encode")
    sp = pipe.splits[0]
    tr, te = enc.rows_for(sp.train), enc.rows_for(sp.test)
    decoded = comp.quantizer.decode_sparse(comp.codes, renormalise=True)
    params = classifier_params(pipe.config)
    y = np.asarray(pipe.dataset.labels)[sp.train]
    model = OneVsRestSGD(**params).fit(decoded[tr], y, classes=np.arange(4))
    np.testing.assert_allclose(result.test_scores[0], model.decision_function(decoded[te]), rtol=1e-5, atol=1e-6)
    # and the codes changed the scores: the classifier did read the codes, not the float32 FVs
    raw = OneVsRestSGD(**params).fit(np.asarray(enc.fvs[tr]), y, classes=np.arange(4))
    assert not np.allclose(result.test_scores[0], raw.decision_function(np.asarray(enc.fvs[te])))


def test_compression_keys(folder_dataset, tmp_path):  # noqa: F811
    base = tiny_config(folder_dataset, **_lists(folder_dataset))
    keys = Pipeline(base, tmp_path).keys()

    def changed(**over):
        k2 = Pipeline(tiny_config(folder_dataset, **_lists(folder_dataset), **over), tmp_path).keys()
        return {s for s in keys if keys[s] != k2[s]}

    # off: the other compression keys and the k-NN keys of a linear run change nothing downstream
    assert changed(**{"compression.group": 4, "compression.renormalise": False}) == set()
    assert changed(**{"classifier.knn_k": 3}) == set()
    assert changed(**{"compression.bits_per_dim": 1.0}) == {"compress", "classifier", "evaluate"}
    on = {"compression.bits_per_dim": 1.0}
    assert changed(**on, **{"compression.renormalise": False}) == {"compress", "classifier", "evaluate"}
    assert changed(**{"classifier.kind": "knn"}) == {"classifier", "evaluate"}


@pytest.mark.parametrize("over, match", [
    ({"compression.bits_per_dim": 0.3, "compression.group": 8}, "whole number of bits"),
    ({"compression.bits_per_dim": 4.0, "compression.group": 8}, "1..16"),
    ({"compression.bits_per_dim": 1.0, "compression.group": 5}, "compression.group = 5"),
    ({"compression.bits_per_dim": 1.0, "encoder.kind": "soft_bow"}, "soft-BoV"),
])
def test_bad_compression_settings_fail_at_the_door(folder_dataset, tmp_path, over, match):  # noqa: F811
    pipe = Pipeline(tiny_config(folder_dataset, **_lists(folder_dataset), **over), tmp_path)
    with pytest.raises(ConfigError, match=match):
        pipe.run_all()
    assert pipe.status("encode") == "not run" or over.get("compression.group") == 3


def test_knn_on_codes_equals_brute_force_on_decoded_vectors(pq_run, tmp_path):
    pipe, _, ws = pq_run
    cfg = pipe.config.copy().update({"classifier.kind": "knn", "classifier.knn_k": 3})
    knn = Pipeline(cfg, ws)
    result = knn.run_all()
    assert "compress" in result.cached_steps and "encode" in result.cached_steps
    comp, enc = knn.artifact("compress"), knn.artifact("encode")
    sp = knn.splits[0]
    tr, te = enc.rows_for(sp.train), enc.rows_for(sp.test)
    decoded = comp.quantizer.decode_sparse(comp.codes, renormalise=True)[tr]
    Q = np.asarray(enc.fvs[te])
    y = np.asarray(knn.dataset.labels)[sp.train]
    d2 = ((Q[:, None, :] - decoded[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :3]
    want = np.zeros((len(te), 4), np.float32)
    for q in range(len(te)):
        for j in order[q]:
            want[q, y[j]] += 1 / 3
    np.testing.assert_allclose(result.test_scores[0], want, atol=1e-6)
    assert np.array_equal(result.test_scores[0],
                          KNNClassifier(k=3).fit(PQRows(comp.quantizer, comp.codes, renormalise=True)
                                                 .rows(tr), y).decision_function(Q))
    nb = knn.artifact("classifier").load_neighbours()
    assert nb["neighbours"].shape == (len(te), 3)
    # the same neighbours, up to the order of (near-)ties: two training images can share their codes
    pos = {int(v): j for j, v in enumerate(np.asarray(enc.indices)[tr])}
    assert set(nb["neighbours"].ravel().tolist()) <= set(pos)  # training images only
    got = np.vectorize(pos.get)(nb["neighbours"])
    np.testing.assert_allclose(np.take_along_axis(d2, got, axis=1), np.take_along_axis(d2, order, axis=1),
                               rtol=1e-5, atol=1e-6)
    hub = result.hubness[0]["sift"]
    assert set(hub) == {"uncompressed", "pq", "pq_renormalised"}
    for h in hub.values():
        assert h["n_queries"] == len(te) and h["k"] == 3 and sum(h["sorted_k_occurrence"]) == 3 * len(te)
    with pytest.raises(ValueError, match="k-NN"):
        knn.artifact("classifier").load_model()


def test_sweep_over_two_compression_keys_plots_accuracy_against_bytes(pq_run, tmp_path):
    pipe, _, ws = pq_run
    sets = [parse_set_option("compression.bits_per_dim=0.5,1"), parse_set_option("compression.group=4,8")]
    variants = grid_variants(sets)
    assert len(variants) == 4
    sweep = run_sweep(pipe.config, variants, tmp_path / "sweep", ws)
    rows = sweep.rows
    assert [r["compression.bits_per_dim"] for r in rows] == ["0.5", "0.5", "1", "1"]
    assert all(r["bytes_per_image"] > 0 for r in rows)
    assert rows[0]["bytes_per_image"] < rows[2]["bytes_per_image"]
    assert sweep.bytes_png_path is not None and sweep.bytes_png_path.stat().st_size > 5_000
    header = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[0]
    assert "bytes_per_image" in header and "mse_test" in header


def test_sweep_skips_grid_combinations_the_config_refuses(pq_run, tmp_path):
    pipe, _, ws = pq_run
    sets = [parse_set_option("compression.bits_per_dim=1,4"), parse_set_option("compression.group=4,8")]
    sweep = run_sweep(pipe.config, grid_variants(sets), tmp_path / "sweep", ws)
    assert [lab for lab, _ in sweep.skipped] == ["compression.bits_per_dim=4, compression.group=8"]
    assert "1..16" in sweep.skipped[0][1]
    assert len(sweep.rows) == 3
    with pytest.raises(ConfigError, match="every variant"):
        run_sweep(pipe.config, grid_variants([parse_set_option("compression.bits_per_dim=3")]), tmp_path / "s2", ws)


def test_a_group_that_does_not_divide_a_block_is_refused_before_running(pq_run, tmp_path):
    pipe, _, ws = pq_run
    # tiny: K = 4 Gaussians of D = 16 PCA dims + 2 coordinates = 72 values a block; G = 16 does not divide it
    cfg = pipe.config.copy().update({"compression.group": 16, "compression.bits_per_dim": 0.5})
    with pytest.raises(ConfigError, match=r"compression.group = 16 must divide the K x D = 4 x 18 dimensions .*"
                                          r"position coordinates \(gmm.position_scale\)"):
        Pipeline(cfg, tmp_path / "ws2").check()
    # without the coordinates, 4 x 16 = 64 values: accepted
    Pipeline(cfg.copy().update({"gmm.position_scale": 0.0}), tmp_path / "ws3").check()


def test_cli_prints_compression_and_hubness(pq_run, tmp_path, capsys):
    from fvstudio.cli import main

    pipe, _, ws = pq_run
    cfg = pipe.config.copy().update({"classifier.kind": "knn", "classifier.knn_k": 3})
    path = tmp_path / "knn.toml"
    path.write_text(cfg.to_toml_string())
    assert main(["run", str(path), "--workspace", str(ws), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "compression: b = 0.5 bits/dim, G = 8" in out and "bytes per image" in out
    assert "hubness (split 0, sift, k = 3): uncompressed: largest N_k" in out


def test_cancel_during_compress_leaves_no_partial_codes(pq_run, tmp_path):
    from fvstudio.pipeline import CancelToken, Cancelled

    pipe, first, ws = pq_run
    cfg = pipe.config.copy().update({"compression.seed": 7})  # new codes, the same FVs
    token = CancelToken()

    def progress(p):
        if p.values.get("step") == "compress" and p.values.get("step_fraction", 0) > 0:
            token.cancel()  # inside the step: while the codebooks are learned

    again = Pipeline(cfg, ws)
    with pytest.raises(Cancelled):
        again.run_all(progress=progress, cancel=token)
    assert again.status("encode") == "cached" and again.status("compress") != "cached"
    assert [p for p in ws.rglob("*") if ".tmp" in p.name] == []
    done = Pipeline(cfg, ws).run_all()
    fresh = Pipeline(cfg, tmp_path / "fresh").run_all()
    assert done.metrics == fresh.metrics and done.compression == fresh.compression


def test_fv_bytes_counts_the_position_coordinates():
    from fvstudio.pipeline import PipelineConfig
    from fvstudio.pipeline.compression_views import fv_bytes

    base = {"descriptors.channels": ["sift"], "gmm.n_components": 256, "encoder.pyramid": "1x1+3x1"}
    # 4 regions x K = 256 x (mean + sigma) x D, 4 bytes each: D = 64 PCA dims, + 2 coordinates by default
    assert fv_bytes(PipelineConfig({**base, "gmm.position_scale": 0.0})) == 4 * 4 * 256 * 2 * 64
    assert fv_bytes(PipelineConfig(base)) == 4 * 4 * 256 * 2 * 66
    # raw 128-d SIFT (no PCA) with the coordinates; the weight gradients are one value per Gaussian
    assert fv_bytes(PipelineConfig({**base, "pca.n_components": 0, "encoder.gradients": "wms"})) == \
        4 * 4 * 256 * (1 + 2 * 130)
