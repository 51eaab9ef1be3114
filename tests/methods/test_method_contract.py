"""One contract over every method of the registry, on a tiny finished run: each is trained,
refuses to predict before it is loaded, loads as itself, and predicts probabilities ``[N, K]``
(and, for a fusion, weights ``[N, E]``) that honour an expert mask."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sitefusion.config import Config
from sitefusion.errors import ArtifactError
from sitefusion.methods import (
    METHOD_CLASSES,
    FusionMethod,
    LoadContext,
    LoadedRun,
    Method,
    OutputAverage,
    configured_methods,
)
from sitefusion.workflows import train_run


@pytest.fixture(scope="module")
def loaded(
    synthetic_2d: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Config]
) -> LoadedRun:
    out = tmp_path_factory.mktemp("methods") / "run"
    cfg = tiny_config(
        synthetic_2d,
        fusion={"epochs": 10, "hidden": 8, "finetune_epochs": 1},
        baselines={"fedavg": True},
        federated={"fedavg_rounds": 2},
    )
    train_run(cfg, out)
    return LoadedRun(out)


@pytest.fixture(scope="module")
def preds(loaded: LoadedRun) -> object:
    x = np.random.default_rng(0).normal(size=(5, 1, 24, 24)).astype(np.float32)
    return loaded.predict(x, ["site_a", "site_b", "site_c", None, "elsewhere"])


def test_the_registry_covers_every_configured_method(loaded: LoadedRun) -> None:
    methods = configured_methods(loaded.cfg, loaded.expert_sites)
    assert {type(m) for m in methods} == set(METHOD_CLASSES.values())
    assert [m.name for m in methods] == list(loaded.methods)  # all trained, in training order
    assert all(m.is_trained(loaded.run) for m in methods)


def test_a_method_refuses_to_predict_before_it_is_loaded(loaded: LoadedRun, preds: object) -> None:
    features = preds.features  # type: ignore[attr-defined]
    needs_state = [
        m
        for m in configured_methods(loaded.cfg, loaded.expert_sites)
        if m.name in ("fusion", "random_features", "pooled", "fedavg", "weight_average", "stacking")
    ]
    for method in needs_state:
        with pytest.raises(ArtifactError, match="not fitted or loaded"):
            own = method.forward(_batch(loaded)) if method.name != "stacking" else {}
            method.predict(features, own)


def _batch(loaded: LoadedRun) -> object:
    from sitefusion.methods import ImageBatch

    x = np.zeros((2, 1, 24, 24), np.float32)
    return ImageBatch(normalized=x, raw=x, bank=loaded.bank)


@pytest.mark.parametrize(
    "name",
    [
        "fusion",
        "fusion_concat",
        "fusion_attention",
        "random_features",
        "pooled",
        "fedavg",
        "local:site_b",
        "output_average",
        "weight_average",
        "stacking",
    ],
)
def test_each_method_predicts_probabilities(loaded: LoadedRun, preds: object, name: str) -> None:
    probs = preds.probs[name]  # type: ignore[attr-defined]
    assert probs.shape == (5, len(loaded.classes))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    method: Method = loaded.methods[name]
    ctx = LoadContext(loaded.run, loaded.cfg, loaded.classes, loaded.expert_sites)
    (fresh,) = [m for m in configured_methods(loaded.cfg, loaded.expert_sites) if m.name == name]
    assert fresh.load(ctx) is fresh and type(fresh) is type(method)
    if isinstance(method, FusionMethod):
        weights = preds.attention[name]  # type: ignore[attr-defined]
        assert weights.shape == (5, len(loaded.expert_sites))
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)


def test_masks_are_honoured(loaded: LoadedRun, preds: object) -> None:
    features = preds.features  # type: ignore[attr-defined]
    mask = np.ones((5, 3), bool)
    mask[:, 1] = False
    fused = loaded.predict_rows(preds, slice(None), "fusion", mask=mask)  # type: ignore[arg-type]
    assert fused is not None and fused.weights is not None
    assert (fused.weights[:, 1] == 0).all()
    averaged = OutputAverage().predict(features, {}, mask)
    by_hand = np.exp(features.logits) / np.exp(features.logits).sum(2, keepdims=True)
    np.testing.assert_allclose(averaged.probs, by_hand[:, [0, 2]].mean(1), rtol=1e-5)
    assert loaded.predict_rows(preds, slice(None), "stacking", mask=mask) is None  # type: ignore[arg-type]


def test_asking_for_an_unknown_method_names_the_ones_there(loaded: LoadedRun) -> None:
    x = np.zeros((1, 1, 24, 24), np.float32)
    with pytest.raises(ArtifactError, match="no method fusoin; it has pooled, fedavg, fusion"):
        loaded.predict(x, [None], methods=["fusoin"])


def test_a_run_path_that_is_a_file_is_called_a_file(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("not a run")
    with pytest.raises(ArtifactError, match=r"run: is a file, not a run directory"):
        LoadedRun(tmp_path / "run")
    with pytest.raises(ArtifactError, match=r"nope: run directory does not exist"):
        LoadedRun(tmp_path / "nope")
