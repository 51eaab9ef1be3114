"""Real Flower processes on loopback: a SuperLink and one SuperNode per site, ``flwr run`` of the
sitefusion app, every process stopped afterwards; a SuperNode that is gone gives a clear failure
within its deadline, not a hang."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from sitefusion.config import Config, config_to_dict, replace
from sitefusion.federated import SiteSetup
from sitefusion.federated.deploy import LocalFederation
from sitefusion.methods import LoadedRun
from sitefusion.rundir import RunDir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="flwr is not installed"),
]


def _request(cfg: Config, folder: Path) -> Path:
    path = folder / "federate.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path


def _tiny(cfg: Config, **federated: object) -> Config:
    return replace(
        cfg,
        training=replace(cfg.training, epochs=1),
        federated=replace(cfg.federated, head_rounds=1, fedavg_rounds=1, **federated),
    )


def test_a_federation_of_real_processes_trains_evaluates_and_stops(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    setups = site_setups[:2]  # two sites keep the test to about a minute on 2 cores
    cfg = _tiny(federated_cfg, min_sites=2, round_timeout=240.0, node_timeout=60.0)
    out = tmp_path / "run"
    lines: list[str] = []
    with LocalFederation(tmp_path / "flower", setups, say=lines.append) as federation:
        outcome = federation.run(_request(cfg, tmp_path), out, timeout=420, on_line=lines.append)
        processes = list(federation.processes)
    assert outcome.status == "finished:completed", "\n".join(lines[-40:])
    assert all(not p.alive() for p in processes)  # every process it started is stopped
    assert any(line.startswith("started SuperLink") for line in lines)
    assert sum(line.startswith("started SuperNode for site") for line in lines) == 2
    info = RunDir(out).read_manifest()
    assert (info["mode"], info["status"]) == ("federated", "complete")
    loaded = LoadedRun(out)
    assert {"fusion", "fedavg", "weight_average", "output_average", "local:site_a"} <= set(
        loaded.methods
    )
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["methods"]["fusion"]["per_site"]) >= {"site_a", "site_b"}
    # The coordinator's data paths point nowhere (federated_cfg): it read no data file.
    assert not Path(cfg.data.root).exists()


def test_a_site_that_is_gone_fails_the_run_clearly_within_its_deadline(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    setups = site_setups[:2]
    cfg = _tiny(federated_cfg, min_sites=2, round_timeout=30.0, node_timeout=20.0)
    lines: list[str] = []
    with LocalFederation(tmp_path / "flower", setups, say=lines.append) as federation:
        federation.processes[-1].stop()  # site_b's SuperNode is killed before the run
        outcome = federation.run(
            _request(cfg, tmp_path), tmp_path / "run", timeout=300, on_line=lines.append
        )
    assert outcome.status.startswith("finished:") and outcome.status != "finished:completed"
    log = "\n".join(lines)
    assert "1 site(s) connected within 20 s (site_a); federated.min_sites is 2" in log
