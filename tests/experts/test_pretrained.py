"""initial_weights: the state actually used and a JSON-safe record of where it came from."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sitefusion.errors import ConfigError
from sitefusion.experts import IMAGENET, SiteExpert, initial_weights
from sitefusion.experts.lite0 import IMAGENET_WEIGHTS, read_imagenet_state


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def lite0(seed: int, channels: int = 3, dims: int = 2) -> SiteExpert:
    torch.manual_seed(seed)
    return SiteExpert("efficientnet-lite0", dims, channels, 16, 3)


def _installed() -> bool:
    try:
        metadata.distribution(IMAGENET_WEIGHTS.package)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_nothing_loaded_gives_the_seeded_state_and_no_record() -> None:
    expert = lite0(0)
    before = {k: v.clone() for k, v in expert.state_dict().items()}
    weights = initial_weights(expert, None)
    assert weights.source is None
    assert set(weights.state) == set(before)
    assert all(torch.equal(weights.state[k], before[k]) for k in before)


@pytest.mark.skipif(not _installed(), reason=f"{IMAGENET_WEIGHTS.package} is not installed")
def test_imagenet_fills_all_but_the_projection_and_head() -> None:
    expert = lite0(0)
    seeded = {k: v.clone() for k, v in expert.state_dict().items()}
    weights = initial_weights(expert, IMAGENET)
    packaged, _ = read_imagenet_state(expert.backbone.state_dict())
    for key, tensor in packaged.items():
        assert torch.equal(weights.state[f"backbone.{key}"], tensor), key
    for key in ("backbone._fc.weight", "backbone._fc.bias", "head.weight", "head.bias"):
        assert torch.equal(weights.state[key], seeded[key]), key
    assert not torch.equal(
        weights.state["backbone._conv_stem.weight"], seeded["backbone._conv_stem.weight"]
    )
    source = weights.source
    assert source is not None and json.loads(json.dumps(source)) == source
    assert source["kind"] == "package" and source["sha256"] == IMAGENET_WEIGHTS.sha256
    assert source["not_loaded"] == ["_fc.bias", "_fc.weight"]
    # The returned state is what the expert now holds.
    assert all(torch.equal(v, expert.state_dict()[k]) for k, v in weights.state.items())


@pytest.mark.parametrize(
    ("channels", "dims", "match"),
    [(1, 2, "3 channels"), (3, 3, "2-D RGB"), (4, 2, "with 4 channel")],
)
def test_imagenet_refuses_other_geometries(channels: int, dims: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        initial_weights(lite0(0, channels=channels, dims=dims), IMAGENET)


def test_imagenet_refuses_other_backbones() -> None:
    torch.manual_seed(0)
    compact = SiteExpert("compact", 2, 3, 16, 3)
    with pytest.raises(ConfigError, match="'efficientnet-lite0' only; got backbone 'compact'"):
        initial_weights(compact, IMAGENET)


def test_a_user_safetensors_file_round_trips(tmp_path: Path) -> None:
    source_expert = lite0(1)
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in source_expert.backbone.state_dict().items()}, path)
    target = lite0(2)
    weights = initial_weights(target, path)
    for key, tensor in source_expert.backbone.state_dict().items():
        assert torch.equal(weights.state[f"backbone.{key}"], tensor), key
        assert torch.equal(target.backbone.state_dict()[key], tensor), key
    # The head is not in the file: it keeps the target's own seeded initialisation.
    assert not torch.equal(weights.state["head.weight"], source_expert.head.weight)
    source = weights.source
    assert source is not None and json.loads(json.dumps(source)) == source
    assert source["kind"] == "file" and source["path"] == str(path)
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source["tensors"] == len(source_expert.backbone.state_dict())
    assert source["not_loaded"] == [] and source["unexpected"] == []
    # The embedding of the loaded expert is the source expert's.
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target.eval().embed(x), source_expert.eval().embed(x))
