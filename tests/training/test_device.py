"""``training.device`` and ``training.precision``: every stage trains where the config says and
hands its network back on the CPU; mixed precision is a CUDA option. The CUDA tests run only
where ``torch.cuda.is_available()``; on a CPU-only machine they are skipped, so the CUDA path is
then untested."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sitefusion.config import Config, FusionConfig, TrainingConfig, config_from_dict
from sitefusion.errors import ConfigError
from sitefusion.experts import SiteExpert
from sitefusion.fusion import FusedSystem
from sitefusion.methods import LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.training.device import GradientStep, autocast, resolve_device
from sitefusion.training.engine import Batch, train_epoch
from sitefusion.training.federated import local_head_update, local_network_update
from sitefusion.training.finetune import finetune_fusion
from sitefusion.training.fusion_head import fit_fusion
from sitefusion.training.loop import fit_classifier

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="torch.cuda.is_available() is False: the CUDA path is not tested here"
)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 1, 16, 16)) + y[:, None, None, None]).astype(np.float32)
    return x, y


def _expert(seed: int = 0) -> SiteExpert:
    torch.manual_seed(seed)
    return SiteExpert("compact", 2, 1, 8, 2)


def _head_inputs(n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    feats = rng.normal(size=(n, 3, 8)).astype(np.float32)
    feats[:, 0, 0] += 2.0 * y
    return feats, rng.normal(size=(n, 3, 2)).astype(np.float32), y


def _on_cpu(module: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in module.parameters())


# ------------------------------------------------------------------------------ CPU, always
def test_resolve_device_refuses_what_the_machine_lacks() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"training.device is 'mps'; expected"):
        resolve_device("mps")
    if not CUDA:
        with pytest.raises(ConfigError, match=r"training.device is 'cuda' but torch.cuda"):
            resolve_device("cuda")


def test_config_keeps_mixed_precision_to_cuda() -> None:
    with pytest.raises(ConfigError, match=r"training.precision.*fp32 unless training.device"):
        config_from_dict({"training": {"precision": "bf16"}}, "<t>")
    with pytest.raises(ConfigError, match=r"training.device.*'gpu'.*'cpu', 'cuda' or 'cuda:N'"):
        config_from_dict({"training": {"device": "gpu"}}, "<t>")
    cfg = config_from_dict({"training": {"device": "cuda:1", "precision": "bf16"}}, "<t>")
    assert cfg.training.precision == "bf16"  # CUDA's presence is checked where networks move


def test_fp32_is_no_autocast_and_cpu_refuses_mixed_precision() -> None:
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError, match="mixed precision is a CUDA option"):
        GradientStep(torch.device("cpu"), "bf16")


def test_train_epoch_moves_cpu_drawn_batches_to_the_model() -> None:
    seen: list[torch.device] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.device)
            out: torch.Tensor = self.lin(x)
            return out

    device = torch.device("cuda" if CUDA else "cpu")
    model = Probe().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [Batch((torch.randn(4, 3),), torch.tensor([0, 1, 0, 1]))]
    loss = train_epoch(model, opt, nn.CrossEntropyLoss(), batches, device=device)
    assert seen == [device] and loss.seen == 4 and np.isfinite(loss.total)


def test_every_stage_hands_back_a_cpu_network_with_the_same_bits() -> None:
    """device='cpu' given explicitly trains exactly what the default does (the CPU path is
    unchanged), and every stage returns its network on the CPU."""
    x, y = _images(40, 0)
    xv, yv = _images(12, 1)
    cfg = TrainingConfig(epochs=2, batch_size=8, augment=True, threads=1)
    results = []
    for device in (None, "cpu"):
        model = _expert()
        fit_classifier(
            model,
            x,
            y,
            xv,
            yv,
            cfg=cfg if device is None else TrainingConfig(**{**cfg.model_dump(), "device": device}),
            num_classes=2,
            seed=1,
        )
        assert _on_cpu(model)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])

    feats, logits, labels = _head_inputs()
    heads = [
        fit_fusion(
            "average_attention",
            feats,
            logits,
            labels,
            cfg=FusionConfig(epochs=5, hidden=8),
            num_classes=2,
            seed=0,
            **({"device": d} if d else {}),  # type: ignore[arg-type]
        )[0]
        for d in (None, "cpu")
    ]
    assert _on_cpu(heads[1])
    assert all(
        torch.equal(a, b)
        for a, b in zip(heads[0].state_dict().values(), heads[1].state_dict().values(), strict=True)
    )

    system = FusedSystem([_expert(s) for s in range(3)], heads[0])
    presence = np.ones((len(labels), 3), bool)
    images = np.random.default_rng(2).normal(size=(len(labels), 1, 16, 16)).astype(np.float32)
    curve = finetune_fusion(
        system,
        images,
        labels,
        presence,
        cfg=FusionConfig(epochs=5, hidden=8, finetune_epochs=1),
        num_classes=2,
        seed=0,
        batch_size=16,
        device="cpu",
    )
    assert _on_cpu(system) and len(curve) == 1

    net = _expert()
    update = local_network_update(net, x, y, cfg=cfg, num_classes=2, epochs=1, lr=1e-3, seed=0)
    assert _on_cpu(net) and all(t.device.type == "cpu" for t in update.state.values())
    head = heads[0]
    update = local_head_update(
        head,
        feats,
        logits,
        labels,
        presence,
        cfg=FusionConfig(epochs=5, hidden=8),
        num_classes=2,
        epochs=1,
        lr=1e-3,
        seed=0,
        device="cpu",
    )
    assert _on_cpu(head) and update.examples == len(labels)


@pytest.mark.slow
def test_loaded_run_device(tiny_run: Path, tmp_path: Path) -> None:
    run = LoadedRun(tiny_run, device="cpu")
    assert run.device == torch.device("cpu")
    if not CUDA:
        with pytest.raises(ConfigError, match=r"device is 'cuda' but torch.cuda.is_available"):
            LoadedRun(tiny_run, device="cuda")
        # A run trained on CUDA, read where there is none: the CPU, with a warning.
        gpu_trained = tmp_path / "run"
        shutil.copytree(tiny_run, gpu_trained)
        store = RunDir(gpu_trained)
        text = store.read_text("config.yaml").replace("device: cpu", "device: cuda")
        assert "device: cuda" in text
        store.write_text("config.yaml", text)
        with pytest.warns(RuntimeWarning, match=r"training.device is 'cuda' but CUDA is not"):
            fallback = LoadedRun(gpu_trained)
        assert fallback.device == torch.device("cpu")


# ------------------------------------------------------------------------------ CUDA only
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_stages(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    x, y = _images(40, 0)
    xv, yv = _images(12, 1)
    cfg = TrainingConfig(epochs=2, batch_size=8, device="cuda", precision=precision)
    model = _expert()
    result = fit_classifier(model, x, y, xv, yv, cfg=cfg, num_classes=2, seed=1)
    assert _on_cpu(model) and all(np.isfinite(h["val_loss"]) for h in result.history)
    feats, logits, labels = _head_inputs()
    head, curve = fit_fusion(
        "attention",
        feats,
        logits,
        labels,
        cfg=FusionConfig(epochs=5, hidden=8),
        num_classes=2,
        seed=0,
        device="cuda",
    )
    assert _on_cpu(head) and np.isfinite(curve).all()
    system = FusedSystem([_expert(s) for s in range(3)], head)
    images = np.random.default_rng(2).normal(size=(len(labels), 1, 16, 16)).astype(np.float32)
    finetune_fusion(
        system,
        images,
        labels,
        np.ones((len(labels), 3), bool),
        cfg=FusionConfig(epochs=5, hidden=8, finetune_epochs=1),
        num_classes=2,
        seed=0,
        batch_size=16,
        device="cuda",
        precision=precision,
    )
    assert _on_cpu(system)


@needs_cuda
@pytest.mark.slow
def test_cuda_run_trains_and_predicts_like_cpu(
    tmp_path: Path, tiny_config: Callable[..., Config], synthetic_2d: Path, tiny_run: Path
) -> None:
    from sitefusion.workflows import train_run

    train_run(tiny_config(synthetic_2d, training__device="cuda"), tmp_path / "gpu")
    gpu = LoadedRun(tmp_path / "gpu")
    assert gpu.device.type == "cuda"
    cpu = LoadedRun(tiny_run, device="cpu")
    on_gpu = LoadedRun(tiny_run, device="cuda")
    images = np.random.default_rng(0).normal(size=(8, 1, 24, 24)).astype(np.float32)
    sites = [cpu.expert_sites[0]] * 8
    a, b = cpu.predict(images, sites), on_gpu.predict(images, sites)
    for name, probs in a.probs.items():
        assert np.abs(probs - b.probs[name]).max() <= 1e-3
