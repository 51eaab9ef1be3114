"""Every registered backbone maps [B, C, *S] to [B, D] in 2D and 3D, with 1 and 3 channels."""

from __future__ import annotations

import pytest
import torch

from sitefusion.errors import ConfigError, UnknownChoiceError
from sitefusion.experts import BACKBONES, DropoutLinear, backbone_spec, build_backbone

D = 8


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BACKBONES)
def test_feature_shape(name: str, dims: int, channels: int) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, dims, channels, D).eval()
    # Smallest sizes keep the file fast; densenet121/efficientnet-b0 need more than 16 voxels.
    size = max(32 if dims == 2 else 16, backbone_spec(name).min_size)
    with torch.no_grad():
        out = net(torch.randn(2, channels, *([size] * dims)))
    assert out.shape == (2, D)
    assert torch.isfinite(out).all()


def test_registry_lists_required_backbones() -> None:
    assert {"densenet121", "resnet18", "resnet10", "efficientnet-b0", "compact"} <= set(BACKBONES)


def test_unknown_backbone_suggests_nearest() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'resnet18'"):
        build_backbone("resnet19", 2, 1, D)


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(UnknownChoiceError, match="dropout"):
        build_backbone("compact", 2, 1, D, dropuot=0.1)


@pytest.mark.parametrize("key", ["pretrained", "num_classes", "n_input_channels"])
def test_reserved_parameters_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_backbone("resnet10", 2, 1, D, **{key: True})


@pytest.mark.parametrize(
    ("dims", "channels", "features"), [(1, 1, D), (4, 1, D), (2, 0, D), (2, 1, 0), (2, True, D)]
)
def test_bad_sizes_raise(dims: int, channels: int, features: int) -> None:
    with pytest.raises(ConfigError):
        build_backbone("compact", dims, channels, features)


def test_invalid_parameter_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="norm"):
        build_backbone("resnet10", 2, 1, D, norm="nonsense")
    with pytest.raises(ConfigError, match="dropout"):
        build_backbone("compact", 2, 1, D, dropout=1.5)


def test_dropout_override_reaches_the_network() -> None:
    dense = build_backbone("densenet121", 2, 1, D, dropout=0.3)
    assert any(getattr(m, "p", None) == 0.3 for m in dense.modules())
    eff = build_backbone("efficientnet-b0", 2, 1, D, dropout=0.4)
    assert eff._dropout.p == 0.4
    res = build_backbone("compact", 2, 1, D, dropout=0.25)
    assert isinstance(res.fc, DropoutLinear)
    assert res.fc.p == 0.25
    # The swap keeps MONAI's state-dict keys, so MONAI checkpoints still load.
    plain = build_backbone("compact", 2, 1, D)
    assert set(res.state_dict()) == set(plain.state_dict())


def test_compact_overrides_and_defaults() -> None:
    net = build_backbone("compact", 2, 3, D, block_inplanes=[8, 16, 32, 64])
    assert net.fc.in_features == 64
    assert backbone_spec("compact").defaults["no_max_pool"] is True
