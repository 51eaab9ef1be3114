"""The FedAvg baseline: one network of the experts' architecture trained by federated averaging.

From the shared initial weights, ``federated.fedavg_rounds`` rounds: every site trains the global
network for ``federated.fedavg_local_epochs`` epochs on its own training split (normalized by its
own normalizer), and the global network becomes the example-weighted average of the sites'
(McMahan et al., AISTATS 2017); ``federated.proximal_mu`` > 0 makes it FedProx. The learning rate
decays over the rounds on a cosine. One-shot weight averaging (:class:`WeightAverage`) is the
single-round special case from separately trained experts; the two answer different questions.

There is one FedAvg: the phase :class:`FedAvgRound`. ``sitefusion federate`` runs it across the
sites' own processes (Flower); ``sitefusion train`` with ``baselines.fedavg: true`` runs the same
phase through the same coordinator over an in-process transport, each site a view of its own rows
(:meth:`FedAvgMethod.fit`). Either writes ``baselines/fedavg.safetensors`` and its ``.json``
(per-round losses, example counts and update sizes) through :meth:`FedAvgMethod.save`, and it
predicts like the weight average: one network on site-normalized images.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
import torch

from sitefusion.config import Config
from sitefusion.evaluation.method_families import FEDAVG
from sitefusion.experts import build_expert
from sitefusion.federated.coordinator import Coordinator, InProcessTransport
from sitefusion.federated.messages import Request, RoundReply
from sitefusion.federated.phase import RoundPhase, RoundState
from sitefusion.methods.base import SiteNormalizedNetwork
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext, normalize_rows
from sitefusion.training.federated import local_network_update
from sitefusion.training.schedules import cosine
from sitefusion.training.stages import initial_state, set_threads

__all__ = [
    "FEDAVG_STEM",
    "FedAvgMethod",
    "FedAvgRequest",
    "FedAvgRound",
    "fedavg_round_lr",
    "fedavg_round_seed",
]

FEDAVG_STEM = "baselines/fedavg"


def fedavg_round_lr(base: float, round_index: int, rounds: int) -> float:
    """The local learning rate of round ``round_index`` of ``rounds``: cosine decay from ``base``
    (half a step in, so that the last round does not train at rate 0)."""
    return cosine(base, 2 * round_index + 1, 2 * rounds)


def fedavg_round_seed(seed: int, round_index: int, site_index: int) -> int:
    """The seed of one site's local update in one round (data order, augmentation)."""
    return seed * 100_003 + round_index * 64 + site_index


class FedAvgMethod(SiteNormalizedNetwork):
    """One network trained by FedAvg over the sites."""

    name = FEDAVG.name
    reads_features = False
    ARTIFACT = f"{FEDAVG_STEM}.safetensors"

    def fit(self, ctx: TrainContext) -> None:
        """Run the FedAvg phase in this process, each site on its own rows only."""
        if self.is_trained(ctx.run):
            return
        set_threads(ctx.cfg)
        fed = ctx.cfg.federated
        ctx.log(
            f"[bold]FedAvg baseline[/]: {fed.fedavg_rounds} rounds x {fed.fedavg_local_epochs} "
            f"local epochs over {len(ctx.sites)} sites (simulated in one process)"
        )
        phase = FedAvgRound()
        sites = {site: _CentralSite(ctx, site) for site in ctx.sites}
        co = Coordinator(
            ctx.cfg,
            ctx.run,
            InProcessTransport(sites, [phase]),
            run_id=str(ctx.run.read_manifest().get("run_id", "0" * 12)),
            num_classes=ctx.num_classes,
            mode="simulated",
            say=ctx.log,
        )
        co.sites = sorted(sites)
        t0 = time.perf_counter()
        co.run_rounds(phase)
        record = ctx.run.read_json(f"{FEDAVG_STEM}.json")
        ctx.run.write_json(f"{FEDAVG_STEM}.json", {**record, "seconds": time.perf_counter() - t0})

    @staticmethod
    def save(
        run: RunDir, cfg: Config, weights: dict[str, torch.Tensor], record: dict[str, Any]
    ) -> None:
        """Write the FedAvg network (``weights``, whole-network keys) and its record; the
        weights last, since their presence marks the method as trained."""
        fed = cfg.federated
        run.write_json(
            f"{FEDAVG_STEM}.json",
            {
                "rounds": fed.fedavg_rounds,
                "local_epochs": fed.fedavg_local_epochs,
                "proximal_mu": fed.proximal_mu,
                **record,
            },
        )
        run.write_tensors(f"{FEDAVG_STEM}.safetensors", weights)


class FedAvgRequest(Request):
    """One FedAvg round: the global network's ``weights``, local epochs, rate, seed, FedProx."""

    round: int
    epochs: int
    lr: float
    seed: int
    mu: float
    weights: dict[str, torch.Tensor]


class FedAvgSite(Protocol):
    """What a site's local FedAvg update reads: its name, the run's config, the class count and
    its own training split, normalized by its own normalizer."""

    name: str
    cfg: Config
    num_classes: int

    def train_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalized training images ``[N, C, *S]`` and labels ``[N]`` of the site."""


class FedAvgRound(RoundPhase[FedAvgRequest]):
    """The FedAvg rounds (see the module docstring)."""

    name = "fedavg_round"
    request_type = FedAvgRequest

    def done(self, co: Coordinator) -> bool:
        return co.run.has(FedAvgMethod.ARTIFACT)

    def rounds(self, co: Coordinator) -> int:
        return co.fed.fedavg_rounds

    def start(self, co: Coordinator) -> RoundState:
        model = build_expert(co.cfg, co.num_classes)
        model.load_state_dict(initial_state(co.cfg, co.run, co.num_classes))
        return RoundState(model.state_dict())

    def request(self, co: Coordinator, state: RoundState, round_index: int) -> FedAvgRequest:
        rounds = self.rounds(co)
        return FedAvgRequest(
            **co.fields(
                self,
                round=round_index,
                epochs=co.fed.fedavg_local_epochs,
                lr=fedavg_round_lr(co.cfg.training.lr, round_index, rounds),
                seed=fedavg_round_seed(co.cfg.seed, round_index, 0),
                mu=co.fed.proximal_mu,
                weights=state.weights,
            )
        )

    def max_examples(self, co: Coordinator, state: RoundState, site: str) -> int:
        return int(co.run.read_json("schema.json")["split_counts"][site]["train"])

    def handle(self, site: FedAvgSite, request: FedAvgRequest) -> RoundReply:
        x, y = site.train_inputs()
        model = build_expert(site.cfg, site.num_classes)
        model.load_state_dict(request.weights)
        update = local_network_update(
            model,
            x,
            y,
            cfg=site.cfg.training,
            num_classes=site.num_classes,
            epochs=request.epochs,
            lr=request.lr,
            # The round's seed plus the site's place in the federation (as every phase does).
            seed=request.seed + request.sites.index(site.name),
            mu=request.mu,
        )
        return RoundReply(
            site=site.name,
            phase=self.name,
            examples=update.examples,
            loss=update.loss,
            weights=update.state,
        )

    def finish(self, co: Coordinator, state: RoundState) -> None:
        model = build_expert(co.cfg, co.num_classes)
        model.load_state_dict(state.weights)
        FedAvgMethod.save(
            co.run, co.cfg, model.state_dict(), {"mode": co.mode, "history": state.history}
        )


class _CentralSite:
    """One site of a central run as :class:`FedAvgRound` sees it: its own training rows only."""

    def __init__(self, ctx: TrainContext, name: str) -> None:
        self.name, self.cfg, self.num_classes = name, ctx.cfg, ctx.num_classes
        self._ctx = ctx
        self._inputs: tuple[np.ndarray, np.ndarray] | None = None

    def train_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        if self._inputs is None:
            data = self._ctx.data
            rows = data.rows("train", site=self.name)
            self._inputs = (normalize_rows(self._ctx.bank, data, rows), data.labels[rows])
        return self._inputs
