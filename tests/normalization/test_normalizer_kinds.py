"""Per-kind behaviour with hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from sitefusion.errors import ConfigError
from sitefusion.normalization import (
    ColourNormalizer,
    HistogramNormalizer,
    PercentileNormalizer,
    ZScoreNormalizer,
    lab_to_rgb,
    rgb_to_lab,
)

# ----------------------------------------------------------------------------------- zscore


def test_zscore_known_array() -> None:
    values = np.arange(1000, dtype=np.float64)
    values[0] = -1e6  # outliers that the clip must remove
    values[-1] = 1e6
    image = values.reshape(1, 10, 100)
    normalizer = ZScoreNormalizer(clip=(0.5, 99.5)).fit([image])
    low, high = np.percentile(values, [0.5, 99.5])
    np.testing.assert_allclose(normalizer.bounds_, [[low, high]])
    clipped = np.clip(values, low, high)
    np.testing.assert_allclose(normalizer.mean_, [clipped.mean()])
    np.testing.assert_allclose(normalizer.std_, [clipped.std()])
    out = normalizer.transform(image).astype(np.float64)
    assert out.mean() == pytest.approx(0.0, abs=1e-6)
    assert out.std() == pytest.approx(1.0, abs=1e-6)
    assert out.max() == pytest.approx((high - clipped.mean()) / clipped.std(), rel=1e-6)


def test_zscore_is_per_channel_and_without_clip_is_plain_standardization() -> None:
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(10, 2, (16, 16)), rng.normal(-500, 50, (16, 16))])
    normalizer = ZScoreNormalizer(clip=(0, 100)).fit([image])
    np.testing.assert_allclose(normalizer.mean_, image.reshape(2, -1).mean(axis=1))
    out = normalizer.transform(image).reshape(2, -1)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-5)


def test_zscore_constant_channel_maps_to_zero() -> None:
    image = np.full((1, 5, 5), 42.0)
    normalizer = ZScoreNormalizer().fit([image])
    assert normalizer.std_[0] == 1.0
    np.testing.assert_array_equal(normalizer.transform(image), 0.0)


@pytest.mark.parametrize("clip", [(99, 1), (-1, 50), (0, 101), (1,), "1,99"])
def test_zscore_bad_clip_is_a_config_error(clip: object) -> None:
    with pytest.raises(ConfigError, match=r"'clip'.*0\.0, 100\.0"):
        ZScoreNormalizer(clip=clip)  # type: ignore[arg-type]


def test_zscore_accepts_clip_as_yaml_list() -> None:
    assert ZScoreNormalizer(clip=[1, 99]).clip == (1.0, 99.0)
    assert ZScoreNormalizer(clip=[1, 99]).get_params()["clip"] == [1.0, 99.0]


# ------------------------------------------------------------------------------- percentile


def test_percentile_maps_p1_p99_to_unit_range() -> None:
    values = np.arange(101, dtype=np.float64)  # p1 = 1, p99 = 99 exactly
    image = values.reshape(1, 1, 101)
    normalizer = PercentileNormalizer().fit([image])
    np.testing.assert_allclose(normalizer.bounds_, [[1.0, 99.0]])
    out = normalizer.transform(image)[0, 0]
    assert out[1] == pytest.approx(0.0) and out[99] == pytest.approx(1.0)
    assert out[50] == pytest.approx(49 / 98)
    assert out[0] == 0.0 and out[100] == 1.0  # clipped outside [p1, p99]
    unclipped = PercentileNormalizer(clip=False).fit([image]).transform(image)[0, 0]
    assert unclipped[0] == pytest.approx(-1 / 98) and unclipped[100] == pytest.approx(99 / 98)


def test_percentile_custom_levels_per_channel() -> None:
    values = np.arange(101, dtype=np.float64)
    image = np.stack([values, 10 * values]).reshape(2, 1, 101)
    normalizer = PercentileNormalizer(low=10, high=60).fit([image])
    np.testing.assert_allclose(normalizer.bounds_, [[10.0, 60.0], [100.0, 600.0]])
    out = normalizer.transform(image)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"low": 50, "high": 50}, "high"), ({"low": -1}, "low"), ({"clip": "yes"}, "clip")],
)
def test_percentile_bad_params(params: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}'"):
        PercentileNormalizer(**params)


# -------------------------------------------------------------------------------- histogram


def _content(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.gamma(2.0, 1.0, (1, 32, 32)) for _ in range(n)]


def test_histogram_fit_averages_mapped_landmarks() -> None:
    values = np.arange(101, dtype=np.float64).reshape(1, 1, 101)  # landmarks = 1, 10, ..., 99
    normalizer = HistogramNormalizer(rescale=False).fit([values, 3 * values + 7])
    expected = (np.array([1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]) - 1) / 98 * 100
    np.testing.assert_allclose(normalizer.standard_landmarks_, [expected])
    # An image of the same shape of histogram is mapped linearly: p1 -> 0, p99 -> 1.
    out = HistogramNormalizer().fit([values]).transform(values)[0, 0]
    np.testing.assert_allclose(out, (np.arange(101) - 1) / 98, atol=1e-6)
    assert out[100] > 1.0  # extrapolated beyond p99, not clamped


def test_histogram_sites_with_different_gain_and_offset_end_equal() -> None:
    content = _content()
    site_a = [100 * c + 20 for c in content]
    site_b = [0.5 * c - 3 for c in content]
    probe = HistogramNormalizer()
    before = np.abs(probe.image_landmarks(site_a[0]) - probe.image_landmarks(site_b[0])).max()
    norm_a = HistogramNormalizer().fit(site_a)
    norm_b = HistogramNormalizer().fit(site_b)  # each fitted on its own site only
    np.testing.assert_allclose(norm_a.standard_landmarks_, norm_b.standard_landmarks_, atol=1e-9)
    for a, b in zip(site_a, site_b, strict=True):
        after = probe.image_landmarks(norm_a.transform(a)) - probe.image_landmarks(
            norm_b.transform(b)
        )
        assert np.abs(after).max() < 1e-4 < before


def test_histogram_undoes_a_monotone_gamma_distortion() -> None:
    content = _content()
    site_a = [100 * c + 20 for c in content]
    site_b = [3 * c**1.5 + 500 for c in content]  # gain, offset and gamma
    probe = HistogramNormalizer()
    normalizer = HistogramNormalizer().fit(site_a)
    for a, b in zip(site_a, site_b, strict=True):
        raw_gap = np.abs(probe.image_landmarks(a) - probe.image_landmarks(b)).max()
        out_a, out_b = normalizer.transform(a), normalizer.transform(b)
        gap = np.abs(probe.image_landmarks(out_a) - probe.image_landmarks(out_b)).max()
        assert raw_gap > 100 and gap < 1e-3
        np.testing.assert_allclose(
            probe.image_landmarks(out_a)[0], normalizer.standard_landmarks_[0] / 100, atol=1e-3
        )


def test_histogram_handles_tied_landmarks_from_a_uniform_background() -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(10, 20, (1, 20, 20))
    image[:, :10] = 0.0  # half the image is background: p1..p40 all equal 0
    normalizer = HistogramNormalizer().fit([image, image + 1.0])
    out = normalizer.transform(image)
    assert np.isfinite(out).all()
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= -1e-6)  # the map stays monotone


def test_histogram_refuses_constant_channels_and_bad_params() -> None:
    with pytest.raises(ValueError, match="constant"):
        HistogramNormalizer().fit([np.ones((1, 4, 4))])
    with pytest.raises(ConfigError, match="'landmarks'"):
        HistogramNormalizer(landmarks=(10, 5, 90))
    with pytest.raises(ConfigError, match="'standard_range'"):
        HistogramNormalizer(standard_range=(1, 0))
    assert HistogramNormalizer(standard_range=(0, 1)).standard_range == (0.0, 1.0)


# ----------------------------------------------------------------------------------- colour


def test_lab_conversion_known_values_and_round_trip() -> None:
    np.testing.assert_allclose(rgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(rgb_to_lab(np.zeros(3)), [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(rgb_to_lab(np.array([1.0, 0, 0])), [53.24, 80.09, 67.20], atol=0.01)
    rgb = np.random.default_rng(0).uniform(0, 1, (3, 4, 5, 6))
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-9)


def _skin(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.stack(
            [
                rng.uniform(0.5, 0.9, (24, 24)),
                rng.uniform(0.3, 0.6, (24, 24)),
                rng.uniform(0.25, 0.55, (24, 24)),
            ]
        )
        for _ in range(n)
    ]


def _channel_means(images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([im.reshape(3, -1) for im in images], axis=1).mean(axis=1)


def test_colour_sites_with_different_casts_match_after() -> None:
    cast = np.array([1.0, 0.8, 1.15]).reshape(3, 1, 1)
    site_a = _skin(6, seed=1)
    site_b = [np.clip(im * cast, 0, 1) * 255 for im in _skin(6, seed=2)]  # cast and 0..255
    norm_a = ColourNormalizer().fit(site_a)
    norm_b = ColourNormalizer().fit(site_b)
    assert (norm_a.scale_, norm_b.scale_) == (1.0, 255.0)
    np.testing.assert_array_equal(norm_a.output_mean_, norm_b.output_mean_)  # shared constants
    before = np.abs(_channel_means(site_a) - _channel_means([im / 255 for im in site_b]))
    out_a = [norm_a.transform(im) for im in site_a]
    out_b = [norm_b.transform(im) for im in site_b]
    after_gap = np.abs(_channel_means(out_a) - _channel_means(out_b))
    # In standardized units the casts are gone (before: ~0.09 of a 0..1 range, ~0.6 std).
    assert before.max() > 0.05
    assert after_gap.max() < 0.05
    pixels = np.concatenate([o.reshape(3, -1) for o in out_a + out_b], axis=1)
    np.testing.assert_allclose(pixels.mean(axis=1), 0.0, atol=0.1)
    np.testing.assert_allclose(pixels.std(axis=1), 1.0, atol=0.25)


def test_colour_same_content_at_either_scale_gives_same_output() -> None:
    images = _skin(3, seed=3)
    unit = ColourNormalizer().fit(images)
    byte = ColourNormalizer().fit([im * 255 for im in images])
    np.testing.assert_allclose(
        unit.transform(images[0]), byte.transform(images[0] * 255), atol=1e-5
    )
    explicit = ColourNormalizer(scale=255).fit([im * 255 for im in images])
    assert explicit.scale_ == 255.0


def test_colour_refuses_non_rgb_and_mismatched_scale() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        ColourNormalizer().fit([np.ones((1, 8, 8))])
    normalizer = ColourNormalizer().fit(_skin(2, seed=4))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        normalizer.transform(_skin(1, seed=5)[0] * 255)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"reference_mean": (150, 0, 0)}, "reference_mean"),
        ({"reference_std": (1, 0, 1)}, "reference_std"),
        ({"scale": "bytes"}, "scale"),
        ({"scale": 0}, "scale"),
    ],
)
def test_colour_bad_params(params: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}'"):
        ColourNormalizer(**params)
