"""average_state_dicts: weighted parameter averaging with integer buffers and clear mismatches."""

from __future__ import annotations

import pytest
import torch

from sitefusion.experts import SiteExpert, StateDictMismatchError, average_state_dicts


def test_weighted_average_matches_hand_computation() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([5.0]), "n": torch.tensor(6)}

    out = average_state_dicts([a, b], weights=[10, 30])  # normalised to 0.25 / 0.75

    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(out["b"], torch.tensor([4.5]))
    assert out["n"].dtype == torch.int64
    assert out["n"].item() == 5  # 0.25 * 3 + 0.75 * 6 = 5.25, rounded
    assert a["w"].tolist() == [1.0, 2.0]  # inputs untouched


def test_equal_weights_by_default_and_dtype_kept() -> None:
    a = {"w": torch.tensor([1.0], dtype=torch.float16)}
    b = {"w": torch.tensor([2.0], dtype=torch.float16)}
    out = average_state_dicts([a, b])
    assert out["w"].dtype == torch.float16
    assert out["w"].item() == 1.5


def test_average_of_real_experts_loads_back() -> None:
    experts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        experts.append(SiteExpert("compact", 2, 1, 8, 2))
    states = [e.state_dict() for e in experts]
    merged = average_state_dicts(states, [1.0, 1.0])
    torch.testing.assert_close(
        merged["head.weight"], (states[0]["head.weight"] + states[1]["head.weight"]) / 2
    )
    assert merged["backbone.bn1.num_batches_tracked"].dtype == torch.int64
    torch.manual_seed(2)
    fresh = SiteExpert("compact", 2, 1, 8, 2)
    fresh.load_state_dict(merged)  # strict: same keys, shapes and dtypes
    assert torch.equal(fresh.head.weight, merged["head.weight"])


def test_mismatched_keys_and_shapes_raise() -> None:
    a = {"w": torch.zeros(2), "b": torch.zeros(1)}
    with pytest.raises(StateDictMismatchError, match=r"missing \['b'\].*extra \['c'\]"):
        average_state_dicts([a, {"w": torch.zeros(2), "c": torch.zeros(1)}])
    with pytest.raises(StateDictMismatchError, match=r"'w' has shape \(3,\)"):
        average_state_dicts([a, {"w": torch.zeros(3), "b": torch.zeros(1)}])
    with pytest.raises(StateDictMismatchError, match="int64"):
        average_state_dicts([a, {"w": torch.zeros(2, dtype=torch.long), "b": torch.zeros(1)}])


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]])
def test_bad_weights_raise(weights: list[float]) -> None:
    sd = {"w": torch.zeros(1)}
    with pytest.raises(ValueError, match="weight"):
        average_state_dicts([sd, sd], weights)


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])
