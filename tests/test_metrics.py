"""Metrics against hand-computed values (worked out in the comments)."""
import warnings

import numpy as np
import pytest

from fvstudio.engine import metrics

# A 5-item ranking, 3 positives (P = 3):
#   rank  score  target  TP  precision  recall
#   1     0.9    +1      1   1          1/3
#   2     0.8    -1      1   1/2        1/3
#   3     0.7    +1      2   2/3        2/3
#   4     0.6    -1      2   1/2        2/3
#   5     0.5    +1      3   3/5        1
SCORES = np.array([0.7, 0.5, 0.9, 0.6, 0.8])  # deliberately not in rank order
TARGETS = np.array([1, 1, 1, -1, -1])
# VOC07 11-point: r = 0..0.3 -> max P over R >= r = 1        (4 points)
#                 r = 0.4..0.6 -> max(2/3, 1/2, 3/5) = 2/3  (3 points)
#                 r = 0.7..1.0 -> 3/5                      (4 points)
AP_VOC07 = (4 * 1 + 3 * (2 / 3) + 4 * 0.6) / 11  # = 8.4 / 11 = 0.76364
# area: monotone precision (1, 2/3, 2/3, 3/5, 3/5); recall steps 1/3 at ranks 1, 3, 5
AP_AREA = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * 0.6  # = 34/45 = 0.75556


def test_ap_hand_computed_both_definitions():
    assert metrics.average_precision(SCORES, TARGETS, "voc07") == pytest.approx(AP_VOC07, abs=1e-12)
    assert metrics.average_precision(SCORES, TARGETS, "area") == pytest.approx(34 / 45, abs=1e-12)
    assert AP_AREA == pytest.approx(34 / 45)


def test_ap_ignores_difficult_and_accepts_bools():
    s = np.r_[SCORES, 0.95, 0.1]
    t = np.r_[TARGETS, 0, 0]  # two "difficult" items, one ranked first: must not count
    assert metrics.average_precision(s, t, "voc07") == pytest.approx(AP_VOC07)
    assert metrics.average_precision(SCORES, TARGETS > 0, "area") == pytest.approx(34 / 45)


def test_ap_ties_form_one_threshold_independent_of_order():
    # scores 0.9, 0.9 (one neg, one pos), 0.5 (pos): thresholds (P=1/2, R=1/2), (P=2/3, R=1)
    # area: monotone P = (2/3, 2/3) -> 1/2 * 2/3 + 1/2 * 2/3 = 2/3; voc07: every r -> 2/3
    for s, t in [([0.9, 0.9, 0.5], [-1, 1, 1]), ([0.9, 0.9, 0.5], [1, -1, 1])]:
        assert metrics.average_precision(s, t, "area") == pytest.approx(2 / 3)
        assert metrics.average_precision(s, t, "voc07") == pytest.approx(2 / 3)


def test_ap_perfect_and_worst():
    assert metrics.average_precision([3, 2, 1], [1, 1, -1], "voc07") == pytest.approx(1.0)
    # one positive ranked last of 4: P = 1/4 at R = 1
    assert metrics.average_precision([4, 3, 2, 1], [-1, -1, -1, 1], "area") == pytest.approx(0.25)
    assert metrics.average_precision([4, 3, 2, 1], [-1, -1, -1, 1], "voc07") == pytest.approx(0.25)


def test_area_ap_matches_voc2010_devkit_recipe_without_ties():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(200)
    t = np.where(rng.random(200) < 0.3, 1, -1)
    order = np.argsort(-s)
    tp = np.cumsum(t[order] > 0)
    fp = np.cumsum(t[order] < 0)
    rec = tp / tp[-1]
    prec = tp / (tp + fp)
    mrec = np.r_[0, rec, 1]
    mpre = np.r_[0, prec, 0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    ref = np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx])
    assert metrics.average_precision(s, t, "area") == pytest.approx(ref, abs=1e-12)


def test_no_positive_class_is_nan_with_warning_and_left_out_of_map():
    with pytest.warns(RuntimeWarning):
        assert np.isnan(metrics.average_precision([1, 2], [-1, -1]))
    scores = np.c_[SCORES, SCORES]
    targets = np.c_[TARGETS, -np.ones(5, int)]
    with pytest.warns(RuntimeWarning, match="no positive"):
        ap = metrics.average_precision_per_class(scores, targets, "voc07")
    assert ap[0] == pytest.approx(AP_VOC07) and np.isnan(ap[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert metrics.mean_average_precision(scores, targets) == pytest.approx(AP_VOC07)


def test_map_is_mean_of_columns():
    scores = np.c_[SCORES, -SCORES]
    targets = np.c_[TARGETS, TARGETS]
    ap2 = metrics.average_precision(-SCORES, TARGETS, "area")
    assert metrics.mean_average_precision(scores, targets, "area") == pytest.approx((34 / 45 + ap2) / 2)


def test_bad_targets_rejected():
    with pytest.raises(ValueError, match="targets"):
        metrics.average_precision([1, 2], [2, 1])
    with pytest.raises(ValueError, match="mode"):
        metrics.average_precision([1, 2], [1, -1], mode="voc12")


def test_accuracies_and_confusion_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    # per class: 2/3, 1/2, 1 -> mean 13/18; overall 4/6
    assert metrics.mean_per_class_accuracy(y_true, y_pred) == pytest.approx(13 / 18)
    assert metrics.overall_accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    m = metrics.confusion_matrix(y_true, y_pred, n_classes=4)
    expected = np.zeros((4, 4), int)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[1, 0], expected[2, 2] = 2, 1, 1, 1, 1
    np.testing.assert_array_equal(m, expected)
    # class 3 absent from y_true: NaN per-class accuracy, left out of the mean
    acc = metrics.per_class_accuracy(y_true, y_pred, n_classes=4)
    assert np.isnan(acc[3])
    assert metrics.mean_per_class_accuracy(y_true, y_pred, n_classes=4) == pytest.approx(13 / 18)
    norm = metrics.confusion_matrix(y_true, y_pred, n_classes=4, normalize="true")
    np.testing.assert_allclose(norm[0], [2 / 3, 1 / 3, 0, 0])
    assert norm[3].sum() == 0


def test_top_k_with_ties_by_hand():
    scores = np.array([[0.1, 0.5, 0.4],    # true 2 is 2nd
                       [0.3, 0.3, 0.1],    # true 1 ties class 0, lower index first -> 2nd
                       [0.2, 0.1, 0.0]])   # true 0 is 1st
    y = np.array([2, 1, 0])
    assert metrics.top_k_accuracy(scores, y, k=1) == pytest.approx(1 / 3)
    assert metrics.top_k_accuracy(scores, y, k=2) == pytest.approx(1.0)
    # top-1 agrees with argmax accuracy
    assert metrics.top_k_accuracy(scores, y, 1) == metrics.overall_accuracy(y, np.argmax(scores, 1))
    with pytest.raises(ValueError, match="y_true"):
        metrics.top_k_accuracy(scores, np.array([0, 1, 3]), 1)


def test_mean_std_over_repeats():
    m, s = metrics.mean_std([0.5, 0.7])
    assert m == pytest.approx(0.6) and s == pytest.approx(np.sqrt(0.02))
    assert metrics.mean_std([0.4]) == (pytest.approx(0.4), 0.0)
    mm, ss = metrics.mean_std(np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(mm, [2.0, 2.0])
    np.testing.assert_allclose(ss, [np.sqrt(2.0), 0.0])
