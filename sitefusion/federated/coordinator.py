"""The generic coordinator: it runs phases over a transport and knows nothing of training.

:class:`Coordinator` asks the sites (:meth:`~Coordinator.ask_all` for a phase every site answers
once, :meth:`~Coordinator.run_rounds` for rounds of federated averaging), decodes and validates
every reply against the phase's typed messages, records every message in the audit log
(``federation/messages.jsonl``: names, shapes, dtypes and sizes, never values), and owns the one
loop of rounds: resume from the last checkpoint, ask, check every update
(:mod:`sitefusion.federated.updates`), leave out the sites that did not answer or were refused,
average by example counts in site order, checkpoint. What a phase asks and keeps is the phase's
(:mod:`sitefusion.federated.phase`); which phases run in which order is the workflow's.

:class:`InProcessTransport` delivers the same messages to site objects in this process (the
simulated FedAvg of central training, tests), so a phase runs the same code either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from sitefusion.config import Config, config_to_dict
from sitefusion.errors import FederationError, SiteFusionError
from sitefusion.federated.messages import ErrorReply, Reply, Request, RoundReply
from sitefusion.federated.payload import Payload, describe_payload
from sitefusion.federated.phase import OncePhase, Phase, RoundPhase, RoundState
from sitefusion.federated.transport import SiteFailure, Transport
from sitefusion.federated.updates import check_update, update_norm_ratios
from sitefusion.rundir import RunDir
from sitefusion.training.federated import LocalUpdate, federated_average

__all__ = ["Coordinator", "InProcessTransport"]


class InProcessTransport:
    """Sites as objects in this process: each message is decoded into the phase's request,
    answered by ``phase.handle(site, request)`` and encoded back, as over a network."""

    def __init__(self, sites: Mapping[str, Any], phases: Sequence[Phase[Any, Any]]) -> None:
        self.sites = dict(sites)
        self.phases = {p.message_type: p for p in phases}

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        return sorted(self.sites)

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        phase = self.phases[message_type]
        replies: dict[str, Payload | SiteFailure] = {}
        for site, payload in payloads.items():
            try:
                request = phase.request_type.from_payload(payload, f"phase {phase.name}")
                replies[site] = phase.handle(self.sites[site], request).to_payload()
            except SiteFusionError as err:
                replies[site] = SiteFailure.error(f"{type(err).__name__}: {err}")
        return replies


class Coordinator:
    """What every phase's coordinator side may use: the config (``cfg``, its ``federated``
    settings as ``fed``), the sites, the run directory, the request fields every message
    carries, and the messaging. ``mode``: ``federated``, or ``simulated`` for rounds run in one
    process (recorded with what a phase keeps)."""

    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        transport: Transport,
        *,
        run_id: str,
        num_classes: int,
        mode: str = "federated",
        audit: Path | None = None,
        console: Console | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg, self.fed, self.run, self.transport = cfg, cfg.federated, run, transport
        self.run_id, self.num_classes, self.mode = run_id, num_classes, mode
        # Every message carries the run and the config (the sites add their own data paths).
        self.base_request = {"run_id": run_id, "config": config_to_dict(cfg)}
        self.audit, self.console, self._say = audit, console, say
        self.sites: list[str] = []
        self.sent: dict[str, int] = {}  # bytes per "<phase>:<direction>"
        self.memory: dict[str, Any] = {}  # what a phase hands to a later one in this process

    def say(self, message: str) -> None:
        """A line for the operator."""
        if self._say is not None:
            self._say(message)
        elif self.console is not None:
            self.console.print(message)

    def fields(self, phase: Phase[Any, Any], **extra: Any) -> dict[str, Any]:
        """The request fields of ``phase`` every message carries, plus ``extra``."""
        return {"phase": phase.name, **self.base_request, "sites": list(self.sites), **extra}

    def connect(self) -> None:
        """Wait for the sites (at least ``federated.min_sites`` within ``node_timeout``); a
        resumed run must see the sites it started with (``federation/sites.json``)."""
        sites = self.transport.connect(self.fed.min_sites, self.fed.node_timeout)
        if len(set(sites)) != len(sites):
            raise FederationError(f"two nodes claim the same site: {sorted(sites)}")
        if len(sites) < self.fed.min_sites:
            raise FederationError(
                f"{len(sites)} site(s) connected within {self.fed.node_timeout:.0f} s "
                f"({', '.join(sites) or 'none'}); federated.min_sites is {self.fed.min_sites}"
            )
        rel = "federation/sites.json"
        known = self.run.read_json(rel) if self.run.has(rel) else None
        if known is not None and sorted(known) != sorted(sites):
            raise FederationError(
                f"{self.run.root}: this run was started with sites {known}; now connected: "
                f"{sorted(sites)}. Resume with the same sites, or use a new --out"
            )
        self.sites = sorted(sites)
        if known is None:
            self.run.write_json(rel, self.sites)
        self.say(f"sites: {', '.join(self.sites)}")

    # -- messaging -------------------------------------------------------------------------------
    def _record(self, phase: str, site: str, direction: str, payload: Payload) -> None:
        key = f"{phase}:{direction}"
        self.sent[key] = self.sent.get(key, 0) + payload.nbytes
        if self.audit is not None:
            entry = {"phase": phase, "site": site, "direction": direction}
            self.audit.parent.mkdir(parents=True, exist_ok=True)
            with self.audit.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({**entry, **describe_payload(payload)}) + "\n")

    def ask(
        self, phase: Phase[Any, Any], requests: Mapping[str, Request], timeout: float
    ) -> dict[str, Any]:
        """Send each site its request; each answer is the phase's validated reply or a
        :class:`SiteFailure` (a site's error, or a reply that could not be decoded)."""
        payloads = {site: r.to_payload() for site, r in requests.items()}
        for site, payload in payloads.items():
            self._record(phase.name, site, "sent", payload)
        raw = self.transport.ask(payloads, timeout, phase.message_type)
        answers: dict[str, Any] = {}
        for site in sorted(raw):
            reply = raw[site]
            if isinstance(reply, SiteFailure):
                answers[site] = reply
                continue
            self._record(phase.name, site, "received", reply)
            where = f"phase {phase.name}: the reply of site {site!r}"
            try:
                if "error" in reply.meta:
                    answers[site] = SiteFailure.error(ErrorReply.from_payload(reply, where).error)
                    continue
                decoded: Reply = phase.reply_type.from_payload(reply, where)
            except FederationError as err:
                answers[site] = SiteFailure.error(str(err))
                continue
            if decoded.site != site:
                raise FederationError(
                    f"phase {phase.name}: the reply for site {site!r} says it is from "
                    f"{decoded.site!r}"
                )
            answers[site] = decoded
        return answers

    def ask_all(self, phase: OncePhase[Any, Any]) -> dict[str, Any]:
        """Every target site's reply to ``phase``: a site that is away is asked again until
        ``federated.round_timeout``; a site's own error stops the phase at once."""
        deadline = time.monotonic() + self.fed.round_timeout
        done: dict[str, Any] = {}
        failures: dict[str, SiteFailure] = {}
        while True:
            todo = [s for s in phase.targets(self) if s not in done]
            remaining = deadline - time.monotonic()
            if not todo or remaining <= 0:
                break
            answers = self.ask(phase, {s: phase.request(self, s) for s in todo}, remaining)
            for site in todo:
                answer = answers.get(site, SiteFailure.lost(f"no reply within {remaining:.0f} s"))
                if isinstance(answer, SiteFailure):
                    failures[site] = answer
                    self.say(f"  [yellow]{phase.name}: site {site} failed: {answer.reason}[/]")
                else:
                    done[site] = answer
                    failures.pop(site, None)
            if any(not f.transient for f in failures.values()):
                break  # a site's own error does not go away by asking again
            if failures:  # a site that is away: give it a moment to come back
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if failures:
            detail = "; ".join(f"{s}: {f.reason}" for s, f in sorted(failures.items()))
            raise FederationError(
                f"phase {phase.name}: {len(failures)} site(s) did not complete ({detail}); the "
                f"run directory {self.run.root} keeps what is done: fix the site and rerun the "
                "same command to resume"
            )
        return done

    def run_phase(self, phase: Phase[Any, Any]) -> None:
        """Run ``phase`` (once or in rounds) unless the run already holds its result."""
        if isinstance(phase, RoundPhase):
            self.run_rounds(phase)
        elif isinstance(phase, OncePhase) and not phase.done(self):
            phase.combine(self, self.ask_all(phase) if phase.targets(self) else {})

    # -- rounds ----------------------------------------------------------------------------------
    def run_rounds(self, phase: RoundPhase[Any]) -> None:
        """Run (or resume) ``phase``'s rounds of federated averaging, then let it keep the
        result (see the module docstring)."""
        if phase.done(self):
            return
        stem = f"federation/{phase.name}.checkpoint"
        if self.run.has(f"{stem}.safetensors"):
            saved = self.run.read_json(f"{stem}.json")
            state = RoundState(self.run.read_tensors(f"{stem}.safetensors"), **saved)
            self.say(f"{phase.name}: resuming after round {len(state.history)}")
        else:
            state = phase.start(self)
        for r in range(len(state.history), phase.rounds(self)):
            t0 = time.monotonic()
            request = phase.request(self, state, r)
            answers = self.ask(phase, dict.fromkeys(self.sites, request), self.fed.round_timeout)
            accepted, ratios = self._accept(phase, state, r, answers)
            updates = {s: LocalUpdate(a.weights, a.examples, a.loss) for s, a in accepted.items()}
            state.weights = federated_average(updates, self.sites)
            state.history.append(
                {
                    s: {"loss": a.loss, "examples": a.examples, "norm_ratio": ratios[s]}
                    for s, a in sorted(accepted.items())
                }
            )
            self.run.write_json(f"{stem}.json", {"history": state.history, "extra": state.extra})
            self.run.write_tensors(f"{stem}.safetensors", state.weights)
            self.say(
                f"  {phase.name} round {r + 1}: {len(accepted)} site(s), "
                f"{time.monotonic() - t0:.1f} s"
            )
        phase.finish(self, state)

    def _accept(
        self, phase: RoundPhase[Any], state: RoundState, r: int, answers: Mapping[str, Any]
    ) -> tuple[dict[str, RoundReply], dict[str, float]]:
        """The round's updates that may be averaged and their size ratios; the others are named
        and left out."""
        expected = state.weights
        left_out: dict[str, str] = {}
        accepted: dict[str, RoundReply] = {}
        for site in self.sites:
            answer = answers.get(site, SiteFailure.lost("no reply"))
            if isinstance(answer, SiteFailure):
                left_out[site] = answer.reason
                continue
            why = check_update(answer, expected, phase.max_examples(self, state, site))
            if why is None:
                accepted[site] = answer
            else:
                left_out[site] = f"update refused: {why}"
        bound = self.fed.update_norm_bound
        ratios = update_norm_ratios(accepted, expected)
        if bound > 0 and len(accepted) >= 3:  # with two sites the median is their mean
            for site, ratio in ratios.items():
                if ratio > bound:
                    left_out[site] = (
                        f"update refused: its size is {ratio:.1f} times the round's median "
                        f"(federated.update_norm_bound is {bound:g})"
                    )
                    accepted.pop(site)
        for site, why in left_out.items():
            self.say(
                f"  [yellow]{phase.name} round {r + 1}: site {site} left out ({why}); "
                f"averaging over {len(accepted)} site(s)[/]"
            )
        if len(accepted) < min(self.fed.min_sites, len(self.sites)):
            raise FederationError(
                f"{phase.name} round {r + 1}: only {len(accepted)} of {len(self.sites)} sites "
                f"gave an update that could be averaged within {self.fed.round_timeout:.0f} s "
                f"(federated.min_sites is {self.fed.min_sites}); left out: "
                + "; ".join(f"{s}: {w}" for s, w in sorted(left_out.items()))
                + ". Rerun the same command to resume from the last finished round"
            )
        return accepted, {s: ratios[s] for s in accepted}
