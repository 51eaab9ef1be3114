"""Site priors: offsets from a site's case mix against a hand-computed case, and how they apply."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sitefusion.errors import ConfigError
from sitefusion.fusion import apply_site_prior, site_prior_offsets


def test_offsets_match_a_hand_computed_case() -> None:
    # Site a: 3 of class 0, 1 of class 1; site b: 4 of class 1. Pooled: 3/8 and 5/8.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    sites = np.array(["a"] * 4 + ["b"] * 4)
    off = site_prior_offsets(labels, sites, ["a", "b", "c"], 2, strength=0.5, floor=0.1)
    # Floors: a = (0.75, 0.25); b = (0, 1) -> (0.1, 1) / 1.1; pooled = (0.375, 0.625).
    expected_a = [0.5 * math.log(0.75 / 0.375), 0.5 * math.log(0.25 / 0.625)]
    expected_b = [0.5 * math.log((0.1 / 1.1) / 0.375), 0.5 * math.log((1 / 1.1) / 0.625)]
    np.testing.assert_allclose(off[0], expected_a)
    np.testing.assert_allclose(off[1], expected_b)
    np.testing.assert_array_equal(off[2], [0.0, 0.0])  # a site without rows: no shift


def test_zero_strength_is_no_shift_and_strength_scales_linearly() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    sites = rng.choice(["x", "y"], 200)
    zero = site_prior_offsets(labels, sites, ["x", "y"], 4, strength=0.0, floor=0.05)
    half = site_prior_offsets(labels, sites, ["x", "y"], 4, strength=0.5, floor=0.05)
    full = site_prior_offsets(labels, sites, ["x", "y"], 4, strength=1.0, floor=0.05)
    np.testing.assert_array_equal(zero, 0.0)
    np.testing.assert_allclose(full, 2 * half)
    assert np.abs(full).max() > 0


def test_a_site_that_never_saw_a_class_gets_a_bounded_offset() -> None:
    labels = np.array([0] * 50 + [1] * 50 + [0] * 100)
    sites = np.array(["a"] * 100 + ["b"] * 100)
    off = site_prior_offsets(labels, sites, ["a", "b"], 2, strength=1.0, floor=0.02)
    assert np.isfinite(off).all()
    assert off[1, 1] == pytest.approx(math.log((0.02 / 1.02) / 0.25))


def test_apply_shifts_each_row_by_its_home_site_only() -> None:
    logits = np.zeros((3, 2), dtype=np.float32)
    offsets = np.array([[1.0, -1.0], [0.0, 2.0]])
    home = np.array([[True, False], [False, True], [False, False]])
    out = apply_site_prior(logits, home, offsets)
    np.testing.assert_allclose(out, [[1.0, -1.0], [0.0, 2.0], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_apply_refuses_mismatched_or_ambiguous_home() -> None:
    with pytest.raises(ValueError, match="does not match"):
        apply_site_prior(np.zeros((2, 2)), np.zeros((3, 2), bool), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at most one home"):
        apply_site_prior(np.zeros((1, 2)), np.ones((1, 2), bool), np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("strength", "floor", "field"),
    [(-0.1, 0.05, "strength"), (1.5, 0.05, "strength"), (0.5, 0.0, "floor"), (0.5, 0.5, "floor")],
)
def test_bad_settings_are_refused(strength: float, floor: float, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        site_prior_offsets(
            np.array([0, 1]), np.array(["a", "a"]), ["a"], 2, strength=strength, floor=floor
        )
