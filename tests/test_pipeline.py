"""Pipeline: config schema/validation/TOML, step caching and re-use, results, cancel, VOC layout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fvstudio.pipeline import STEPS, Pipeline, PipelineConfig, load_config
from fvstudio.pipeline.config import SCHEMA, ConfigError, parse_pyramid, parse_value


# --------------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------------
def test_defaults_are_the_papers():
    c = PipelineConfig()
    assert c.get("descriptors.channels") == ["sift", "lcs"]  # both, late-fused (Sec. 3.2); chosen by CV
    assert (c.get("descriptors.patch"), c.get("descriptors.step"), c.get("descriptors.scales")) == (24, 4, 5)
    assert c.get("dataset.max_pixels") == 100_000
    assert c.get("pca.n_components") == 64 and c.get("gmm.n_components") == 256
    assert c.get("encoder.gradients") == "ms" and c.get("encoder.fim") == "closed"
    assert c.get("encoder.power") == 0.5 and c.get("encoder.lp") == 2.0
    assert parse_pyramid(c.get("encoder.pyramid")) == [(1, 1), (3, 1)]
    assert c.get("classifier.loss") == "hinge" and c.get("classifier.select_lambda") is True


def test_schema_describes_every_key():
    schema = PipelineConfig.schema()
    assert list(schema) == list(SCHEMA)
    for key, d in schema.items():
        assert d["type"] in ("int", "float", "bool", "str", "path", "list[str]", "list[float]")
        assert d["help"] and d["section"] == key.split(".")[0]
        if d["type"] in ("int", "float"):
            assert "min" in d and "max" in d and d["min"] <= d["default"] <= d["max"]
    assert schema["encoder.kind"]["choices"] == ["fisher", "soft_bow", "vlad"]
    assert "Sec." in schema["gmm.n_components"]["help"]


def test_set_get_validate_and_copy():
    c = PipelineConfig()
    c.set("gmm.n_components", 64)
    assert c.get("gmm.n_components") == 64
    d = c.copy()
    d.set("gmm.n_components", 16)
    assert c.get("gmm.n_components") == 64
    with pytest.raises(ValueError, match="gmm.n_components"):
        c.set("gmm.n_components", 0)
    with pytest.raises(ValueError, match="gmm.n_components"):
        c.set("gmm.n_components", "64")
    with pytest.raises(ValueError, match="did you mean 'gmm.n_components'"):
        c.set("gmm.n_componets", 3)
    with pytest.raises(ValueError, match="encoder.kind"):
        c.set("encoder.kind", "bow")
    with pytest.raises(ValueError, match="descriptors.channels"):
        c.set("descriptors.channels", ["sift", "hog"])
    with pytest.raises(ValueError, match="encoder.pyramid"):
        c.set("encoder.pyramid", "3 stripes")
    with pytest.raises(ValueError, match="classifier.select_lambda"):
        c.set("classifier.select_lambda", 1)
    c.set("encoder.lp", 1)  # ints are accepted for floats
    assert c.get("encoder.lp") == 1.0 and isinstance(c.get("encoder.lp"), float)
    assert parse_value("descriptors.channels", "sift+lcs") == ["sift", "lcs"]
    assert parse_value("classifier.averaging", "off") is False


def test_toml_roundtrip_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    text = ('[dataset]\nroot = "data"\ntrain_list = "train.txt"\n\n[gmm]\nn_components = 32\n\n'
            '[encoder]\nkind = "vlad"\n')
    (tmp_path / "cfg.toml").write_text(text)
    c = PipelineConfig.from_toml(tmp_path / "cfg.toml")
    assert c.get("dataset.root") == str((tmp_path / "data").resolve())
    assert c.get("dataset.train_list") == str((tmp_path / "train.txt").resolve())
    assert c.get("gmm.n_components") == 32 and c.get("encoder.kind") == "vlad"
    assert c.get("pca.n_components") == 64  # unspecified -> default
    c.to_toml(tmp_path / "out.toml")
    assert PipelineConfig.from_toml(tmp_path / "out.toml") == c
    assert PipelineConfig.from_dict(c.to_dict()) == c
    assert load_config(c.to_dict(), {"gmm.n_components": 8}).get("gmm.n_components") == 8
    only = PipelineConfig.from_toml_string(c.to_toml_string(only_changed=True))
    assert only == c


@pytest.mark.parametrize("text, needle", [
    ("[gmm]\nn_components = -1\n", "gmm.n_components"),
    ("[gmm]\nK = 3\n", "gmm.K"),
    ("[gmmm]\nn_components = 3\n", "gmmm"),
    ("[gmm\n", "not valid TOML"),
    ("n_components = 3\n", "n_components"),
])
def test_bad_toml_names_file_and_key(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_toml(path)
    assert needle in str(info.value) and "bad.toml" in str(info.value)


# --------------------------------------------------------------------------------------------------
# end to end on small copies of the sample data
# --------------------------------------------------------------------------------------------------
CLASSES = ("checkers", "dots", "moss", "stripes")


def tiny_config(root, **extra) -> PipelineConfig:
    c = PipelineConfig()
    c.update({"dataset.root": str(root), "dataset.max_pixels": 20_000,
              "descriptors.scales": 1, "descriptors.step": 6, "pca.n_components": 16, "pca.sample": 5_000,
              "gmm.n_components": 4, "gmm.sample": 5_000, "gmm.max_iter": 20,
              "classifier.lam_grid": [1e-4, 1e-3], "classifier.epochs": 5, "descriptors.channels": ["sift"]})
    c.update(extra)
    return c


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory, sample_data_dir):
    src = Path(sample_data_dir) / "textures"
    if not src.is_dir():
        pytest.skip("sample_data/textures is not there")
    root = tmp_path_factory.mktemp("ds") / "textures"
    train, test = [], []
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        files = sorted((src / cls).iterdir())[:8]
        for j, f in enumerate(files):
            shutil.copy(f, root / cls / f.name)
            (train if j < 5 else test).append(f"{cls}/{f.name}")
    (root.parent / "train.txt").write_text("\n".join(train) + "\n")
    (root.parent / "test.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="module")
def cached_run(folder_dataset, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    cfg = tiny_config(folder_dataset, **{"dataset.train_list": str(folder_dataset.parent / "train.txt"),
                                         "dataset.test_list": str(folder_dataset.parent / "test.txt")})
    pipe = Pipeline(cfg, ws)
    assert all(pipe.status(s) == "not run" for s in STEPS)
    events = []
    result = pipe.run_all(progress=events.append)
    return pipe, result, events


def test_run_all_results_and_progress(cached_run):
    pipe, result, events = cached_run
    assert [pipe.status(s) for s in STEPS] == ["cached"] * len(STEPS)
    assert set(result.metrics) >= {"mean_per_class_accuracy", "accuracy", "top5_accuracy"}
    assert 0.25 < result.metrics["mean_per_class_accuracy"] <= 1.0  # 4 classes: chance is 0.25
    assert list(result.per_class) == list(CLASSES)
    assert result.confusion.shape == (4, 4) and result.confusion.sum() == 4 * 3
    assert len(result.predictions) == 12 and set(result.predictions[0]) >= {"id", "true", "predicted", "scores"}
    assert result.scores.shape == (12, 4) and result.targets.shape == (12, 4)
    assert set(result.timings) == set(STEPS) and all(result.timings[s] > 0 for s in STEPS)
    # progress: every step reported, overall fraction monotone and ends at 1
    steps_seen = [e.values["step"] for e in events]
    assert [s for i, s in enumerate(steps_seen) if i == 0 or steps_seen[i - 1] != s] == list(STEPS)
    fr = [e.fraction for e in events]
    assert all(b >= a - 1e-9 for a, b in zip(fr, fr[1:])) and fr[-1] == pytest.approx(1.0)
    json.dumps(result.to_json_dict())
    # artifacts for diagnostics
    assert pipe.artifact("pca").components_.shape == (16, 128)
    assert pipe.artifact("gmm").means_.shape == (4, 16 + 2)  # PCA dims + the 2 position coordinates
    enc = pipe.artifact("encode")
    assert enc.fvs.shape == (32, 2 * 18 * 4 * 4) and len(enc.ids) == 32
    assert np.allclose(np.linalg.norm(enc.fvs[:, : 2 * 18 * 4], axis=1), 1.0, atol=1e-4)
    clf = pipe.artifact("classifier")
    assert np.allclose(clf.test_scores[0], result.scores)


def test_changing_only_the_classifier_reuses_everything_before(cached_run):
    pipe, first, _ = cached_run
    computed = dict(pipe.computed)
    pipe.config.set("classifier.epochs", 3)
    assert [pipe.status(s) for s in STEPS] == ["cached"] * 5 + ["stale", "stale"]
    res = pipe.run_all()
    assert res.cached_steps == ["descriptors", "pca", "gmm", "encode", "compress"]
    assert {s: pipe.computed[s] - computed.get(s, 0) for s in STEPS} == \
        {"descriptors": 0, "pca": 0, "gmm": 0, "encode": 0, "compress": 0, "classifier": 1, "evaluate": 1}
    # a fresh Pipeline object on the same workspace finds everything cached
    again = Pipeline(pipe.config.copy(), pipe.workspace)
    loaded = again.result()  # from the cache, before any run
    assert loaded.metrics == res.metrics and loaded.cached_steps == list(STEPS)
    assert set(loaded.timings) == set(STEPS) and loaded.timings["classifier"] > 0
    assert again.run_all().metrics == res.metrics and sum(again.computed.values()) == 0
    # back to the first config: a cache hit with the first metrics
    pipe.config.set("classifier.epochs", 5)
    assert pipe.status("evaluate") == "cached"
    assert pipe.run_all().metrics == first.metrics
    # an encoder change re-uses descriptors, PCA and GMM
    pipe.config.set("encoder.power", 0.0)
    before = dict(pipe.computed)
    pipe.run_all()
    assert {s: pipe.computed[s] - before.get(s, 0) for s in STEPS} == \
        {"descriptors": 0, "pca": 0, "gmm": 0, "encode": 1, "compress": 1, "classifier": 1, "evaluate": 1}
    pipe.config.set("encoder.power", 0.5)


def test_contrast_threshold_re_extracts_and_invalidates_everything_after(cached_run):
    from fvstudio.pipeline.steps import descriptor_params

    pipe, first, _ = cached_run
    assert descriptor_params(pipe.config, "sift")["contrast_threshold"] == 0.005  # the default, VLFeat PHOW's
    assert "contrast_threshold" not in descriptor_params(pipe.config, "lcs")  # SIFT only
    off = pipe.config.copy()
    off.set("descriptors.contrast_threshold", 0.0)
    assert "contrast_threshold" not in descriptor_params(off, "sift")  # off: the stores made before it keep their keys
    cfg = pipe.config.copy()
    cfg.set("descriptors.contrast_threshold", 0.02)
    other = Pipeline(cfg, pipe.workspace)
    assert [other.status(s) for s in STEPS] == ["stale"] * len(STEPS)
    assert other.store("sift").key != pipe.store("sift").key
    res = other.run_all()
    assert other.computed["descriptors"] == other.computed["evaluate"] == 1
    assert 0.25 < res.metrics["mean_per_class_accuracy"] <= 1.0
    assert [pipe.status(s) for s in STEPS] == ["cached"] * len(STEPS)  # the first config's caches are intact


def test_cancel_mid_run_leaves_caches_consistent(folder_dataset, tmp_path):
    from fvstudio.pipeline import CancelToken, Cancelled

    cfg = tiny_config(folder_dataset, **{"dataset.split": "random", "dataset.n_train": 5})
    token = CancelToken()

    def progress(p):
        if p.values.get("step") == "encode" and p.values.get("step_fraction", 0) > 0.2:
            token.cancel()

    pipe = Pipeline(cfg, tmp_path / "ws")
    pipe.run_step("pca")  # prerequisites only
    assert [pipe.status(s) for s in STEPS] == ["cached", "cached"] + ["not run"] * 5
    with pytest.raises(Cancelled):
        pipe.run_all(progress=progress, cancel=token)
    assert [pipe.status(s) for s in STEPS[:3]] == ["cached"] * 3
    assert pipe.status("encode") == "not run"
    leftovers = [p for p in (tmp_path / "ws").rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    resumed = Pipeline(cfg, tmp_path / "ws").run_all()
    fresh = Pipeline(cfg, tmp_path / "ws2").run_all()
    assert resumed.metrics == fresh.metrics
    assert np.array_equal(resumed.scores, fresh.scores)


def test_random_split_repeats_report_mean_and_std(folder_dataset, tmp_path):
    cfg = tiny_config(folder_dataset, **{"dataset.split": "random", "dataset.n_train": 4, "dataset.n_test": 3,
                                         "dataset.repeats": 3, "classifier.select_lambda": False})
    pipe = Pipeline(cfg, tmp_path / "ws")
    res = pipe.run_all()
    assert len(pipe.splits) == 3 and len(res.per_split) == 3
    vals = [p["accuracy"] for p in res.per_split]
    assert res.metrics["accuracy"] == pytest.approx(np.mean(vals))
    assert res.metrics_std["accuracy"] == pytest.approx(np.std(vals, ddof=1))
    assert len(res.predictions) == 3 * 4 * 3


def test_each_split_learns_its_vocabulary_from_its_own_training_images(folder_dataset, tmp_path):
    cfg = tiny_config(folder_dataset, **{"dataset.split": "random", "dataset.n_train": 4, "dataset.n_test": 3,
                                         "dataset.repeats": 2, "classifier.select_lambda": False})
    pipe = Pipeline(cfg, tmp_path / "ws")
    pipe.run_all()
    keys = pipe.keys()
    for step in ("pca", "gmm", "encode"):
        assert len(set(keys[step]["sift"])) == 2, step
    ids = pipe.dataset.ids
    for s, split in enumerate(pipe.splits):
        # the vocabulary of split s never saw its test images; its FVs cover exactly its images
        assert set(pipe.context().fit_indices(s).tolist()) == set(np.asarray(split.train).tolist())
        assert not set(pipe.context().fit_indices(s).tolist()) & set(np.asarray(split.test).tolist())
        enc = pipe.artifact("encode", split=s)
        assert sorted(enc.ids) == sorted(ids[int(i)] for i in np.concatenate([split.train, split.test]))
        assert pipe.cache.manifest("gmm", keys["gmm"]["sift"][s])["split"] == s
    g0, g1 = pipe.artifact("gmm", split=0), pipe.artifact("gmm", split=1)
    assert not np.allclose(g0.means_, g1.means_)
    with pytest.raises(ValueError, match="split must be in 0..1"):
        pipe.artifact("gmm", split=2)
    # one split of the same training images re-uses split 0's vocabulary and FVs from the cache
    lists = tmp_path / "lists"
    lists.mkdir()
    from fvstudio.data.datasets import write_split_list

    sp = pipe.splits[0]
    write_split_list(pipe.dataset, sp.train, lists / "train.txt")
    write_split_list(pipe.dataset, sp.test, lists / "test.txt")
    one = Pipeline(tiny_config(folder_dataset, **{"dataset.train_list": str(lists / "train.txt"),
                                                  "dataset.test_list": str(lists / "test.txt"),
                                                  "classifier.select_lambda": False}), tmp_path / "ws")
    assert [one.status(s) for s in ("pca", "gmm", "encode")] == ["cached"] * 3


def test_two_channels_late_and_early_fusion(folder_dataset, tmp_path):
    cfg = tiny_config(folder_dataset, **{"dataset.split": "random", "dataset.n_train": 5,
                                         "descriptors.channels": ["sift", "lcs"],
                                         "classifier.select_lambda": False})
    pipe = Pipeline(cfg, tmp_path / "ws")
    late = pipe.run_all()
    w = late.extra["fusion_weights"][0]
    assert 0.0 <= w <= 1.0
    clf = pipe.artifact("classifier")
    assert set(clf.channel_scores[0]) == {"sift", "lcs"}
    assert np.allclose(clf.test_scores[0], w * clf.channel_scores[0]["sift"] + (1 - w) * clf.channel_scores[0]["lcs"],
                       atol=1e-5)
    assert pipe.artifact("gmm", channel="lcs").means_.shape == (4, 16 + 2)
    pipe.config.set("fusion.mode", "early")
    before = dict(pipe.computed)
    early = pipe.run_all()
    assert pipe.computed["encode"] == before["encode"]  # FVs re-used
    assert set(pipe.artifact("classifier").channel_scores[0]) == {"early"}
    assert early.extra["fusion_weights"] == [None]


def test_voc_layout_with_defaults_for_split(sample_data_dir, tmp_path):
    root = Path(sample_data_dir) / "voc_mini"
    if not root.is_dir():
        pytest.skip("sample_data/voc_mini is not there")
    cfg = tiny_config(root, **{"classifier.select_lambda": False})
    pipe = Pipeline(cfg, tmp_path / "ws")
    assert pipe.dataset.multilabel
    assert len(pipe.splits) == 1 and len(pipe.splits[0].train) == 24 and len(pipe.splits[0].test) == 24
    res = pipe.run_all()
    assert set(res.metrics) == {"map"} and res.primary_metric == "map"
    assert set(res.per_class) == set(pipe.dataset.class_names)
    assert res.confusion is None and res.targets.shape == (24, len(pipe.dataset.class_names))
    assert 0.0 < res.metrics["map"] <= 1.0


def test_bad_dataset_root_is_named(tmp_path):
    cfg = PipelineConfig().set("dataset.root", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="dataset.root"):
        Pipeline(cfg, tmp_path / "ws").run_all()
    assert Pipeline(cfg, tmp_path / "ws").status("pca") == "not run"


def test_lambda_rules_hand_computed():
    from types import SimpleNamespace

    from fvstudio.engine.model_selection import choose_lambda

    grid = np.array([1e-6, 1e-5, 1e-4, 1e-3])
    scores = np.array([[0.50, 0.60, 0.70],   # mean 0.60, the best; SE = 0.1 / sqrt(3) = 0.0577
                       [0.55, 0.58, 0.60],   # mean 0.5767 >= 0.60 - 0.0577
                       [0.45, 0.50, 0.55],   # mean 0.50 < 0.5423
                       [0.40, 0.40, 0.40]])
    search = SimpleNamespace(best_lam=1e-6, grid=grid, scores=scores)
    assert choose_lambda(search, "best") == 1e-6
    assert choose_lambda(search, "one_se") == 1e-5
    scores[2] = [0.55, 0.56, 0.57]  # mean 0.56 >= 0.5423 -> the larger lambda wins
    assert choose_lambda(search, "one_se") == 1e-4


def test_patch_must_be_a_multiple_of_four():
    """dense_sift splits the patch into 4x4 bins: the config rejects other sides up front, naming the key."""
    cfg = PipelineConfig.from_dict({})
    with pytest.raises(ValueError, match="descriptors.patch must be a multiple of 4"):
        cfg.set("descriptors.patch", 26)
    cfg.set("descriptors.patch", 32)
    assert cfg.get("descriptors.patch") == 32
    assert PipelineConfig.schema()["descriptors.patch"]["multiple_of"] == 4


def test_encode_manifest_and_progress_name_the_split_index(folder_dataset, tmp_path):
    # a reused name once overwrote the split index with a list of image shapes inside the encode loop
    cfg = tiny_config(folder_dataset, **{"dataset.split": "random", "dataset.n_train": 4, "dataset.n_test": 3,
                                         "dataset.repeats": 2, "classifier.select_lambda": False,
                                         "encoder.fim": "empirical"})
    pipe = Pipeline(cfg, tmp_path / "ws")
    events = []
    pipe.run_step("encode", progress=events.append)
    keys = pipe.keys()
    for s in range(2):
        assert pipe.cache.manifest("encode", keys["encode"]["sift"][s])["split"] == s
    tagged = [p.values["split"] for p in events if p.values.get("step") == "encode" and "split" in p.values]
    assert tagged and set(tagged) == {0, 1}


def test_fixing_an_image_in_place_invalidates_every_step_after_descriptors(folder_dataset, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(folder_dataset, root)
    cfg = tiny_config(root, **{"dataset.split": "random", "dataset.n_train": 4, "dataset.n_test": 3,
                               "classifier.select_lambda": False})
    pipe = Pipeline(cfg, tmp_path / "ws")
    victim = Path(pipe.dataset.paths[int(pipe.splits[0].train[0])])  # a training image: PCA and GMM read it
    good = victim.read_bytes()
    victim.write_bytes(b"not an image")
    pipe.run_all()
    assert all(pipe.status(s) == "cached" for s in STEPS)
    victim.write_bytes(good)  # fixed in place: a new size, so the store re-extracts it
    fresh = Pipeline(cfg, tmp_path / "ws")
    assert [fresh.status(s) for s in STEPS[1:]] == ["stale"] * 6
    fresh.run_all()
    assert fresh.computed["pca"] == fresh.computed["evaluate"] == 1
