"""The engine inside scikit-learn (issue 15): every engine estimator passes scikit-learn's own estimator checks,
and the Fisher Vector pipeline runs as a scikit-learn Pipeline / GridSearchCV with the native API's numbers."""
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
        return {"check_classifiers_train": _BINARY, "check_classifiers_classes": _BINARY}
    return {}


@parametrize_with_checks(ENGINE_ESTIMATORS, expected_failed_checks=_expected_failures)
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
