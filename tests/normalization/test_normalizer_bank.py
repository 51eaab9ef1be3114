"""NormalizerBank: per-site normalizers, the pooled one and the unseen-site policies."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from sitefusion.errors import ArtifactError, NotFittedError, UnknownChoiceError
from sitefusion.normalization import (
    NORMALIZERS,
    POOLED_SITE,
    SELF_SITE,
    NormalizedImage,
    NormalizerBank,
    ZScoreNormalizer,
    make_normalizer,
)

# Three sites with clearly different intensity distributions (gain / offset).
SITE_STATS = {"A": (100.0, 10.0), "B": (500.0, 30.0), "C": (-200.0, 5.0)}


def site_images(site: str, n: int = 3, seed: int = 0) -> list[np.ndarray]:
    centre, spread = SITE_STATS[site]
    rng = np.random.default_rng(seed + ord(site))
    return [centre + spread * rng.standard_normal((1, 10, 12)) for _ in range(n)]


def images_by_site() -> dict[str, list[np.ndarray]]:
    return {site: site_images(site) for site in SITE_STATS}


@pytest.fixture
def bank() -> NormalizerBank:
    return NormalizerBank("zscore", {"clip": (1, 99)}).fit(images_by_site())


def test_each_site_is_fitted_on_its_own_images_only(bank: NormalizerBank) -> None:
    assert bank.sites_ == ("A", "B", "C")
    assert bank.n_channels_ == 1
    for site, images in images_by_site().items():
        alone = ZScoreNormalizer(clip=(1, 99)).fit(images)
        assert bank[site].fitted_state() == alone.fitted_state()
    union = itertools.chain.from_iterable(images_by_site().values())
    assert bank.pooled_ is not None
    assert bank.pooled_.fitted_state() == ZScoreNormalizer(clip=(1, 99)).fit(union).fitted_state()
    assert bank.pooled_.n_images_ == 9


def test_fit_accepts_generators() -> None:
    lazy = {site: (im for im in images) for site, images in images_by_site().items()}
    bank = NormalizerBank("zscore", {"clip": (1, 99)}).fit(lazy)
    assert (
        bank["B"].fitted_state()
        == ZScoreNormalizer(clip=(1, 99)).fit(site_images("B")).fitted_state()
    )


def test_known_site_uses_its_own_parameters(bank: NormalizerBank) -> None:
    image = site_images("A", n=1, seed=9)[0]
    result = bank.transform(image, "A")
    assert isinstance(result, NormalizedImage)
    assert (result.site_used, result.policy, result.requested_site) == ("A", "known", "A")
    np.testing.assert_array_equal(result.array, bank["A"].transform(image))
    assert abs(float(result.array.mean())) < 0.5  # A's parameters centre A's images
    other = bank.transform(image, "B")
    # B's parameters clip A's darker image to B's lower bound: all at (p1_B - mean_B) / std_B.
    expected = (bank["B"].bounds_[0, 0] - bank["B"].mean_[0]) / bank["B"].std_[0]
    assert other.site_used == "B"
    np.testing.assert_allclose(other.array, expected, rtol=1e-6)


@pytest.mark.parametrize("requested", ["D", None])
def test_nearest_picks_the_resembling_site(bank: NormalizerBank, requested: str | None) -> None:
    shifted = site_images("B", n=1, seed=11)[0] + 25.0  # a B-like scanner, slightly offset
    result = bank.transform(shifted, requested)
    assert (result.site_used, result.policy, result.requested_site) == ("B", "nearest", requested)
    np.testing.assert_array_equal(result.array, bank["B"].transform(shifted))
    distances = bank.site_distances(shifted)
    assert distances["B"] < distances["A"] < distances["C"]
    assert bank.nearest_site(site_images("C", n=1, seed=3)[0] * 1.1) == "C"


def test_nearest_refuses_another_channel_count(bank: NormalizerBank) -> None:
    with pytest.raises(ValueError, match="channel"):
        bank.transform(np.ones((2, 4, 4)), "D")


def test_self_policy_fits_on_the_image_or_the_batch() -> None:
    bank = NormalizerBank("percentile", unseen_policy="self").fit(images_by_site())
    new_site = [im * 3.0 + 7.0 for im in site_images("A", n=2, seed=5)]
    result = bank.transform(new_site[0], "D")
    assert (result.site_used, result.policy, result.requested_site) == (SELF_SITE, "self", "D")
    own = make_normalizer("percentile").fit([new_site[0]])
    np.testing.assert_array_equal(result.array, own.transform(new_site[0]))
    batch = bank.transform_batch(new_site, "D")
    on_batch = make_normalizer("percentile").fit(new_site)
    assert [r.policy for r in batch] == ["self", "self"]
    for image, r in zip(new_site, batch, strict=True):
        np.testing.assert_array_equal(r.array, on_batch.transform(image))
    known = bank.transform_batch(site_images("A", n=2), "A")
    assert [r.policy for r in known] == ["known", "known"]


def test_pooled_policy_uses_the_pooled_normalizer() -> None:
    bank = NormalizerBank("zscore", unseen_policy="pooled").fit(images_by_site())
    image = site_images("C", n=1, seed=4)[0]
    result = bank.transform(image)
    assert (result.site_used, result.policy, result.requested_site) == (POOLED_SITE, "pooled", None)
    assert bank.pooled_ is not None
    np.testing.assert_array_equal(result.array, bank.pooled_.transform(image))
    assert bank.transform(image, "C").policy == "known"


@pytest.mark.parametrize("kind", sorted(NORMALIZERS))
def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sites = {
        "site/1": [rng.uniform(0.0, 0.6, (3, 8, 8)) for _ in range(2)],
        "bank": [rng.uniform(0.3, 1.0, (3, 8, 8)) for _ in range(2)],
        "Zürich": [rng.uniform(0.1, 0.9, (3, 8, 8)) for _ in range(2)],
    }
    bank = NormalizerBank(kind, unseen_policy="pooled").fit(sites)
    bank.save(tmp_path / "bank")
    files = sorted(p.name for p in (tmp_path / "bank").iterdir())
    assert "bank.json" in files and "_pooled.json" in files and len(files) == 5
    assert all("/" not in name and name.endswith(".json") for name in files)
    index = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert index["kind"] == kind and index["unseen_policy"] == "pooled" and index["version"] == 1
    assert [entry["site"] for entry in index["sites"]] == list(sites)
    assert index["params"] == bank.params

    loaded = NormalizerBank.load(tmp_path / "bank")
    assert loaded.sites_ == bank.sites_ and loaded.kind == kind
    probe = rng.uniform(0.2, 0.8, (3, 8, 8))
    for site in [*sites, None]:
        a, b = bank.transform(probe, site), loaded.transform(probe, site)
        assert (a.site_used, a.policy) == (b.site_used, b.policy)
        np.testing.assert_array_equal(a.array, b.array)


def test_load_checks_every_file(bank: NormalizerBank, tmp_path: Path) -> None:
    root = bank.save(tmp_path / "b")
    site_file = root / "A.json"
    site_file.write_text(site_file.read_text().replace('"n_images_": 3', '"n_images_": 4'))
    with pytest.raises(ArtifactError, match="SHA-256"):
        NormalizerBank.load(root)
    site_file.unlink()
    with pytest.raises(ArtifactError, match="does not exist"):
        NormalizerBank.load(root)
    index = json.loads((root / "bank.json").read_text())
    index["version"] = 2
    (root / "bank.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="'version'"):
        NormalizerBank.load(root)
    index["version"] = 1
    index["sites"][0]["file"] = "../escape.json"
    (root / "bank.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="plain file name"):
        NormalizerBank.load(root)
    with pytest.raises(ArtifactError, match=r"bank\.json"):
        NormalizerBank.load(tmp_path / "nowhere")


def test_invalid_construction() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'nearest'"):
        NormalizerBank("zscore", unseen_policy="neerest")
    with pytest.raises(UnknownChoiceError, match="normalizer kind"):
        NormalizerBank("zcore")
    assert NormalizerBank("color").kind == "colour"
    with pytest.raises(NotFittedError):
        NormalizerBank().transform(np.ones((1, 4, 4)), "A")
    with pytest.raises(NotFittedError):
        _ = NormalizerBank().sites_


def test_fit_refuses_bad_site_data() -> None:
    with pytest.raises(ValueError, match="'B' has no images"):
        NormalizerBank().fit({"A": site_images("A"), "B": []})
    with pytest.raises(ValueError, match=r"site 'B' image 0.*channel"):
        NormalizerBank().fit({"A": site_images("A"), "B": [np.ones((2, 5, 5))]})
    with pytest.raises(ValueError, match="reserved"):
        NormalizerBank().fit({POOLED_SITE: site_images("A")})
    with pytest.raises(ValueError, match="no sites"):
        NormalizerBank().fit({})


def test_from_normalizers() -> None:
    fitted = {s: ZScoreNormalizer().fit(site_images(s)) for s in ("A", "B")}
    pooled = ZScoreNormalizer().fit(site_images("A") + site_images("B"))
    bank = NormalizerBank.from_normalizers(fitted, pooled=pooled, unseen_policy="pooled")
    assert bank.sites_ == ("A", "B") and bank.pooled_ is pooled
    assert bank.transform(site_images("B", n=1)[0] + 5, "X").site_used == POOLED_SITE
    mixed = {"A": fitted["A"], "B": ZScoreNormalizer(clip=(2, 98)).fit(site_images("B"))}
    with pytest.raises(ValueError, match="identical hyper-parameters"):
        NormalizerBank.from_normalizers(mixed, pooled=pooled)
    other_kind = make_normalizer("percentile").fit(site_images("A"))
    with pytest.raises(ValueError, match="pooled"):
        NormalizerBank.from_normalizers(fitted, pooled=other_kind)
    with pytest.raises(NotFittedError):
        NormalizerBank.from_normalizers({"A": ZScoreNormalizer()}, pooled=pooled)


def test_without_drops_a_site_for_leave_one_site_out(bank: NormalizerBank) -> None:
    image = site_images("B", n=1, seed=6)[0]
    held_out = bank.without("B")
    assert held_out.sites_ == ("A", "C") and bank.sites_ == ("A", "B", "C")
    assert held_out["A"] is bank["A"] and held_out.pooled_ is bank.pooled_
    result = held_out.transform(image, "B")
    assert result.policy == "nearest" and result.site_used == "A"  # B is unseen now
    assert bank.transform(image, "B").policy == "known"
    with pytest.raises(UnknownChoiceError, match="valid choices: A, B, C"):
        bank.without("D")
    with pytest.raises(ValueError, match="no site would remain"):
        bank.without("A", "B", "C")
