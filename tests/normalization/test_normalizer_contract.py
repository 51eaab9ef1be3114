"""Contract shared by every registered normalizer kind (scikit-learn style)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sitefusion.errors import ArtifactError, ConfigError, NotFittedError
from sitefusion.normalization import (
    NORMALIZERS,
    SIGNATURE_LEVELS,
    load_normalizer,
    make_normalizer,
)

KINDS = sorted(NORMALIZERS)


def channels_for(kind: str) -> int:
    return 3 if kind == "colour" else 2


def site_images(kind: str, n: int = 4, spatial: tuple[int, ...] = (12, 14), seed: int = 0):
    """Small random channel-first images of one site; RGB in 0..1 for the colour kind."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        if kind == "colour":
            images.append(rng.uniform(0.1, 0.9, (3, *spatial)))
        else:
            grey = rng.gamma(2.0, 30.0, (1, *spatial)) + 5.0 * i
            images.append(np.concatenate([grey, 0.01 * grey + rng.normal(0, 0.1, grey.shape)]))
    return images


def trailing_underscore_attrs(obj: object) -> set[str]:
    return {k for k in vars(obj) if k.endswith("_") and not k.startswith("__")}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_fit_returns_self_and_sets_fitted_attributes(kind: str) -> None:
    normalizer = make_normalizer(kind)
    assert trailing_underscore_attrs(normalizer) == set()
    assert not normalizer.is_fitted
    images = site_images(kind)
    assert normalizer.fit(images) is normalizer
    state = normalizer.fitted_state()
    assert {"n_images_", "n_channels_", "signature_"} <= set(state)
    assert set(state) == trailing_underscore_attrs(normalizer)
    assert len(state) > 3  # the kind's own parameters
    assert normalizer.n_images_ == len(images)
    assert normalizer.n_channels_ == channels_for(kind)
    assert normalizer.signature_.shape == (channels_for(kind), len(SIGNATURE_LEVELS))
    assert np.all(np.diff(normalizer.signature_, axis=1) >= 0)
    json.dumps(state)  # JSON-safe


def test_unfitted_use_raises_not_fitted(kind: str, tmp_path: Path) -> None:
    normalizer = make_normalizer(kind)
    image = site_images(kind, n=1)[0]
    with pytest.raises(NotFittedError, match="not fitted"):
        normalizer.transform(image)
    with pytest.raises(NotFittedError):
        normalizer.save(tmp_path / "n.json")
    with pytest.raises(NotFittedError):
        normalizer.fitted_state()
    assert not (tmp_path / "n.json").exists()


def test_save_load_round_trip_is_identical(kind: str, tmp_path: Path) -> None:
    images = site_images(kind)
    normalizer = make_normalizer(kind).fit(images)
    path = normalizer.save(tmp_path / "norm.json")
    payload = json.loads(path.read_text())
    assert set(payload) == {"kind", "version", "params", "fitted"}
    assert payload["kind"] == kind and payload["version"] == type(normalizer).version
    assert [p.name for p in tmp_path.iterdir()] == ["norm.json"]  # no temp file left behind

    probe = site_images(kind, n=1, seed=7)[0] * 1.1
    expected = normalizer.transform(probe)
    for loaded in (
        type(normalizer).load(path),
        load_normalizer(path),
    ):
        assert type(loaded) is type(normalizer)
        assert loaded.get_params() == normalizer.get_params()
        assert loaded.fitted_state() == normalizer.fitted_state()
        np.testing.assert_array_equal(loaded.transform(probe), expected)


def _saved_payload(kind: str, tmp_path: Path) -> tuple[Path, dict]:
    path = make_normalizer(kind).fit(site_images(kind)).save(tmp_path / "norm.json")
    return path, json.loads(path.read_text())


def test_load_refuses_another_kind(kind: str, tmp_path: Path) -> None:
    path, payload = _saved_payload(kind, tmp_path)
    other = next(k for k in KINDS if k != kind)
    with pytest.raises(ArtifactError, match="'kind'") as info:
        NORMALIZERS[other].load(path)
    assert str(path) in str(info.value)
    payload["kind"] = other
    path.write_text(json.dumps(payload))
    with pytest.raises(ArtifactError, match=r"'kind'.*expected"):
        NORMALIZERS[kind].load(path)


def test_load_refuses_another_version(kind: str, tmp_path: Path) -> None:
    path, payload = _saved_payload(kind, tmp_path)
    payload["version"] = NORMALIZERS[kind].version + 1
    path.write_text(json.dumps(payload))
    for load in (NORMALIZERS[kind].load, load_normalizer):
        with pytest.raises(ArtifactError, match="'version'") as info:
            load(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("corrupt", "field"),
    [
        (lambda p: p.pop("fitted"), "'fitted'"),
        (lambda p: p["fitted"].pop("signature_"), "'fitted.signature_'"),
        (lambda p: p["fitted"].update(signature_=[[1.0, 2.0]]), "'fitted.signature_'"),
        (lambda p: p["fitted"].update(n_channels_=0), "'fitted.n_channels_'"),
        (lambda p: p["params"].update(seed=-3), "'params'"),
        (lambda p: p["params"].update(bogus=1), "'params.bogus'"),
    ],
)
def test_load_refuses_inconsistent_content(kind: str, tmp_path: Path, corrupt, field: str) -> None:
    path, payload = _saved_payload(kind, tmp_path)
    corrupt(payload)
    path.write_text(json.dumps(payload))
    with pytest.raises(ArtifactError, match=field):
        NORMALIZERS[kind].load(path)


def test_load_refuses_malformed_json_and_missing_file(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"kind": ')
    with pytest.raises(ArtifactError, match="malformed JSON") as info:
        NORMALIZERS[kind].load(path)
    assert "broken.json" in str(info.value)
    path.write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="JSON object"):
        load_normalizer(path)
    with pytest.raises(ArtifactError, match=r"missing\.json"):
        NORMALIZERS[kind].load(tmp_path / "missing.json")


@pytest.mark.parametrize("spatial", [(9, 11), (4, 6, 7)], ids=["2d", "3d"])
def test_2d_and_3d_images(kind: str, spatial: tuple[int, ...]) -> None:
    images = site_images(kind, spatial=spatial)
    normalizer = make_normalizer(kind).fit(images)
    out = normalizer.transform(images[0])
    assert out.shape == images[0].shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not np.allclose(out, images[0])
    assert normalizer.fit_transform(images)[0].shape == images[0].shape


def test_channel_mismatch_is_refused(kind: str) -> None:
    normalizer = make_normalizer(kind).fit(site_images(kind))
    image = site_images(kind, n=1)[0]
    with pytest.raises(ValueError, match="channel"):
        normalizer.transform(np.concatenate([image, image[:1]]))
    mixed = [image, np.concatenate([image, image[:1]])]
    with pytest.raises(ValueError, match=r"image 1.*channel"):
        make_normalizer(kind).fit(mixed)


def test_fitting_is_deterministic(kind: str) -> None:
    images = site_images(kind, spatial=(20, 20))
    # samples_per_image below the pixel count exercises the seeded subsampling.
    params = {"samples_per_image": 50, "seed": 3}
    first = make_normalizer(kind, **params).fit(images)
    second = make_normalizer(kind, **params).fit(im for im in images)  # a generator
    assert first.fitted_state() == second.fitted_state()
    np.testing.assert_array_equal(first.transform(images[0]), second.transform(images[0]))
    other_seed = make_normalizer(kind, samples_per_image=50, seed=4).fit(images)
    assert other_seed.fitted_state()["signature_"] != first.fitted_state()["signature_"]


def test_params_are_json_safe_and_rebuild(kind: str) -> None:
    normalizer = make_normalizer(kind)
    params = normalizer.get_params()
    assert {"seed", "samples_per_image"} <= set(params)
    rebuilt = type(normalizer)(**json.loads(json.dumps(params)))
    assert rebuilt.get_params() == params
    assert type(normalizer).__name__ in repr(normalizer)


@pytest.mark.parametrize(("name", "value"), [("seed", -1), ("samples_per_image", 0)])
def test_bad_common_hyperparameter_names_it(kind: str, name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        make_normalizer(kind, **{name: value})


def test_bad_inputs_are_refused(kind: str) -> None:
    normalizer = make_normalizer(kind)
    with pytest.raises(ValueError, match="no images"):
        normalizer.fit([])
    with pytest.raises(ValueError, match="iterable"):
        normalizer.fit(site_images(kind, n=1)[0])  # one bare array, not a list of images
    with pytest.raises(ValueError, match=r"channel-first.*\(12, 14\)"):
        normalizer.fit([np.ones((12, 14))])
    image = site_images(kind, n=1)[0]
    image[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalizer.fit([image])


def test_refit_replaces_state(kind: str) -> None:
    normalizer = make_normalizer(kind).fit(site_images(kind, seed=1))
    before = normalizer.fitted_state()
    normalizer.fit([im * 0.5 for im in site_images(kind, n=2, seed=2)])
    assert normalizer.n_images_ == 2
    assert normalizer.fitted_state() != before
