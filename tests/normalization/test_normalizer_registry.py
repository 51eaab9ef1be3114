"""The kind registry: construction and loading by name."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest

from sitefusion import config
from sitefusion.errors import ArtifactError, ConfigError, UnknownChoiceError
from sitefusion.normalization import (
    NORMALIZERS,
    UNSEEN_POLICIES,
    ColourNormalizer,
    ZScoreNormalizer,
    canonical_kind,
    load_normalizer,
    make_normalizer,
)


def test_registry_covers_the_config_choices() -> None:
    assert set(NORMALIZERS) == {"zscore", "percentile", "histogram", "colour"}
    assert set(typing.get_args(config.NormalizerKind)) == set(NORMALIZERS)
    assert set(typing.get_args(config.UnseenPolicy)) == set(UNSEEN_POLICIES)
    for kind, cls in NORMALIZERS.items():
        assert cls.kind == kind
        assert cls.__doc__


def test_make_normalizer_builds_with_params() -> None:
    normalizer = make_normalizer("zscore", clip=[2, 98], seed=5)
    assert isinstance(normalizer, ZScoreNormalizer)
    assert normalizer.clip == (2.0, 98.0) and normalizer.seed == 5


def test_unknown_kind_suggests_the_nearest() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'zscore'") as info:
        make_normalizer("zscroe")
    assert "histogram" in str(info.value)  # lists the valid kinds


def test_colour_alias() -> None:
    assert canonical_kind("color") == "colour"
    assert isinstance(make_normalizer("color"), ColourNormalizer)


def test_unknown_or_bad_parameter() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'clip'"):
        make_normalizer("zscore", clp=(1, 99))
    with pytest.raises(ConfigError, match="'low'"):
        make_normalizer("percentile", low=200)


@pytest.mark.parametrize("kind", sorted(NORMALIZERS))
def test_load_normalizer_dispatches_on_kind(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (3, 6, 6))
    path = make_normalizer(kind).fit([image]).save(tmp_path / f"{kind}.json")
    loaded = load_normalizer(path)
    assert type(loaded) is NORMALIZERS[kind]
    np.testing.assert_array_equal(
        loaded.transform(image), make_normalizer(kind).fit([image]).transform(image)
    )


def test_load_normalizer_refuses_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"kind": "wavelet", "version": 1, "params": {}, "fitted": {}}))
    with pytest.raises(ArtifactError, match=r"n\.json.*'kind'.*wavelet"):
        load_normalizer(path)
