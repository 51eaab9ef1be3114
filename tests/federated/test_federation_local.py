"""The federated chain with the sites as function calls: the run directory it writes, what its
messages carry, a site lost in a round, a site's error, and a coordinator that resumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sitefusion.config import Config, replace
from sitefusion.errors import FederationError
from sitefusion.federated import Payload, SiteFailure, SiteSetup
from sitefusion.methods import LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.workflows import LocalTransport, federate

pytestmark = pytest.mark.slow

AGGREGATES = re.compile(
    r"^(moments\.(count|sum|sum_sq)|class_counts|class_weight|labels|probs\.[\w:]+|attention\.\w+"
    r"|ood\.(count|sum|outer)|reference\.(mean|scale|precision|threshold|count)|edges|counts)$"
)


def _weight_names(cfg: Config) -> set[str]:
    """Every tensor name a message may carry as weights: an expert's, a head's, prefixed."""
    from sitefusion.experts import build_expert
    from sitefusion.fusion import FusionClassifier

    expert = set(build_expert(cfg, 3).state_dict())
    head = set(FusionClassifier("average_attention", 3, 8, 3, hidden=8).state_dict())
    sites = ("site_a", "site_b", "site_c")
    prefixed = {f"{p}.{k}" for p in ("init", "start", "weights") for k in expert}
    every_expert = {f"experts.{s}.{k}" for s in sites for k in expert}
    return prefixed | every_expert | {f"weights.{k}" for k in head}


def _messages(out: Path) -> list[dict[str, object]]:
    lines = (out / "federation" / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_a_federated_run_is_an_ordinary_run_directory(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = federate(federated_cfg, out, LocalTransport(site_setups))

    info = RunDir(out).read_manifest()
    assert (info["mode"], info["status"]) == ("federated", "complete")
    loaded = LoadedRun(out)  # hash-checked, loads like any run
    sites = ["site_a", "site_b", "site_c"]
    assert set(loaded.methods) == {
        "fusion",
        "fedavg",
        "weight_average",
        "output_average",
        *(f"local:{s}" for s in sites),
    }
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["methods"]) == set(loaded.methods)
    for method in metrics["methods"].values():
        assert set(method["per_site"]) >= set(sites)
    assert "pooled" in metrics["run"]["not_available"]
    assert (out / "report" / "report.html").is_file()
    # The head was averaged over every site in every round; FedAvg too.
    head = loaded.run.read_json("fusion/fusion.json")["federated"]["history"]
    assert len(head) == 3 and all(set(r) == set(sites) for r in head)
    assert result["bytes"]["head_round:sent"] > 0


def test_messages_carry_no_image_id_or_feature_of_an_image(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path, synthetic_2d: Path
) -> None:
    out = tmp_path / "run"
    federate(federated_cfg, out, LocalTransport(site_setups), evaluate=True)
    rows = synthetic_2d.read_text(encoding="utf-8").splitlines()[1:]
    ids = {r.split(",")[0] for r in rows}
    groups = {r.split(",")[4] for r in rows}
    messages = _messages(out)
    weights = _weight_names(federated_cfg)
    assert {m["phase"] for m in messages} >= {"prepare", "expert", "head_round", "evaluate"}
    raw = (out / "federation" / "messages.jsonl").read_text(encoding="utf-8")
    for message in messages:
        for name, spec in message["tensors"].items():  # type: ignore[attr-defined]
            assert name in weights or AGGREGATES.match(name), name
            shape = spec["shape"]
            # No image ([..., 24, 24]) and no per-image feature matrix ([N, E, D] / [N, D]).
            assert shape[-2:] != [24, 24], (name, shape)
            if name.startswith(("moments.", "class_")):
                assert len(shape) <= 2 and (not shape or shape[0] <= 8), (name, shape)
        if message["phase"] == "evaluate" and message["direction"] == "received":
            assert "groups" in message["meta_keys"]  # type: ignore[operator]
    # The audit log names no image id or group id; the replies themselves neither.
    assert not any(i in raw for i in ids) and not any(g in raw for g in groups)
    site = site_setups[0]
    from sitefusion.workflows import handle

    reply = handle(
        site,
        Payload(
            {
                "phase": "evaluate",
                "run_id": RunDir(out).read_manifest()["run_id"],
                "config": json.loads(json.dumps(_config_dict(out))),
                "sites": ["site_a", "site_b", "site_c"],
                "info": {
                    k: v
                    for k, v in RunDir(out).read_manifest().items()
                    if k in ("run_id", "status", "completed_at", "mode")
                },
            },
            files={
                rel: (out / rel).read_bytes()
                for rel in RunDir(out).verify_all()
                if not rel.startswith("federation/")
            },
        ),
    )
    codes = reply.meta["groups"]
    assert codes and all(re.fullmatch(r"site_a-\d{5}", c) for c in codes)
    assert not set(codes) & groups and "ids" not in reply.meta


def _config_dict(out: Path) -> dict[str, object]:
    import yaml

    return yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


class _Flaky(LocalTransport):
    """Site ``lost`` stops answering after ``after`` head rounds (a SuperNode killed mid-run)."""

    def __init__(self, setups: list[SiteSetup], lost: str, after: int) -> None:
        super().__init__(setups)
        self.lost, self.after, self.rounds = lost, after, 0

    def ask(self, payloads, timeout, message_type):  # type: ignore[no-untyped-def]
        if any(p.meta.get("phase") == "head_round" for p in payloads.values()):
            self.rounds += 1
        replies = super().ask(payloads, timeout, message_type)
        if self.rounds > self.after:
            replies[self.lost] = SiteFailure.lost(f"no reply within {timeout:.0f} s")
        return replies


def test_a_site_lost_in_a_round_is_left_out_and_named(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    from rich.console import Console

    out = tmp_path / "run"
    console = Console(record=True, width=200)
    transport = _Flaky(site_setups, "site_b", after=1)
    cfg = replace(federated_cfg, federated=replace(federated_cfg.federated, round_timeout=2.0))
    with pytest.raises(
        FederationError, match=r"phase ood_threshold: 1 site\(s\) did not complete \(site_b"
    ):
        federate(cfg, out, transport, console=console)
    text = console.export_text()
    assert "head_round round 2: site site_b left out" in text
    history = RunDir(out).read_json("fusion/fusion.json")["federated"]["history"]
    assert set(history[0]) == {"site_a", "site_b", "site_c"}
    assert set(history[1]) == set(history[2]) == {"site_a", "site_c"}


def test_a_site_error_stops_the_phase_with_its_message_and_the_run_resumes(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    # site_c's images are damaged before it trains its expert: its error names the file.
    broken = sorted((site_setups[2].root / "images" / "site_c").glob("*.png"))[0]
    good = broken.read_bytes()
    broken.write_bytes(b"not a png")
    out = tmp_path / "run"
    try:
        with pytest.raises(FederationError, match=r"phase prepare.*site_c.*img_"):
            federate(federated_cfg, out, LocalTransport(site_setups))
    finally:
        broken.write_bytes(good)
    assert Image.open(broken).size  # restored
    # The same command resumes: the config and run id are kept, everything else is done now.
    run_id = RunDir(out).read_manifest()["run_id"]
    federate(federated_cfg, out, LocalTransport(site_setups))
    info = RunDir(out).read_manifest()
    assert info["run_id"] == run_id and info["status"] == "complete"


def test_the_coordinator_refuses_what_a_federation_cannot_do(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    from sitefusion.errors import ConfigError

    no_classes = replace(federated_cfg, data=replace(federated_cfg.data, classes=None))
    with pytest.raises(ConfigError, match=r"data\.classes"):
        federate(no_classes, tmp_path / "a", LocalTransport(site_setups))
    tuned = replace(federated_cfg, fusion=replace(federated_cfg.fusion, finetune_epochs=2))
    with pytest.raises(ConfigError, match="finetune_epochs"):
        federate(tuned, tmp_path / "b", LocalTransport(site_setups))
    assert not (tmp_path / "a" / "experts").exists()


def test_fedavg_simulated_in_one_process_matches_its_federated_rounds(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path, synthetic_2d: Path
) -> None:
    """Same splits, normalizers, initial weights, seeds and learning rates: the in-process
    FedAvg baseline (baselines.fedavg) and the federated one end with the same weights."""
    import torch

    from sitefusion.workflows import train_run

    out = tmp_path / "run"
    federate(federated_cfg, out, LocalTransport(site_setups), evaluate=False)
    fed = RunDir(out).read_tensors("baselines/fedavg.safetensors")
    central_cfg = replace(
        federated_cfg,
        data=replace(federated_cfg.data, root=str(synthetic_2d.parent)),
        baselines=replace(
            federated_cfg.baselines,
            pooled=False,
            stacking=False,
            random_features=False,
            fedavg=True,
        ),
        fusion=replace(federated_cfg.fusion, modes=("average_attention",)),
    )
    train_run(central_cfg, tmp_path / "central")
    central = RunDir(tmp_path / "central").read_tensors("baselines/fedavg.safetensors")
    assert fed.keys() == central.keys()
    for key in fed:
        torch.testing.assert_close(fed[key], central[key], rtol=1e-5, atol=1e-6, msg=key)


def test_score_and_evaluate_work_on_a_federated_run_unchanged(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path, synthetic_2d: Path
) -> None:
    from sitefusion.scoring import score_inputs
    from sitefusion.scoring.ood import OOD_REFERENCE, MahalanobisOOD
    from sitefusion.workflows import evaluate_run

    out = tmp_path / "run"
    federate(federated_cfg, out, LocalTransport(site_setups), evaluate=False)
    images = sorted((synthetic_2d.parent / "images" / "site_a").glob("*.png"))[:4]
    summary = score_inputs(out, [str(p) for p in images], tmp_path / "scores", site="site_a")
    assert summary.scored == 4
    metrics = evaluate_run(out, tmp_path / "eval", manifest=synthetic_2d)
    assert "fedavg" in metrics["methods"]
    assert "overlap not checked" in metrics["run"]["overlap_with_training"]["note"]
    # The OOD reference from the sites' aggregates equals what the rows themselves give.
    stored = MahalanobisOOD.from_state(
        {k: v.numpy() for k, v in RunDir(out).read_tensors(OOD_REFERENCE).items()}, 0.99
    )
    rows = []
    for setup in site_setups:
        run = RunDir(setup.workdir / RunDir(out).read_manifest()["run_id"])
        from sitefusion.data import load_splits
        from sitefusion.training.features import load_feature_cache

        rel = next(
            r
            for r in run.read_manifest()["artifacts"]
            if r.startswith("federation/features-") and r.endswith(".safetensors")
        )
        cache = load_feature_cache(run, rel)
        split = load_splits(run.root / "splits.csv")
        rows.append(cache.features[[split[i] == "fusion" for i in cache.ids]].mean(1))
    x = np.concatenate(rows).astype(np.float64)
    np.testing.assert_allclose(stored.mean_, x.mean(0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(stored.scale_, x.std(0), rtol=1e-5, atol=1e-8)
    # Its threshold is the 0.99 quantile of those rows' distances, to a histogram bin.
    scores = stored.score(x)
    bin_width = 50.0 * np.sqrt(x.shape[1]) / 8192
    assert np.quantile(scores, 0.99) - bin_width <= stored.threshold_
    assert stored.threshold_ <= scores.max() + 2 * bin_width


def test_federated_fine_tuning_trains_copies_of_the_experts_and_the_fusion_uses_them(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    import torch

    cfg = replace(
        federated_cfg,
        federated=replace(federated_cfg.federated, finetune_rounds=2, finetune_local_epochs=1),
    )
    out = tmp_path / "run"
    federate(cfg, out, LocalTransport(site_setups))
    run = RunDir(out)
    meta = run.read_json("fusion/fusion.json")["finetune"]
    history = meta["federated"]["history"]
    assert len(history) == 2 and all(set(h) == {"site_a", "site_b", "site_c"} for h in history)
    assert meta["epochs"] == 2 and len(meta["loss_curve"]) == 2
    copies = run.read_tensors("fusion/fusion.experts.safetensors")
    moved = 0
    for site in ("site_a", "site_b", "site_c"):
        expert = run.read_tensors(f"experts/{site}.safetensors")
        moved += sum(
            not torch.equal(copies[f"{site}.{k}"], v)
            for k, v in expert.items()
            if v.is_floating_point()
        )
    assert moved > 0  # the copies trained; the site experts (local baselines) did not change
    loaded = LoadedRun(out)
    assert loaded.methods["fusion"].networks is not None
    phases = {m["phase"] for m in _messages(out)}
    assert "finetune_round" in phases
    for message in _messages(out):
        if message["phase"] == "finetune_round":
            names = set(message["tensors"])  # type: ignore[arg-type]
            assert all(
                n.startswith(("weights.experts.", "weights.head.")) or n == "class_weight"
                for n in names
            ), names
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["methods"]["fusion"]["per_site"]) >= {"site_a", "site_b", "site_c"}
