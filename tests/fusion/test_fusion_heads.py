"""Registry and behaviour of the individual fusion heads."""

from __future__ import annotations

import typing

import pytest
import torch

from sitefusion.config import FusionMode
from sitefusion.errors import UnknownChoiceError
from sitefusion.fusion import (
    FUSION_MODES,
    AttentionFusion,
    AverageAttentionFusion,
    ConcatFusion,
    make_fusion,
    masked_softmax,
)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def test_modes_match_the_config() -> None:
    assert set(FUSION_MODES) == set(typing.get_args(FusionMode))
    assert FUSION_MODES[0] == "average_attention"


def test_make_fusion_types_and_unknown_mode() -> None:
    kwargs = {"num_experts": 2, "feature_dim": 4, "num_classes": 2}
    assert isinstance(make_fusion("concat", **kwargs), ConcatFusion)
    assert isinstance(make_fusion("attention", **kwargs), AttentionFusion)
    assert isinstance(make_fusion("average_attention", **kwargs), AverageAttentionFusion)
    with pytest.raises(UnknownChoiceError, match="did you mean 'attention'"):
        make_fusion("atention", **kwargs)


def test_masked_softmax_exact_zeros_and_no_nan_gradient() -> None:
    scores = torch.tensor([[1e4, -1e4, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[False, True, False], [True, True, False]])
    weights = masked_softmax(scores, mask)
    assert weights.tolist() == [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]
    weights[:, 0].sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_concat_rescales_for_missing_experts() -> None:
    fusion = ConcatFusion(2, 4, 2, dropout=0.0)
    with torch.no_grad():
        fusion.head.weight.zero_()
        fusion.head.weight[0, :4] = 1.0  # class 0 reads expert 0 only
        fusion.head.bias.zero_()
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]])
    both = fusion(x, torch.tensor([[True, True]])).logits[0, 0]
    alone = fusion(x, torch.tensor([[True, False]])).logits[0, 0]
    torch.testing.assert_close(alone, 2 * both)  # scaled by E / n_present = 2


@pytest.mark.parametrize("cls", [AttentionFusion, AverageAttentionFusion])
def test_attention_learns_to_rely_on_the_informative_expert(cls: type) -> None:
    gen = torch.Generator().manual_seed(0)
    n, e, d = 128, 3, 8
    labels = torch.randint(0, 2, (n,), generator=gen)
    features = torch.randn(n, e, d, generator=gen)
    features[:, 1, 0] += 3.0 * (2 * labels - 1)  # only expert 1 carries the label
    torch.manual_seed(0)
    fusion = cls(e, d, 2, hidden=8, dropout=0.0)
    opt = torch.optim.Adam(fusion.parameters(), lr=0.02)
    for _ in range(80):
        opt.zero_grad()
        out = fusion(features)
        torch.nn.functional.cross_entropy(out.logits, labels).backward()
        opt.step()
    fusion.eval()
    with torch.no_grad():
        out = fusion(features)
    accuracy = (out.logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.9
    assert out.weights[:, 1].mean().item() > 0.5
