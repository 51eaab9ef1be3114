"""SiteExpert: shapes, argument checks, reproducible initialisation, pretrained loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sitefusion.errors import ArtifactError, ConfigError, UnknownChoiceError
from sitefusion.experts import SiteExpert, load_pretrained


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def make(seed: int = 0, **kwargs: object) -> SiteExpert:
    args: dict = {
        "backbone": "compact",
        "spatial_dims": 2,
        "in_channels": 1,
        "feature_dim": 16,
        "num_classes": 3,
    }
    args.update(kwargs)
    torch.manual_seed(seed)
    return SiteExpert(**args)


def test_embed_and_forward_shapes() -> None:
    expert = make().eval()
    x = torch.randn(4, 1, 32, 32)
    assert expert.embed(x).shape == (4, 16)
    logits = expert(x)
    assert logits.shape == (4, 3)
    # forward is the linear head applied to the embedding
    torch.testing.assert_close(logits, expert.head(expert.embed(x)))


def test_3d_expert() -> None:
    expert = make(spatial_dims=3, in_channels=2).eval()
    assert expert(torch.randn(2, 2, 16, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backbone": "resnet"}, UnknownChoiceError, "backbone"),
        ({"spatial_dims": 1}, ConfigError, "spatial_dims"),
        ({"in_channels": 0}, ConfigError, "in_channels"),
        ({"feature_dim": 1}, ConfigError, "feature_dim"),
        ({"num_classes": 1}, ConfigError, "num_classes"),
        ({"num_classes": 2.0}, ConfigError, "num_classes"),
        ({"params": {"dropout": 2.0}}, ConfigError, "dropout"),
        ({"params": {"act": object()}}, ConfigError, "params.act"),
        ({"params": ["dropout"]}, ConfigError, "params"),
        ({"params": {"spatial_dims": 3}}, ConfigError, "spatial_dims"),
        ({"params": {"pretrained": True}}, ConfigError, "never downloaded"),
        ({"params": {"dropuot": 0.1}}, UnknownChoiceError, "did you mean 'dropout'"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make(**kwargs)
    assert issubclass(error, ValueError)


def test_wrong_input_raises() -> None:
    expert = make()
    with pytest.raises(ValueError, match=r"\[B, 1, S, S\]"):
        expert(torch.randn(2, 3, 32, 32))
    big = make(backbone="densenet121")
    with pytest.raises(ValueError, match="at least 29"):
        big.embed(torch.randn(2, 1, 16, 16))


def test_same_seed_same_initial_weights() -> None:
    a, b, c = make(seed=7), make(seed=7), make(seed=8)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key, value in sa.items():
        assert torch.equal(value, sb[key]), key
    assert not torch.equal(a.head.weight, c.head.weight)


def test_describe_is_json_and_rebuilds() -> None:
    expert = make(params={"dropout": 0.1, "act": ("leakyrelu", {"negative_slope": 0.1})})
    desc = expert.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["params"]["act"] == ["leakyrelu", {"negative_slope": 0.1}]
    torch.manual_seed(0)
    rebuilt = SiteExpert.from_description(desc)
    assert rebuilt.describe() == desc
    assert set(rebuilt.state_dict()) == set(expert.state_dict())
    with pytest.raises(ConfigError, match="keys"):
        SiteExpert.from_description({**desc, "extra": 1})


def test_load_pretrained_backbone_file(tmp_path: Path) -> None:
    source, target = make(seed=1), make(seed=2)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    head_before = target.head.weight.detach().clone()

    report = load_pretrained(target, path)

    assert report.loaded == len(source.backbone.state_dict())
    assert report.missing == () and report.unexpected == () and report.skipped == ()
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value)
    assert torch.equal(target.head.weight, head_before)  # the head is not touched


def test_load_pretrained_whole_expert_reports_head(tmp_path: Path) -> None:
    source, target = make(seed=1), make(seed=2)
    path = tmp_path / "expert.safetensors"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    del state["backbone.fc.bias"]
    save_file(state, str(path))

    report = load_pretrained(target, path)

    assert report.unexpected == ("head.bias", "head.weight")
    assert report.missing == ("fc.bias",)
    assert torch.equal(target.backbone.fc.weight, source.backbone.fc.weight)


def test_load_pretrained_shape_mismatch(tmp_path: Path) -> None:
    source, target = make(seed=1, feature_dim=32), make(seed=2, feature_dim=16)
    path = tmp_path / "other_dim.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    with pytest.raises(ArtifactError, match=r"fc\.weight"):
        load_pretrained(target, path)
    report = load_pretrained(target, path, skip_mismatched=True)
    assert report.skipped == ("fc.bias", "fc.weight")
    assert set(report.missing) == {"fc.bias", "fc.weight"}
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)


def test_load_pretrained_missing_or_foreign_file(tmp_path: Path) -> None:
    expert = make()
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ArtifactError, match=r"nope\.safetensors"):
        load_pretrained(expert, missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match=r"garbage\.safetensors"):
        load_pretrained(expert, garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ArtifactError, match="none of its 1 tensors"):
        load_pretrained(expert, foreign)
