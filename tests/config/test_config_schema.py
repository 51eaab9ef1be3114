"""The pydantic schema (sitefusion.config): checks it added, the validated copy, the lower layers'
checks at load time, and the messages' promise (file, dotted field, value, what was expected)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from annotated_types import Le
from pydantic import BaseModel

from sitefusion.config import (
    LIMITS,
    Config,
    config_from_dict,
    config_to_dict,
    federated_config,
    load_config,
    replace,
)
from sitefusion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def _int_bounds(model: type[BaseModel], prefix: str = "") -> dict[str, int]:
    """dotted field -> its ``le`` bound, for every bounded integer field of ``model``."""
    found: dict[str, int] = {}
    for name, info in model.model_fields.items():
        where = f"{prefix}.{name}" if prefix else name
        args = [a for a in typing.get_args(info.annotation) if a is not type(None)]
        tp = args[0] if args else info.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found.update(_int_bounds(tp, where))
        elif tp is int and name != "seed":
            found.update((where, m.le) for m in info.metadata if isinstance(m, Le))
    return found


def test_limits_are_the_bounds_the_fields_enforce() -> None:
    assert _int_bounds(Config) == LIMITS


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("training:\n  threads: 0\n", r"'training\.threads' is 0; expected a positive number"),
        (
            "training:\n  min_steps_per_epoch: -1\n",
            r"'training\.min_steps_per_epoch' is -1; expected 0 \(off\)",
        ),
        ("training:\n  weight_decay: -0.1\n", r"'training\.weight_decay' is -0\.1; .*0 or a"),
        ("fusion:\n  lr: 0\n", r"'fusion\.lr' is 0; expected a positive learning rate"),
        ("fusion:\n  weight_decay: -1\n", r"'fusion\.weight_decay' is -1"),
        ("fusion:\n  hidden: 0\n", r"'fusion\.hidden' is 0; expected a positive integer"),
        ("fusion:\n  modes: [concat, concat]\n", r"'fusion\.modes' is \['concat', 'concat'\]"),
        ("data:\n  synthetic:\n    channels: 100\n", r"'data\.synthetic\.channels' is 100"),
        ("scoring:\n  batch_size: 0\n", r"'scoring\.batch_size' is 0; expected a positive integer"),
        ("scoring:\n  max_elements: 0\n", r"'scoring\.max_elements' is 0; .*positive number"),
        ("seed: -1\n", r"'seed' is -1; expected an integer from 0 to 2\*\*32 - 1"),
        ("split:\n  seed: 4294967296\n", r"'split\.seed' is 4294967296; .*2\*\*32 - 1"),
    ],
)
def test_values_refused_now_that_were_let_through_before(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: field " + match):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "normalization:\n  kind: zscore\n  params:\n    clips: [1, 99]\n",
            r"unknown field 'normalization\.params\.clips'; parameters of 'zscore' normalizers: "
            r"clip, .*\(did you mean 'clip'\?\)",
        ),
        (
            "normalization:\n  kind: percentile\n  params:\n    clip: maybe\n",
            r"field 'normalization\.params': .*'clip' must be true or false, got 'maybe'",
        ),
        (
            "expert:\n  params:\n    dropuot: 0.1\n",
            r"unknown field 'expert\.params\.dropuot'; parameters of backbone 'compact': "
            r".*\(did you mean 'dropout'\?\)",
        ),
        (
            "expert:\n  params:\n    spatial_dims: 3\n",
            r"field 'expert\.params': backbone 'compact': parameter 'spatial_dims' is set from",
        ),
    ],
)
def test_the_lower_layers_checks_run_when_the_config_is_read(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: " + match):
        load_config(write(tmp_path, text))


def test_types_are_strict_and_numbers_stay_floats(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'training\.epochs' is '3'; expected an integer"):
        load_config(write(tmp_path, 'training:\n  epochs: "3"\n'))
    with pytest.raises(ConfigError, match=r"'training\.augment' is 1; expected true or false"):
        load_config(write(tmp_path, "training:\n  augment: 1\n"))
    with pytest.raises(ConfigError, match=r"'data\.classes' is 'abc'; expected a list or null"):
        load_config(write(tmp_path, "data:\n  classes: abc\n"))
    cfg = load_config(write(tmp_path, "training:\n  lr: 1\ndata:\n  spatial_size: [32, 48]\n"))
    assert type(cfg.training.lr) is float  # written back as 1.0, as before
    assert cfg.data.spatial_size == (32, 48)
    assert config_to_dict(cfg)["data"]["spatial_size"] == [32, 48]


def test_every_problem_is_named_on_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  epochs: many\n  lr: .nan\nfusion:\n  hidden: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}: field 'training.epochs' is 'many'; expected an integer")
    assert msg.endswith("(and 2 more: 'training.lr', 'fusion.hidden')")


def test_replace_validates_the_copy_and_keeps_the_source() -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    copy = replace(cfg, seed=3, training=replace(cfg.training, epochs=2))
    assert (copy.seed, copy.training.epochs, cfg.training.epochs) == (3, 2, cfg.training.epochs)
    assert copy.source_path == cfg.source_path
    with pytest.raises(ConfigError, match=r"<config>: field 'training\.epochs' is 0; expected"):
        replace(cfg.training, epochs=0)
    with pytest.raises(ConfigError, match=r"unknown field 'training\.epoch'.*did you mean"):
        replace(cfg.training, epoch=3)
    # Rules across sections hold for copies too, named with the config's file.
    with pytest.raises(ConfigError, match=r"demo\.yaml: field 'expert\.start' is 'fedavg'"):
        replace(cfg, expert=replace(cfg.expert, start="fedavg"))
    modes = replace(cfg.fusion, modes=["concat"])  # a list from YAML or the CLI becomes a tuple
    assert modes.modes == ("concat",)


def test_sections_are_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.training.epochs = 3  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        del cfg.fusion.hidden
    assert cfg.source_path is None


def test_a_stored_config_is_refused_as_the_file_would_be() -> None:
    with pytest.raises(ConfigError, match=r"run/config\.yaml: field 'fusion\.dropout' is 2"):
        config_from_dict({"fusion": {"dropout": 2}}, "run/config.yaml")
    with pytest.raises(ConfigError, match=r"run/config\.yaml: expected a mapping"):
        config_from_dict([1, 2], "run/config.yaml")  # type: ignore[arg-type]


def test_federated_config_refuses_what_needs_images_in_one_place() -> None:
    base = config_from_dict({"data": {"classes": ["a", "b"]}}, "f.yaml")
    fed = federated_config(base)
    assert fed.fusion.modes == (base.fusion.modes[0],)
    assert (fed.baselines.pooled, fed.baselines.stacking, fed.baselines.fedavg) == (
        False,
        False,
        True,
    )
    assert fed.source_path == "f.yaml"
    cases = [
        (replace(base, data=replace(base.data, classes=None)), r"'data\.classes' is empty"),
        (
            replace(base, normalization=replace(base.normalization, unseen_policy="pooled")),
            r"'normalization\.unseen_policy' is 'pooled'",
        ),
        (
            replace(base, fusion=replace(base.fusion, finetune_epochs=2)),
            r"'fusion\.finetune_epochs' is 2; .*federated\.finetune_rounds",
        ),
    ]
    for cfg, match in cases:
        with pytest.raises(ConfigError, match=r"f\.yaml: field " + match):
            federated_config(cfg)
