"""Cross-validation helpers: the lambda rules by hand-computed cases, folds, checked input."""
import numpy as np
import pytest

from fvstudio.engine.model_selection import LambdaSearch, choose_lambda, cross_val_decision, select_lambda


def _search(scores):
    grid = np.array([1e-6, 1e-5, 1e-4, 1e-3])
    return LambdaSearch(best_lam=1e-6, grid=grid, scores=np.asarray(scores, np.float64), metric="accuracy")


def test_one_standard_error_rule_hand_computed():
    scores = np.array([[0.50, 0.60, 0.70],   # mean 0.60, the best; SE = 0.1 / sqrt(3) = 0.0577
                       [0.55, 0.58, 0.60],   # mean 0.5767 >= 0.60 - 0.0577
                       [0.45, 0.50, 0.55],   # mean 0.50 < 0.5423
                       [0.40, 0.40, 0.40]])
    assert choose_lambda(_search(scores), "best") == 1e-6
    assert choose_lambda(_search(scores), "one_se") == 1e-5
    scores[2] = [0.55, 0.56, 0.57]  # mean 0.56 >= 0.5423 -> the larger lambda wins
    assert choose_lambda(_search(scores), "one_se") == 1e-4
    single = np.array([[0.6], [0.5], [0.6], [0.1]])  # one fold: SE = 0, ties to the larger lambda
    assert choose_lambda(_search(single), "one_se") == 1e-4
    with pytest.raises(ValueError, match="rule"):
        choose_lambda(_search(scores), "largest")


def test_bad_input_is_reported_once_at_the_door():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    with pytest.raises(ValueError, match="grid"):
        select_lambda(X, y, grid=[1e-3, np.inf])
    with pytest.raises(ValueError, match="grid"):
        select_lambda(X, y, grid=[])
    with pytest.raises(ValueError, match="y has 10 rows"):
        select_lambda(X, y[:10])
    with pytest.raises(ValueError, match="epochs"):
        cross_val_decision(X, y, epochs=0)
    with pytest.raises(ValueError, match="folds"):
        cross_val_decision(X, y, folds=1)
