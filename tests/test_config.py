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


def test_negative_finetune_anchor_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "fusion:\n  finetune_anchor: -0.1\n")
    with pytest.raises(ConfigError, match=r"fusion\.finetune_anchor"):
        load_config(p)


@pytest.mark.parametrize("swa", [-1, 7])
def test_swa_epochs_outside_the_schedule_is_refused(tmp_path: Path, swa: int) -> None:
    p = write(tmp_path, f"training:\n  epochs: 6\n  swa_epochs: {swa}\n")
    with pytest.raises(ConfigError, match=r"training\.swa_epochs.*up to 6"):
        load_config(p)


def test_unknown_finetune_balance_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "fusion:\n  finetune_balance: sites\n")
    with pytest.raises(ConfigError, match=r"fusion\.finetune_balance.*site_class"):
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


def test_an_unknown_epoch_selection_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  select_by: auc\n")
    with pytest.raises(ConfigError, match=r"training\.select_by.*balanced_accuracy or loss"):
        load_config(p)


LITE0 = ["expert.backbone=efficientnet-lite0", "expert.pretrained=imagenet"]


def test_ham_config_takes_imagenet_lite0() -> None:
    cfg = load_config(ROOT / "configs" / "ham10000.yaml", LITE0)
    assert (cfg.expert.backbone, cfg.expert.pretrained) == ("efficientnet-lite0", "imagenet")


def test_unknown_pretrained_value_lists_choices(tmp_path: Path) -> None:
    p = write(tmp_path, "expert:\n  pretrained: imagent\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "expert.pretrained" in msg and ".safetensors" in msg
    assert "did you mean 'imagenet'" in msg


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["expert.pretrained=imagenet"], "'efficientnet-lite0' only; expert.backbone is 'compact'"),
        ([*LITE0, "data.channels=1"], r"data\.channels is 1: expected 2 sizes and 3 channels"),
        ([*LITE0, "data.spatial_size=[32, 32, 32]"], r"spatial_size is \[32, 32, 32\]"),
    ],
)
def test_imagenet_refused_where_it_cannot_apply(
    tmp_path: Path, overrides: list[str], match: str
) -> None:
    p = write(tmp_path, "data:\n  channels: 3\n")
    with pytest.raises(ConfigError, match=match):
        load_config(p, overrides)


def test_imagenet_input_scaling_must_suit_the_normalizer(tmp_path: Path) -> None:
    p = write(tmp_path, "data:\n  channels: 3\nnormalization:\n  kind: percentile\n")
    with pytest.raises(ConfigError, match=r"needs expert\.params\.input_scaling 'unit'"):
        load_config(p, LITE0)
    cfg = load_config(p, [*LITE0, "expert.params.input_scaling=unit"])
    assert cfg.expert.params["input_scaling"] == "unit"
    with pytest.raises(ConfigError, match="rescale: true"):
        load_config(
            p, [*LITE0, "normalization.kind=histogram", "normalization.params.rescale=false"]
        )


def test_pretrained_file_must_exist_when_a_run_starts(tmp_path: Path) -> None:
    from sitefusion.config import config_from_dict

    weights = tmp_path / "w.safetensors"
    p = write(tmp_path, f"expert:\n  pretrained: {weights}\n")
    with pytest.raises(ConfigError, match=r"w\.safetensors.*not an existing file"):
        load_config(p)
    weights.write_bytes(b"x")
    assert load_config(p).expert.pretrained == str(weights)
    # A run directory's stored config is read back without the file (the run holds the weights).
    weights.unlink()
    stored = config_from_dict({"expert": {"pretrained": str(weights)}}, "run/config.yaml")
    assert stored.expert.pretrained == str(weights)
