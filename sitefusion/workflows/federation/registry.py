"""The federation's phases, registered once: the site answers them, the ClientApp routes them,
the coordinator runs them in this order.

Adding a phase is one new file with its :class:`~sitefusion.federated.phase.Phase` subclass
(its typed request and reply, its site side and its coordinator side) and one line in
:data:`PHASES` (docs/architecture.md, "Adding a federated phase").
"""

from __future__ import annotations

from typing import Any

from sitefusion.config import Config
from sitefusion.federated.phase import Phase
from sitefusion.methods.fedavg import FedAvgRound
from sitefusion.methods.federated_fusion import FinetuneRound, HeadRound, HeadSetup
from sitefusion.workflows.federation.evaluate import Evaluate
from sitefusion.workflows.federation.expert import Expert
from sitefusion.workflows.federation.ood import OodThreshold
from sitefusion.workflows.federation.prepare import Groups, HomeSplits, Prepare

__all__ = ["PHASES", "SITE_PHASES", "coordinator_steps"]

#: Every phase in the order the coordinator runs them (``evaluate`` last, when asked for).
PHASES: tuple[Phase[Any, Any], ...] = (
    Groups(),
    HomeSplits(),
    Prepare(),
    Expert(),
    HeadSetup(),
    HeadRound(),
    FinetuneRound(),
    OodThreshold(),
    FedAvgRound(),
    Evaluate(),
)

#: The phases a site answers, by name (the ClientApp registers one handler for each).
SITE_PHASES: dict[str, Phase[Any, Any]] = {p.name: p for p in PHASES if p.site_side}


def coordinator_steps(cfg: Config) -> list[Phase[Any, Any]]:
    """The phases before ``evaluate``, in order; with ``expert.start: fedavg`` the FedAvg rounds
    run before the experts, which are fine-tuned from their model."""
    steps = [p for p in PHASES if p.name != Evaluate.name]
    if cfg.expert.start == "fedavg":
        fedavg = next(p for p in steps if p.name == FedAvgRound.name)
        steps.remove(fedavg)
        steps.insert(steps.index(next(p for p in steps if p.name == Expert.name)), fedavg)
    return steps
