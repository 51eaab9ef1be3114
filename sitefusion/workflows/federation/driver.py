"""The coordinator of a federated run: the registered phases, in order, over a transport.

The coordinator holds no data path. It talks to the sites through a
:class:`~sitefusion.federated.transport.Transport` (the Flower ServerApp's grid in a deployment,
:class:`LocalTransport` in one process for tests and research) and writes the same run directory
as ``sitefusion train`` — config, schema, normalizers, shared initial weights, site experts, the
fusion head, the FedAvg and weight-average baselines, hashes — with ``"mode": "federated"`` in
``manifest.json``, so that ``sitefusion evaluate --manifest`` and ``sitefusion score`` work on it
unchanged. It then asks every site to evaluate every method on its own test split and writes the
report from the returned predictions (``<out>/report``).

The phases and their order are :mod:`~sitefusion.workflows.federation.registry`'s; what runs
them (resume, deadlines, rounds, checkpoints, the checks of every update) is the generic
:class:`~sitefusion.federated.coordinator.Coordinator`. Each phase is skipped when its
artifacts exist, so a restarted coordinator resumes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from sitefusion.atomic import atomic_write
from sitefusion.config import (
    Config,
    config_from_dict,
    config_to_dict,
    federated_config,
    parse_yaml,
)
from sitefusion.errors import ConfigError, SiteFusionError
from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.payload import Payload
from sitefusion.federated.setup import SiteSetup
from sitefusion.federated.transport import SiteFailure, Transport
from sitefusion.rundir import RunDir
from sitefusion.workflows.federation.evaluate import Evaluate
from sitefusion.workflows.federation.registry import coordinator_steps
from sitefusion.workflows.federation.site import handle

__all__ = ["LocalTransport", "federate", "federated_config"]


class LocalTransport:
    """The sites as function calls in this process (tests, research, the single-process mode).

    The sites still only see their own :class:`SiteSetup` and the payloads; only what
    :func:`~sitefusion.workflows.federation.site.handle` returns comes back.
    """

    def __init__(self, setups: Sequence[SiteSetup]) -> None:
        self.setups = {s.site: s for s in setups}

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        return sorted(self.setups)

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        replies: dict[str, Payload | SiteFailure] = {}
        for site, payload in payloads.items():
            try:
                replies[site] = handle(self.setups[site], payload)
            except SiteFusionError as err:
                replies[site] = SiteFailure.error(f"{type(err).__name__}: {err}")
        return replies


def _write_config(run: RunDir, cfg: Config) -> None:
    if run.has("config.yaml"):
        stored = config_from_dict(
            parse_yaml(run.read_text("config.yaml"), str(run.root / "config.yaml")), str(run.root)
        )
        if config_to_dict(stored) != config_to_dict(cfg):
            raise ConfigError(
                f"{run.root / 'config.yaml'}: this run directory was started with a different "
                "configuration; use a new --out or the same config"
            )
        return
    run.write_text("config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def federate(
    cfg: Config,
    out: str | Path,
    transport: Transport,
    *,
    console: Console | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a federated run into ``out`` over ``transport``; returns timings, bytes
    per phase and, with ``evaluate``, the metrics (also written to ``out/report``)."""
    cfg = federated_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(out)
    _write_config(run, cfg)
    info = run.read_manifest()
    run_id = str(info.get("run_id") or uuid.uuid4().hex[:12])
    if "run_id" not in info:
        run.set_info(run_id=run_id, status="training", mode="federated")
    co = Coordinator(
        cfg,
        run,
        transport,
        run_id=run_id,
        num_classes=len(cfg.data.classes or ()),
        audit=out / "federation" / "messages.jsonl",
        console=console,
    )
    timings: dict[str, float] = {}
    t = time.perf_counter()
    co.connect()
    timings["connect"] = time.perf_counter() - t
    for phase in coordinator_steps(cfg):
        t = time.perf_counter()
        co.run_phase(phase)
        timings[phase.name] = time.perf_counter() - t
    if run.read_manifest().get("status") != "complete":
        completed = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        run.set_info(status="complete", completed_at=completed)
    result: dict[str, Any] = {"run_id": run_id, "timings": timings}
    if evaluate:
        t = time.perf_counter()
        co.run_phase(Evaluate(out / "report"))
        result["metrics"] = co.memory["metrics"]
        timings["evaluate"] = time.perf_counter() - t
    result["bytes"] = dict(co.sent)
    run.set_info(timings=timings, bytes_by_phase=dict(co.sent))
    with atomic_write(out / "federation" / "summary.json") as fh:
        json.dump({"timings": timings, "bytes": co.sent, "sites": co.sites}, fh, indent=2)
    return result
