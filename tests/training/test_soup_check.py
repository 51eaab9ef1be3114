"""The soup check: the soup against its best member, with an interval that resamples groups."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.training.finetune import compare_soup_to_members


def _onehot(pred: np.ndarray, k: int = 3) -> np.ndarray:
    return np.eye(k)[pred] * 5.0  # logits: only the argmax matters


def _case(n_groups: int = 60) -> tuple[np.ndarray, np.ndarray]:
    labels = np.tile(np.arange(3), n_groups)[: 2 * n_groups]
    groups = np.repeat(np.arange(n_groups), 2)  # two images per lesion
    return labels, groups


def test_a_soup_equal_to_its_best_member_is_not_flagged() -> None:
    labels, groups = _case()
    right = _onehot(labels)
    wrong = _onehot((labels + 1) % 3)
    check = compare_soup_to_members(labels, groups, [wrong, right], right, n_boot=200)
    assert check["balanced_accuracy_members"] == [0.0, 1.0]
    assert check["balanced_accuracy_soup"] == 1.0
    assert check["soup_minus_best_member"] == {"value": 0.0, "ci95": [0.0, 0.0]}
    assert check["below_best_member"] is False


def test_a_soup_wrong_on_many_groups_is_flagged() -> None:
    labels, groups = _case()
    right = _onehot(labels)
    soup_pred = labels.copy()
    soup_pred[::3] = (labels[::3] + 1) % 3  # a third of the images, spread over the groups
    check = compare_soup_to_members(labels, groups, [right], _onehot(soup_pred), n_boot=200)
    value = check["soup_minus_best_member"]["value"]
    lo, hi = check["soup_minus_best_member"]["ci95"]
    assert value == pytest.approx(check["balanced_accuracy_soup"] - 1.0)
    assert lo <= value <= hi < 0
    assert check["below_best_member"] is True


def test_one_image_of_difference_is_noise() -> None:
    """A dip of one image (what a rare class does to a small holdout) is not called a loss."""
    labels, groups = _case()
    right = _onehot(labels)
    soup_pred = labels.copy()
    soup_pred[0] = (labels[0] + 1) % 3
    check = compare_soup_to_members(labels, groups, [right], _onehot(soup_pred), n_boot=200)
    assert check["balanced_accuracy_soup"] < 1.0
    lo, hi = check["soup_minus_best_member"]["ci95"]
    assert lo < 0 and hi == 0.0
    assert check["below_best_member"] is False


def test_no_members_is_an_error() -> None:
    labels, groups = _case()
    with pytest.raises(ValueError, match="at least one member"):
        compare_soup_to_members(labels, groups, [], _onehot(labels))
