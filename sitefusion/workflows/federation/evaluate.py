"""The ``evaluate`` phase: every method of the finished run on every site's own test split.

The coordinator sends the finished run directory (its hashed files, the federation's own working
files left out); each site loads it as any run and predicts its test split. Reply: per-image class
probabilities, expert weights and labels, keyed by group codes drawn at random for this reply
(the coordinator can tell which predictions share a lesion or patient, which the bootstrap needs,
not which lesion or patient it is), never image ids. The coordinator writes the same report as
``sitefusion evaluate``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitefusion.errors import FederationError, SiteFusionError
from sitefusion.evaluation import PredictionSet, evaluate_predictions
from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.messages import Reply, Request
from sitefusion.federated.phase import OncePhase
from sitefusion.methods import LoadedRun
from sitefusion.reporting import write_report
from sitefusion.rundir import RunDir
from sitefusion.workflows.evaluate import predict_manifest
from sitefusion.workflows.federation.site import SiteSession

__all__ = ["Evaluate"]

_TEST_SET = "each site's internal test split, predicted at the site (federated)"


class EvaluateRequest(Request):
    """The finished run directory (relative path -> bytes) and its manifest's identity."""

    info: dict[str, Any]
    files: dict[str, bytes]


class EvaluateReply(Reply):
    """Every method's probabilities (and expert weights) on the site's test images, their
    labels and random group codes."""

    methods: list[str]
    groups: list[str]
    labels: torch.Tensor
    probs: dict[str, torch.Tensor]
    attention: dict[str, torch.Tensor]


class Evaluate(OncePhase[EvaluateRequest, EvaluateReply]):
    """The federated run's report (see the module docstring)."""

    name = "evaluate"
    kind = "evaluate"
    request_type = EvaluateRequest
    reply_type = EvaluateReply

    def __init__(self, report: Path | None = None) -> None:
        self.report = report

    def done(self, co: Coordinator) -> bool:
        return False  # the report is written anew each time (the run is not changed)

    def request(self, co: Coordinator, site: str) -> EvaluateRequest:
        if "evaluate_request" not in co.memory:
            files = {
                rel: (co.run.root / rel).read_bytes()
                for rel in co.run.verify_all()
                if not rel.startswith("federation/")
            }
            info = {
                k: v
                for k, v in co.run.read_manifest().items()
                if k in ("run_id", "status", "completed_at", "mode")
            }
            co.memory["evaluate_request"] = EvaluateRequest(
                **co.fields(self, info=info, files=files)
            )
        request: EvaluateRequest = co.memory["evaluate_request"]
        return request

    def handle(self, site: SiteSession, request: EvaluateRequest) -> EvaluateReply:
        run, data = site.data()
        final = RunDir(run.root / "federation" / "final")
        for rel, content in sorted(request.files.items()):
            if rel.startswith(("/", "..")) or ".." in Path(rel).parts:
                raise SiteFusionError(
                    f"coordinator message: file name {rel!r} leaves the run folder"
                )
            final.write_bytes(rel, content)
        final.set_info(**request.info)
        loaded = LoadedRun(final.root)
        test_ids = [r.id for r in data.manifest.records if data.splits[r.id] == "test"]
        empty = torch.zeros(0, dtype=torch.int64)
        if not test_ids:
            return EvaluateReply(
                site=site.name, phase=self.name, methods=[], groups=[], labels=empty, probs={},
                attention={},
            )  # fmt: skip
        pset, _ = predict_manifest(loaded, data.manifest.subset(test_ids))
        unique = sorted(set(pset.group.tolist()))
        codes = [f"{site.name}-{i:05d}" for i in range(len(unique))]
        order = list(range(len(unique)))
        secrets.SystemRandom().shuffle(order)
        code_of = {g: codes[order[i]] for i, g in enumerate(unique)}
        return EvaluateReply(
            site=site.name,
            phase=self.name,
            methods=list(pset.probs),
            groups=[code_of[g] for g in pset.group.tolist()],
            labels=torch.from_numpy(pset.labels.astype(np.int64)),
            probs={
                n: torch.from_numpy(np.asarray(p, dtype=np.float32)) for n, p in pset.probs.items()
            },
            attention={
                n: torch.from_numpy(np.asarray(w, dtype=np.float32))
                for n, w in pset.attention.items()
            },
        )

    def combine(self, co: Coordinator, replies: dict[str, EvaluateReply]) -> None:
        co.memory.pop("evaluate_request", None)
        parts = [replies[s] for s in co.sites if replies[s].methods]
        if not parts:
            raise FederationError("evaluate: no site has a test split")
        methods = list(parts[0].methods)
        probs = {}
        for m in methods:
            stacked = np.concatenate([part.probs[m].numpy() for part in parts]).astype(np.float64)
            probs[m] = stacked / stacked.sum(1, keepdims=True)  # float32 sums off by ~1e-7
        attention = {
            m: np.concatenate([p.attention[m].numpy() for p in parts])
            for m in methods
            if m in parts[0].attention
        }
        site = np.concatenate([[p.site] * len(p.groups) for p in parts])
        # Each site's random codes renamed in order of first appearance (its test rows' order):
        # the bootstrap resamples groups in code order, so the report repeats run after run.
        groups: list[str] = []
        for part in parts:
            first: dict[str, str] = {}
            groups += [first.setdefault(g, f"{part.site}-{len(first):05d}") for g in part.groups]
        pset = PredictionSet(
            classes=tuple(co.cfg.data.classes or ()),
            sites=tuple(p.site for p in parts),
            experts=tuple(co.sites),
            ids=np.array([f"{s}:{i}" for i, s in enumerate(site)]),
            labels=np.concatenate([p.labels.numpy() for p in parts]),
            site=site,
            group=np.array(groups, dtype=str),
            probs=probs,
            attention=attention,
        )
        ecfg = co.cfg.evaluation
        metrics = evaluate_predictions(
            pset, n_boot=ecfg.bootstrap, seed=ecfg.seed, ece_bins=ecfg.ece_bins
        )
        metrics["run"] = {
            "run_id": co.run_id,
            "run_dir": str(co.run.root),
            "test_set": _TEST_SET,
            "n_images": len(pset.labels),
            "mode": "federated",
            "not_available": {
                "pooled": "pooled training needs every site's images in one place, which a "
                "federation does not have",
            },
            "bootstrap": ecfg.bootstrap,
        }
        if self.report is not None:
            write_report(metrics, pset, self.report)
        co.memory["metrics"] = metrics
