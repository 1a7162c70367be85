"""Bad input to the estimators is a ValueError that names the argument and the problem (issue #13).

Each case here was accepted (or failed with an unrelated error) before: data too large / too small
for float32, features whose SGD scores overflow, labels with no class, matrices with no column,
values beyond float32's range, non-finite hyper-parameters.
"""
import numpy as np
import pytest

from fvstudio.engine.gmm import DiagonalGMM
from fvstudio.engine.pca import PCA
from fvstudio.engine.svm import OneVsRestSGD


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    return X, y


@pytest.mark.parametrize("scale, match", [(1e25, "X deviates from its mean by up to .* overflow float32"),
                                          (1e-25, "X has a mean variance of .* underflow float32")])
def test_gmm_rejects_data_out_of_float32_range(data, scale, match):
    X, _ = data
    with pytest.raises(ValueError, match=match):  # was ZeroDivisionError inside the E-step kernel
        DiagonalGMM(3, var_floor=0.01).fit(X * scale)


def test_pca_rejects_data_whose_variances_overflow_float32(data):
    X, _ = data
    with pytest.raises(ValueError, match="X deviates from its mean"):  # explained_variance_ was inf
        PCA(2).fit(X * 1e25)


def test_sgd_rejects_features_whose_scores_overflow(data):
    X, y = data
    with pytest.raises(ValueError, match="X row 0 has a squared L2 norm of inf"):  # returned +-inf scores
        OneVsRestSGD(epochs=2).fit(X * 1e20, y)
    model = OneVsRestSGD(epochs=2).fit(X, y)
    w = model.coef_[0]
    assert np.abs(w).sum() > 1.2
    huge = np.vstack([X[:2], np.sign(w) * np.float32(3e38)]).astype(np.float32)  # finite, w'x is not
    with pytest.raises(ValueError, match="X row 2 gives non-finite scores"):
        model.decision_function(huge)


def test_sgd_labels_without_any_class(data):
    X, _ = data
    with pytest.raises(ValueError, match="y has no class label: all 500 labels are < 0"):  # was "got []"
        OneVsRestSGD(epochs=2).fit(X, np.full(500, -1))


@pytest.mark.parametrize("fit", [lambda X: PCA(1).fit(X), lambda X: DiagonalGMM(3).fit(X),
                                 lambda X: OneVsRestSGD(epochs=1).fit(X, np.arange(500) % 3)],
                         ids=["pca", "gmm", "sgd"])
def test_a_matrix_without_columns_is_not_fitted(fit):
    with pytest.raises(ValueError, match=r"X has shape \(500, 0\): no feature column"):
        fit(np.zeros((500, 0), np.float32))


@pytest.mark.parametrize("fit", [lambda X: PCA(2).fit(X), lambda X: DiagonalGMM(3).fit(X)], ids=["pca", "gmm"])
def test_float64_beyond_float32_range_is_not_called_infinite(data, fit):
    X, _ = data
    with pytest.raises(ValueError, match="X has values up to .* beyond float32's range"):
        fit(X.astype(np.float64) * 1e200)


@pytest.mark.parametrize("params, name", [({"lam": np.inf}, "lam"), ({"eta0": np.inf}, "eta0"),
                                          ({"neg_ratio": np.inf}, "neg_ratio"),
                                          ({"lam": "cv", "lam_grid": [1e-4, np.inf]}, "grid")])
def test_sgd_rejects_non_finite_hyper_parameters(data, params, name):
    X, y = data
    with pytest.raises(ValueError, match=name):
        OneVsRestSGD(epochs=1, **params).fit(X, y)


def test_gmm_rejects_non_numeric_hyper_parameters(data):
    X, _ = data
    with pytest.raises(ValueError, match="var_floor"):  # was a TypeError from float(None)
        DiagonalGMM(3, var_floor=None).fit(X)
    with pytest.raises(ValueError, match="posterior_threshold"):
        DiagonalGMM(3, posterior_threshold="small").fit(X)
