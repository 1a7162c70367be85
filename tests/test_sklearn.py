"""The engine inside scikit-learn (issue 15): every engine estimator passes scikit-learn's own estimator checks,
and the Fisher Vector pipeline runs as a scikit-learn Pipeline / GridSearchCV with the native API's numbers."""
import warnings
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fvstudio.engine.dual_svm import OneVsRestDualSVM  # noqa: E402
from fvstudio.engine.estimator import NotFittedError  # noqa: E402
from fvstudio.engine.gmm import DiagonalGMM  # noqa: E402
from fvstudio.engine.knn import KNNClassifier  # noqa: E402
from fvstudio.engine.pca import PCA  # noqa: E402
from fvstudio.engine.pq import ProductQuantizer  # noqa: E402
from fvstudio.engine.svm import OneVsRestSGD  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Instances small enough for the checks' toy data (a few features, tens of samples).
ENGINE_ESTIMATORS = [PCA(n_components=2), DiagonalGMM(n_components=2), OneVsRestSGD(), OneVsRestDualSVM(),
                     ProductQuantizer(bits_per_dim=2, group=1), KNNClassifier(k=3)]

_BINARY = ("for 2 classes decision_function returns (N, 2) scores, one column per class (one-vs-rest trains "
           "both classes; the pipeline's per-class AP and top-k read every column), where scikit-learn expects "
           "(N,); the multi-class part of the check runs first and passes")
_Y_2D = ("a 2-D y is the engine's (N, C) {+1, -1, 0} multi-label target matrix (VOC, 0 = 'difficult'), not a "
         "column of labels to flatten")


def _expected_failures(estimator):
    """Checks that cannot apply to an engine estimator, each with the reason."""
    if isinstance(estimator, (OneVsRestSGD, OneVsRestDualSVM)):
        return {"check_classifiers_train": _BINARY, "check_classifiers_classes": _BINARY,
                "check_supervised_y_2d": _Y_2D}
    if isinstance(estimator, KNNClassifier):
        votes = ("for 2 classes decision_function returns the (N, 2) share of the k neighbours' votes per class "
                 "(rows sum to 1; hubness and top-k read every column), where scikit-learn expects (N,); the "
                 "multi-class part of the check runs first and passes")
        return {"check_classifiers_train": votes, "check_classifiers_classes": votes}
    return {}


def _with_transformers():
    # The two pipeline transformers take lists (of images, of descriptor sets), not 2-D arrays: their tag
    # input_tags.two_d_array=False makes scikit-learn skip every array-based check (it says so with a
    # SkipTestWarning) and run the API ones (cloning); the tests below cover their behaviour.
    from fvstudio.transformers import DenseSIFT, FisherVectorEncoder

    return ENGINE_ESTIMATORS + [DenseSIFT(), FisherVectorEncoder()]


with warnings.catch_warnings():  # "does not inherit from BaseEstimator": by design (engine/estimator.py)
    warnings.filterwarnings("ignore", message="Estimator .* does not inherit from", category=UserWarning)
    warnings.filterwarnings("ignore", message="Can't test estimator")
    _CHECKS = parametrize_with_checks(_with_transformers(), expected_failed_checks=_expected_failures)


@_CHECKS
def test_engine_estimator_passes_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ENGINE_ESTIMATORS, ids=lambda e: type(e).__name__)
def test_not_fitted_error_is_sklearns(estimator):
    from sklearn.exceptions import NotFittedError as SkNotFittedError

    X = np.random.default_rng(0).normal(size=(5, 2))
    fresh = clone(estimator)
    method = getattr(fresh, "transform", None) or fresh.predict
    with pytest.raises(SkNotFittedError, match=f"this {type(estimator).__name__} is not fitted yet"):
        method(X)
    with pytest.raises(NotFittedError):  # the engine's own class catches it too
        method(X)


def test_binary_scores_keep_one_column_per_class_and_agree_with_predict():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(-2, 1, (30, 3)), rng.normal(2, 1, (30, 3))])
    y = np.array(["neg"] * 30 + ["pos"] * 30)
    for model in (OneVsRestSGD(), OneVsRestDualSVM(), KNNClassifier(k=3)):
        model.fit(X, y)
        scores = model.decision_function(X)
        assert scores.shape == (60, 2) and list(model.classes_) == ["neg", "pos"]
        np.testing.assert_array_equal(model.classes_[scores.argmax(1)], model.predict(X))
        assert model.score(X, y) > 0.95


# -- the Fisher Vector pipeline as scikit-learn transformers -------------------------------------------------
import pickle  # noqa: E402

from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402

import fvstudio.transformers as transformers  # noqa: E402
from fvstudio.data.images import ImageLoadError, load_image  # noqa: E402
from fvstudio.engine.descriptors import extract_channel  # noqa: E402
from fvstudio.engine.fisher import FisherEncoder  # noqa: E402
from fvstudio.transformers import DenseSIFT, FisherVectorEncoder  # noqa: E402

# small images and a coarse grid keep the file fast: ~400 descriptors per image
SIFT = {"max_pixels": 20_000, "step": 8}
FV = {"pca_dims": 16, "sample": 4_000}
CLASSES = ("bricks", "dots", "stripes", "moss")


@pytest.fixture(scope="module")
def images(sample_data_dir):
    """(train paths, train labels, test paths, test labels): 4 texture classes, 9 + 3 images each."""
    tr, ytr, te, yte = [], [], [], []
    for c, name in enumerate(CLASSES):
        files = sorted(str(p) for p in (sample_data_dir / "textures" / name).glob("*.jpg"))[:12]
        tr += files[:9]
        ytr += [c] * 9
        te += files[9:]
        yte += [c] * 3
    return tr, np.array(ytr), te, np.array(yte)


def _native_sets(paths):
    return [extract_channel("sift", load_image(p, SIFT["max_pixels"]), step=SIFT["step"]).descriptors for p in paths]


def _native_fv(train_sets, sets, K, n=FV["sample"], dims=FV["pca_dims"], seed=0):
    """The native engine calls: uniform sample of all training descriptors, PCA, GMM, FisherEncoder."""
    allX = np.concatenate(train_sets)
    X = allX if n >= len(allX) else allX[np.sort(np.random.default_rng(seed).choice(len(allX), n, replace=False))]
    pca = PCA(dims, seed=seed).fit(X)
    gmm = DiagonalGMM(K, seed=seed).fit(pca.transform(X))
    return FisherEncoder(gmm).encode_batch([pca.transform(s) for s in sets])


def test_dense_sift_is_the_native_extraction_on_paths_and_arrays(images):
    paths = images[0][:2]
    out = DenseSIFT(**SIFT).fit_transform(paths)
    native = _native_sets(paths)
    assert len(out) == 2 and all(o.dtype == np.float32 and o.shape[1] == 128 for o in out)
    for a, b in zip(out, native):
        np.testing.assert_array_equal(a, b)
    rgb = load_image(paths[0], SIFT["max_pixels"])
    np.testing.assert_array_equal(DenseSIFT(**SIFT).transform([rgb])[0], native[0])
    rich = DenseSIFT(**SIFT, output="descriptors", n_jobs=2).transform(paths)
    np.testing.assert_array_equal(rich[1].descriptors, native[1])
    assert rich[1].positions.shape == (len(native[1]), 2)


def test_dense_sift_names_an_unreadable_image(tmp_path, images):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        DenseSIFT(**SIFT).transform([images[0][0], str(bad)])
    with pytest.raises(ValueError, match="sequence of images"):
        DenseSIFT().transform(images[0][0])
    with pytest.raises(ValueError, match="output must be one of"):
        DenseSIFT(output="codes").fit()


def test_fisher_vector_encoder_is_the_native_encoding(images):
    train_sets = _native_sets(images[0][:12])
    test_sets = _native_sets(images[2][:4])
    enc = FisherVectorEncoder(3, **FV).fit(train_sets)
    out = enc.transform(test_sets)
    assert out.dtype == np.float32 and out.shape == (4, 2 * 16 * 3) == (4, enc.dim)
    np.testing.assert_array_equal(out, _native_fv(train_sets, test_sets, 3))
    # fewer descriptors than the sample: all of them are used
    few = FisherVectorEncoder(2, pca_dims=8, sample=10**6).fit(train_sets[:2])
    assert few.n_sampled_ == sum(len(s) for s in train_sets[:2])
    np.testing.assert_array_equal(few.transform(test_sets), _native_fv(train_sets[:2], test_sets, 2, 10**6, 8))
    again = pickle.loads(pickle.dumps(enc))
    np.testing.assert_array_equal(again.transform(test_sets), out)
    with pytest.raises(ValueError, match="expecting 128 features"):
        enc.transform([s[:, :64] for s in test_sets])
    with pytest.raises(ValueError, match="sequence of"):
        enc.transform(test_sets[0])
    with pytest.raises(ValueError, match="pyramid needs descriptor positions"):
        FisherVectorEncoder(2, pyramid=[(1, 1), (3, 1)], **FV).fit(train_sets)
    with pytest.raises(NotFittedError):
        FisherVectorEncoder().transform(test_sets)


def test_fisher_vector_encoder_spatial_pyramid_from_dense_descriptors(images):
    rich = DenseSIFT(**SIFT, output="descriptors").transform(images[0][:6])
    enc = FisherVectorEncoder(2, pyramid=[(1, 1), (3, 1)], **FV).fit(rich)
    out = enc.transform(rich[:2])
    assert out.shape == (2, 4 * 2 * 16 * 2)
    sets = [r.descriptors for r in rich]
    plain = FisherVectorEncoder(2, **FV).fit(sets)
    native = FisherEncoder(plain.gmm_, pyramid=[(1, 1), (3, 1)]).encode_batch(
        [plain.pca_.transform(r.descriptors) for r in rich[:2]], [r.positions for r in rich[:2]],
        [r.image_shape for r in rich[:2]])
    np.testing.assert_array_equal(out, native)


def test_fisher_vector_encoder_with_xy_is_the_native_augmented_encoding(images):
    from fvstudio.engine.spatial import append_xy

    rich = DenseSIFT(**SIFT, output="descriptors").transform(images[0][:6])
    enc = FisherVectorEncoder(2, position_scale=0.3, **FV).fit(rich)
    assert enc.gmm_.means_.shape == (2, 18)
    out = enc.transform(rich[:2])
    assert out.shape == (2, 2 * 18 * 2)
    aug = [append_xy(enc.pca_.transform(r.descriptors), r.positions, r.image_shape, 0.3) for r in rich]
    allX = np.concatenate(aug)
    X = allX if len(allX) <= FV["sample"] else \
        allX[np.sort(np.random.default_rng(0).choice(len(allX), FV["sample"], replace=False))]
    gmm = DiagonalGMM(2, seed=0).fit(X)
    np.testing.assert_array_equal(enc.gmm_.means_, gmm.means_)
    np.testing.assert_array_equal(out, FisherEncoder(gmm).encode_batch(aug[:2]))
    with pytest.raises(ValueError, match="position_scale > 0 appends patch positions"):
        FisherVectorEncoder(2, position_scale=0.3, **FV).fit([r.descriptors for r in rich])


def test_grid_search_over_K_selects_refits_and_equals_the_native_api(images, tmp_path, monkeypatch):
    train, ytr, test, yte = images
    calls = []
    real = transformers.load_image  # counts the images read and described
    monkeypatch.setattr(transformers, "load_image", lambda *a, **k: calls.append(1) or real(*a, **k))

    def search(memory):
        calls.clear()
        pipe = Pipeline([("densesift", DenseSIFT(**SIFT)), ("fishervectorencoder", FisherVectorEncoder(**FV)),
                         ("onevsrestsgd", OneVsRestSGD())], memory=memory)
        gs = GridSearchCV(pipe, {"fishervectorencoder__n_components": [2, 4]}, cv=3).fit(train, ytr)
        return gs, len(calls)

    gs, n_cached = search(str(tmp_path / "cache"))
    scores = gs.cv_results_["mean_test_score"]
    assert gs.best_params_["fishervectorencoder__n_components"] == [2, 4][int(np.argmax(scores))]
    # descriptors of each fold's training images are extracted once for both K (Pipeline(memory=...)):
    # 3 folds x 24 training images once, + 2 K x 3 folds x 12 validation images, + 36 for the refit
    assert n_cached == 3 * 24 + 2 * 3 * 12 + 36
    gs_plain, n_plain = search(None)
    assert n_plain == 2 * 3 * 24 + 2 * 3 * 12 + 36
    np.testing.assert_array_equal(gs_plain.cv_results_["mean_test_score"], scores)

    # the refit model is the native pipeline trained on all the training images with the selected K
    K = gs.best_params_["fishervectorencoder__n_components"]
    best = gs.best_estimator_
    assert best.named_steps["fishervectorencoder"].gmm_.n_components == K
    train_sets, test_sets = _native_sets(train), _native_sets(test)
    fv_train, fv_test = _native_fv(train_sets, train_sets, K), _native_fv(train_sets, test_sets, K)
    native = OneVsRestSGD().fit(fv_train, ytr)
    np.testing.assert_array_equal(best.decision_function(test), native.decision_function(fv_test))
    np.testing.assert_array_equal(gs.predict(test), native.predict(fv_test))
    assert gs.score(test, yte) == pytest.approx(np.mean(native.predict(fv_test) == yte))


def test_make_pipeline_trains_from_image_paths_and_clones(images):
    train, ytr, test, yte = images
    pipe = make_pipeline(DenseSIFT(**SIFT), FisherVectorEncoder(4, **FV), OneVsRestSGD())
    assert pipe.fit(train, ytr) is pipe
    assert pipe.score(test, yte) > 0.5  # 4 classes: chance is 0.25
    fresh = clone(pipe)
    assert fresh.get_params()["fishervectorencoder__n_components"] == 4
    assert not fresh.named_steps["fishervectorencoder"].__sklearn_is_fitted__()


def test_engine_and_cli_work_without_sklearn():
    """scikit-learn stays optional: with its import blocked, the CLI and the transformers import, the
    estimators fit, and the not-fitted error is the engine's own class."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import numpy as np, fvstudio.cli, fvstudio.transformers\n"
            "from fvstudio.engine.pca import PCA\n"
            "from fvstudio.engine.estimator import NotFittedError\n"
            "try:\n    PCA(2).transform(np.zeros((3, 2)))\nexcept NotFittedError as e:\n    print(type(e).__module__)\n"
            "print(PCA(2).fit(np.random.rand(10, 3)).transform(np.random.rand(2, 3)).dtype)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["fvstudio.engine.estimator", "float32"]


def test_set_output_and_feature_names(images):
    train_sets = _native_sets(images[0][:8])
    enc = FisherVectorEncoder(3, pyramid=None, **FV).fit(train_sets)
    names = enc.get_feature_names_out()
    assert names.shape == (enc.dim,) and len(set(names)) == enc.dim
    layout = enc.encoder_.block_layout()
    first = layout[1]  # the second block: its first name says which block, region and Gaussian it is
    assert names[first.offset].startswith(f"{first.name}_r{first.region}_k0")
    base = enc.transform(train_sets[:2])
    assert enc.set_output(transform="default") is enc
    np.testing.assert_array_equal(enc.transform(train_sets[:2]), base)
    assert clone(enc)._sklearn_output_config == {"transform": "default"}
    assert list(PCA(4).fit(np.random.default_rng(0).random((50, 6))).get_feature_names_out()) == \
        ["pca0", "pca1", "pca2", "pca3"]
    with pytest.raises(ValueError, match="must be one of"):
        enc.set_output(transform="xml")
    with pytest.raises(ValueError, match="list of per-image descriptor arrays"):
        DenseSIFT().set_output(transform="pandas")
    # a whole Pipeline can be configured (default output) and still trains from paths
    pipe = make_pipeline(DenseSIFT(**SIFT), FisherVectorEncoder(2, **FV), OneVsRestSGD()).set_output(
        transform="default")
    pick = [0, 1, 9, 10, 18, 19, 27, 28]  # two training images of each class
    assert pipe.fit([images[0][i] for i in pick], images[1][pick]) is pipe
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs pandas"):
            enc.set_output(transform="pandas")
    else:
        frame = enc.set_output(transform="pandas").transform(train_sets[:2])
        assert list(frame.columns) == list(names)
        np.testing.assert_array_equal(frame.to_numpy(), base)
