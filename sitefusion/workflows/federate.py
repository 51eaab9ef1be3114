"""The coordinator of a federated run: phases, rounds, deadlines and the run directory.

The coordinator holds no data path. It talks to the sites through a :class:`Transport` (the
Flower ServerApp's grid in a deployment, :class:`LocalTransport` in one process for tests and
research) and writes the same run directory as ``sitefusion train`` — config, schema,
normalizers, shared initial weights, site experts, the fusion head, the FedAvg and
weight-average baselines, hashes — with ``"mode": "federated"`` in ``manifest.json``, so that
``sitefusion evaluate --manifest`` and ``sitefusion score`` work on it unchanged. It then asks
every site to evaluate every method on its own test split and writes the report from the
returned predictions (``<out>/report``).

Phases (each skipped when its artifacts exist, so a restarted coordinator resumes; the rounds of
the head and of FedAvg are checkpointed after every round):

1. ``hello``: which node is which site (at least ``federated.min_sites`` within
   ``federated.node_timeout``).
2. ``groups`` (and ``home_splits`` where needed), then ``prepare``: the groups (patients,
   lesions) that more than one site holds are found by keyed hashes and get one home site and
   one split everywhere (:func:`reconcile_groups`); each site splits its data and fits its
   normalizer; the normalizers and class counts come back.
3. ``expert``: each site trains its expert from the shared initial weights or, with
   ``expert.start: fedavg``, fine-tunes it from the FedAvg model (whose rounds, 7, then run
   before this phase).
4. ``head_setup``: every expert goes to every site, which caches the features of its own fusion
   rows; aggregates of them come back (the head's standardisation statistics).
5. ``head_round`` x ``federated.head_rounds``: federated averaging of the fusion head; then,
   with ``federated.finetune_rounds``, ``finetune_round`` x that many: the head and copies of
   the experts fine-tuned end to end at the sites and averaged.
6. ``ood_threshold``: the scorer's out-of-distribution reference (mean and covariance from the
   sites' aggregates, threshold from their histograms of distances).
7. ``fedavg_round`` x ``federated.fedavg_rounds``: the FedAvg baseline.
8. weight average of the experts, then ``evaluate``: every method on every site's test split.

A phase that needs every site (2, 3, 4, 6, 8) asks the missing ones again until
``federated.round_timeout`` has passed, then stops with an error naming them (rerun the same
command to resume). A round (5, 7) waits ``federated.round_timeout`` once and averages over the
sites that replied, if at least ``federated.min_sites`` did; the log names the ones left out.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from sitefusion.errors import ConfigError, FederationError, SiteFusionError
from sitefusion.evaluation import PredictionSet, evaluate_predictions
from sitefusion.experts import average_state_dicts, build_expert
from sitefusion.federated.payload import Payload, describe_payload
from sitefusion.federated.setup import GROUP_KEY_HELP, SiteSetup
from sitefusion.federated.transport import SiteFailure, Transport
from sitefusion.fusion import FusionClassifier
from sitefusion.fusion.system import FusedSystem, expert_states
from sitefusion.methods.fedavg import FEDAVG_STEM, fedavg_round_lr, fedavg_round_seed
from sitefusion.normalization import NormalizerBank
from sitefusion.normalization.registry import normalizer_class
from sitefusion.reporting import write_report
from sitefusion.rundir import RunDir
from sitefusion.scoring.ood import OOD_REFERENCE, MahalanobisOOD
from sitefusion.training.federated import LocalUpdate, combine_moments, federated_average
from sitefusion.training.loop import class_weights
from sitefusion.training.schedules import cosine
from sitefusion.training.stages import initial_state
from sitefusion.workflows.federated_site import handle

__all__ = ["LocalTransport", "federate", "federated_config", "reconcile_groups"]


class LocalTransport:
    """The sites as function calls in this process (tests, research, the single-process mode).

    The sites still only see their own :class:`SiteSetup` and the payloads; only what
    :func:`~sitefusion.workflows.federated_site.handle` returns comes back.
    """

    def __init__(self, setups: Sequence[SiteSetup]) -> None:
        self.setups = {s.site: s for s in setups}

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        return sorted(self.setups)

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float
    ) -> dict[str, Payload | SiteFailure]:
        replies: dict[str, Payload | SiteFailure] = {}
        for site, payload in payloads.items():
            try:
                replies[site] = handle(self.setups[site], payload)
            except SiteFusionError as err:
                replies[site] = SiteFailure(f"{type(err).__name__}: {err}")
        return replies


class _Log:
    """Console lines, and one JSON line per message in ``federation/messages.jsonl``."""

    def __init__(self, root: Path, console: Console | None) -> None:
        self.path = root / "federation" / "messages.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.console = console
        self.sent: dict[str, int] = {}

    def say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)

    def message(self, phase: str, site: str, direction: str, payload: Payload) -> None:
        entry = {"phase": phase, "site": site, "direction": direction, **describe_payload(payload)}
        key = f"{phase}:{direction}"
        self.sent[key] = self.sent.get(key, 0) + payload.nbytes
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")


class _Coordinator:
    def __init__(
        self, cfg: Config, run: RunDir, transport: Transport, log: _Log, run_id: str
    ) -> None:
        self.cfg = cfg
        self.fed = cfg.federated
        self.run = run
        self.transport = transport
        self.log = log
        self.run_id = run_id
        self.sites: list[str] = []
        self.config_dict = config_to_dict(cfg)
        self.classes: tuple[str, ...] = tuple(cfg.data.classes or ())
        self.k = len(self.classes)

    # -- messaging ---------------------------------------------------------------------------
    def _meta(self, phase: str, **extra: Any) -> dict[str, Any]:
        return {
            "phase": phase,
            "run_id": self.run_id,
            "config": self.config_dict,
            "sites": self.sites,
            **extra,
        }

    def _ask(
        self, phase: str, payloads: Mapping[str, Payload], timeout: float
    ) -> dict[str, Payload | SiteFailure]:
        for site, payload in payloads.items():
            self.log.message(phase, site, "sent", payload)
        replies = self.transport.ask(payloads, timeout)
        for site in sorted(replies):
            reply = replies[site]
            if isinstance(reply, Payload):
                if reply.meta.get("site") != site:
                    raise FederationError(
                        f"phase {phase}: the reply for site {site!r} says it is from "
                        f"{reply.meta.get('site')!r}"
                    )
                self.log.message(phase, site, "received", reply)
        return replies

    def ask_all(
        self,
        phase: str,
        make: Callable[[str], Payload],
        only: Sequence[str] | None = None,
    ) -> dict[str, Payload]:
        """Every site's (or the sites ``only``'s) reply to ``phase``; missing sites are asked
        again until the deadline."""
        deadline = time.monotonic() + self.fed.round_timeout
        done: dict[str, Payload] = {}
        failures: dict[str, str] = {}
        asked = list(self.sites if only is None else only)
        while True:
            todo = [s for s in asked if s not in done]
            remaining = deadline - time.monotonic()
            if not todo or remaining <= 0:
                break
            replies = self._ask(phase, {s: make(s) for s in todo}, remaining)
            for site in todo:
                reply = replies.get(site, SiteFailure(f"no reply within {remaining:.0f} s"))
                if isinstance(reply, Payload):
                    done[site] = reply
                    failures.pop(site, None)
                else:
                    failures[site] = reply.reason
                    self.log.say(f"  [yellow]{phase}: site {site} failed: {reply.reason}[/]")
            if failures and any("Error" in r for r in failures.values()):
                break  # a site's own error does not go away by asking again
            if failures:  # a site that is away: give it a moment to come back before asking
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if failures:
            detail = "; ".join(f"{s}: {r}" for s, r in sorted(failures.items()))
            raise FederationError(
                f"phase {phase}: {len(failures)} site(s) did not complete ({detail}); the run "
                f"directory {self.run.root} keeps what is done: fix the site and rerun the "
                "same command to resume"
            )
        return done

    def ask_round(self, phase: str, round_index: int, payload: Payload) -> dict[str, Payload]:
        """One round: the replies within the deadline, if at least ``min_sites`` came."""
        t0 = time.monotonic()
        replies = self._ask(phase, dict.fromkeys(self.sites, payload), self.fed.round_timeout)
        got = {s: r for s, r in replies.items() if isinstance(r, Payload)}
        missing = [s for s in self.sites if s not in got]
        for site in missing:
            reply = replies.get(site)
            why = reply.reason if isinstance(reply, SiteFailure) else "no reply"
            self.log.say(
                f"  [yellow]{phase} round {round_index + 1}: site {site} left out ({why}); "
                f"averaging over {len(got)} site(s)[/]"
            )
        if len(got) < min(self.fed.min_sites, len(self.sites)):
            raise FederationError(
                f"{phase} round {round_index + 1}: only {len(got)} of {len(self.sites)} sites "
                f"replied within {self.fed.round_timeout:.0f} s (federated.min_sites is "
                f"{self.fed.min_sites}); missing: {', '.join(missing)}. Rerun the same command "
                "to resume from the last finished round"
            )
        self.log.say(
            f"  {phase} round {round_index + 1}: {len(got)} site(s), {time.monotonic() - t0:.1f} s"
        )
        return got

    def average_round(
        self, phase: str, round_index: int, payload: Payload
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
        """One round of federated averaging: the replies' weights averaged with their example
        counts as weights (sites in name order), and each site's loss and example count."""
        got = self.ask_round(phase, round_index, payload)
        updates = {
            s: LocalUpdate(p.tensors, int(p.meta["examples"]), float(p.meta["loss"]))
            for s, p in got.items()
        }
        outcome = {s: {"loss": u.loss, "examples": u.examples} for s, u in sorted(updates.items())}
        return federated_average(updates, self.sites), outcome

    # -- phases ------------------------------------------------------------------------------
    def connect(self) -> None:
        sites = self.transport.connect(self.fed.min_sites, self.fed.node_timeout)
        if len(set(sites)) != len(sites):
            raise FederationError(f"two nodes claim the same site: {sorted(sites)}")
        if len(sites) < self.fed.min_sites:
            raise FederationError(
                f"{len(sites)} site(s) connected within {self.fed.node_timeout:.0f} s "
                f"({', '.join(sites) or 'none'}); federated.min_sites is {self.fed.min_sites}"
            )
        known = (
            self.run.read_json("federation/sites.json")
            if self.run.has("federation/sites.json")
            else None
        )
        if known is not None and sorted(known) != sorted(sites):
            raise FederationError(
                f"{self.run.root}: this run was started with sites {known}; now connected: "
                f"{sorted(sites)}. Resume with the same sites, or use a new --out"
            )
        self.sites = sorted(sites)
        if known is None:
            self.run.write_json("federation/sites.json", self.sites)
        self.log.say(f"sites: {', '.join(self.sites)}")

    def shared_groups(self) -> dict[str, dict[str, str]]:
        """Per site, the splits of its groups that are at home at another site (by keyed hash);
        empty where the sites hold no group key."""
        replies = self.ask_all("groups", lambda s: Payload(self._meta("groups")))
        checks = {s: replies[s].meta.get("key_check") for s in self.sites}
        keyless = [s for s, c in checks.items() if c is None]
        if len(keyless) == len(self.sites):
            self.log.say(
                "  [yellow]groups: the sites hold no group key, so a patient or lesion held by two "
                "sites is split at each independently (it can be in training at one and in test "
                f"at the other); {GROUP_KEY_HELP}[/]"
            )
            self.run.write_json("federation/groups.json", {"reconciled": False})
            return {}
        if keyless:
            raise FederationError(
                f"groups: site(s) {', '.join(keyless)} hold no group key while the others do; "
                "start every site with the same --group-key file"
            )
        if len(set(checks.values())) > 1:
            raise FederationError(
                "groups: the sites hold different group keys (their key checks differ); start "
                "every site with the same --group-key file"
            )
        held = {
            s: dict(zip(replies[s].meta["tokens"], replies[s].meta["counts"], strict=True))
            for s in self.sites
        }
        home, away = reconcile_groups(held)
        shared = {t for t in home if sum(t in h for h in held.values()) > 1}
        fixed: dict[str, dict[str, str]] = {s: {} for s in self.sites}
        homes = sorted({home[t] for t in shared})
        if homes:
            split_replies = self.ask_all(
                "home_splits",
                lambda s: Payload(
                    self._meta(
                        "home_splits",
                        home=sorted(t for t in shared if home[t] == s),
                        away=sorted(away[s]),
                    )
                ),
                only=homes,
            )
            split_of = {t: v for r in split_replies.values() for t, v in r.meta["splits"].items()}
            for site in self.sites:
                fixed[site] = {t: str(split_of[t]) for t in sorted(away[site])}
        self.run.write_json(
            "federation/groups.json",
            {
                "reconciled": True,
                "shared_groups": len(shared),
                "placed_by_home_site": {s: len(fixed[s]) for s in self.sites},
            },
        )
        self.log.say(
            f"groups: {len(shared)} group(s) held by more than one site, each split at its home "
            "site"
        )
        return fixed

    def prepare(self) -> None:
        if self.run.has("schema.json"):
            return
        fixed = self.shared_groups()
        replies = self.ask_all(
            "prepare", lambda s: Payload(self._meta("prepare", fixed=fixed.get(s, {})))
        )
        counts = {s: replies[s].meta["counts"] for s in self.sites}
        kind = self.cfg.normalization.kind
        cls = normalizer_class(kind)
        normalizers = {}
        with tempfile.TemporaryDirectory() as tmp:
            for site in self.sites:
                path = Path(tmp) / f"{site}.json"
                path.write_text(str(replies[site].meta["normalizer"]), encoding="utf-8")
                normalizers[site] = cls.load(path)
        # A federation has no pooled normalizer (no images in one place); the bank's format
        # needs one, so it holds the largest site's, which no policy of a federated run uses
        # (unseen_policy 'pooled' is refused).
        largest = max(self.sites, key=lambda s: sum(counts[s]["train"]))
        bank = NormalizerBank.from_normalizers(
            normalizers,
            pooled=normalizers[largest],
            unseen_policy=self.cfg.normalization.unseen_policy,
        )
        bank.save(self.run.root / "normalizers")
        for path in sorted((self.run.root / "normalizers").glob("*.json")):
            self.run.adopt(f"normalizers/{path.name}")
        d = self.cfg.data
        self.run.write_json(
            "schema.json",
            {
                "columns": {
                    "image": d.image,
                    "label": d.label,
                    "site": d.site,
                    "group": d.group,
                    "id": d.id,
                },
                "classes": list(self.classes),
                "sites": self.sites,
                "experts": self.sites,
                "spatial_size": list(d.spatial_size),
                "channels": d.channels,
                "split_counts": {
                    s: {split: int(sum(c)) for split, c in counts[s].items()} for s in self.sites
                },
                "class_counts": counts,
                "pooled_normalizer": f"none (federated); normalizers/_pooled.json is {largest}'s",
            },
        )
        self.log.say("prepare: every site split its data and fitted its normalizer")

    def experts(self) -> None:
        init = initial_state(self.cfg, self.run, self.k)
        todo = [s for s in self.sites if not self.run.has(f"experts/{s}.safetensors")]
        if not todo:
            return
        self.log.say(f"experts: training at {', '.join(todo)}")
        init_tensors = {f"init.{k}": v for k, v in init.items()}
        if self.cfg.expert.start == "fedavg":
            # Each site fine-tunes its expert from the FedAvg model (trained before this phase).
            fedavg = self.run.read_tensors(f"{FEDAVG_STEM}.safetensors")
            init_tensors.update({f"start.{k}": v for k, v in fedavg.items()})
        sites, self.sites = self.sites, todo
        try:
            replies = self.ask_all("expert", lambda s: Payload(self._meta("expert"), init_tensors))
        finally:
            self.sites = sites
        for site in todo:
            reply = replies[site]
            model = build_expert(self.cfg, self.k)
            model.load_state_dict(reply.tensors)  # refuses weights of another architecture
            self.run.write_json(
                f"experts/{site}.json",
                {
                    "expert": model.describe(),
                    **{k: v for k, v in reply.meta.items() if k != "phase"},
                },
            )
            self.run.write_tensors(f"experts/{site}.safetensors", reply.tensors)
            best = reply.meta["history"][reply.meta["best_epoch"]]["val_balanced_accuracy"]
            self.log.say(
                f"  expert {site}: {reply.meta['n_train']} training images, best epoch "
                f"{reply.meta['best_epoch'] + 1}, validation balanced accuracy {best:.3f}"
            )

    def _expert_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{s}.{k}": v
            for s in self.sites
            for k, v in self.run.read_tensors(f"experts/{s}.safetensors").items()
        }

    def _head_template(self) -> FusionClassifier:
        fc = self.cfg.fusion
        return FusionClassifier(
            fc.modes[0],
            len(self.sites),
            self.cfg.expert.out_channels,
            self.k,
            use_local_logits=fc.use_local_logits,
            hidden=fc.hidden,
            dropout=fc.dropout,
        )

    def head(self) -> None:
        if self.run.has("fusion/fusion.safetensors"):
            return
        torch.manual_seed(self.cfg.seed)
        head = self._head_template()
        meta_head = {"head_config": head.config}
        ckpt = "federation/head.checkpoint.safetensors"
        if self.run.has(ckpt):
            state = self.run.read_json("federation/head.checkpoint.json")
            head.load_state_dict(self.run.read_tensors(ckpt))
            history, tag, weight = (
                state["history"],
                state["experts"],
                torch.tensor(state["class_weight"]),
            )
            n_fusion, n_cross = state["n_fusion"], state["n_cross_fit"]
            self.log.say(f"fusion head: resuming after round {len(history)}")
        else:
            experts = self._expert_tensors()
            replies = self.ask_all(
                "head_setup", lambda s: Payload(self._meta("head_setup", **meta_head), experts)
            )
            tags = {r.meta["experts"] for r in replies.values()}
            if len(tags) != 1:
                raise FederationError(
                    f"head_setup: the sites hold different experts ({sorted(tags)})"
                )
            tag = tags.pop()
            self.run.write_tensors(
                "federation/ood_moments.safetensors",
                {
                    key: torch.stack([replies[s].tensors[f"ood.{key}"] for s in self.sites]).sum(0)
                    for key in ("count", "sum", "outer")
                },
            )
            mean, std = combine_moments([replies[s].prefixed("moments") for s in self.sites])
            head.mean.copy_(mean)
            head.std.copy_(std)
            counts = torch.stack([replies[s].tensors["class_counts"] for s in self.sites]).sum(0)
            labels = np.repeat(np.arange(self.k), counts.numpy().astype(np.int64))
            weight = class_weights(labels, self.k, power=1.0)
            n_fusion = sum(int(replies[s].meta["n_fusion"]) for s in self.sites)
            n_cross = sum(int(replies[s].meta["n_cross_fit"]) for s in self.sites)
            history = []
        rounds = self.fed.head_rounds
        for r in range(len(history), rounds):
            payload = Payload(
                self._meta(
                    "head_round",
                    **meta_head,
                    experts=tag,
                    round=r,
                    epochs=self.fed.head_local_epochs,
                    lr=cosine(self.cfg.fusion.lr, 2 * r + 1, 2 * rounds),
                    seed=fedavg_round_seed(self.cfg.seed, r, 0),
                    mu=self.fed.proximal_mu,
                ),
                {**{f"head.{k}": v for k, v in head.state_dict().items()}, "class_weight": weight},
            )
            state, outcome = self.average_round("head_round", r, payload)
            head.load_state_dict(state)
            history.append(outcome)
            self.run.write_json(
                "federation/head.checkpoint.json",
                {
                    "history": history,
                    "experts": tag,
                    "class_weight": weight.tolist(),
                    "n_fusion": n_fusion,
                    "n_cross_fit": n_cross,
                },
            )
            self.run.write_tensors(ckpt, head.state_dict())
        curve = [_weighted_loss(h) for h in history]
        self.run.write_json(
            "fusion/fusion.json",
            {
                "config": head.config,
                "loss_curve": curve,
                "n_fusion": n_fusion,
                "n_cross_fit": n_cross,
                "federated": {
                    "rounds": rounds,
                    "local_epochs": self.fed.head_local_epochs,
                    "proximal_mu": self.fed.proximal_mu,
                    "history": history,
                },
                "calibration": {
                    "temperature": 1.0,
                    "fitted_on": "not fitted: a federated run has no held-out logits in one place",
                },
            },
        )
        self.run.write_tensors("fusion/fusion.safetensors", head.state_dict())
        self.log.say(
            f"fusion head: {rounds} rounds over {len(self.sites)} sites, {n_fusion} fusion-split + {n_cross} cross-fitted rows"
        )

    def finetune(self) -> None:
        """``federated.finetune_rounds`` rounds of end-to-end fine-tuning: copies of the experts
        and the head, as one network, trained at every site on its head rows' images (own expert
        masked, as centrally) and averaged; the copies become the fusion's own experts."""
        rounds = self.fed.finetune_rounds
        rel = "fusion/fusion.experts.safetensors"
        if not rounds or self.run.has(rel):
            return
        meta = self.run.read_json("fusion/fusion.json")
        head = FusionClassifier.from_config(meta["config"])
        head.load_state_dict(self.run.read_tensors("fusion/fusion.safetensors"))
        experts = []
        for site in self.sites:
            expert = build_expert(self.cfg, self.k)
            expert.load_state_dict(self.run.read_tensors(f"experts/{site}.safetensors"))
            experts.append(expert)
        system = FusedSystem(experts, head)
        setup = self.run.read_json("federation/head.checkpoint.json")
        weight = torch.tensor(setup["class_weight"])
        ckpt = "federation/finetune.checkpoint"
        history: list[dict[str, Any]] = []
        if self.run.has(f"{ckpt}.safetensors"):
            system.load_state_dict(self.run.read_tensors(f"{ckpt}.safetensors"))
            history = self.run.read_json(f"{ckpt}.json")["history"]
            self.log.say(f"fine-tuning: resuming after round {len(history)}")
        fc = self.cfg.fusion
        for r in range(len(history), rounds):
            payload = Payload(
                self._meta(
                    "finetune_round",
                    head_config=head.config,
                    experts=setup["experts"],
                    round=r,
                    epochs=self.fed.finetune_local_epochs,
                    lr_experts=fedavg_round_lr(fc.finetune_lr, r, rounds),
                    lr_head=fedavg_round_lr(fc.lr, r, rounds),
                    seed=fedavg_round_seed(self.cfg.seed + 1, r, 0),
                ),
                {
                    **{f"system.{k}": v for k, v in system.state_dict().items()},
                    "class_weight": weight,
                },
            )
            state, outcome = self.average_round("finetune_round", r, payload)
            system.load_state_dict(state)
            history.append(outcome)
            self.run.write_json(f"{ckpt}.json", {"history": history})
            self.run.write_tensors(f"{ckpt}.safetensors", system.state_dict())
        meta["finetune"] = {
            "epochs": rounds * self.fed.finetune_local_epochs,
            "soup": 1,
            "loss_curve": [_weighted_loss(h) for h in history],
            "federated": {
                "rounds": rounds,
                "local_epochs": self.fed.finetune_local_epochs,
                "history": history,
            },
        }
        self.run.write_json("fusion/fusion.json", meta)
        self.run.write_tensors("fusion/fusion.safetensors", head.state_dict())
        # The copies last: their presence marks the fine-tuning as finished (resume skips it).
        self.run.write_tensors(rel, expert_states(experts, self.sites))
        self.log.say(f"fine-tuning: {rounds} rounds over {len(self.sites)} sites")

    def ood(self) -> None:
        """The scorer's out-of-distribution reference from the sites' aggregates: mean and
        covariance of the experts' mean feature over every fusion-split image, then the
        threshold from the sites' histograms of their images' distances."""
        if self.run.has(OOD_REFERENCE):
            return
        moments = self.run.read_tensors("federation/ood_moments.safetensors")
        tag = self.run.read_json("federation/head.checkpoint.json")["experts"]
        quantile = self.cfg.scoring.ood_quantile
        ood = MahalanobisOOD(quantile).fit_moments(
            float(moments["count"].item()), moments["sum"].numpy(), moments["outer"].numpy()
        )
        dim = len(ood.mean_)
        edges = np.linspace(0.0, 50.0 * np.sqrt(dim), 8193)
        reference = {
            f"ood.{k}": torch.from_numpy(np.asarray(v, np.float64))
            for k, v in {
                "mean": ood.mean_,
                "scale": ood.scale_,
                "precision": ood.precision_,
                "threshold": np.array([0.0]),
                "count": np.array([0.0]),
            }.items()
        }
        replies = self.ask_all(
            "ood_threshold",
            lambda s: Payload(
                self._meta("ood_threshold", experts=tag),
                {**reference, "edges": torch.from_numpy(edges)},
            ),
        )
        counts = torch.stack([replies[s].tensors["counts"] for s in self.sites]).sum(0).numpy()
        ood.set_threshold(edges, counts)
        self.run.write_tensors(
            OOD_REFERENCE, {k: torch.from_numpy(np.asarray(v)) for k, v in ood.state().items()}
        )
        self.log.say(
            f"OOD reference: {int(counts.sum())} fusion-split images, threshold {ood.threshold_:.2f}"
        )

    def fedavg(self) -> None:
        if self.run.has(f"{FEDAVG_STEM}.safetensors"):
            return
        model = build_expert(self.cfg, self.k)
        model.load_state_dict(initial_state(self.cfg, self.run, self.k))
        ckpt = "federation/fedavg.checkpoint.safetensors"
        history: list[dict[str, Any]] = []
        if self.run.has(ckpt):
            model.load_state_dict(self.run.read_tensors(ckpt))
            history = self.run.read_json("federation/fedavg.checkpoint.json")
            self.log.say(f"FedAvg: resuming after round {len(history)}")
        rounds = self.fed.fedavg_rounds
        for r in range(len(history), rounds):
            payload = Payload(
                self._meta(
                    "fedavg_round",
                    round=r,
                    epochs=self.fed.fedavg_local_epochs,
                    lr=fedavg_round_lr(self.cfg.training.lr, r, rounds),
                    seed=fedavg_round_seed(self.cfg.seed, r, 0),
                    mu=self.fed.proximal_mu,
                ),
                {f"network.{k}": v for k, v in model.state_dict().items()},
            )
            state, outcome = self.average_round("fedavg_round", r, payload)
            model.load_state_dict(state)
            history.append(outcome)
            self.run.write_json("federation/fedavg.checkpoint.json", history)
            self.run.write_tensors(ckpt, model.state_dict())
        self.run.write_json(
            f"{FEDAVG_STEM}.json",
            {
                "rounds": rounds,
                "local_epochs": self.fed.fedavg_local_epochs,
                "proximal_mu": self.fed.proximal_mu,
                "mode": "federated",
                "history": history,
            },
        )
        self.run.write_tensors(f"{FEDAVG_STEM}.safetensors", model.state_dict())

    def weight_average(self) -> None:
        rel = "baselines/weight_average.safetensors"
        if self.run.has(rel):
            return
        states = [self.run.read_tensors(f"experts/{s}.safetensors") for s in self.sites]
        sizes = [float(self.run.read_json(f"experts/{s}.json")["n_train"]) for s in self.sites]
        self.run.write_tensors(rel, average_state_dicts(states, sizes))

    def evaluate(self, report: Path) -> dict[str, Any]:
        files = {
            rel: (self.run.root / rel).read_bytes()
            for rel in self.run.verify_all()
            if not rel.startswith("federation/")
        }
        info = {
            k: v
            for k, v in self.run.read_manifest().items()
            if k in ("run_id", "status", "completed_at", "mode")
        }
        replies = self.ask_all(
            "evaluate", lambda s: Payload(self._meta("evaluate", info=info), files=files)
        )
        parts = [replies[s] for s in self.sites if replies[s].meta.get("methods")]
        if not parts:
            raise FederationError("evaluate: no site has a test split")
        methods = list(parts[0].meta["methods"])
        probs = {}
        for m in methods:
            p = np.concatenate([part.arrays()[f"probs.{m}"] for part in parts]).astype(np.float64)
            probs[m] = p / p.sum(1, keepdims=True)  # float32 sums off by ~1e-7 upset sklearn
        attention = {
            m: np.concatenate([p.arrays()[f"attention.{m}"] for p in parts])
            for m in methods
            if f"attention.{m}" in parts[0].tensors
        }
        labels = np.concatenate([p.arrays()["labels"] for p in parts])
        site = np.concatenate([[p.meta["site"]] * len(p.meta["groups"]) for p in parts])
        groups = np.concatenate([np.array(p.meta["groups"], dtype=str) for p in parts])
        pset = PredictionSet(
            classes=self.classes,
            sites=tuple(p.meta["site"] for p in parts),
            experts=tuple(self.sites),
            ids=np.array([f"{s}:{i}" for i, s in enumerate(site)]),
            labels=labels,
            site=site,
            group=groups,
            probs=probs,
            attention=attention,
        )
        ecfg = self.cfg.evaluation
        metrics = evaluate_predictions(
            pset, n_boot=ecfg.bootstrap, seed=ecfg.seed, ece_bins=ecfg.ece_bins
        )
        metrics["run"] = {
            "run_id": self.run_id,
            "run_dir": str(self.run.root),
            "test_set": "each site's internal test split, predicted at the site (federated)",
            "n_images": len(labels),
            "mode": "federated",
            "not_available": {
                "pooled": "pooled training needs every site's images in one place, which a "
                "federation does not have",
            },
            "bootstrap": ecfg.bootstrap,
        }
        write_report(metrics, pset, report)
        return metrics


def _weighted_loss(round_history: Mapping[str, Mapping[str, float]]) -> float:
    """A round's loss over the sites, weighted by their example counts."""
    values = list(round_history.values())
    return float(np.average([v["loss"] for v in values], weights=[v["examples"] for v in values]))


def reconcile_groups(
    held: Mapping[str, Mapping[str, int]],
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Home sites of groups held by several sites, from ``{site: {group hash: images}}``.

    A group's home is the site with most of its images, ties broken by site name: the rule of
    :func:`~sitefusion.data.splits.group_splits` for a manifest split in one place. Returns
    ``({hash: home site}, {site: hashes it holds that are at home elsewhere})``.
    """
    counts: dict[str, dict[str, int]] = {}
    for site, groups in held.items():
        for token, n in groups.items():
            counts.setdefault(token, {})[site] = int(n)
    home = {t: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for t, c in counts.items()}
    away = {site: {t for t in groups if home[t] != site} for site, groups in held.items()}
    return home, away


def _write_config(run: RunDir, cfg: Config) -> None:
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
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
    run.write_text("config.yaml", text)


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
    log = _Log(out, console)
    co = _Coordinator(cfg, run, transport, log, run_id)
    timings: dict[str, float] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("connect", co.connect),
        ("prepare", co.prepare),
        ("experts", co.experts),
        ("fusion_head", co.head),
        ("fusion_finetune", co.finetune),
        ("ood_reference", co.ood),
        ("fedavg", co.fedavg),
        ("weight_average", co.weight_average),
    ]
    if cfg.expert.start == "fedavg":  # the experts are fine-tuned from the FedAvg model
        steps.insert(2, steps.pop(6))
    for name, step in steps:
        t = time.perf_counter()
        step()
        timings[name] = time.perf_counter() - t
    if run.read_manifest().get("status") != "complete":
        completed = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        run.set_info(status="complete", completed_at=completed)
    result: dict[str, Any] = {"run_id": run_id, "timings": timings}
    if evaluate:
        t = time.perf_counter()
        result["metrics"] = co.evaluate(out / "report")
        timings["evaluate"] = time.perf_counter() - t
    result["bytes"] = dict(log.sent)
    run.set_info(timings=timings, bytes_by_phase=dict(log.sent))
    with atomic_write(out / "federation" / "summary.json") as fh:
        json.dump({"timings": timings, "bytes": log.sent, "sites": co.sites}, fh, indent=2)
    return result
