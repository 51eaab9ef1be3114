from __future__ import annotations

from pathlib import Path

import pytest

from sitefusion.config import config_to_dict, load_config, parse_overrides
from sitefusion.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["demo.yaml", "ham10000.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.source_path is not None and cfg.source_path.endswith(name)
    assert len(cfg.data.spatial_size) == 2


def test_ham_config_mapping() -> None:
    cfg = load_config(ROOT / "configs" / "ham10000.yaml")
    assert cfg.data.root == "../shared/data/ham10000"
    assert (cfg.data.image, cfg.data.label, cfg.data.site, cfg.data.group) == (
        "images/{image_id}.jpg",
        "dx",
        "site",
        "lesion_id",
    )


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_field_and_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "training.epoch" in msg and "did you mean 'epochs'" in msg


def test_bad_choice_lists_valid_ones(tmp_path: Path) -> None:
    p = write(tmp_path, "normalization:\n  kind: zscor\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "normalization.kind" in msg and "percentile" in msg and "did you mean 'zscore'" in msg


def test_wrong_type(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"training\.epochs.*integer"):
        load_config(p)


def test_fractions_must_sum_to_one(tmp_path: Path) -> None:
    p = write(tmp_path, "split:\n  train: 0.7\n  fusion: 0.2\n  test: 0.2\n")
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(p)


def test_overrides_apply_and_are_typed(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  epochs: 3\n")
    cfg = load_config(
        p, ["training.epochs=7", "data.root=/elsewhere", "data.spatial_size=[32, 48]"]
    )
    assert cfg.training.epochs == 7
    assert cfg.data.root == "/elsewhere"
    assert cfg.data.spatial_size == (32, 48)


def test_override_unknown_key_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match="did you mean 'root'"):
        load_config(p, ["data.rot=/x"])


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["data.root"])


def test_config_is_frozen_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
    import yaml

    again = write(tmp_path, yaml.safe_dump(config_to_dict(cfg)))
    assert config_to_dict(load_config(again)) == config_to_dict(cfg)
