"""The FedAvg baseline: one network of the experts' architecture trained by federated averaging.

From the shared initial weights, ``federated.fedavg_rounds`` rounds: every site trains the global
network for ``federated.fedavg_local_epochs`` epochs on its own training split (normalized by its
own normalizer), and the global network becomes the example-weighted average of the sites'
(McMahan et al., AISTATS 2017); ``federated.proximal_mu`` > 0 makes it FedProx. The learning rate
decays over the rounds on a cosine. One-shot weight averaging (:class:`WeightAverage`) is the
single-round special case from separately trained experts; the two answer different questions.

``sitefusion federate`` trains it across the sites' own processes (Flower); ``sitefusion train``
with ``baselines.fedavg: true`` simulates the same rounds in one process, for research. Either
writes ``baselines/fedavg.safetensors`` and its ``.json`` (per-round losses and example counts),
and it predicts like the weight average: one network on site-normalized images.
"""

from __future__ import annotations

import time

from sitefusion.evaluation.method_families import FEDAVG
from sitefusion.experts import build_expert
from sitefusion.methods.base import SiteNormalizedNetwork
from sitefusion.training.context import TrainContext, normalize_rows
from sitefusion.training.federated import LocalUpdate, federated_average, local_network_update
from sitefusion.training.schedules import cosine
from sitefusion.training.stages import initial_state, set_threads

__all__ = ["FEDAVG_STEM", "FedAvgMethod", "fedavg_round_lr", "fedavg_round_seed"]

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
        """Simulate the federated rounds in this process (each site on its own rows only)."""
        if self.is_trained(ctx.run):
            return
        cfg, data, fed = ctx.cfg, ctx.data, ctx.cfg.federated
        set_threads(cfg)
        t0 = time.perf_counter()
        model = build_expert(cfg, ctx.num_classes)
        model.load_state_dict(initial_state(cfg, ctx.run, ctx.num_classes))
        local = {}
        for site in ctx.sites:
            rows = data.rows("train", site=site)
            local[site] = (normalize_rows(ctx.bank, data, rows), data.labels[rows])
        ctx.log(
            f"[bold]FedAvg baseline[/]: {fed.fedavg_rounds} rounds x {fed.fedavg_local_epochs} "
            f"local epochs over {len(ctx.sites)} sites (simulated in one process)"
        )
        history = []
        for r in range(fed.fedavg_rounds):
            start = {k: v.clone() for k, v in model.state_dict().items()}
            updates: dict[str, LocalUpdate] = {}
            for i, site in enumerate(ctx.sites):
                model.load_state_dict(start)
                x, y = local[site]
                updates[site] = local_network_update(
                    model,
                    x,
                    y,
                    cfg=cfg.training,
                    num_classes=ctx.num_classes,
                    epochs=fed.fedavg_local_epochs,
                    lr=fedavg_round_lr(cfg.training.lr, r, fed.fedavg_rounds),
                    seed=fedavg_round_seed(cfg.seed, r, i),
                    mu=fed.proximal_mu,
                )
            model.load_state_dict(federated_average(updates, sorted(updates)))
            history.append(
                {s: {"loss": u.loss, "examples": u.examples} for s, u in updates.items()}
            )
            losses = ", ".join(f"{s} {u.loss:.3f}" for s, u in updates.items())
            ctx.log(f"  FedAvg round {r + 1}/{fed.fedavg_rounds}: local loss {losses}")
        ctx.run.write_json(
            f"{FEDAVG_STEM}.json",
            {
                "rounds": fed.fedavg_rounds,
                "local_epochs": fed.fedavg_local_epochs,
                "proximal_mu": fed.proximal_mu,
                "mode": "simulated",
                "history": history,
                "seconds": time.perf_counter() - t0,
            },
        )
        ctx.run.write_tensors(f"{FEDAVG_STEM}.safetensors", model.state_dict())
