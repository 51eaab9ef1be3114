"""Each metric against a hand-computed case (numbers worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from sitefusion.evaluation import metrics as m
from sitefusion.evaluation.errors import EvaluationError

# Five images, three classes.
#   image  y  probs             argmax  correct  confidence
#   0      0  [.7, .2, .1]      0       yes      .7
#   1      0  [.3, .6, .1]      1       no       .6
#   2      1  [.2, .5, .3]      1       yes      .5
#   3      1  [.1, .1, .8]      2       no       .8
#   4      2  [.2, .2, .6]      2       yes      .6
Y = np.array([0, 0, 1, 1, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.1, 0.8],
        [0.2, 0.2, 0.6],
    ]
)


def test_accuracy_hand_computed() -> None:
    # 3 of 5 correct.
    assert m.accuracy(Y, P) == pytest.approx(0.6)


def test_balanced_accuracy_hand_computed() -> None:
    # recall: class 0 1/2, class 1 1/2, class 2 1/1 -> (0.5 + 0.5 + 1) / 3 = 2/3
    assert m.balanced_accuracy(Y, P) == pytest.approx(2 / 3)
    assert m.balanced_accuracy(Y, P) == pytest.approx(balanced_accuracy_score(Y, P.argmax(1)))


def test_per_class_sensitivity_hand_computed() -> None:
    assert m.per_class_sensitivity(Y, P) == {0: 0.5, 1: 0.5, 2: 1.0}


def test_per_class_and_macro_auc_hand_computed() -> None:
    # class 0: positives .7, .3 vs negatives .2, .1, .2 -> 6 of 6 pairs ordered -> 1
    # class 1: positives .5, .1 vs negatives .2, .6, .2 -> .5 beats .2, .2 (2); .1 beats none
    #          -> 2 / 6 = 1/3
    # class 2: positive .6 vs negatives .1, .1, .3, .8 -> 3 / 4
    auc = m.per_class_auc(Y, P)
    assert auc[0] == pytest.approx(1.0)
    assert auc[1] == pytest.approx(1 / 3)
    assert auc[2] == pytest.approx(0.75)
    # macro = (1 + 1/3 + 3/4) / 3 = 25/36
    assert m.macro_auc(Y, P) == pytest.approx(25 / 36)
    assert m.macro_auc(Y, P) == pytest.approx(roc_auc_score(Y, P, multi_class="ovr"))


def test_auc_ties_count_one_half() -> None:
    # one positive and one negative with the same score: half a correctly ordered pair
    y = np.array([0, 1])
    p = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert m.macro_auc(y, p) == pytest.approx(0.5)


def test_auc_undefined_with_one_class_present() -> None:
    y = np.array([0, 0, 0])
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    assert math.isnan(m.macro_auc(y, p))
    assert m.per_class_auc(y, p) == {0: None, 1: None, 2: None}
    # sensitivity only defined for the class present; BA is then class 0's recall (2/3)
    assert m.per_class_sensitivity(y, p) == {0: pytest.approx(2 / 3), 1: None, 2: None}
    assert m.balanced_accuracy(y, p) == pytest.approx(2 / 3)


def test_macro_auc_over_present_classes_only() -> None:
    # class 2 absent: mean of the class-0 and class-1 AUCs
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.1, 0.3, 0.6]])
    # class 0: positives .8, .4 vs negatives .3, .1 -> 4/4 = 1
    # class 1: positives .6, .3 vs negatives .1, .5 -> .6 > both (2), .3 > .1 (1) -> 3/4
    assert m.macro_auc(y, p) == pytest.approx((1 + 0.75) / 2)
    assert m.per_class_auc(y, p)[2] is None


def test_ece_hand_computed() -> None:
    # 4 bins, right-closed: (0, .25], (.25, .5], (.5, .75], (.75, 1]
    #   bin 1: image 2 (conf .5, correct)            |1 - .5|        = .5
    #   bin 2: images 0, 1, 4 (conf .7, .6, .6; 2 ok) |2 - 1.9|       = .1
    #   bin 3: image 3 (conf .8, wrong)               |0 - .8|        = .8
    # ECE = (.5 + .1 + .8) / 5 = 0.28
    assert m.expected_calibration_error(Y, P, n_bins=4) == pytest.approx(0.28)


def test_ece_perfectly_calibrated_is_zero() -> None:
    # confidence .75 and 3 of 4 correct -> gap 0
    y = np.array([0, 0, 0, 1])
    p = np.tile([0.75, 0.25], (4, 1))
    assert m.expected_calibration_error(y, p) == pytest.approx(0.0)


def test_brier_hand_computed() -> None:
    # per image sum_k (p_k - onehot_k)^2:
    #   0: .09 + .04 + .01 = .14      1: .49 + .36 + .01 = .86
    #   2: .04 + .25 + .09 = .38      3: .01 + .81 + .64 = 1.46
    #   4: .04 + .04 + .16 = .24      mean = 3.08 / 5 = 0.616
    assert m.brier_score(Y, P) == pytest.approx(0.616)


def test_binary_metrics_hand_computed() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p_pos = np.array([0.1, 0.4, 0.6, 0.35, 0.8, 0.9])
    # threshold .5: called positive = [0, 0, 1, 0, 1, 1]
    #   TP = 2 (.8, .9), FN = 1 (.35) -> sensitivity 2/3; TN = 2, FP = 1 -> specificity 2/3
    # AUC: .35 beats .1 (1); .8 and .9 beat all three negatives (3 + 3) -> 7/9
    out = m.binary_metrics(y, p_pos)
    assert out["auc"] == pytest.approx(7 / 9)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(2 / 3)
    # threshold .7: called = [0, 0, 0, 0, 1, 1] -> sensitivity 2/3, specificity 3/3
    out = m.binary_metrics(y, p_pos, threshold=0.7)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(1.0)


def test_binary_metrics_undefined_parts() -> None:
    out = m.binary_metrics(np.array([1, 1]), np.array([0.9, 0.2]))
    assert math.isnan(out["auc"]) and math.isnan(out["specificity"])
    assert out["sensitivity"] == pytest.approx(0.5)


def test_prevalence_hand_computed() -> None:
    np.testing.assert_allclose(m.prevalence(Y, 3), [0.4, 0.4, 0.2])
    np.testing.assert_allclose(m.prevalence(Y, 4), [0.4, 0.4, 0.2, 0.0])
    assert np.isnan(m.prevalence(np.array([], dtype=int), 2)).all()


def test_sample_weight_equals_repeating_images() -> None:
    counts = np.array([2, 0, 1, 3, 1])
    rep = np.repeat(np.arange(5), counts)
    for fn in (m.accuracy, m.balanced_accuracy, m.macro_auc, m.brier_score):
        assert fn(Y, P, sample_weight=counts) == pytest.approx(fn(Y[rep], P[rep]))
    assert m.expected_calibration_error(Y, P, 4, counts) == pytest.approx(
        m.expected_calibration_error(Y[rep], P[rep], 4)
    )


def test_empty_input_is_nan_not_an_error() -> None:
    y = np.array([], dtype=int)
    p = np.empty((0, 3))
    for fn in (m.accuracy, m.balanced_accuracy, m.macro_auc, m.brier_score):
        assert math.isnan(fn(y, p))
    assert math.isnan(m.expected_calibration_error(y, p))


def test_bad_shapes_raise_clear_errors() -> None:
    with pytest.raises(EvaluationError, match=r"probs: expected shape \[N, C\]"):
        m.accuracy(Y, P[:3])
    with pytest.raises(EvaluationError, match="integer labels"):
        m.balanced_accuracy(np.array([0, 1, 2, 3, 0]), P)
    with pytest.raises(EvaluationError, match="n_bins"):
        m.expected_calibration_error(Y, P, n_bins=0)
