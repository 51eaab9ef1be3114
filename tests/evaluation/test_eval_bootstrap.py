"""Group bootstrap: groups are resampled (not images), paired differences share resamples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sitefusion.evaluation import metrics as m
from sitefusion.evaluation.bootstrap import (
    group_bootstrap_ci,
    group_bootstrap_weights,
    paired_bootstrap_difference,
    percentile_ci,
)
from sitefusion.evaluation.errors import EvaluationError


def _clustered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 patients x 10 images; a patient's images are all right (10 patients) or all wrong."""
    groups = np.repeat([f"p{i:02d}" for i in range(20)], 10)
    y = np.zeros(200, dtype=int)
    right = np.repeat(np.arange(20) < 10, 10)
    probs = np.where(right[:, None], [0.9, 0.1], [0.1, 0.9])
    return y, probs, groups


def test_weights_draw_whole_groups() -> None:
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    w = group_bootstrap_weights(groups, n_boot=50, seed=1)
    assert w.shape == (50, 6)
    # images of one group always share a weight; each resample draws 3 groups
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])
    assert np.all(w[:, [0, 2, 3]].sum(axis=1) == 3)


def test_group_ci_is_wider_than_image_ci_for_clustered_outcomes() -> None:
    y, probs, groups = _clustered()
    by_group = group_bootstrap_ci(m.accuracy, y, probs, groups, n_boot=1000, seed=0)
    by_image = group_bootstrap_ci(m.accuracy, y, probs, np.arange(200).astype(str), 1000, 0)
    assert by_group.value == pytest.approx(0.5) and by_image.value == pytest.approx(0.5)
    width_group = by_group.ci_high - by_group.ci_low
    width_image = by_image.ci_high - by_image.ci_low
    # sd of a proportion: sqrt(.25 / 20) = .11 for 20 independent patients, .035 for 200 images
    assert width_group > 0.3
    assert width_image < 0.2
    assert width_group > 2.5 * width_image


def test_deterministic_by_seed() -> None:
    y, probs, groups = _clustered()
    a = group_bootstrap_ci(m.accuracy, y, probs, groups, n_boot=200, seed=7)
    b = group_bootstrap_ci(m.accuracy, y, probs, groups, n_boot=200, seed=7)
    assert a == b
    np.testing.assert_array_equal(
        group_bootstrap_weights(groups, 50, seed=7), group_bootstrap_weights(groups, 50, seed=7)
    )
    assert not np.array_equal(
        group_bootstrap_weights(groups, 50, seed=7), group_bootstrap_weights(groups, 50, seed=8)
    )


def test_undefined_resamples_are_skipped_and_counted() -> None:
    # groups a and b hold class 0 only, group c class 1 only: a resample without c has one
    # class and no AUC (probability (2/3)^3 = 0.30)
    groups = np.repeat(["a", "b", "c"], 4)
    y = np.repeat([0, 0, 1], 4)
    rng = np.random.default_rng(0)
    p1 = np.clip(y * 0.4 + rng.uniform(0.1, 0.5, size=12), 0, 1)
    probs = np.column_stack([1 - p1, p1])
    res = group_bootstrap_ci(m.macro_auc, y, probs, groups, n_boot=1000, seed=3)
    w = group_bootstrap_weights(groups, 1000, 3)
    expected_used = int(((w[:, y == 0].sum(1) > 0) & (w[:, y == 1].sum(1) > 0)).sum())
    assert res.n_used == expected_used
    assert 600 < res.n_used < 800
    assert res.n_boot == 1000


def test_generic_callable_matches_vectorised_path() -> None:
    y, probs, groups = _clustered()
    fast = group_bootstrap_ci(m.balanced_accuracy, y, probs, groups, n_boot=100, seed=2)
    slow = group_bootstrap_ci(
        lambda a, b: m.balanced_accuracy(a, b), y, probs, groups, n_boot=100, seed=2
    )
    assert fast.ci == pytest.approx(slow.ci)
    assert fast.n_used == slow.n_used


def test_paired_identical_methods_give_zero() -> None:
    y, probs, groups = _clustered()
    res = paired_bootstrap_difference(m.balanced_accuracy, y, probs, probs.copy(), groups, 300)
    assert res.value == 0.0
    assert res.ci == (0.0, 0.0)
    assert res.n_used == 300


def test_paired_strictly_better_method_is_positive() -> None:
    rng = np.random.default_rng(4)
    n = 300
    groups = np.repeat(np.arange(100).astype(str), 3)
    y = rng.integers(0, 3, size=n)
    good = np.full((n, 3), 0.1)
    good[np.arange(n), y] = 0.8
    bad = good.copy()
    # b is wrong on a third of the images where a is right, and right wherever a is
    flip = rng.random(n) < 0.33
    bad[flip] = np.roll(good[flip], 1, axis=1)
    res = paired_bootstrap_difference(m.balanced_accuracy, y, good, bad, groups, 500, seed=1)
    assert res.value > 0.2
    assert res.ci_low > 0.0


def test_paired_difference_is_narrower_than_separate_intervals() -> None:
    rng = np.random.default_rng(6)
    n = 400
    groups = np.repeat(np.arange(100).astype(str), 4)
    y = rng.integers(0, 2, size=n)
    logit = (2 * y - 1) + rng.normal(0, 1.5, n)
    # b is a slightly perturbed copy of a: both err on the same images
    a1 = 1 / (1 + np.exp(-logit))
    b1 = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3, n))))
    a = np.column_stack([1 - a1, a1])
    b = np.column_stack([1 - b1, b1])
    diff = paired_bootstrap_difference(m.macro_auc, y, a, b, groups, 400, seed=0)
    single = group_bootstrap_ci(m.macro_auc, y, a, groups, 400, seed=0)
    assert diff.ci_high - diff.ci_low < 0.5 * (single.ci_high - single.ci_low)


def test_percentile_ci_and_arguments() -> None:
    low, high, used = percentile_ci(np.array([np.nan, 1.0, 2.0, 3.0, np.nan]), alpha=0.5)
    assert used == 3 and low == pytest.approx(1.5) and high == pytest.approx(2.5)
    low, high, used = percentile_ci(np.array([np.nan]))
    assert used == 0 and math.isnan(low) and math.isnan(high)
    with pytest.raises(EvaluationError, match="alpha"):
        percentile_ci(np.ones(3), alpha=1.5)
    with pytest.raises(EvaluationError, match="n_boot"):
        group_bootstrap_weights(np.array(["a"]), n_boot=0)
