"""A tiny end-to-end run with ImageNet-pretrained EfficientNet-Lite0 experts."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from sitefusion.config import Config
from sitefusion.data.synthetic import generate_synthetic_dataset
from sitefusion.experts import EfficientNetLite0
from sitefusion.experts import lite0 as lite0_module
from sitefusion.experts.lite0 import IMAGENET_WEIGHTS, read_imagenet_state
from sitefusion.methods import LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.workflows import train_run

Tiny = Callable[..., Config]


def _installed() -> bool:
    try:
        metadata.distribution(IMAGENET_WEIGHTS.package)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason=f"{IMAGENET_WEIGHTS.package} is not installed")
def test_train_with_imagenet_lite0_experts(
    tmp_path: Path, tiny_config: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = generate_synthetic_dataset(
        tmp_path / "data", sites=3, images_per_site=24, classes=2, size=32, channels=3, seed=5
    )
    cfg = tiny_config(
        manifest,
        data__spatial_size=[32, 32],
        data__channels=3,
        expert={"backbone": "efficientnet-lite0", "out_channels": 8, "pretrained": "imagenet"},
        training__epochs=1,
        fusion={"epochs": 5, "hidden": 8},
    )
    out = tmp_path / "run"
    train_run(cfg, out)

    run = RunDir(out)
    info = run.read_manifest()
    assert info["status"] == "complete"
    source = info["pretrained"]
    assert source["kind"] == "package" and source["sha256"] == IMAGENET_WEIGHTS.sha256
    assert source["version"] == metadata.version(IMAGENET_WEIGHTS.package)
    # The shared initial weights are the packaged ones, stored and hashed in the run directory.
    init = run.read_tensors("experts/init.safetensors")
    packaged, _ = read_imagenet_state(EfficientNetLite0(num_classes=8).state_dict())
    for key in ("_conv_stem.weight", "_blocks.6.15._project_conv.weight", "_bn1.running_var"):
        assert torch.equal(init[f"backbone.{key}"], packaged[key]), key
    # Experts start from them and then move (they were trained).
    site_state = run.read_tensors(f"experts/{run.read_json('schema.json')['sites'][0]}.safetensors")
    assert not torch.equal(site_state["backbone._conv_stem.weight"], packaged["_conv_stem.weight"])

    # The run loads and predicts without the weights package.
    def not_installed(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lite0_module.metadata, "distribution", not_installed)
    loaded = LoadedRun(out)
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits = loaded.experts[0](torch.from_numpy(x))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason=f"{IMAGENET_WEIGHTS.package} is not installed")
def test_every_network_fine_tunes_the_whole_pretrained_backbone(
    tmp_path: Path, tiny_config: Tiny
) -> None:
    manifest = generate_synthetic_dataset(
        tmp_path / "data", sites=3, images_per_site=24, classes=2, size=32, channels=3, seed=5
    )
    cfg = tiny_config(
        manifest,
        data__spatial_size=[32, 32],
        data__channels=3,
        expert={"backbone": "efficientnet-lite0", "out_channels": 8, "pretrained": "imagenet"},
        training__epochs=2,
        fusion={"epochs": 5, "hidden": 8, "finetune_epochs": 1, "finetune_soup": 2},
    )
    out = tmp_path / "run"
    train_run(cfg, out)
    run = RunDir(out)
    init = run.read_tensors("experts/init.safetensors")
    sites = run.read_json("schema.json")["sites"]
    stem = [k for k in init if k.startswith("backbone._conv_stem.")]
    last = [k for k in init if k.startswith(("backbone._blocks.6.", "backbone._fc.", "head."))]
    assert stem and last
    networks = [run.read_tensors(f"experts/{site}.safetensors") for site in sites]
    networks.append(run.read_tensors("baselines/pooled.safetensors"))
    fused = run.read_tensors("fusion/fusion.experts.safetensors")
    networks += [
        {k[len(s) + 1 :]: v for k, v in fused.items() if k.startswith(f"{s}.")} for s in sites
    ]
    # From the first convolution to the head, every network moved away from ImageNet's weights.
    for state in networks:
        assert any(not torch.equal(state[k], init[k]) for k in stem)
        assert any(not torch.equal(state[k], init[k]) for k in last)
    loaded = LoadedRun(out)
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        assert torch.isfinite(loaded.experts[0](torch.from_numpy(x))).all()
