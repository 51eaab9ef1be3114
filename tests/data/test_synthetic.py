"""Tests of the deterministic synthetic multi-site data generator."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from sitefusion.data.synthetic import (
    MANIFEST_COLUMNS,
    NIFTI_SCALE,
    PNG8_MAX,
    PNG16_MAX,
    SiteAcquisition,
    default_site_names,
    generate_synthetic_dataset,
    make_synthetic_arrays,
    site_acquisitions,
    site_class_mix,
)
from sitefusion.errors import ConfigError

SMALL: dict[str, Any] = {"sites": 3, "images_per_site": 30, "classes": 3}


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _stack(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images).astype(np.float64)


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_arrays_and_other_seed_differs() -> None:
    first = make_synthetic_arrays(**SMALL, seed=7)
    second = make_synthetic_arrays(**SMALL, seed=7)
    other = make_synthetic_arrays(**SMALL, seed=8)
    assert first.labels == second.labels
    assert first.sites == second.sites
    assert first.groups == second.groups
    assert all(np.array_equal(a, b) for a, b in zip(first.images, second.images, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first.images, other.images, strict=True))
    assert first.labels != other.labels  # the class order is drawn from the seed too


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    manifests = [
        generate_synthetic_dataset(runs[0], **SMALL, seed=3),
        generate_synthetic_dataset(runs[1], **SMALL, seed=3),
        generate_synthetic_dataset(runs[2], **SMALL, seed=4),
    ]
    assert manifests[0].read_bytes() == manifests[1].read_bytes()
    assert manifests[0].read_bytes() != manifests[2].read_bytes()
    for row in _read_manifest(manifests[0]):
        assert (runs[0] / row["image"]).read_bytes() == (runs[1] / row["image"]).read_bytes()


def test_nifti_files_are_byte_identical(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"sites": 2, "images_per_site": 4, "dims": 3, "size": 12, "seed": 1}
    a = generate_synthetic_dataset(tmp_path / "a", **kwargs)
    b = generate_synthetic_dataset(tmp_path / "b", **kwargs)
    assert a.read_bytes() == b.read_bytes()
    for row in _read_manifest(a):
        assert (tmp_path / "a" / row["image"]).read_bytes() == (
            tmp_path / "b" / row["image"]
        ).read_bytes()


def test_acquisitions_are_deterministic_frozen_and_distinct() -> None:
    acqs = site_acquisitions(4, seed=2)
    assert acqs == site_acquisitions(4, seed=2)
    assert acqs != site_acquisitions(4, seed=3)
    assert len({a.offset for a in acqs}) == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        acqs[0].gain = 1.0  # type: ignore[misc]
    for acq in acqs:
        assert isinstance(acq, SiteAcquisition)
        assert acq.gain > 0 and acq.offset > 0 and acq.noise > 0 and acq.gamma > 0
        assert np.isclose(np.mean(acq.colour_cast), 1.0)
        field = acq.bias_field((16, 16))
        assert field.shape == (16, 16)
        assert field.min() >= np.exp(-acq.bias) - 1e-9
        assert field.max() <= np.exp(acq.bias) + 1e-9
        assert field.max() / field.min() > 1.05  # smooth but not flat


# --------------------------------------------------------------------------------------------
# Shapes, dtypes, value scale


@pytest.mark.parametrize(
    ("kwargs", "shape", "full_scale"),
    [
        ({"dims": 2, "channels": 1, "size": 32}, (1, 32, 32), PNG16_MAX),
        ({"dims": 2, "channels": 3, "size": 24}, (3, 24, 24), PNG8_MAX),
        ({"dims": 3, "channels": 1, "size": 16}, (1, 16, 16, 16), NIFTI_SCALE),
    ],
)
def test_shapes_dtypes_and_value_scale(
    kwargs: dict[str, Any], shape: tuple[int, ...], full_scale: float
) -> None:
    data = make_synthetic_arrays(sites=2, images_per_site=6, **kwargs)
    assert len(data.images) == len(data.labels) == len(data.sites) == len(data.groups) == 12
    for image in data.images:
        assert image.shape == shape
        assert image.dtype == np.float32
        assert image.min() >= 0.0
        assert image.max() <= full_scale
    x = _stack(data.images)
    assert x.max() > 0.3 * full_scale  # uses a good part of the range, not a sliver
    if kwargs["dims"] == 2:
        assert np.array_equal(x, np.round(x))  # PNG values are integers


def test_rgb_channels_differ_by_site_colour_cast() -> None:
    data = make_synthetic_arrays(sites=3, images_per_site=10, channels=3, seed=0)
    x = _stack(data.images)
    sites = np.array(data.sites)
    ratios = []
    for site in default_site_names(3):
        means = x[sites == site].mean(axis=(0, 2, 3))
        ratios.append(means / means.sum())
    # Different colour balance per site, not just a different brightness.
    assert np.abs(np.diff(np.array(ratios), axis=0)).max() > 0.02


# --------------------------------------------------------------------------------------------
# Manifest, groups, class mix


def test_manifest_columns_paths_and_groups(tmp_path: Path) -> None:
    manifest = generate_synthetic_dataset(tmp_path, sites=3, images_per_site=31, classes=3)
    assert manifest == tmp_path / "manifest.csv"
    with manifest.open(encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(MANIFEST_COLUMNS)
    rows = _read_manifest(manifest)
    assert len(rows) == 93
    assert len({r["image_id"] for r in rows}) == 93
    assert {r["site"] for r in rows} == {"site_a", "site_b", "site_c"}
    assert {r["label"] for r in rows} == {"class_0", "class_1", "class_2"}
    assert rows[12]["image"] == "images/site_a/img_00012.png"
    for row in rows:
        assert not Path(row["image"]).is_absolute()
        assert row["image"].startswith(f"images/{row['site']}/")
        assert (tmp_path / row["image"]).is_file()
    by_group: dict[str, set[tuple[str, str]]] = defaultdict(set)
    sizes: Counter[str] = Counter()
    for row in rows:
        by_group[row["group"]].add((row["site"], row["label"]))
        sizes[row["group"]] += 1
    assert all(len(members) == 1 for members in by_group.values())  # one site, one label
    assert max(sizes.values()) == 2
    assert sorted(sizes.values()).count(1) == 3  # 31 images: one short group per site
    assert len(by_group) == 3 * 16


def test_custom_site_names_and_group_size(tmp_path: Path) -> None:
    names = ["north", "south"]
    manifest = generate_synthetic_dataset(
        tmp_path, sites=2, images_per_site=12, site_names=names, images_per_group=3
    )
    rows = _read_manifest(manifest)
    assert [r["site"] for r in rows] == ["north"] * 12 + ["south"] * 12
    assert (tmp_path / "images" / "south" / "img_00011.png").is_file()
    assert set(Counter(r["group"] for r in rows).values()) == {3}


def test_class_mix_is_skewed_per_site_and_last_site_balanced() -> None:
    mix = site_class_mix(3, 3)
    assert np.allclose(mix.sum(axis=1), 1.0)
    assert np.argmax(mix[0]) == 0 and mix[0, 0] > 0.6
    assert np.argmax(mix[1]) == 1 and mix[1, 1] > 0.6
    assert np.allclose(mix[2], 1.0 / 3.0)
    assert np.allclose(site_class_mix(3, 3, skew=0.0), 1.0 / 3.0)

    data = make_synthetic_arrays(sites=3, images_per_site=60, classes=3)
    counts = Counter(zip(data.sites, data.labels, strict=True))
    assert counts[("site_a", "class_0")] == 40  # 2/3 of 30 groups of 2
    assert counts[("site_b", "class_1")] == 40
    assert {counts[("site_c", f"class_{k}")] for k in range(3)} == {20}
    assert all(counts[(s, f"class_{k}")] > 0 for s in ("site_a", "site_b") for k in range(3))


def test_every_class_present_even_with_few_groups() -> None:
    data = make_synthetic_arrays(sites=2, images_per_site=10, classes=5, class_skew=0.9)
    for site in ("site_a", "site_b"):
        labels = {lab for lab, s in zip(data.labels, data.sites, strict=True) if s == site}
        assert labels == {f"class_{k}" for k in range(5)}


def test_images_of_a_group_are_similar_but_not_identical() -> None:
    data = make_synthetic_arrays(sites=1, images_per_site=40, seed=0)
    x = _stack(data.images)[:, 0]
    z = (x - x.mean()) / x.std()
    flat = z.reshape(len(z), -1)
    same, other = [], []
    for i in range(0, len(z), 2):
        same.append(np.corrcoef(flat[i], flat[i + 1])[0, 1])
        other.append(np.corrcoef(flat[i], flat[(i + 2) % len(z)])[0, 1])
    assert not np.array_equal(z[0], z[1])
    assert np.median(same) > 0.5
    assert np.median(same) > np.median(other) + 0.3


# --------------------------------------------------------------------------------------------
# Site shift and class content


@pytest.mark.parametrize("channels", [1, 3])
def test_site_shift_is_large_raw_and_removed_by_per_site_zscore(channels: int) -> None:
    data = make_synthetic_arrays(sites=3, images_per_site=60, channels=channels, seed=0)
    x = _stack(data.images)
    sites = np.array(data.sites)
    groups = np.array(data.groups)
    raw_means, spreads, pixel_stds, normalized_means, normalized_stds = [], [], [], [], []
    for site in default_site_names(3):
        xs = x[sites == site]
        image_means = xs.reshape(len(xs), -1).mean(axis=1)
        raw_means.append(image_means.mean())
        spreads.append(image_means.std())
        pixel_stds.append(xs.std())
        # Fit the per-site statistics on half of the site's groups, apply to the other half.
        site_groups = sorted(set(groups[sites == site]))
        fit = np.isin(groups[sites == site], site_groups[::2])
        mean, std = xs[fit].mean(), xs[fit].std()
        z = (xs[~fit] - mean) / std
        normalized_means.append(z.mean())
        normalized_stds.append(z.std())
    raw_gap = np.diff(np.sort(raw_means)).min()
    assert raw_gap > 5 * max(spreads)  # several standard deviations of the image means
    assert np.ptp(raw_means) > 2 * max(pixel_stds)  # and several pixel standard deviations
    assert np.ptp(normalized_means) < 0.25
    assert np.allclose(normalized_stds, 1.0, atol=0.2)


def test_class_content_survives_but_mean_intensity_does_not_separate_classes() -> None:
    data = make_synthetic_arrays(sites=3, images_per_site=120, seed=1)
    x = _stack(data.images)[:, 0]
    sites = np.array(data.sites)
    labels = np.array(data.labels)
    for site in default_site_names(3):
        xs, ls = x[sites == site], labels[sites == site]
        z = (xs - xs.mean()) / xs.std()
        edge = np.abs(np.diff(z, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(z, axis=2)).mean(
            axis=(1, 2)
        )
        mean = z.mean(axis=(1, 2))

        def separation(feature: np.ndarray, ls: np.ndarray = ls) -> float:
            a, b = feature[ls == "class_0"], feature[ls == "class_1"]
            return float(abs(a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2))

        # Rings (class 1) have much more edge per covered area than discs (class 0) ...
        assert separation(edge) > 1.5
        # ... while the covered area, hence the mean intensity, is drawn class-independently.
        assert separation(mean) < 1.0
        assert separation(edge) > 2 * separation(mean)


# --------------------------------------------------------------------------------------------
# Files on disk


def test_png_grey_reads_back_16_bit(tmp_path: Path) -> None:
    data = make_synthetic_arrays(sites=2, images_per_site=4, seed=5)
    rows = _read_manifest(generate_synthetic_dataset(tmp_path, sites=2, images_per_site=4, seed=5))
    for row, image in zip(rows, data.images, strict=True):
        with Image.open(tmp_path / row["image"]) as pil:
            assert pil.format == "PNG"
            assert pil.mode.startswith("I")  # 16-bit grey
            pixels = np.asarray(pil)
        assert pixels.shape == (32, 32)
        assert np.array_equal(pixels.astype(np.float32), image[0])


def test_png_rgb_reads_back_8_bit(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"sites": 2, "images_per_site": 4, "channels": 3, "size": 20}
    data = make_synthetic_arrays(**kwargs)
    rows = _read_manifest(generate_synthetic_dataset(tmp_path, **kwargs))
    for row, image in zip(rows, data.images, strict=True):
        with Image.open(tmp_path / row["image"]) as pil:
            assert pil.mode == "RGB"
            pixels = np.asarray(pil)
        assert pixels.shape == (20, 20, 3)
        assert pixels.dtype == np.uint8
        assert np.array_equal(np.moveaxis(pixels, -1, 0).astype(np.float32), image)


def test_nifti_reads_back_float32(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"sites": 2, "images_per_site": 3, "dims": 3, "size": 16}
    data = make_synthetic_arrays(**kwargs)
    rows = _read_manifest(generate_synthetic_dataset(tmp_path, **kwargs))
    assert rows[0]["image"] == "images/site_a/img_00000.nii.gz"
    for row, image in zip(rows, data.images, strict=True):
        volume = nib.load(tmp_path / row["image"])
        assert isinstance(volume, nib.Nifti1Image)
        assert volume.get_data_dtype() == np.float32
        array = np.asarray(volume.dataobj)
        assert array.shape == (16, 16, 16)
        assert np.array_equal(array, image[0])


def test_rerun_replaces_files_without_leftover_temporaries(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path, sites=2, images_per_site=4, seed=0)
    manifest = generate_synthetic_dataset(tmp_path, sites=2, images_per_site=4, seed=1)
    assert (
        manifest.read_bytes()
        == generate_synthetic_dataset(
            tmp_path / "fresh", sites=2, images_per_site=4, seed=1
        ).read_bytes()
    )
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": 4}, "dims"),
        ({"dims": 3, "channels": 3}, "channels"),
        ({"channels": 2}, "channels"),
        ({"classes": 1}, "classes"),
        ({"size": 4}, "size"),
        ({"images_per_site": 0}, "images_per_site"),
        ({"images_per_group": 0}, "images_per_group"),
        ({"sites": 2, "site_names": ["a"]}, "site_names"),
        ({"sites": 2, "site_names": ["a", "a"]}, "duplicates"),
        ({"sites": 2, "site_names": ["a", "b/c"]}, "folder name"),
        ({"class_skew": 1.0}, "class_skew"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_synthetic_arrays(**{"images_per_site": 4, **kwargs})  # type: ignore[arg-type]
