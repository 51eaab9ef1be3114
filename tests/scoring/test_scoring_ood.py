"""The Mahalanobis OOD score: fitted reference, quantile threshold, row independence."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.errors import NotFittedError, SiteFusionError
from sitefusion.scoring import MahalanobisOOD


def _reference(n: int = 200, e: int = 3, d: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, e, d)) * np.arange(1, d + 1)


def test_threshold_is_the_reference_quantile() -> None:
    ood = MahalanobisOOD(0.9).fit(_reference())
    assert np.mean(ood.reference_scores_ > ood.threshold_) == pytest.approx(0.1, abs=0.01)
    assert ood.describe()["n_reference"] == 200


def test_far_features_are_flagged_and_near_ones_not() -> None:
    ref = _reference()
    ood = MahalanobisOOD(0.99).fit(ref)
    centre = ref.mean(0, keepdims=True)
    far = centre + 50.0
    assert not ood.flag(centre)[0]
    assert ood.flag(far)[0]
    assert ood.score(far)[0] > 10 * ood.score(centre)[0]


def test_a_rows_score_does_not_depend_on_the_other_rows() -> None:
    ref = _reference()
    ood = MahalanobisOOD().fit(ref)
    together = ood.score(ref[:17])
    alone = np.array([ood.score(ref[i : i + 1])[0] for i in range(17)])
    assert np.array_equal(together, alone)


def test_contract_errors() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        MahalanobisOOD().score(np.zeros((1, 4)))
    with pytest.raises(SiteFusionError, match="quantile"):
        MahalanobisOOD(1.5)
    with pytest.raises(SiteFusionError, match=r"expected \[N, D\]"):
        MahalanobisOOD().fit(np.zeros((3,)))
