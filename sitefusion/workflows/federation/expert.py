"""The ``expert`` phase: each site trains its own expert, and the coordinator averages them once.

A site trains its expert from the coordinator's shared initial weights or, with
``expert.start: fedavg``, fine-tunes the FedAvg model the federation trained before this phase.
Reply: the expert's weights and its training record (per-epoch losses and validation balanced
accuracy). The coordinator writes every expert into the run directory, then the one-shot
weight average of them (:class:`~sitefusion.methods.WeightAverage`, as central training does).
"""

from __future__ import annotations

from typing import Any

import torch

from sitefusion.experts import build_expert
from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.messages import Reply, Request
from sitefusion.federated.phase import OncePhase
from sitefusion.methods import WeightAverage
from sitefusion.methods.fedavg import FedAvgMethod
from sitefusion.training.stages import initial_state, train_expert
from sitefusion.workflows.federation.site import SiteSession

__all__ = ["Expert"]


class ExpertRequest(Request):
    """The shared initial weights, and (``expert.start: fedavg``) the model to start from."""

    init: dict[str, torch.Tensor]
    start: dict[str, torch.Tensor]


class ExpertReply(Reply):
    """The trained expert and its training record."""

    start: str
    n_train: int
    n_val: int
    best_epoch: int
    history: list[dict[str, Any]]
    seconds: float
    weights: dict[str, torch.Tensor]


class Expert(OncePhase[ExpertRequest, ExpertReply]):
    """Every site's expert, trained where its data lives."""

    name = "expert"
    request_type = ExpertRequest
    reply_type = ExpertReply

    def done(self, co: Coordinator) -> bool:
        return not self.targets(co) and co.run.has(WeightAverage.ARTIFACT)

    def targets(self, co: Coordinator) -> list[str]:
        return [s for s in co.sites if not co.run.has(f"experts/{s}.safetensors")]

    def request(self, co: Coordinator, site: str) -> ExpertRequest:
        if "expert_request" not in co.memory:
            init = initial_state(co.cfg, co.run, co.num_classes)
            start = (
                co.run.read_tensors(FedAvgMethod.ARTIFACT)
                if co.cfg.expert.start == "fedavg"
                else {}
            )
            co.memory["expert_request"] = ExpertRequest(**co.fields(self, init=init, start=start))
            co.say(f"experts: training at {', '.join(self.targets(co))}")
        request: ExpertRequest = co.memory["expert_request"]
        return request

    def handle(self, site: SiteSession, request: ExpertRequest) -> ExpertReply:
        run, data = site.data()
        bank = site.bank()
        if not run.has("experts/init.safetensors"):
            run.write_tensors("experts/init.safetensors", request.init)
        train_expert(
            site.cfg, run, data, bank, site.name, sites=site.sites, start=request.start or None
        )
        summary = run.read_json(f"experts/{site.name}.json")
        return ExpertReply(
            site=site.name,
            phase=self.name,
            start=summary["start"],
            n_train=summary["n_train"],
            n_val=summary["n_val"],
            best_epoch=summary["best_epoch"],
            history=summary["history"],
            seconds=summary["seconds"],
            weights=run.read_tensors(f"experts/{site.name}.safetensors"),
        )

    def combine(self, co: Coordinator, replies: dict[str, ExpertReply]) -> None:
        for site in sorted(replies):
            reply = replies[site]
            model = build_expert(co.cfg, co.num_classes)
            model.load_state_dict(reply.weights)  # refuses weights of another architecture
            record = reply.model_dump(exclude={"phase", "weights"})
            co.run.write_json(f"experts/{site}.json", {"expert": model.describe(), **record})
            co.run.write_tensors(f"experts/{site}.safetensors", reply.weights)
            best = reply.history[reply.best_epoch]["val_balanced_accuracy"]
            co.say(
                f"  expert {site}: {reply.n_train} training images, best epoch "
                f"{reply.best_epoch + 1}, validation balanced accuracy {best:.3f}"
            )
        co.memory.pop("expert_request", None)
        if not co.run.has(WeightAverage.ARTIFACT) and not self.targets(co):
            WeightAverage.average(co.run, co.sites)
