"""The PredictionSet contract: shapes and values are validated with clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sitefusion.errors import UnknownChoiceError
from sitefusion.evaluation.errors import PredictionSetError
from sitefusion.evaluation.predictions import PredictionSet


def _kwargs(**changes: Any) -> dict[str, Any]:
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    base: dict[str, Any] = {
        "classes": ("neg", "pos"),
        "sites": ("A", "B"),
        "experts": ("A", "B"),
        "ids": np.array(["i0", "i1", "i2"]),
        "labels": np.array([0, 1, 1]),
        "site": np.array(["A", "A", "B"]),
        "group": np.array(["g0", "g0", "g1"]),
        "probs": {"pooled": p, "fusion": p, "local:B": p},
        "attention": {"fusion": np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])},
    }
    base.update(changes)
    return base


def test_valid_set_is_normalised_and_read_only() -> None:
    ps = PredictionSet(**_kwargs())
    assert ps.n_images == 3 and ps.n_classes == 2
    assert ps.methods == ("fusion", "pooled", "local:B")  # report order
    assert ps.labels.dtype == np.int64
    with pytest.raises(ValueError, match="read-only"):
        ps.probs["fusion"][0, 0] = 1.0
    sub = ps.subset(ps.site_mask("A"))
    assert sub.n_images == 2 and list(sub.ids) == ["i0", "i1"]


def test_caller_arrays_stay_writable() -> None:
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    PredictionSet(**_kwargs(probs={"fusion": p}))
    p[0, 0] = 0.8  # would raise if the set had frozen the caller's array


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": np.array([0, 1])}, r"labels: expected 3 rows"),
        ({"labels": np.array([0, 2, 1])}, r"image 'i1' has label 2, expected 0..1"),
        ({"site": np.array(["A", "A", "Z"])}, r"site\(s\) \['Z'\] are not in sites"),
        ({"ids": np.array(["i0", "i0", "i2"])}, "duplicate image ids"),
        ({"probs": {"fusion": np.ones((3, 2))}}, r"sums to 2\.0+, expected 1"),
        ({"probs": {"fusion": np.ones((3, 3)) / 3}}, r"expected shape \[N, C\] = \[3, 2\]"),
        ({"probs": {"fusion": np.array([[1.2, -0.2]] * 3)}}, "negative probability"),
        ({"probs": {}}, "no method"),
        (
            {"attention": {"fusion": np.ones((3, 3)) / 3}},
            r"attention\['fusion'\]: expected shape \[N, E\] = \[3, 2\]",
        ),
        ({"classes": ("only",)}, "at least 2"),
        ({"sites": ("A", "A")}, "duplicate names"),
    ],
)
def test_invalid_sets_name_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PredictionSetError, match=message):
        PredictionSet(**_kwargs(**changes))


def test_unknown_method_suggests_the_nearest() -> None:
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    with pytest.raises(UnknownChoiceError, match="did you mean 'fusion'"):
        PredictionSet(**_kwargs(probs={"fusoin": p}, attention={}))
    with pytest.raises(UnknownChoiceError, match="local:C"):
        PredictionSet(**_kwargs(probs={"local:C": p}, attention={}))
    with pytest.raises(UnknownChoiceError, match="attention"):
        PredictionSet(**_kwargs(probs={"pooled": p}))
