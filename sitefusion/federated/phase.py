"""A federated phase: one class, used by the coordinator and by the site.

A phase has a name (also its Flower action: the ClientApp registers ``@app.<kind>(name)`` and
receives messages of type ``<kind>.<name>``), the typed request it sends and the reply it expects
(:mod:`sitefusion.federated.messages`), what a site does with the request (:meth:`Phase.handle`,
on the site's own data only) and what the coordinator does with the replies. Two policies:

- :class:`OncePhase`: every target site answers once; a site that is away is asked again until
  the deadline, a site's own error stops the phase (:meth:`~sitefusion.federated.coordinator.
  Coordinator.ask_all`);
- :class:`RoundPhase`: rounds of federated averaging; the driver owns the loop, the per-round
  checkpoint and resume, the deadline, the checks of every update and the average
  (:meth:`~sitefusion.federated.coordinator.Coordinator.run_rounds`); the phase says how to start,
  what a round asks and what to keep at the end.

A phase without a site side (``site_side = False``) is a coordinator step in the same sequence
(one-shot weight averaging).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch

from sitefusion.federated.messages import Reply, Request, RoundReply

if TYPE_CHECKING:  # the coordinator drives phases; phases only receive it
    from sitefusion.federated.coordinator import Coordinator

__all__ = ["OncePhase", "Phase", "RoundPhase", "RoundState"]

Req = TypeVar("Req", bound=Request)
Rep = TypeVar("Rep", bound=Reply)


class Phase(ABC, Generic[Req, Rep]):
    """The parts every phase has (see the module docstring)."""

    #: The phase's name: its Flower action, its audit-log entries, its checkpoint's file name.
    name: ClassVar[str]
    #: Flower's message kind (``query``, ``train`` or ``evaluate``).
    kind: ClassVar[str] = "train"
    #: The typed request and reply.
    request_type: ClassVar[type[Request]]
    reply_type: ClassVar[type[Reply]] = Reply
    #: Whether sites answer this phase (``False``: a coordinator-only step).
    site_side: ClassVar[bool] = True

    @property
    def message_type(self) -> str:
        """Flower's message type, ``<kind>.<name>``."""
        return f"{self.kind}.{self.name}"

    @abstractmethod
    def done(self, co: Coordinator) -> bool:
        """Whether the run already holds what this phase makes (resume skips it)."""

    def handle(self, site: Any, request: Req) -> Rep:
        """The site's answer to ``request``, from its own data only (``site``: the site's view
        of its data, as the phase needs it)."""
        raise NotImplementedError(f"phase {self.name!r} has no site side")


class OncePhase(Phase[Req, Rep]):
    """A phase every target site answers once."""

    def targets(self, co: Coordinator) -> list[str]:
        """The sites asked (default: all)."""
        return list(co.sites)

    @abstractmethod
    def request(self, co: Coordinator, site: str) -> Req:
        """The request for ``site``."""

    @abstractmethod
    def combine(self, co: Coordinator, replies: dict[str, Rep]) -> None:
        """Use every target site's reply (validated): write what the phase makes."""


@dataclass
class RoundState:
    """Where rounds of federated averaging stand: the global ``weights``, one ``history``
    entry per finished round, and the phase's own JSON ``extra`` state (checkpointed with
    them after every round)."""

    weights: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class RoundPhase(Phase[Req, RoundReply]):
    """Rounds of federated averaging of one set of weights."""

    reply_type = RoundReply

    @abstractmethod
    def rounds(self, co: Coordinator) -> int:
        """How many rounds (from the config)."""

    @abstractmethod
    def start(self, co: Coordinator) -> RoundState:
        """The state before the first round (global weights, extra state)."""

    @abstractmethod
    def request(self, co: Coordinator, state: RoundState, round_index: int) -> Req:
        """What every site is asked in round ``round_index``."""

    @abstractmethod
    def max_examples(self, co: Coordinator, state: RoundState, site: str) -> int:
        """The most examples ``site`` can report (its known rows for this phase)."""

    @abstractmethod
    def finish(self, co: Coordinator, state: RoundState) -> None:
        """Keep the result after the last round (through the method that owns it)."""
