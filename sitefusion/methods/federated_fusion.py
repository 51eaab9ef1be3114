"""The product fusion trained by a federation: its phases, written through :class:`FusionMethod`.

- :class:`HeadSetup`: every expert goes to every site, which caches the features of its own
  images and returns aggregates of its fusion rows: the count, sum and sum of squares of the
  head's inputs (its standardisation), the class counts (its class weights), and the count, sum
  and outer products of the experts' mean feature over the fusion-split images (the scorer's OOD
  reference); never over fewer than :data:`MIN_AGGREGATE` images.
- :class:`HeadRound`: ``federated.head_rounds`` rounds of federated averaging of the head on
  the sites' cached features (their own rows, with the central presence masks).
- :class:`FinetuneRound`: ``federated.finetune_rounds`` rounds of the head and copies of every
  expert trained end to end at each site on its head rows' images, then averaged; the copies
  become the fusion's own experts.

Each phase's site side receives a view of the site's own data (:class:`FusionSite`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import numpy as np
import torch

from sitefusion.config import Config, replace
from sitefusion.errors import FederationError, SiteFusionError
from sitefusion.experts import build_expert
from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.messages import Reply, Request, RoundReply
from sitefusion.federated.phase import OncePhase, RoundPhase, RoundState
from sitefusion.fusion import FusionClassifier
from sitefusion.fusion.system import FusedSystem
from sitefusion.methods.fedavg import fedavg_round_lr, fedavg_round_seed
from sitefusion.methods.fusion import FusionMethod
from sitefusion.training.context import HeadRows
from sitefusion.training.features import ExpertFeatures
from sitefusion.training.federated import combine_moments, feature_moments, local_head_update
from sitefusion.training.finetune import finetune_fusion
from sitefusion.training.loop import class_weights
from sitefusion.training.schedules import cosine

__all__ = [
    "MIN_AGGREGATE",
    "FinetuneRound",
    "FusionSite",
    "HeadRound",
    "HeadSetup",
    "experts_tag",
]

MIN_AGGREGATE = 10
"""Fewest images a site sums over before it sends an aggregate of them."""

_SETUP = "federation/head_setup"


def experts_tag(experts: dict[str, torch.Tensor], sites: list[str]) -> str:
    """A short hash of every site's expert weights (``<site>.<key>`` tensors): names the
    feature cache computed from them, so that every later phase uses the same features."""
    digest = hashlib.sha256()
    for site in sites:
        prefix = f"{site}."
        for key in sorted(k for k in experts if k.startswith(prefix)):
            digest.update(key[len(prefix) :].encode())
            digest.update(experts[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class FusionSite(Protocol):
    """What a site's fusion phases read: its name, the run's config, the class count, and its
    feature caches (per set of experts) with the fusion's rows among them."""

    name: str
    cfg: Config
    num_classes: int

    def cache_features(self, tag: str, experts: dict[str, torch.Tensor]) -> None:
        """Compute (once) the features of every image of the site under ``experts``."""

    def head_cache(self, tag: str) -> tuple[ExpertFeatures, HeadRows]:
        """The cached features of experts ``tag`` and the fusion's rows among them."""

    def fusion_split(self, feats: ExpertFeatures) -> np.ndarray:
        """``[N]`` bool: which rows of ``feats`` are fusion-split images."""

    def finetune_inputs(self, tag: str) -> dict[str, torch.Tensor]:
        """The head rows' normalized images ``x``, labels ``y`` and masks ``presence``."""


def _setup(co: Coordinator) -> dict[str, Any]:
    """What :class:`HeadSetup` recorded."""
    return dict(co.run.read_json(f"{_SETUP}.json"))


# -- head setup -----------------------------------------------------------------------------------
class HeadSetupRequest(Request):
    """Every expert (``<site>.<key>`` tensors) and the head's configuration."""

    head_config: dict[str, Any]
    experts: dict[str, torch.Tensor]


class HeadSetupReply(Reply):
    """A site's aggregates of its fusion rows (see the module docstring)."""

    experts: str
    n_fusion: int
    n_cross_fit: int
    moments: dict[str, torch.Tensor]
    class_counts: torch.Tensor
    ood: dict[str, torch.Tensor]


class HeadSetup(OncePhase[HeadSetupRequest, HeadSetupReply]):
    """The features at the sites, and what the head needs of them before its rounds."""

    name = "head_setup"
    kind = "query"
    request_type = HeadSetupRequest
    reply_type = HeadSetupReply

    def done(self, co: Coordinator) -> bool:
        return co.run.has(f"{_SETUP}.json") or co.run.has("fusion/fusion.safetensors")

    @staticmethod
    def template(co: Coordinator) -> FusionClassifier:
        """The untrained head; seeded, so its initial weights are those of central training."""
        fc = co.cfg.fusion
        torch.manual_seed(co.cfg.seed)
        return FusionClassifier(
            fc.modes[0],
            len(co.sites),
            co.cfg.expert.out_channels,
            co.num_classes,
            use_local_logits=fc.use_local_logits,
            hidden=fc.hidden,
            dropout=fc.dropout,
        )

    def request(self, co: Coordinator, site: str) -> HeadSetupRequest:
        if "experts" not in co.memory:
            co.memory["experts"] = {
                f"{s}.{k}": v
                for s in co.sites
                for k, v in co.run.read_tensors(f"experts/{s}.safetensors").items()
            }
        head = co.memory.setdefault("head", None) or self.template(co)
        co.memory["head"] = head
        return HeadSetupRequest(
            **co.fields(self, head_config=head.config, experts=co.memory["experts"])
        )

    def handle(self, site: FusionSite, request: HeadSetupRequest) -> HeadSetupReply:
        tag = experts_tag(request.experts, request.sites)
        site.cache_features(tag, request.experts)
        feats, rows = site.head_cache(tag)
        fusion = site.fusion_split(feats)
        for what, n in (
            ("fusion rows", len(rows.positions)),
            ("fusion-split images", fusion.sum()),
        ):
            if n < MIN_AGGREGATE:
                raise SiteFusionError(
                    f"site {site.name}: {n} {what}; aggregates of fewer than {MIN_AGGREGATE} "
                    "images are not sent (they would describe single images)"
                )
        pooled = feats.features[fusion].astype(np.float64).mean(1)  # [N, D]: the OOD reference
        moments = feature_moments(
            FusionClassifier.from_config(request.head_config),
            feats.features[rows.positions],
            feats.logits[rows.positions],
        )
        k = int(request.head_config["num_classes"])
        counts = np.bincount(rows.labels, minlength=k).astype(np.float64)
        return HeadSetupReply(
            site=site.name,
            phase=self.name,
            experts=tag,
            n_fusion=rows.n_fusion,
            n_cross_fit=rows.n_cross_fit,
            moments=moments,
            class_counts=torch.from_numpy(counts),
            ood={
                "count": torch.tensor([float(len(pooled))], dtype=torch.float64),
                "sum": torch.from_numpy(pooled.sum(0)),
                "outer": torch.from_numpy(pooled.T @ pooled),
            },
        )

    def combine(self, co: Coordinator, replies: dict[str, HeadSetupReply]) -> None:
        tags = {r.experts for r in replies.values()}
        if len(tags) != 1:
            raise FederationError(f"head_setup: the sites hold different experts ({sorted(tags)})")
        co.run.write_tensors(
            "federation/ood_moments.safetensors",
            {
                key: torch.stack([replies[s].ood[key] for s in co.sites]).sum(0)
                for key in ("count", "sum", "outer")
            },
        )
        head: FusionClassifier = co.memory.pop("head", None) or self.template(co)
        mean, std = combine_moments([replies[s].moments for s in co.sites])
        head.mean.copy_(mean)
        head.std.copy_(std)
        counts = torch.stack([replies[s].class_counts for s in co.sites]).sum(0)
        labels = np.repeat(np.arange(co.num_classes), counts.numpy().astype(np.int64))
        co.run.write_tensors(f"{_SETUP}.safetensors", head.state_dict())
        co.run.write_json(  # last: marks the setup as done
            f"{_SETUP}.json",
            {
                "experts": tags.pop(),
                "head_config": head.config,
                "class_weight": class_weights(labels, co.num_classes, power=1.0).tolist(),
                "n_fusion": sum(replies[s].n_fusion for s in co.sites),
                "n_cross_fit": sum(replies[s].n_cross_fit for s in co.sites),
                "rows": {s: replies[s].n_fusion + replies[s].n_cross_fit for s in co.sites},
            },
        )


# -- head rounds ----------------------------------------------------------------------------------
class HeadRoundRequest(Request):
    """One round of the head: its ``weights``, the federation's class weights, the schedule."""

    head_config: dict[str, Any]
    experts: str
    round: int
    epochs: int
    lr: float
    seed: int
    mu: float
    class_weight: torch.Tensor
    weights: dict[str, torch.Tensor]


class HeadRound(RoundPhase[HeadRoundRequest]):
    """The fusion head trained by federated averaging over the sites' feature caches."""

    name = "head_round"
    request_type = HeadRoundRequest

    def done(self, co: Coordinator) -> bool:
        return co.run.has("fusion/fusion.safetensors")

    def rounds(self, co: Coordinator) -> int:
        return co.fed.head_rounds

    def start(self, co: Coordinator) -> RoundState:
        return RoundState(co.run.read_tensors(f"{_SETUP}.safetensors"))

    def request(self, co: Coordinator, state: RoundState, round_index: int) -> HeadRoundRequest:
        setup, rounds = _setup(co), self.rounds(co)
        return HeadRoundRequest(
            **co.fields(
                self,
                head_config=setup["head_config"],
                experts=setup["experts"],
                round=round_index,
                epochs=co.fed.head_local_epochs,
                lr=cosine(co.cfg.fusion.lr, 2 * round_index + 1, 2 * rounds),
                seed=fedavg_round_seed(co.cfg.seed, round_index, 0),
                mu=co.fed.proximal_mu,
                class_weight=torch.tensor(setup["class_weight"]),
                weights=state.weights,
            )
        )

    def max_examples(self, co: Coordinator, state: RoundState, site: str) -> int:
        return int(_setup(co)["rows"][site])

    def handle(self, site: FusionSite, request: HeadRoundRequest) -> RoundReply:
        feats, rows = site.head_cache(request.experts)
        head = FusionClassifier.from_config(request.head_config)
        head.load_state_dict(request.weights)
        update = local_head_update(
            head,
            feats.features[rows.positions],
            feats.logits[rows.positions],
            rows.labels,
            rows.presence,
            cfg=site.cfg.fusion,
            num_classes=int(request.head_config["num_classes"]),
            epochs=request.epochs,
            lr=request.lr,
            seed=request.seed + request.sites.index(site.name),
            mu=request.mu,
            class_weight=request.class_weight.float(),
            device=site.cfg.training.device,
        )
        return RoundReply(
            site=site.name,
            phase=self.name,
            examples=update.examples,
            loss=update.loss,
            weights=update.state,
        )

    def finish(self, co: Coordinator, state: RoundState) -> None:
        setup = _setup(co)
        head = FusionClassifier.from_config(setup["head_config"])
        head.load_state_dict(state.weights)
        meta = {
            "config": head.config,
            "loss_curve": [_weighted_loss(h) for h in state.history],
            "n_fusion": setup["n_fusion"],
            "n_cross_fit": setup["n_cross_fit"],
            "federated": {
                "rounds": self.rounds(co),
                "local_epochs": co.fed.head_local_epochs,
                "proximal_mu": co.fed.proximal_mu,
                "history": state.history,
            },
            "calibration": {
                "temperature": 1.0,
                "fitted_on": "not fitted: a federated run has no held-out logits in one place",
            },
        }
        FusionMethod.save(co.run, "fusion", meta, head)
        co.say(
            f"fusion head: {self.rounds(co)} rounds over {len(co.sites)} sites, "
            f"{setup['n_fusion']} fusion-split + {setup['n_cross_fit']} cross-fitted rows"
        )


# -- end-to-end fine-tuning -----------------------------------------------------------------------
class FinetuneRequest(Request):
    """One round of the head and the expert copies as one network (``weights``)."""

    head_config: dict[str, Any]
    experts: str
    round: int
    epochs: int
    lr_experts: float
    lr_head: float
    seed: int
    mu: float
    class_weight: torch.Tensor
    weights: dict[str, torch.Tensor]


class FinetuneRound(RoundPhase[FinetuneRequest]):
    """Federated end-to-end fine-tuning of the head with copies of the experts."""

    name = "finetune_round"
    request_type = FinetuneRequest

    def done(self, co: Coordinator) -> bool:
        return not self.rounds(co) or co.run.has("fusion/fusion.experts.safetensors")

    def rounds(self, co: Coordinator) -> int:
        return co.fed.finetune_rounds

    @staticmethod
    def _system(co: Coordinator) -> FusedSystem:
        meta = co.run.read_json("fusion/fusion.json")
        head = FusionClassifier.from_config(meta["config"])
        head.load_state_dict(co.run.read_tensors("fusion/fusion.safetensors"))
        experts = []
        for site in co.sites:
            expert = build_expert(co.cfg, co.num_classes)
            expert.load_state_dict(co.run.read_tensors(f"experts/{site}.safetensors"))
            experts.append(expert)
        return FusedSystem(experts, head)

    def start(self, co: Coordinator) -> RoundState:
        return RoundState(self._system(co).state_dict())

    def request(self, co: Coordinator, state: RoundState, round_index: int) -> FinetuneRequest:
        setup, rounds, fc = _setup(co), self.rounds(co), co.cfg.fusion
        return FinetuneRequest(
            **co.fields(
                self,
                head_config=setup["head_config"],
                experts=setup["experts"],
                round=round_index,
                epochs=co.fed.finetune_local_epochs,
                lr_experts=fedavg_round_lr(fc.finetune_lr, round_index, rounds),
                lr_head=fedavg_round_lr(fc.lr, round_index, rounds),
                seed=fedavg_round_seed(co.cfg.seed + 1, round_index, 0),
                mu=co.fed.proximal_mu,
                class_weight=torch.tensor(setup["class_weight"]),
                weights=state.weights,
            )
        )

    def max_examples(self, co: Coordinator, state: RoundState, site: str) -> int:
        return int(_setup(co)["rows"][site])

    def handle(self, site: FusionSite, request: FinetuneRequest) -> RoundReply:
        cached = site.finetune_inputs(request.experts)
        experts = [build_expert(site.cfg, site.num_classes) for _ in request.sites]
        system = FusedSystem(experts, FusionClassifier.from_config(request.head_config))
        system.load_state_dict(request.weights)
        fusion = replace(
            site.cfg.fusion,
            finetune_epochs=request.epochs,
            finetune_lr=request.lr_experts,
            lr=request.lr_head,
        )
        y = cached["y"].numpy()
        curve = finetune_fusion(
            system,
            cached["x"].numpy(),
            y,
            cached["presence"].numpy(),
            cfg=fusion,
            num_classes=site.num_classes,
            seed=request.seed + request.sites.index(site.name),
            batch_size=site.cfg.training.batch_size,
            class_weight=request.class_weight.float(),
            schedule=False,
            mu=request.mu,
            device=site.cfg.training.device,
            precision=site.cfg.training.precision,
        )
        state = {key: v.detach().clone() for key, v in system.state_dict().items()}
        return RoundReply(
            site=site.name, phase=self.name, examples=len(y), loss=curve[-1], weights=state
        )

    def finish(self, co: Coordinator, state: RoundState) -> None:
        system = self._system(co)
        system.load_state_dict(state.weights)
        meta = co.run.read_json("fusion/fusion.json")
        meta["finetune"] = {
            "epochs": self.rounds(co) * co.fed.finetune_local_epochs,
            "soup": 1,
            "loss_curve": [_weighted_loss(h) for h in state.history],
            "federated": {
                "rounds": self.rounds(co),
                "local_epochs": co.fed.finetune_local_epochs,
                "history": state.history,
            },
        }
        FusionMethod.save(co.run, "fusion", meta, system.head)  # type: ignore[arg-type]
        # The copies last: their presence marks the fine-tuning as finished (resume skips it).
        FusionMethod.save_copies(co.run, "fusion", list(system.experts), co.sites)  # type: ignore[arg-type]
        co.say(f"fine-tuning: {self.rounds(co)} rounds over {len(co.sites)} sites")


def _weighted_loss(round_history: dict[str, dict[str, float]]) -> float:
    """A round's loss over the sites, weighted by their example counts."""
    values = list(round_history.values())
    return float(np.average([v["loss"] for v in values], weights=[v["examples"] for v in values]))
