"""The contract every fusion mode keeps: shapes, masks, weights, no NaN, gradients."""

from __future__ import annotations

import pytest
import torch

from sitefusion.errors import ConfigError
from sitefusion.fusion import FUSION_MODES, FusionInputError, FusionModule, make_fusion

B, E, D, C = 32, 4, 16, 3


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def build(mode: str, **kwargs: object) -> FusionModule:
    torch.manual_seed(0)
    args: dict = {"num_experts": E, "feature_dim": D, "num_classes": C, "hidden": 8}
    args.update(kwargs)
    return make_fusion(mode, **args)


def random_mask(gen: torch.Generator) -> torch.Tensor:
    """[B, E] masks with every row non-empty; rows 0..E-1 have exactly one expert present."""
    mask = torch.rand(B, E, generator=gen) < 0.5
    mask[torch.arange(B), torch.randint(0, E, (B,), generator=gen)] = True
    mask[:E] = torch.eye(E, dtype=torch.bool)
    return mask


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    # Experts on very different scales, as separately trained experts are.
    scales = torch.tensor([0.01, 1.0, 10.0, 1000.0]).view(1, E, 1)
    return torch.randn(B, E, D, generator=gen) * scales, random_mask(gen)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_shapes(mode: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, mask = data
    out = build(mode).eval()(features, mask)
    assert out.logits.shape == (B, C)
    assert out.weights.shape == (B, E)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_weights_are_a_distribution_over_present_experts(
    mode: str, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    features, mask = data
    fusion = build(mode)
    for train in (True, False):
        fusion.train(train)
        logits, weights = fusion(features, mask)
        assert torch.isfinite(logits).all()
        assert torch.isfinite(weights).all()
        assert (weights >= 0).all()
        assert (weights[~mask] == 0).all()
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))
        # single-expert rows put all weight on that expert
        torch.testing.assert_close(weights[:E], torch.eye(E))


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_absent_features_do_not_matter(mode: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, mask = data
    fusion = build(mode).eval()
    before = fusion(features, mask)
    changed = features.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), D) * 1e6
    after = fusion(changed, mask)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.weights, after.weights)
    changed[~mask] = float("nan")  # NaN placeholders for missing experts are harmless too
    nan_out = fusion(changed, mask)
    assert torch.equal(before.logits, nan_out.logits)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_gradients_flow_without_nan(mode: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, mask = data
    features = features.clone().requires_grad_(True)
    fusion = build(mode).train()
    logits, weights = fusion(features, mask)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(B) % C) + weights.square().sum()
    loss.backward()
    assert features.grad is not None
    assert torch.isfinite(features.grad).all()
    assert (features.grad[~mask] == 0).all()
    assert features.grad[mask].abs().sum() > 0
    for name, param in fusion.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert fusion.head.weight.grad is not None and fusion.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_all_absent_row_raises(mode: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, mask = data
    mask = mask.clone()
    mask[5] = False
    with pytest.raises(FusionInputError, match=r"rows \[5\]"):
        build(mode)(features, mask)
    assert issubclass(FusionInputError, ValueError)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_no_mask_means_all_present(mode: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, _ = data
    fusion = build(mode).eval()
    implicit = fusion(features)
    explicit = fusion(features, torch.ones(B, E, dtype=torch.bool))
    assert torch.equal(implicit.logits, explicit.logits)
    assert torch.equal(implicit.weights, explicit.weights)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_single_expert(mode: str) -> None:
    fusion = build(mode, num_experts=1).eval()
    logits, weights = fusion(torch.randn(3, 1, D))
    assert logits.shape == (3, C)
    assert torch.equal(weights, torch.ones(3, 1))


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_bad_inputs_raise(mode: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, mask = data
    fusion = build(mode)
    with pytest.raises(FusionInputError, match=r"\[B, 4, 16\]"):
        fusion(features[:, :3], mask[:, :3])
    with pytest.raises(FusionInputError, match="bool"):
        fusion(features, mask.float())
    with pytest.raises(FusionInputError, match="mask has shape"):
        fusion(features, mask[:4])
    with pytest.raises(FusionInputError, match="floating"):
        fusion(features.long(), mask)


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_experts": 0}, "num_experts"),
        ({"feature_dim": 2.5}, "feature_dim"),
        ({"num_classes": True}, "num_classes"),
        ({"hidden": -1}, "hidden"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": float("nan")}, "dropout"),
    ],
)
def test_bad_arguments_raise(mode: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(mode, **kwargs)


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_describe_rebuilds(mode: str) -> None:
    fusion = build(mode, dropout=0.2)
    desc = fusion.describe()
    assert desc["mode"] == mode
    clone = make_fusion(**desc)
    assert type(clone) is type(fusion)
    assert clone.describe() == desc


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize("threads", [1, 2])
def test_a_rows_output_does_not_depend_on_its_batch(mode: str, threads: int) -> None:
    """Scoring runs the head once per batch; an item must get the same bits alone, at any
    place, with any companions (resume). HAM10000's shapes: 4 experts of 71 features, 7
    classes, batches of 16; as a matrix product its 142 -> 7 classifier gave different last
    bits at half of the places (fails with ``nn.Linear``'s forward)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    head = make_fusion(mode, num_experts=4, feature_dim=71, num_classes=7, hidden=64).eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 4, 71, generator=gen) * torch.tensor([0.1, 1.0, 3.0, 30.0]).view(1, 4, 1)
    with torch.inference_mode():
        for item in range(4):
            alone = head(x[item : item + 1])
            for place in range(16):
                rows = list(range(20, 36))
                rows[place] = item
                out = head(x[rows])
                assert torch.equal(out.logits[place], alone.logits[0]), (item, place)
                assert torch.equal(out.weights[place], alone.weights[0]), (item, place)
