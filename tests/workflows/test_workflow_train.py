"""End-to-end training on tiny synthetic data: artifacts, resume, tamper detection, determinism."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sitefusion.config import Config
from sitefusion.errors import ArtifactError, ConfigError
from sitefusion.methods import FusionMethod, LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.training import stages as stages_module
from sitefusion.workflows import prepare_run, train_run

Tiny = Callable[..., Config]


@pytest.fixture(scope="module")
def finished_run(
    synthetic_2d: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config: Tiny
) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    train_run(tiny_config(synthetic_2d), out)
    return out


def test_run_directory_holds_every_artifact(finished_run: Path) -> None:
    run = RunDir(finished_run)
    info = run.read_manifest()
    assert info["status"] == "complete"
    arts = set(info["artifacts"])
    sites = json.loads((finished_run / "schema.json").read_text())["sites"]
    for site in sites:
        assert f"experts/{site}.safetensors" in arts
        assert f"normalizers/{site}.json" in arts
    for rel in [
        "config.yaml",
        "schema.json",
        "splits.csv",
        "experts/init.safetensors",
        "baselines/pooled.safetensors",
        "baselines/weight_average.safetensors",
        "baselines/stacking.json",
        "features/trained.safetensors",
        "features/random.safetensors",
        "fusion/fusion.safetensors",
        "fusion/fusion_concat.safetensors",
        "fusion/fusion_attention.safetensors",
        "fusion/random_features.safetensors",
    ]:
        assert rel in arts, rel
    run.verify_all()
    assert not list(finished_run.rglob("*.pt")) and not list(finished_run.rglob("*.pkl"))
    (env,) = info["environments"]  # one uninterrupted invocation: one entry
    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["monai"] and env["python"] and env["cpu"]


def test_fusion_never_sees_expert_training_images(finished_run: Path) -> None:
    run = RunDir(finished_run)
    splits = dict(
        line.split(",")[0::4] for line in (finished_run / "splits.csv").read_text().splitlines()[1:]
    )
    meta = run.read_json("fusion/fusion.json")
    assert meta["n_fusion"] == sum(1 for s in splits.values() if s == "fusion")
    assert meta["n_cross_fit"] == 0  # cross_fit is off by default: fusion split only
    assert meta["calibration"]["temperature"] > 0


@pytest.mark.parametrize("cross_fit", [False, True])
def test_head_rows_mask_each_images_own_expert(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Tiny, cross_fit: bool
) -> None:
    """With cross-fitting, training images join the fusion only with their own expert masked."""
    from sitefusion.training.context import head_rows
    from sitefusion.training.features import ExpertFeatures

    cfg = tiny_config(synthetic_2d, fusion={"cross_fit": cross_fit})
    _, data = prepare_run(cfg, tmp_path / "r")
    e = len(data.manifest.sites)
    feats = ExpertFeatures(
        tuple(data.ids), np.zeros((len(data.ids), e, 4)), np.zeros((len(data.ids), e, 3))
    )
    rows = head_rows(cfg, data, feats)
    experts = list(data.manifest.sites)
    seen_splits = set()
    for j, present in zip(rows.positions, rows.presence, strict=True):
        rid = data.ids[j]
        split = data.splits[rid]
        seen_splits.add(split)
        own = experts.index(str(data.sites[j]))
        assert split != "test"
        if split in ("train", "val"):
            assert not present[own]
            assert present.sum() == e - 1
        else:
            assert present.all()
    # Validation images never reach a head: designs are compared on them.
    assert seen_splits == ({"fusion", "train"} if cross_fit else {"fusion"})
    assert rows.n_cross_fit == (len(data.rows("train")) if cross_fit else 0)


def test_rerun_of_a_finished_run_does_nothing(
    finished_run: Path, synthetic_2d: Path, tiny_config: Tiny
) -> None:
    before = (finished_run / "manifest.json").read_text()
    result = train_run(tiny_config(synthetic_2d), finished_run)
    assert result["complete"] and result["timings"] == {}
    assert (finished_run / "manifest.json").read_text() == before


def test_different_config_is_refused(
    finished_run: Path, synthetic_2d: Path, tiny_config: Tiny
) -> None:
    from sitefusion.errors import ConfigError

    with pytest.raises(ConfigError, match="different configuration"):
        train_run(tiny_config(synthetic_2d, training__epochs=3), finished_run)


def test_tampered_artifact_is_refused_by_name(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    target = copy / "fusion" / "fusion.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"fusion\.safetensors.*SHA-256"):
        LoadedRun(copy)


def test_a_run_is_hash_checked_where_predictions_read_it(
    finished_run: Path, tmp_path: Path
) -> None:
    """A changed normalizer (read from its folder, not through the run's readers) refuses the
    run by name; a changed training checkpoint, which no prediction reads, is not hashed."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    checkpoint = sorted((copy / "checkpoints").rglob("*.safetensors"))[0]
    checkpoint.write_bytes(checkpoint.read_bytes() + b"x")
    LoadedRun(copy)  # loads: the checkpoint is training's resume state
    normalizer = sorted((copy / "normalizers").glob("*.json"))[0]
    normalizer.write_text(normalizer.read_text() + " ")
    with pytest.raises(ArtifactError, match=rf"{normalizer.name}.*SHA-256"):
        LoadedRun(copy)


def test_loaded_run_predicts_every_method(finished_run: Path) -> None:
    loaded = LoadedRun(finished_run)
    x = np.random.default_rng(0).normal(size=(5, 1, 24, 24)).astype(np.float32)
    preds = loaded.predict(x, [loaded.expert_sites[0], None, "unknown_site", None, None])
    assert set(loaded.method_names) <= set(preds.probs)
    for name, p in preds.probs.items():
        assert p.shape == (5, len(loaded.classes)), name
        assert np.allclose(p.sum(1), 1, atol=1e-5), name
    for w in preds.attention.values():
        assert np.allclose(w.sum(1), 1, atol=1e-5)
    assert preds.norm_policy[0] == "known" and preds.norm_policy[2] == "nearest"


def test_same_seed_same_weights(synthetic_2d: Path, tmp_path: Path, tiny_config: Tiny) -> None:
    cfg = tiny_config(
        synthetic_2d, baselines={"pooled": False, "random_features": False, "stacking": False}
    )
    train_run(cfg, tmp_path / "a")
    train_run(cfg, tmp_path / "b")
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    for rel in ["experts/site_a.safetensors", "fusion/fusion.safetensors"]:
        ta, tb = a.read_tensors(rel), b.read_tensors(rel)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_resume_after_interrupted_expert(
    synthetic_2d: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_config: Tiny,
) -> None:
    """Kill the expert loop after its first epoch; the rerun continues at epoch 2, not 1."""
    cfg = tiny_config(synthetic_2d, training__epochs=3, training__patience=10)
    out = tmp_path / "r"
    run, data = prepare_run(cfg, out)
    bank = stages_module.fit_normalizers(cfg, run, data)

    class Killed(Exception):
        pass

    original = stages_module.fit_classifier

    def dying(*args: object, **kwargs: object) -> object:
        def on_epoch(report: object) -> None:
            raise Killed

        kwargs["on_epoch"] = on_epoch
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stages_module, "fit_classifier", dying)
    with pytest.raises(Killed):
        stages_module.train_expert(cfg, run, data, bank, "site_a")
    assert run.has("checkpoints/site_a.ckpt.json")
    assert not run.has("experts/site_a.safetensors")
    monkeypatch.setattr(stages_module, "fit_classifier", original)
    stages_module.train_expert(cfg, run, data, bank, "site_a")
    meta = run.read_json("experts/site_a.json")
    assert meta["resumed_from_epoch"] == 0
    assert [h["epoch"] for h in meta["history"]] == [0, 1, 2]

    # The resumed expert equals one trained without interruption.
    fresh = tmp_path / "fresh"
    run2, data2 = prepare_run(cfg, fresh)
    bank2 = stages_module.fit_normalizers(cfg, run2, data2)
    stages_module.train_expert(cfg, run2, data2, bank2, "site_a")
    ta = run.read_tensors("experts/site_a.safetensors")
    tb = run2.read_tensors("experts/site_a.safetensors")
    assert all(torch.allclose(ta[k].float(), tb[k].float(), atol=1e-6) for k in ta)


def test_3d_run(synthetic_3d: Path, tmp_path: Path, tiny_config: Tiny) -> None:
    cfg = tiny_config(
        synthetic_3d,
        training__epochs=1,
        fusion={"epochs": 5, "hidden": 8, "modes": ["average_attention"]},
    )
    result = train_run(cfg, tmp_path / "r3")
    assert result["complete"]
    loaded = LoadedRun(tmp_path / "r3")
    x = np.zeros((2, 1, 16, 16, 16), np.float32)
    preds = loaded.predict(x, [None, None])
    assert preds.probs["fusion"].shape == (2, 2)


@pytest.mark.parametrize("soup", [1, 2])
def test_finetuned_fusion_keeps_site_experts_and_predicts(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Tiny, soup: int
) -> None:
    """End-to-end fine-tuning: the fusion gets its own expert copies; the site experts (and the
    local baselines) stay exactly as trained; a held-out calibration set gives the temperature.
    With a soup, the kept copies are the average of ``soup`` fine-tuned members."""
    cfg = tiny_config(
        synthetic_2d,
        fusion={
            "epochs": 10,
            "hidden": 8,
            "cross_fit": True,
            "finetune_epochs": 1,
            "finetune_soup": soup,
        },
    )
    out = tmp_path / "ft"
    train_run(cfg, out)
    run = RunDir(out)
    meta = run.read_json("fusion/fusion.json")
    assert meta["finetune"]["epochs"] == 1 and len(meta["finetune"]["loss_curve"]) == 1
    assert meta["finetune"]["soup"] == soup
    assert len(meta["finetune"].get("member_loss_curves", [[0.0]])) == soup
    if soup > 1:  # each member and the soup scored on the held-out fusion-split images
        check = meta["finetune"]["soup_check"]
        assert len(check["balanced_accuracy_members"]) == soup
        scores = [*check["balanced_accuracy_members"], check["balanced_accuracy_soup"]]
        assert all(0.0 <= v <= 1.0 for v in scores)
        diff = check["soup_minus_best_member"]
        assert diff["value"] == pytest.approx(
            check["balanced_accuracy_soup"] - max(check["balanced_accuracy_members"])
        )
        assert diff["ci95"][0] <= diff["ci95"][1]
        assert check["below_best_member"] == (diff["ci95"][1] < 0)
    else:
        assert "soup_check" not in meta["finetune"]
    assert meta["calibration"]["temperature"] > 0 and meta["calibration"]["n"] > 0
    assert run.has("fusion/random_features.experts.safetensors")
    assert not run.has("fusion/fusion_concat.experts.safetensors")

    tuned = run.read_tensors("fusion/fusion.experts.safetensors")
    original = run.read_tensors("experts/site_a.safetensors")
    changed = [k for k, v in original.items() if not torch.equal(tuned[f"site_a.{k}"], v)]
    assert changed, "fine-tuning left the fusion's expert copy unchanged"

    loaded = LoadedRun(out)
    tuned_methods = {
        name
        for name, m in loaded.methods.items()
        if isinstance(m, FusionMethod) and m.networks is not None
    }
    assert tuned_methods == {"fusion", "random_features"}
    x = np.random.default_rng(1).normal(size=(3, 1, 24, 24)).astype(np.float32)
    preds = loaded.predict(x, ["site_a", "site_b", None])
    assert {name for name, own in preds.own.items() if own} == {
        "fusion",
        "random_features",
        "pooled",
        "weight_average",
    }
    assert np.allclose(preds.probs["fusion"].sum(1), 1, atol=1e-5)
    # The local expert is the untouched site expert, not the fusion's fine-tuned copy.
    assert preds.features is not None
    assert not np.allclose(preds.own["fusion"]["features"], preds.features.features)


def test_one_site_cannot_start_from_a_fedavg_model_that_does_not_exist(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Tiny
) -> None:
    """The per-site pipeline trains one site's expert; with expert.start fedavg it would need a
    FedAvg model over every site, which only the whole chain or a federation trains."""
    cfg = tiny_config(synthetic_2d, expert__start="fedavg", baselines__fedavg=True)
    with pytest.raises(ConfigError, match="run the whole chain"):
        train_run(cfg, tmp_path / "run", sites=["site_a"])
    assert not (tmp_path / "run" / "experts" / "site_a.safetensors").exists()
