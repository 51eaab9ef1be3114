"""The one step loop and its schedules: rates per step, loss accounting, fusion outputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sitefusion.training.engine import Batch, train_epoch
from sitefusion.training.schedules import WARMUP, cosine, warmup_cosine


def test_warmup_cosine_starts_at_a_tenth_peaks_after_warmup_and_ends_near_zero() -> None:
    epochs, steps = 10, 20
    assert warmup_cosine(1.0, 0, 0, steps, epochs) == pytest.approx(0.1)
    at_peak = math.ceil(WARMUP * epochs * steps)
    rates = [
        warmup_cosine(1.0, s // steps, s % steps, steps, epochs) for s in range(epochs * steps)
    ]
    assert max(rates) == pytest.approx(1.0, abs=1e-3)
    assert rates.index(max(rates)) == at_peak
    assert all(b <= a for a, b in zip(rates[at_peak:], rates[at_peak + 1 :], strict=False))
    assert rates[-1] < 1e-3


def test_cosine_decays_from_base_to_zero() -> None:
    assert cosine(2.0, 0, 10) == 2.0
    assert cosine(2.0, 5, 10) == pytest.approx(1.0)
    assert cosine(2.0, 10, 10) == pytest.approx(0.0, abs=1e-12)


class _Recorder(nn.Module):
    """A linear model that records the learning rate in force at each forward pass."""

    def __init__(self, optimizer_ref: list[torch.optim.Optimizer]) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.seen_rates: list[float] = []
        self._opt = optimizer_ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_rates.append(self._opt[0].param_groups[0]["lr"])
        return self.fc(x)


def test_each_step_gets_its_batchs_rate_and_the_loss_is_size_weighted() -> None:
    torch.manual_seed(0)
    ref: list[torch.optim.Optimizer] = []
    model = _Recorder(ref)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ref.append(opt)
    batches = [
        Batch((torch.randn(4, 3),), torch.tensor([0, 1, 0, 1]), step=7),
        Batch((torch.randn(2, 3),), torch.tensor([1, 1]), step=9),
    ]
    losses: list[float] = []

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, y)
        losses.append(float(loss.detach()))
        return loss

    sizes: list[int] = []
    result = train_epoch(
        model, opt, loss_fn, batches, learning_rates=lambda s: [s / 100], on_batch=sizes.append
    )
    assert model.seen_rates == [0.07, 0.09]
    assert (result.seen, result.steps, sizes) == (6, 2, [4, 2])
    assert result.mean == pytest.approx((4 * losses[0] + 2 * losses[1]) / 6)
    assert model.training


def test_a_model_returning_a_fusion_output_is_scored_on_its_logits() -> None:
    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> SimpleNamespace:
            return SimpleNamespace(logits=self.fc(x), weights=mask)

    model = Fused()
    before = model.fc.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = Batch((torch.randn(5, 3), None), torch.tensor([0, 1, 1, 0, 1]))
    result = train_epoch(model, opt, nn.functional.cross_entropy, [batch])
    assert result.steps == 1 and not torch.equal(before, model.fc.weight)
    assert train_epoch(model, opt, nn.functional.cross_entropy, []).mean == 0.0
