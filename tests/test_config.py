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


# -- hostile and careless configs (issue 23: 13, 14, 15) ---------------------------------------


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    # Nine levels of nine-fold aliases would expand to 387 million items.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    p = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not a valid config \(line 2, .*aliases"):
        load_config(p)


def test_a_self_referencing_alias_is_one_clean_error(tmp_path: Path) -> None:
    p = write(tmp_path, "name: &n [*n]\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_config(p)
    with pytest.raises(ConfigError, match="aliases"):
        load_config(write(tmp_path, "name: demo\n"), ["fusion.modes=&m [*m]"])


def test_a_repeated_section_is_refused_not_dropped(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  epochs: 3\nfusion:\n  epochs: 5\ntraining:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"'training' appears twice .*line 1 and line 5"):
        load_config(p)


def test_a_config_that_is_not_utf8_names_the_file_and_byte(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 9"):
        load_config(p)


def test_python_tags_never_construct_objects(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    p = write(tmp_path, f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r"c\.yaml: not a valid config .*python/object/apply"):
        load_config(p)
    assert not marker.exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused(tmp_path: Path, value: str) -> None:
    p = write(tmp_path, f"training:\n  lr: {value}\n")
    with pytest.raises(ConfigError, match=r"training\.lr.*a finite number"):
        load_config(p)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("training:\n  epochs: 1000000000000000000000000\n", r"training\.epochs.*at most 10,000"),
        ("data:\n  spatial_size: [100000, 100000]\n", r"data\.spatial_size.*at most"),
        ("fusion:\n  finetune_soup: 1000\n", r"fusion\.finetune_soup.*at most 32"),
    ],
)
def test_absurd_sizes_are_refused_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(write(tmp_path, text))


def test_an_unknown_backbone_is_refused_when_the_config_is_read(tmp_path: Path) -> None:
    # The backbone registry's own check runs inside the schema: load_config refuses what a run
    # would, so no half-made run directory can exist (a Config with this backbone cannot).
    from sitefusion.config import config_from_dict

    p = write(tmp_path, "expert:\n  backbone: resnet9000\n")
    with pytest.raises(
        ConfigError,
        match=r"c\.yaml: field 'expert\.backbone' is 'resnet9000'; valid choices: .*compact",
    ):
        load_config(p)
    with pytest.raises(ConfigError, match=r"did you mean 'densenet121'"):
        load_config(p, ["expert.backbone=densenet12"])
    # A stored config (a run directory's, a federated site's copy) is refused the same way.
    with pytest.raises(ConfigError, match=r"run/config\.yaml: field 'expert\.backbone'"):
        config_from_dict({"expert": {"backbone": "resnet9000"}}, "run/config.yaml")


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


def test_experts_start_from_fedavg_only_with_fedavg_and_without_cross_fit(tmp_path: Path) -> None:
    p = write(tmp_path, "data:\n  channels: 1\n")
    with pytest.raises(ConfigError, match=r"expert\.start.*set baselines\.fedavg: true"):
        load_config(p, ["expert.start=fedavg"])
    with pytest.raises(ConfigError, match=r"fusion\.cross_fit.*set fusion\.cross_fit: false"):
        load_config(p, ["expert.start=fedavg", "baselines.fedavg=true", "fusion.cross_fit=true"])
    cfg = load_config(p, ["expert.start=fedavg", "baselines.fedavg=true"])
    assert cfg.expert.start == "fedavg" and not cfg.fusion.cross_fit
    with pytest.raises(ConfigError, match="valid choices: initial, fedavg"):
        load_config(p, ["expert.start=pooled"])
